"""Peak memory of `lockstep cluster` up to the end of the embed stage, on a finished ingest.

    .venv/bin/python benchmarks/run.py embed_memory --sizes 1000000

For each size, the ingest checkpoint of a fast-tier scale run (benchmarks/out/scale/runs/
fast-N, made by `run.py scale_fast`: posts.parquet, accounts.parquet, rejects.csv and
.lockstep/ingest.json) is copied into benchmarks/out/embed_memory/fast-N, and the CLI runs there
under `/usr/bin/time -v` through benchmarks/stage_stop.py, which stops the process when the
reduce stage starts: ingest is resumed from its checkpoint, embed runs with a new empty
embedding cache (so every distinct text goes through the model) and writes
.lockstep/vectors.npy. The figures are the process's peak resident memory (ru_maxrss, the same
as `time -v`'s "Maximum resident set size"), the embed stage's seconds, and the sha256 of the
vectors file, to compare with another commit's. Rows measured with other commits are kept, with
the commit named; the machine is shared, so the load average is recorded beside every time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
RESULTS = ROOT / "benchmarks" / "results" / "embed_memory.json"
INGEST = ["posts.parquet", "accounts.parquet", "rejects.csv", ".lockstep/ingest.json"]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(n_posts: int) -> dict:
    source = OUT / "scale" / "runs" / f"fast-{n_posts}"
    corpus = OUT / "scale" / "corpora" / f"sim-{n_posts}"
    run_dir = OUT / "embed_memory" / f"fast-{n_posts}"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / ".lockstep").mkdir(parents=True)
    for name in INGEST:
        if (source / name).exists():
            shutil.copy2(source / name, run_dir / name)
    cache = tempfile.mkdtemp(prefix="lockstep-bench-cache-")
    cmd = ["/usr/bin/time", "-v", sys.executable, "benchmarks/stage_stop.py", "reduce", "-q",
           "cluster", str(corpus), "--out", str(run_dir), "--set", "embed.tier=fast",
           "--set", f"embed.cache_dir={cache}"]
    load_before = load()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    starts = json.loads(proc.stdout.split("stage starts (s): ")[1].splitlines()[0])
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
    record = json.loads((run_dir / ".lockstep" / "embed.json").read_text())["info"]
    digest = subprocess.run(["sha256sum", str(run_dir / ".lockstep" / "vectors.npy")],
                            capture_output=True, text=True, check=True).stdout.split()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    shown = (" ".join(cmd).replace(sys.executable, ".venv/bin/python")
             .replace(cache, "<a new empty folder>"))
    return {"size": n_posts, "commit": commit,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "peak_rss_mb": round(peak_kb / 1024),
            "embed_seconds": round(starts["reduce"] - starts["embed"], 1),
            "distinct_texts": record["n_unique"], "vectors_sha256": digest,
            "load_before": load_before, "load_after": load(),
            "command": shown.replace(str(ROOT) + "/", "")}


def bench(sizes: list[int] | None = None) -> dict:
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    rows = old["rows"] + [measure(n) for n in sizes or [1_000_000]]
    return {"name": "embed_memory", "kind": "embed_memory", "measured_at": rows[-1]["measured_at"],
            "command": ".venv/bin/python benchmarks/run.py embed_memory --sizes N",
            **{k: v for k, v in old.items() if k == "setup"}, "rows": rows}


def render(res: dict) -> list[str]:
    lines = ["Peak memory of `lockstep cluster` (fast tier) through the embed stage, on a "
             "finished ingest, fresh embedding cache (benchmarks/embed_memory.py): the whole "
             "process's maximum resident set size, and the seconds and sha256 of the vectors.",
             "", "| posts | commit | peak RSS MB | embed s | process CPU s | load | vectors sha256 "
             "| note |", "|---:|---|---:|---:|---:|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['size']:,} | {r['commit']} | {r['peak_rss_mb']:,} | "
                     f"{r.get('embed_seconds', '')} | {r.get('process_cpu_seconds', '')} | "
                     f"{r.get('load_before', '')} -> "
                     f"{r.get('load_after', '')} | {r['vectors_sha256'][:12]} | "
                     f"{r.get('note', '')} |")
    lines += ["", "Commands:", ""] + sorted({f"    {r['command']}" for r in res["rows"]})
    return lines
