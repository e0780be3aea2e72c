"""Lockstep benchmarks. `make bench` runs them all and rewrites benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py [NAME ...] [--sizes N ...]

NAME is one of BENCHES below (default: all but BY_NAME_ONLY). How long each takes on the
2-core shared machine is in benchmarks/README.md.

Each benchmark stores its figures with the exact command in benchmarks/results/<name>.json;
RESULTS.md is rendered from those files, so a partial rerun keeps the other sections. Runs use
a fresh embedding cache, so embedding speeds are cold-cache speeds. The machine is shared and
noisy: compare figures as ratios measured in the same run, never against a fixed number.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

ROOT = Path(__file__).resolve().parent.parent
# the benchmark modules beside this file import one another by plain name
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = Path(os.environ.get("LOCKSTEP_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "benchmarks" / "out"
LOCKSTEP = [str(ROOT / ".venv" / "bin" / "lockstep")]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu_kind()}


def cpu_kind() -> str:
    """The CPU's model name and its widest vector instructions, from /proc/cpuinfo ("" where
    there is none): int8 ONNX runs several times faster with AVX-512 VNNI than with AVX2."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))
    vector = next((f for f in ("avx512_vnni", "avx512f", "avx2") if f in flags), "")
    return f"{name}, {vector}".strip(", ")


