"""The summarise stage alone on a finished run (ingest..cluster checkpoints done): seconds and
peak memory of `narratives.run` with the runner's inputs, and the summaries it makes.

    python benchmarks/summarise_scale.py RUN_DIR OUT.json [--set summarise.key=value ...]
    python benchmarks/summarise_scale.py --record BASE.json OTHER.json ...
    python benchmarks/summarise_scale.py --caps NOTE BASE.json OTHER.json ...
    .venv/bin/python benchmarks/run.py summarise_scale   (LOCKSTEP_SUMM_RUN=RUN_DIR)

--record writes results/summarise_scale.json from driver outputs: each one's seconds, peak
memory and command, and how far each OTHER's key terms, labels and entities are from BASE's.
--caps adds to it how far summaries made with smaller samples (OTHER, any files with the
narratives' details) are from BASE's, with NOTE saying how they were made: one section per
BASE file (a new one with the same BASE file name replaces the old).

RUN_DIR holds posts.parquet, assignments.parquet and .lockstep/vectors.npy (only read). The
posts and labels are read as the runner reads them, the vectors through DiskVectors, as the
runner does when cluster.fit_sample applies. OUT.json gets the timings, the peak resident set
(ru_maxrss: the whole process, before and after the stage) and each narrative's details, for
comparing two settings or two versions of the code on the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ROOT = Path(__file__).resolve().parent.parent


def compare(base: dict, other: dict) -> dict:
    """Per narrative: the share of base's top terms that other has too, same label or not,
    the share of base's entities (by text) other lists too."""
    a = {d["narrative_id"]: d for d in base["details"]}
    b = {d["narrative_id"]: d for d in other["details"]}
    common = sorted(set(a) & set(b))
    terms = [len(set(a[c]["top_terms"]) & set(b[c]["top_terms"])) / max(1, len(a[c]["top_terms"]))
             for c in common]
    ents = [len({e["text"] for e in a[c]["entities"]} & {e["text"] for e in b[c]["entities"]})
            / len(a[c]["entities"]) for c in common if a[c]["entities"]]
    top3 = [len(set(a[c]["top_terms"][:3]) & set(b[c]["top_terms"][:3]))
            / max(1, len(a[c]["top_terms"][:3])) for c in common]
    return {"n_narratives": len(common),
            "mean_top_terms_overlap": round(float(np.mean(terms)), 3) if terms else None,
            "min_top_terms_overlap": round(float(np.min(terms)), 3) if terms else None,
            "mean_top3_overlap": round(float(np.mean(top3)), 3) if top3 else None,
            "labels_same": sum(a[c]["label"] == b[c]["label"] for c in common),
            "mean_entities_overlap": round(float(np.mean(ents)), 3) if ents else None}


