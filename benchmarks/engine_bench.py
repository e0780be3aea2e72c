"""The Dask engine on a LocalCluster against the local engine: wall time and peak memory of
`lockstep cluster` on the same simulated corpus, each with a cold embedding cache, and whether
the outputs are byte-identical.

    .venv/bin/python benchmarks/run.py engine

Each run is a fresh process; numba's cache is warmed first. Peak RSS is the client's (from the
manifest) and the largest single process of the run (client or worker, from the kernel's
accounting of finished children). On one machine a LocalCluster buys no speed for the fits,
which stay on the client; it shows the overhead of shipping the partitioned work.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("assignments.parquet", "narratives.csv", "escalations.csv", "coordination_pairs.parquet")


def bench(n_posts: int = 3000, seed: int = 17) -> dict:
    from datetime import datetime, timezone

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline import simulate
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="lockstep-engine-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "NUMBA_CACHE_DIR": str(work / "numba")}
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts)),
                          work / "corpus")
    base = [sys.executable, "-m", "pipeline.cli", "-q", "cluster", str(work / "corpus")]
    subprocess.run(base + ["--out", str(work / "warmup"), "--set",
                           f"embed.cache_dir={work / 'warm-cache'}"], check=True, env=env,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    rows = []
    for label, extra in (("local", []),
                         ("dask LocalCluster, 2 workers", ["--engine", "dask", "--set",
                                                           "engine.n_workers=2"])):
        out = work / label.split()[0]
        cmd = base + ["--out", str(out), "--set", f"embed.cache_dir={work / (out.name + '-cache')}",
                      *extra]
        # the largest finished child so far, so this run's own peak can be told apart
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads((out / "manifest.json").read_text())
        rows.append({"engine": label, "posts": manifest["counts"]["posts"],
                     "wall_seconds": round(wall, 1),
                     "client_peak_rss_mb": manifest["peak_rss_mb"],
                     "largest_process_peak_rss_mb": round(after / 1024, 1) if after > before
                     else None,
                     "stage_seconds": {k: v["seconds"] for k, v in manifest["stages"].items()},
                     "command": " ".join(cmd[1:]).replace(str(work), "<tmp>")})
    identical = {name: (work / "local" / name).read_bytes() == (work / "dask" / name).read_bytes()
                 for name in COMPARED}
    shutil.rmtree(work, ignore_errors=True)
    return {"name": "engine", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py engine",
            "corpus": f"pipeline.simulate seed={seed} n_posts={n_posts}",
            "rows": rows, "identical_outputs": identical}


if __name__ == "__main__":
    print(json.dumps(bench(*(int(a) for a in sys.argv[1:])), indent=2))