def tsv_to_corpus(tsv: Path, folder: Path) -> np.ndarray:
    """A labelled `label<TAB>text` set as a Lockstep corpus; returns the labels in row order."""
    folder.mkdir(parents=True, exist_ok=True)
    labels, rows = [], []
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    # accounts and times are random (seeded), so no two accounts are in lockstep by construction
    rng = np.random.default_rng(0)
    with open(tsv, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            label, _, text = line.rstrip("\n").partition("\t")
            labels.append(label)
            rows.append({"post_id": f"r{i:06d}", "account_id": f"a{rng.integers(0, 997):04d}",
                         "created_at": (base + timedelta(seconds=int(rng.integers(0, 30 * 86400)))
                                        ).isoformat(), "text": text})
    with open(folder / "posts.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return np.asarray(labels)


def run_cluster(corpus: Path, out: Path, sets: list[str],
                cache: Path | None = None, flags: list[str] = ()) -> tuple[dict, float, list[str]]:
    cache = cache or tempfile.mkdtemp(prefix="lockstep-bench-cache-")
    cmd = LOCKSTEP + ["-q", "cluster", str(corpus), "--out", str(out),
                      "--set", f"embed.cache_dir={cache}"] + [a for s in sets for a in ("--set", s)]
    cmd += list(flags)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return json.loads((out / "manifest.json").read_text()), wall, cmd


def bench_clustering(sets_filter: list[str] | None = None) -> dict:
    """NMI of narrative_id against the labels of the shared short-text clustering sets."""
    names = sets_filter or ["stackoverflow", "searchsnippets"]
    rows = []
    for name in names:
        tsv = SHARED / "clustering" / f"{name}.tsv"
        if not tsv.exists():
            print(f"skip {name}: {tsv} not found", file=sys.stderr)
            continue
        corpus = OUT / "corpora" / name
        labels = tsv_to_corpus(tsv, corpus)
        manifest, wall, cmd = run_cluster(corpus, OUT / "runs" / name, [])
        assign = pd.read_parquet(OUT / "runs" / name / "assignments.parquet")
        pred = assign["narrative_id"].to_numpy()
        clustered = pred >= 0
        rows.append({
            "set": name,
            "posts": int(len(pred)),
            "classes": int(len(set(labels))),
            "narratives": int(manifest["counts"]["narratives"]),
            "noise_share": round(float((~clustered).mean()), 3),
            "nmi": round(float(normalized_mutual_info_score(labels, pred)), 4),
            "nmi_clustered_only": round(float(normalized_mutual_info_score(
                labels[clustered], pred[clustered])), 4) if clustered.any() else None,
            "ari": round(float(adjusted_rand_score(labels, pred)), 4),
            "wall_seconds": round(wall, 1),
            "peak_rss_mb": manifest["peak_rss_mb"],
            "stages": {k: {"seconds": v["seconds"], "posts_per_second": v["posts_per_second"],
                           "peak_rss_mb": v["peak_rss_mb"]}
                       for k, v in manifest["stages"].items()},
            "command": " ".join(shlex.quote(c) for c in cmd).replace(str(ROOT) + "/", "")
                       .replace(cmd[cmd.index("--set") + 1], "embed.cache_dir=<a new empty folder>"),
        })
    return {"name": "clustering", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py clustering", "rows": rows}


def bench_coordination_quality() -> dict:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_coordination.py")],
                   check=True)
    return json.loads((RESULTS / "coordination_quality.json").read_text())


def _module_bench(module: str):
    def bench() -> dict:
        return __import__(module).bench()

    return bench


def bench_multilingual() -> dict:
    from multilingual import bench

    return {**bench(), "machine": machine()}


def bench_scale(sizes: list[int] | None = None) -> dict:
    from scale_bench import bench

    return bench("quality", sizes)


def bench_scale_fast(sizes: list[int] | None = None) -> dict:
    from scale_bench import bench

    return bench("fast", sizes)


def bench_bertopic(sizes: list[int] | None = None) -> dict:
    from bertopic_bench import bench

    return bench(sizes)


def bench_engine(sizes: list[int] | None = None) -> dict:
    from engine_bench import bench

    return bench(*(sizes or [])[:1])


def bench_sample_fit(sizes: list[int] | None = None) -> dict:
    from sample_fit import bench

    return bench(sizes)


def bench_embed_memory(sizes: list[int] | None = None) -> dict:
    from embed_memory import bench

    return {**bench(sizes), "machine": machine()}


def bench_tiers() -> dict:
    from tiers_bench import bench

    def save_partial(res: dict) -> None:  # a long run killed midway keeps what it measured
        (RESULTS / "tiers.json").write_text(json.dumps(dict(res, partial=True), indent=2) + "\n")

    return bench(save_partial)


BENCHES = {"clustering": bench_clustering, "multilingual": bench_multilingual,
           "coortweet": _module_bench("coortweet_bench"),
           "summaries": _module_bench("summaries_bench"),
           "coordination_cost": _module_bench("coordination_cost"),
           "coordination_quality": bench_coordination_quality,
           "scale": bench_scale, "scale_fast": bench_scale_fast, "bertopic": bench_bertopic,
           "numba_cache": _module_bench("numba_cache"),
           "incremental": _module_bench("incremental"), "engine": bench_engine,
           "tiers": bench_tiers, "sample_fit": bench_sample_fit,
           "langid": _module_bench("langid_bench"), "place": _module_bench("place_bench"),
           "summarise_scale": _module_bench("summarise_scale"),
           "embed_memory": bench_embed_memory, "later_stages": _module_bench("later_stages"),
           "fast_training": _module_bench("fast_training")}
# Not run by a bare `run.py` (`make bench`): the fast tier is run by name once it exists, and
# BERTopic needs its own venv (`make bench-bertopic`); place, summarise_scale, embed_memory and
# later_stages need a finished 1M run (or scale_fast's runs).
BY_NAME_ONLY = {"scale_fast", "bertopic", "place", "summarise_scale", "embed_memory",
                "later_stages"}


def _module_render(module: str):
    def render(res: dict) -> list[str]:
        return __import__(module).render(res)

    return render


# result "kind" (or name) -> lines of Markdown; benchmarks in their own files render themselves
RENDERERS = {"scale": _module_render("scale_bench"), "bertopic": _module_render("bertopic_bench"),
             "summaries": _module_render("summaries_bench"),
             "sample_fit": _module_render("sample_fit"), "langid": _module_render("langid_bench"),
             "place": _module_render("place_bench"),
             "summarise_scale": _module_render("summarise_scale"),
             "embed_memory": _module_render("embed_memory"),
             "later_stages": _module_render("later_stages"),
             "fast_training": _module_render("fast_training")}


def render() -> str:
    lines = ["# Benchmark results", "",
             "Written by `make bench` (`.venv/bin/python benchmarks/run.py`). Each section names "
             "the command that produced it. The machine is shared and noisy (2 cores): compare "
             "figures measured in the same run as ratios.", ""]
    for path in sorted(RESULTS.glob("*.json")):
        res = json.loads(path.read_text())
        lines += [f"## {res['name']}", "",
                  f"Measured {res['measured_at']} on {res['machine']['cpus']} CPUs"
                  + (f" ({res['machine']['cpu']})" if res["machine"].get("cpu") else "")
                  + f", Python {res['machine']['python']}. Command: `{res['command']}`", ""]
        if res.get("kind", res["name"]) in RENDERERS:
            lines += RENDERERS[res.get("kind", res["name"])](res)
        elif res["name"] == "clustering":
            lines += ["NMI of `narrative_id` (noise counted as its own cluster, -1) against the "
                      "set's labels; cold embedding cache; default config.", "",
                      "| set | posts | classes | narratives | noise | NMI | NMI (clustered "
                      "only) | ARI | wall s | peak RSS MB |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                lines.append(f"| {r['set']} | {r['posts']:,} | {r['classes']} | {r['narratives']}"
                             f" | {r['noise_share']:.1%} | {r['nmi']:.3f} | "
                             f"{r['nmi_clustered_only']:.3f} | {r['ari']:.3f} | "
                             f"{r['wall_seconds']} | {r['peak_rss_mb']} |")
            lines += ["", "Posts per second and peak memory by stage:", "",
                      "| set | stage | seconds | posts/s | peak RSS MB |", "|---|---|---|---|---|"]
            for r in res["rows"]:
                for stage, s in r["stages"].items():
                    pps = f"{s['posts_per_second']:,.0f}" if s["posts_per_second"] else ""
                    lines.append(f"| {r['set']} | {stage} | {s['seconds']} | {pps} | "
                                 f"{s['peak_rss_mb']} |")
            lines += ["", "Per-set commands:", ""]
            lines += [f"- {r['set']}: `{r['command']}`" for r in res["rows"]]
        elif res["name"] == "coordination_quality":
            lines += ["Account-level precision and recall of the escalation list against the "
                      "planted networks, default config, whole pipeline (real clustering). Goal: "
                      "precision >= 0.95 and recall >= 0.90 on every corpus, no burst, fan or "
                      "hyperactive-page account escalated.", "",
                      "| corpus | simulation | posts | planted | escalated | networks found | "
                      "precision | recall | FP hyperactive | FP fan | FP burst | FP other organic "
                      "| coordination s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                fp = r["false_positives"]
                sim = ", ".join(f"{k}={v}" for k, v in r["simulation"].items())
                lines.append(f"| {r['corpus']} | {sim} | {r['posts']:,} | {r['planted']} | "
                             f"{r['escalated']} | {r['networks_found']} | {r['precision']} | "
                             f"{r['recall']} | "
                             f"{fp['hyperactive']} | {fp['fan']} | {fp['burst']} | "
                             f"{fp['organic']} | {r['coordination_seconds']} |")
        elif res["name"] == "coordination_cost":
            lines += ["Coordination and escalation alone (the planted narratives stand in for "
                      "the clustering) on simulated corpora; each size in its own process.", "",
                      "| posts | accounts | events | synchronised pairs | pairs tested | "
                      "coordination s | escalate s | posts/s | peak RSS MB | precision | recall |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                lines.append(f"| {r['posts']:,} | {r['accounts']:,} | {r['events']:,} | "
                             f"{r['cooccurrences']:,} | {r['pairs_tested']:,} | "
                             f"{r['coordination_seconds']} | {r['escalate_seconds']} | "
                             f"{r['posts_per_second']:,.0f} | {r['peak_rss_mb']:,.0f} | "
                             f"{r['precision']} | {r['recall']} |")
            if res.get("previous"):
                prev = res["previous"]
                lines += ["", f"Before: {prev['note']} (measured {prev['measured_at']}):", "",
                          "| posts | synchronised pairs | coordination s | escalate s | posts/s | "
                          "peak RSS MB |", "|---|---|---|---|---|---|"]
                for r in prev["rows"]:
                    lines.append(f"| {r['posts']:,} | {r['cooccurrences']:,} | "
                                 f"{r['coordination_seconds']} | {r['escalate_seconds']} | "
                                 f"{r['posts_per_second']:,.0f} | {r['peak_rss_mb']:,.0f} |")
            if res.get("note"):
                lines += ["", res["note"]]
        elif res["name"] == "numba_cache":
            lines += ["Two fresh `lockstep cluster` processes on `corpora/sample` with a warm "
                      "embedding cache: the first with an empty NUMBA_CACHE_DIR, the second with "
                      "the numba cache the first left behind.", "",
                      "| run | reduce s | cluster s | wall s | numba index files | load avg "
                      "before -> after |", "|---|---|---|---|---|---|"]
            for r in res["rows"]:
                load = (f"{r['load_average_before'][0]} -> {r['load_average_after'][0]}"
                        if "load_average_before" in r else "")
                lines.append(f"| {r['run']} | {r['reduce_seconds']} | {r['cluster_seconds']} | "
                             f"{r['wall_seconds']} | {r['n_cache_files']} | {load} |")
            if "pure_compute" in res:
                pure = res["pure_compute"]
                lines += ["", f"Pure compute (UMAP fitted twice in one process on the same "
                              f"vectors, warm cache): {pure['first_fit_seconds']} s then "
                              f"{pure['second_fit_seconds']} s (load "
                              f"{pure['load_average_before'][0]} -> "
                              f"{pure['load_average_after'][0]}). Warm reduce / pure compute: "
                              f"{res['warm_over_pure']}; cold: {res['cold_over_pure']}. Cold and "
                              "warm coordinates byte-identical: "
                              f"{'yes' if res['identical_coords'] else 'NO'}."]
        elif res["name"] == "incremental" and "ratio_pipeline" in res:
            lines += incremental_lines(res)
            for other in res.get("other_sizes", []):
                lines += ["", f"The same at a larger corpus ({other['measured_at']}):", ""]
                lines += incremental_lines(other)
        elif res["name"] == "incremental":
            lines += [f"Corpus: {res['corpus']}. Real quality-tier model, warm numba cache; the "
                      "second run shares the first run's embedding and analysis caches and "
                      "refits UMAP and HDBSCAN on the whole corpus. Wall-time ratio, second / "
                      f"first: {res['ratio_wall']} (goal <= 0.2).", "",
                      "| run | posts | embedded | cached | wall s | ingest s | embed s | reduce s |"
                      " cluster s | summarise s | coordination s | escalate s | peak RSS MB | "
                      "load avg before -> after |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                st = r["stage_seconds"]
                load = (f"{r['load_average_before'][0]} -> {r['load_average_after'][0]}"
                        if "load_average_before" in r else "")
                lines.append(f"| {r['run']} | {r['posts']:,} | {r['embedded']:,} | "
                             f"{r['cached']:,} | {r['wall_seconds']} | " + " | ".join(
                                 str(st.get(k, "")) for k in ("ingest", "embed", "reduce",
                                                              "cluster", "summarise",
                                                              "coordination", "escalate"))
                             + f" | {r['peak_rss_mb']} | {load} |")
            same = res.get("identical_with_and_without_analysis_cache")
            if same:
                lines += ["", "Outputs of the second run against the same run without the "
                              "analysis cache: " + ", ".join(
                                  f"{k} {'identical' if v else 'DIFFERENT'}"
                                  for k, v in same.items()) + "."]
        elif res["name"] == "engine":
            same = ", ".join(f"{k} {'identical' if v else 'DIFFERENT'}"
                             for k, v in res["identical_outputs"].items())
            lines += [f"Corpus: {res['corpus']}; each run with a cold embedding cache and a "
                      f"warm numba cache. Outputs: {same}.", "",
                      "| engine | posts | wall s | load avg after (1/5/15 min) | client peak "
                      "RSS MB | worker peak RSS MB | ingest s | embed s | reduce s | "
                      "coordination s |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                st = r["stage_seconds"]
                load = " / ".join(str(x) for x in r.get("load_average_after", [])) or "-"
                workers = ", ".join(str(x) for x in r.get("worker_peak_rss_mb") or []) or "-"
                lines.append(f"| {r['engine']} | {r['posts']:,} | {r['wall_seconds']} | {load} | "
                             f"{r['client_peak_rss_mb']} | {workers} | {st['ingest']} | "
                             f"{st['embed']} | {st['reduce']} | {st['coordination']} |")
        elif res["name"] == "multilingual":
            lines += ["Translation triples (`tests/data/translation_triples.jsonl`: 120 posts "
                      "written for the project, each in English, Urdu and Hindi, 8 narratives) as "
                      "one 360-post corpus through the whole pipeline (ingest, language "
                      "identification, embed, UMAP, HDBSCAN), default config except the tier and "
                      "the seed. A triple agrees when its three posts share one narrative_id that "
                      "is not noise. Goal: >= 90% with the multilingual tier.", "",
                      "\"Placed alike\" counts triples whose three posts got the same label, "
                      "noise included; \"split\" counts triples whose posts landed in two or "
                      "more narratives. NMI and ARI compare the narratives with the 8 true ones "
                      "over the posts not left as noise (agreement alone is met by one narrative "
                      "holding every post).", "",
                      "| tier asked | tier run | seed | triples agreeing | placed alike | split | "
                      "en-ur | en-hi | ur-hi | narratives | noise | NMI | ARI |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["triples"]:
                pa_ = r["pair_agreement"]
                lines.append(f"| {r['tier']} | {r['ran']} | {r['seed']} | {r['agree']}/"
                             f"{r['triples']} ({r['agreement']:.1%}) | {r['consistent']:.1%} | "
                             f"{r['split']} | {pa_['en-ur']:.1%} | "
                             f"{pa_['en-hi']:.1%} | {pa_['ur-hi']:.1%} | {r['narratives']} | "
                             f"{r['noise_share']:.1%} | {r.get('nmi', '')} | {r.get('ari', '')} |")
            auto = [r for r in res["triples"] if r["tier"] == "auto"]
            if auto:
                lines += ["", f"`embed.tier = \"auto\"` chose {auto[0]['ran']}: "
                          f"{auto[0]['reason']}"]
            ev = res["langid_eval"]
            lines += ["", "Language identification (`pipeline/lang.py`) on the held-out split of "
                      "`pipeline/data/langid/` (30 sentences each of English, Roman Urdu, "
                      "Hinglish; never trained on):", "",
                      f"- accuracy over the three classes: {ev['accuracy']:.1%} "
                      f"(English {ev['per_class']['en']:.1%}, Roman Urdu "
                      f"{ev['per_class']['ur-Latn']:.1%}, Hinglish "
                      f"{ev['per_class']['hi-Latn']:.1%}); confusion `{json.dumps(ev['confusion'])}`",
                      f"- English vs not English: {ev['english_vs_not']:.1%} (Roman Urdu or "
                      f"Hinglish called English: {ev['roman_south_asian_called_english']}; "
                      f"English called something else: {ev['english_called_other']})",
                      f"- Roman Urdu and Hinglish merged into one class: "
                      f"{ev['accuracy_merged']:.1%}",
                      f"- training split (resubstitution): {res['langid_train']['accuracy']:.1%}",
                      f"- the simulator's sentence templates (written separately, per template "
                      f"language -> detected): `{json.dumps(res['langid_simulator_templates'])}`",
                      "", "Embedding speed on the same 360 texts, cold (no cache), every model "
                      "loaded before timing, same process, rounds over the tiers in turn; the "
                      "machine is shared, so the load average before each timing is given "
                      f"(bench start {res.get('load_average_at_start')}, end "
                      f"{res.get('load_average_at_end')}):", "",
                      "| tier | round | model | texts | seconds | posts/s | dim | load average |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in res["speed"]:
                lines.append(f"| {r['tier']} | {r.get('round', 1)} | {r['model_id']} | "
                             f"{r['texts']} | {r['seconds']} | {r['posts_per_second']:,.1f} | "
                             f"{r['dim']} | {r.get('load_average_before', '')} |")
        elif res["name"] == "tiers":
            lines += render_tiers(res)
        elif res["name"] == "coortweet":
            p = res["params"]
            lines += [f"CooRTweet's published method (`lockstep coordination --method coortweet "
                      f"--time-window {p['time_window']} --min-participation "
                      f"{p['min_participation']} --edge-weight {p['edge_weight']}`) on "
                      "`../shared/data/coordination/german_elections.csv`, one object type at "
                      "a time, each in its own process.", ""]
            if res.get("note"):
                lines += [f"Not run: {res['note']}", ""]
            lines += ["| object | shares | objects | co-share pairs | edges | edges above "
                      "threshold | accounts | seconds | peak RSS MB |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                lines.append(" | ".join(["", str(r.get("object_type")), f"{r.get('n_shares', 0):,}",
                                         f"{r.get('n_objects', 0):,}", f"{r.get('n_pairs', 0):,}",
                                         f"{r.get('edges', 0):,}",
                                         f"{r.get('edges_above_threshold', 0):,}",
                                         f"{r.get('accounts', 0):,}", str(r.get("seconds")),
                                         str(r.get("peak_rss_mb")), ""]).strip())
        lines.append("")
    return "\n".join(lines)


def render_tiers(res: dict) -> list[str]:
    lines = []
    if res.get("partial"):
        lines += ["**Partial**: not every row below has been measured yet.", ""]
    if res.get("note"):
        lines += [res["note"], ""]
    lines += tiers_goal_table(res)
    cmd = res.get("speed_command", res["command"])
    lines += [f"Embedding tiers (`embed.tier`). Speed (`{cmd}`, measured "
              f"{res.get('speed_measured_at', res['measured_at'])}): {res['speed_per_set']} random "
              "posts from each of the four shared clustering sets through `pipeline.embed.run` "
              "(the whole path users get: normalisation, dedup, hashing, length-sorted batches) "
              "with the cache off (cold), each tier in a fresh process, one after another; model "
              "loading timed apart. Load average is the 1-minute figure before and after the row. "
              "`quality-s3` is the quality tier's int8 model run as session 3 ran it (fixed "
              "batches of 64 texts in the order `run` sends, by characters; ONNX Runtime threads "
              "spinning; `tiers_bench.fixed_batch_onnx`); `quality` runs batches in the same order "
              "with threads that do not spin (64 texts until session 10, 16 since); "
              "`quality-sorted` batches by token count (at most 10% padding; at most 64 texts "
              "until session 10, 16 since). Where a row "
              "has several passes, each pass is cold (a new embedder, loaded and warmed up on "
              "another text first) and embed s and CPU s are "
              "the passes' medians (fastest and slowest embed s in brackets).",
              "", "| tier | threads | model id | posts | posts/s | posts per CPU s | load s | "
              "passes | embed s | CPU s | peak RSS MB | load average |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["speed"]:
        load = (f"{r['load_before'][0]} -> {r['load_after'][0]}" if "load_before" in r else "")
        spread = (" ({} - {})".format(*r["seconds_min_max"]) if "seconds_min_max" in r else "")
        lines.append(f"| {r['tier']} | {r['threads']} | `{r['model_id']}` | {r['posts']:,} | "
                     f"{r['posts_per_second']:,.1f} | {r['posts_per_cpu_second']:,.1f} | "
                     f"{r['load_seconds']} | {r.get('passes', 1)} | {r['seconds']}{spread} | "
                     f"{r['cpu_seconds']} | {r['peak_rss_mb']} | {load} |")
    if res.get("ratios"):
        lines += ["", "Ratios (same run, default threads), wall-clock posts/s: " + "; ".join(
            f"{k} = {v}x" for k, v in res["ratios"].items()) + "; posts per CPU second: "
            + "; ".join(f"{k} = {v}x" for k, v in res["cpu_ratios"].items())]
    if res.get("int8_vs_fp32_cosine"):
        c = res["int8_vs_fp32_cosine"]
        lines += ["", f"Cosine between int8 ONNX and torch fp32 vectors of the same speed texts: "
                      f"mean {c['mean']}, 1st percentile {c['p01']}, min {c['min']}"
                      + ("" if "int8_sorted_vs_fp32_cosine" not in res else
                         " (quality-sorted: mean {mean}, 1st percentile {p01}, min {min})".format(
                             **res["int8_sorted_vs_fp32_cosine"]))
                      + ("" if "quality_vs_s3_identical" not in res else
                         "; quality and quality-s3 vectors bit-identical: "
                         + str(res["quality_vs_s3_identical"]).lower()) + "."]
    lines += ["", "NMI with the real pipeline (`lockstep cluster --set embed.tier=TIER`, default "
              "config otherwise; noise counted as its own cluster), each row by "
              "`.venv/bin/python benchmarks/tiers_bench.py nmi SET TIER` or the full run "
              f"(`{res['command']}`); the row's exact `lockstep` command is in "
              "results/tiers.json. Vectors come from a persistent cache (`cached` / "
              "`embedded`); the wall seconds are not speed figures.", "",
              "| set | tier | posts | narratives | noise | NMI | ARI | cached | embedded | wall s "
              "| peak RSS MB | measured | load average |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["nmi"]:
        name = r["set"] + (f" (stratified subsample, seed 0, {r['subsample']:,} posts)"
                           if r.get("subsample") else "")
        load = (f"{r['load_before'][0]} -> {r['load_after'][0]}" if "load_before" in r else "")
        lines.append(f"| {name} | {r['tier']} | {r['posts']:,} | {r['narratives']} | "
                     f"{r['noise_share']:.1%} | {r['nmi']:.4f} | {r['ari']:.4f} | "
                     f"{r['embed_cached']:,} | {r['embed_embedded']:,} | {r['wall_seconds']} | "
                     f"{r['peak_rss_mb']} | {r.get('measured_at', '')[:16]} | "
                     f"{load} |")
    if res.get("nmi_delta"):
        lines += ["", "NMI differences: " + "; ".join(
            f"{k} = {v:+.4f}" for k, v in res["nmi_delta"].items())]
    lines += render_fast_variants(res.get("fast_variants", []))
    return lines


def render_fast_variants(variants: list[dict]) -> list[str]:
    """Static models measured for the fast tier and not adopted (rows as tiers_bench writes)."""
    lines = []
    for v in variants:
        lines += ["", f"### Fast-tier variant, not adopted: {v['title']}", "", v["what"], "",
                  f"Build parameters `{json.dumps(v['params'])}`, model id `{v['model_id']}`, "
                  f"distilled in {v['build_seconds']} s (load average {v['build_load']}).", "",
                  "| set | NMI variant | NMI fast tier (distilled, the default then) | "
                  "NMI quality | variant - quality | narratives | noise | wall s | measured | "
                  "load average |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in v["nmi"]:
            lines.append(f"| {r['set']} | {r['nmi']:.4f} | {r['default_fast_nmi']:.4f} | "
                         f"{r['quality_nmi']:.4f} | {r['nmi'] - r['quality_nmi']:+.4f} | "
                         f"{r['narratives']} | {r['noise_share']:.1%} | {r['wall_seconds']} | "
                         f"{r['measured_at'][:16]} | {r['load_before'][0]} -> "
                         f"{r['load_after'][0]} |")
        sp = v["speed"]
        lines += ["", f"Speed, same run, `{sp['command']}` then the same for `quality`: "
                  + "; ".join(f"{r['tier']} {r['posts_per_second']:,.1f} posts/s "
                              f"({r['posts_per_cpu_second']:,.1f} per CPU s, load "
                              f"{r['load_before'][0]})" for r in sp["rows"])
                  + f"; fast / quality = {sp['ratio']}x wall, {sp['cpu_ratio']}x per CPU second.",
                  "", "NMI commands: " + "; ".join(f"`{r['command']}`" for r in v["nmi"]),
                  "", v["verdict"]]
    return lines


def incremental_lines(res: dict) -> list[str]:
    """The incremental benchmark's text and table for one corpus size."""
    lines = [f"Corpus: {res['corpus']}. Real quality-tier model, warm numba cache, each "
             "run its own process. The update (`lockstep cluster PLUS10 --out RUN "
             "--update`, RUN a copy of the cold run) keeps the cold run's fit, embeds "
             "and places only the new posts and redoes summaries, coordination, "
             "escalation, exports and report on the whole corpus; the full refit is "
             "the same corpus without --update, run last, so every text is in the "
             "caches by then (it embeds and analyses nothing: a lower bound for a refit, "
             "not comparable with the update, which embeds and analyses the new texts). "
             + (f"Cold and update each run {res['repeats']} times (walls: cold "
                f"{', '.join(map(str, res['cold_wall_seconds']))} s; update "
                f"{', '.join(map(str, res['update_wall_seconds']))} s); the ratios are of "
                "their medians. " if res.get("repeats", 1) > 1 else "")
             + "Wall-time ratio, update / "
             f"cold: {res['ratio_wall']} (goal <= 0.2); pipeline seconds only (without "
             f"process start-up): {res['ratio_pipeline']}; full refit / cold: "
             f"{res['ratio_full_refit_wall']}. Earlier posts keeping their narrative "
             f"after the update: {res['earlier_posts_keeping_their_narrative']:.1%}.",
             "", "| run | posts | embedded | cached | wall s | start-up s | ingest s | "
             "embed s | reduce s | cluster s | summarise s | model s | coordination s | "
             "escalate s | peak RSS MB | load avg before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        st = r["stage_seconds"]
        lines.append(f"| {r['run']} | {r['posts']:,} | {r['embedded']:,} | "
                     f"{r['cached']:,} | {r['wall_seconds']} | {r['startup_seconds']} | "
                     + " | ".join(str(st.get(k, "")) for k in (
                         "ingest", "embed", "reduce", "cluster", "summarise", "model",
                         "coordination", "escalate"))
                     + f" | {r['peak_rss_mb']} | {r['load_average_before'][0]} -> "
                       f"{r['load_average_after'][0]} |")
    upd = next((r.get("update") or {} for r in res["rows"] if r["run"].startswith("update")),
               {})
    if upd.get("used"):
        lines += ["", f"The update: {upd['n_new']:,} new posts of {upd['n_posts']:,} "
                      f"({upd['new_share']:.1%}); {upd['new_placed_in_narratives']:,} "
                      f"placed in narratives, {upd['new_left_as_noise']:,} left as noise "
                      f"({upd['new_noise_share']:.1%}, against "
                      f"{upd['earlier_noise_share']:.1%} in the cold run); warnings: "
                      f"{len(upd['warnings'])}."]
    same = res.get("identical_with_and_without_analysis_cache")
    if same:
        lines += ["", "Outputs of the update against the same update without the "
                      "analysis cache: " + ", ".join(
                          f"{k} {'identical' if v else 'DIFFERENT'}"
                          for k, v in same.items()) + "."]
    return lines


def tiers_goal_table(res: dict) -> list[str]:
    """Issue 5's tier goals, each with its figure and whether it is met."""
    rows = []
    if res.get("ratios"):
        for key, goal in (("quality / quality-torch", 1.3), ("fast / quality", 50)):
            wall, cpu = res["ratios"][key], res["cpu_ratios"][key]
            rows.append((f"{key.split(' /')[0]} tier posts/s >= {goal}x "
                         f"{key.split('/ ')[1]}'s (same run)",
                         f"{wall}x wall ({cpu}x per CPU second)",
                         "met" if wall >= goal else "not met"))
    from tiers_bench import SETS

    by = {(r["set"], r["tier"]): r["nmi"] for r in res["nmi"]}
    sub = {r["set"]: r["subsample"] for r in res["nmi"] if r.get("subsample")}
    tolerances = (("quality", 0.01), ("fast", 0.05), ("quality-sorted", 0.01))  # issue 5
    for tier, tol in tolerances:
        for name in SETS:
            goal = (f"{tier} NMI at most {tol} below quality-torch's: {name}"
                    + (f" ({sub[name]:,}-post stratified subsample)" if name in sub else ""))
            if (name, tier) in by and (name, "quality-torch") in by:
                d = by[(name, tier)] - by[(name, "quality-torch")]
                above = f"; above by more than {tol}" if d > tol else ""
                rows.append((goal, f"{by[(name, tier)]:.4f} vs {by[(name, 'quality-torch')]:.4f} "
                             f"({d:+.4f}{above})", "met" if d >= -tol else "not met"))
            else:
                rows.append((goal, "not measured", "not met"))
    from tiers_bench import seed_summary

    seeds = seed_summary(res)
    for tier, tol in tolerances:
        for name in SETS:
            mine = seeds.get(f"{name}: {tier}", {}).get("compared")
            if not mine:
                continue
            d = seeds[f"{name}: {tier}"]["minus_quality_torch"]
            rows.append((f"{tier} NMI at most {tol} below quality-torch's: {name}, mean over "
                         f"seeds {', '.join(map(str, mine['seeds']))}",
                         f"{mine['mean']:.4f} (sd {mine['sd']:.4f}) vs "
                         f"{mine['quality_torch_mean']:.4f} (sd {mine['quality_torch_sd']:.4f}) "
                         f"({d:+.4f})", "met" if d >= -tol else "not met"))
    if not rows:
        return []
    return (["Issue 5 asks for NMI \"within\" 0.01 (quality) and 0.05 (fast) of quality-torch; "
             "read here as no more than that below it. A tier above quality-torch by more than "
             "that is marked met and says so: one clustering per set and tier, so differences "
             "of a few hundredths can be HDBSCAN's, not the vectors'.", "",
             "| goal (issue 5) | figure | met |", "|---|---|---|"]
            + [f"| {g} | {f} | {m} |" for g, f, m in rows] + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHES)}")
    parser.add_argument("--sizes", nargs="+", type=int, metavar="N",
                        help="corpus sizes in posts for the benchmarks that take sizes "
                             "(scale, scale_fast, bertopic; engine takes the first)")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing; rewrite RESULTS.md from results/*.json")
    args = parser.parse_args()
    if args.render_only:
        (ROOT / "benchmarks" / "RESULTS.md").write_text(render())
        print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'}")
        return
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.names or [n for n in BENCHES if n not in BY_NAME_ONLY]:
        takes_sizes = "sizes" in inspect.signature(BENCHES[name]).parameters
        res = BENCHES[name](sizes=args.sizes) if takes_sizes else BENCHES[name]()
        (RESULTS / f"{res.get('name', name)}.json").write_text(json.dumps(res, indent=2) + "\n")
    (ROOT / "benchmarks" / "RESULTS.md").write_text(render())
    print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
