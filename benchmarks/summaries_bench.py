"""Narrative summaries on StackOverflow (20 classes, each a tag): does the tag of each class appear
among the top terms of the narrative that holds most of that class, and how long do summaries
take per 10k posts.

    .venv/bin/python benchmarks/run.py summaries

The clustering is the real one (`lockstep cluster`, default config: quality embedding tier, UMAP,
HDBSCAN). Embedding speed is not what is measured here, so the project's embedding cache is used
(LOCKSTEP_BENCH_CACHE overrides it). Summary time is taken twice: the summarise stage of the run
(spaCy model load included) and narratives.run again in this process with the model loaded.
LOCKSTEP_BENCH_REUSE=1 reuses a finished run of the same command instead of clustering again.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

# the label numbers of stackoverflow.tsv in order (Xu et al. 2015); checked against the data:
# each tag is most frequent in the texts of its own label
TAGS = ("wordpress oracle svn apache excel matlab visual-studio cocoa osx bash spring hibernate "
        "scala sharepoint ajax qt drupal linq haskell magento").split()


def tag_found(tag: str, terms: list[str]) -> tuple[bool, bool]:
    """(exact: the tag is a top term; contained: the tag is a top term or whole words of one).
    A hyphenated tag matches its words ('visual-studio' ~ 'visual studio')."""
    words = tag.replace("-", " ")
    exact = words in terms or tag in terms
    contained = exact or any(f" {words} " in f" {t} " for t in terms)
    return exact, contained


def evaluate(labels: np.ndarray, pred: np.ndarray, details: dict[int, dict]) -> list[dict]:
    rows = []
    for i, tag in enumerate(TAGS, start=1):
        sel = (labels == str(i)) & (pred >= 0)
        if not sel.any():
            rows.append({"class": i, "tag": tag, "narrative_id": None, "exact": False,
                         "found": False, "top_terms": []})
            continue
        ids, counts = np.unique(pred[sel], return_counts=True)
        n = int(ids[np.argmax(counts)])
        d = details[n]
        exact, found = tag_found(tag, d["top_terms"])
        rows.append({"class": i, "tag": tag, "narrative_id": n,
                     "class_share_in_narrative": round(float(counts.max() / (labels == str(i))
                                                             .sum()), 3),
                     "narrative_purity": round(float(counts.max() / (pred == n).sum()), 3),
                     "exact": exact, "found": found, "label": d["label"],
                     "top_terms": d["top_terms"]})
    return rows


def bench() -> dict:

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import LOCKSTEP, OUT, SHARED, machine, tsv_to_corpus

    tsv = SHARED / "clustering" / "stackoverflow.tsv"
    if not tsv.exists():
        return {"name": "summaries", "machine": machine(), "note": f"{tsv} not found",
                "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": ".venv/bin/python benchmarks/run.py summaries", "rows": []}
    corpus = OUT / "corpora" / "stackoverflow"
    labels = tsv_to_corpus(tsv, corpus)
    out = OUT / "runs" / "stackoverflow-summaries"
    cache = os.environ.get("LOCKSTEP_BENCH_CACHE", str(ROOT / ".cache" / "embeddings"))
    cmd = LOCKSTEP + ["-q", "cluster", str(corpus), "--out", str(out),
                      "--set", f"embed.cache_dir={cache}"]
    if os.environ.get("LOCKSTEP_BENCH_REUSE") == "1" and (out / "manifest.json").exists():
        print(f"reusing the finished run in {out} (LOCKSTEP_BENCH_REUSE=1)", file=sys.stderr)
    else:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    pred = pd.read_parquet(out / "assignments.parquet")["narrative_id"].to_numpy()

    # the same summaries again in this process, model load timed apart
    from pipeline import config, embed, narratives

    cfg = config.load(out / "config.toml", [f"embed.cache_dir={cache}"])
    posts = pd.read_parquet(out / "posts.parquet")
    vectors = embed.run(posts["text"].tolist(), cfg.embed)[0]
    t0 = time.perf_counter()
    narratives.english(cfg.summarise.spacy_model)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = narratives.run(posts, pred, vectors, cfg.summarise, cfg.run.seed)
    warm_s = time.perf_counter() - t0
    details = {int(d["narrative_id"]): d for d in summary.details}
    classes = evaluate(labels, pred, details)
    n = len(posts)
    clustered = pred >= 0
    distinct = len({narratives.text_key(t) for t in posts["text"][clustered]})
    stage_s = manifest["stages"]["summarise"]["seconds"]
    row = {
        "set": "stackoverflow", "posts": n, "posts_in_narratives": int(clustered.sum()),
        "distinct_texts_analysed": distinct, "narratives": len(details),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "tags_in_top_terms": sum(r["found"] for r in classes),
        "tags_exact_top_term": sum(r["exact"] for r in classes),
        "summarise_stage_seconds": stage_s,
        "summarise_stage_seconds_per_10k_posts": round(stage_s / n * 10_000, 1),
        "spacy_load_seconds": round(load_s, 1),
        "summaries_seconds_model_loaded": round(warm_s, 1),
        "summaries_seconds_per_10k_posts_model_loaded": round(warm_s / n * 10_000, 1),
        "classes": classes,
        "run_command": " ".join(shlex.quote(c) for c in cmd).replace(str(ROOT) + "/", ""),
    }
    return {"name": "summaries", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py summaries", "rows": [row]}


def render(res: dict) -> list[str]:
    lines = ["For each of StackOverflow's 20 classes (a tag), the narrative holding most of the "
             "class's posts: is the tag among its top terms (c-TF-IDF over spaCy lemmas and noun "
             "phrases; a hyphenated tag matches its words, and 'found' also counts a top phrase "
             "containing the tag)? Summary time is per 10k posts of the whole corpus (noise "
             "posts are not analysed).", ""]
    if res.get("note"):
        return lines + [f"Not run: {res['note']}", ""]
    for r in res["rows"]:
        lines += [f"Tags found in top terms: **{r['tags_in_top_terms']} of 20** "
                  f"({r['tags_exact_top_term']} as a term of their own). "
                  f"{r['posts']:,} posts, {r['posts_in_narratives']:,} in {r['narratives']} "
                  f"narratives, {r['distinct_texts_analysed']:,} distinct texts analysed. Load average "
                  f"at the end: {r.get('load_average_at_end')} (the machine was shared).", "",
                  "| summarise stage s (model load included) | per 10k posts | spaCy load s | "
                  "summaries s, model loaded | per 10k posts |", "|---|---|---|---|---|",
                  f"| {r['summarise_stage_seconds']} | "
                  f"{r['summarise_stage_seconds_per_10k_posts']} | {r['spacy_load_seconds']} | "
                  f"{r['summaries_seconds_model_loaded']} | "
                  f"{r['summaries_seconds_per_10k_posts_model_loaded']} |", "",
                  "| class | tag | narrative | class share | purity | found | label | top terms |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in r["classes"]:
            lines.append(f"| {c['class']} | {c['tag']} | {c['narrative_id']} | "
                         f"{c.get('class_share_in_narrative', '')} | "
                         f"{c.get('narrative_purity', '')} | "
                         f"{'yes' if c['found'] else 'no'} | {c.get('label', '')} | "
                         f"{', '.join(c['top_terms'])} |")
        lines += ["", f"Run: `{r['run_command']}`", ""]
        if r.get("before"):
            lines += [f"Before: {r['before']}", ""]
    return lines