def record(paths: list[Path]) -> dict:
    runs = [json.loads(p.read_text()) for p in paths]
    rows = [{k: v for k, v in r.items() if k != "details"} for r in runs]
    for row, r in zip(rows[1:], runs[1:]):
        row["vs_first"] = compare(runs[0], r)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    return {"name": "summarise_scale", "kind": "summarise_scale", "rows": rows,
            "machine": machine(),
            "command": "python benchmarks/summarise_scale.py --record OUT.json (each row carries its own command)",
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def render(res: dict) -> list[str]:
    lines = ["`narratives.run` alone on a finished fast-tier run, one process each (vectors "
             "read from the checkpoint file); peak RSS is the whole process (ru_maxrss).", "",
             "| code | settings | posts | narratives | seconds | "
             "peak RSS MB | load avg | terms overlap vs first (mean / min) | top-3 overlap | "
             "labels same | entities overlap |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        v = r.get("vs_first") or {}
        lines.append(
            f"| {r.get('code', '')} | {' '.join(r['sets']) or 'defaults'} | {r['n_posts']:,} | "
            f"{r['n_narratives']} | {r['summarise_seconds']} | "
            f"{r['peak_rss_mb']} | {r['loadavg'][0]:.1f} | "
            f"{v.get('mean_top_terms_overlap', '')} / {v.get('min_top_terms_overlap', '')} | "
            f"{v.get('mean_top3_overlap', '')} | "
            f"{'' if not v else str(v['labels_same']) + '/' + str(v['n_narratives'])} | "
            f"{v.get('mean_entities_overlap', '')} |")
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in res["rows"]] + [""]
    lines += [f"- {n}" for n in res.get("notes", [])] + ([""] if res.get("notes") else [])
    caps = res.get("caps") or []
    for section in [caps] if isinstance(caps, dict) else caps:
        lines += [section["note"], "", "| summaries | vs | terms overlap (mean / min) | "
                  "top-3 overlap | labels same | entities overlap |", "|---|---|---|---|---|---|"]
        for r in section["rows"]:
            lines.append(f"| {r['file']} | {r['base']} | {r['mean_top_terms_overlap']} / "
                         f"{r['min_top_terms_overlap']} | {r['mean_top3_overlap']} | "
                         f"{r['labels_same']}/{r['n_narratives']} | "
                         f"{r['mean_entities_overlap']} |")
        lines.append("")
    return lines


def bench() -> dict:
    """The default settings and the earlier default (5,000 texts per narrative) on the run in
    LOCKSTEP_SUMM_RUN, each in its own process, then --record."""
    run_dir = Path(os.environ.get("LOCKSTEP_SUMM_RUN", ROOT / "benchmarks/out/fast-1000000"))
    outs = []
    for sets in ([], ["summarise.max_texts_for_terms=5000"]):
        out = ROOT / "benchmarks/out" / f"summarise-{len(outs)}.json"
        cmd = [sys.executable, __file__, str(run_dir), str(out), "--set",
               "summarise.cache_dir="] + [a for s in sets for a in ("--set", s)]
        subprocess.run(cmd, check=True)
        outs.append(out)
    return record(outs)


def main() -> None:
    if sys.argv[1:2] == ["--record"]:
        res = record([Path(p) for p in sys.argv[2:]])
        (ROOT / "benchmarks/results/summarise_scale.json").write_text(
            json.dumps(res, indent=2) + "\n")
        print("\n".join(render(res)))
        return
    if sys.argv[1:2] == ["--caps"]:
        note, base, *others = sys.argv[2:]
        path = ROOT / "benchmarks/results/summarise_scale.json"
        res = json.loads(path.read_text())
        first = json.loads(Path(base).read_text())
        section = {"note": note, "rows": [
            {"file": Path(o).name, "base": Path(base).name,
             **compare(first, json.loads(Path(o).read_text()))} for o in others]}
        caps = res.get("caps") or []
        caps = [caps] if isinstance(caps, dict) else caps
        # a section with the same base file is replaced; the others are kept
        res["caps"] = [c for c in caps if c["rows"][0]["base"] != Path(base).name] + [section]
        path.write_text(json.dumps(res, indent=2) + "\n")
        print("\n".join(render(res)))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    from pipeline import config, narratives
    from pipeline.diskvectors import DiskVectors

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pipeline.narratives").setLevel(logging.DEBUG)
    cfg = config.load(None, args.sets)
    t0 = time.perf_counter()
    posts = pd.read_parquet(args.run_dir / "posts.parquet")
    labels = pd.read_parquet(args.run_dir / "assignments.parquet")["narrative_id"].to_numpy(
        dtype=np.int64)
    vectors = DiskVectors(args.run_dir / ".lockstep" / "vectors.npy")
    load_s = time.perf_counter() - t0
    before = peak_mb()
    t0 = time.perf_counter()
    summary = narratives.run(posts, labels, vectors, cfg.summarise, cfg.run.seed)
    seconds = time.perf_counter() - t0
    res = {"run_dir": str(args.run_dir), "sets": args.sets, "n_posts": len(posts),
           "n_narratives": len(summary.table), "load_seconds": round(load_s, 1),
           "summarise_seconds": round(seconds, 1), "peak_rss_mb_before": round(before),
           "peak_rss_mb": round(peak_mb()), "loadavg": os.getloadavg(),
           "code": os.environ.get("LOCKSTEP_SUMM_CODE", "this branch"),
           "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
           "details": summary.details}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, default=str, ensure_ascii=False, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "details"}), file=sys.stderr)


if __name__ == "__main__":
    main()
