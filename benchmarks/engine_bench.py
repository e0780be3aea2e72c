"""The Dask engine on a LocalCluster against the local engine: wall time and peak memory of
`lockstep cluster` on the same simulated corpus, each with a cold embedding cache, and whether
the outputs are byte-identical.

    .venv/bin/python benchmarks/run.py engine

The corpus is split into four posts files, so ingest has partitions too. Each run is a fresh
process; numba's cache is warmed first (unless NUMBA_CACHE_DIR names a warm one). Peak RSS is
the client's and each worker's (both from the manifest). On one machine a LocalCluster buys no
speed for the fits, which stay on the client; it shows the overhead of shipping the partitioned
work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("posts.parquet", "rejects.csv", "assignments.parquet", "narratives.csv",
            "escalations.csv", "coordination_pairs.parquet", "networks.csv")
N_FILES = 4


def split_corpus(folder: Path, n_files: int = N_FILES) -> None:
    """posts.csv as ``n_files`` files of consecutive rows (the same posts, in the same order)."""
    import pandas as pd

    posts = pd.read_csv(folder / "posts.csv", dtype=str, keep_default_na=False)
    step = -(-len(posts) // n_files)
    for k in range(n_files):
        posts.iloc[k * step:(k + 1) * step].to_csv(folder / f"posts-{k + 1}.csv", index=False)
    (folder / "posts.csv").unlink()


def bench(n_posts: int = 3000, seed: int = 17) -> dict:
    from datetime import datetime, timezone

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline import simulate
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="lockstep-engine-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1",
           # a numba cache already warm (NUMBA_CACHE_DIR set by the caller) skips the warm-up run
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR") or str(work / "numba")}
    warm = bool(os.environ.get("NUMBA_CACHE_DIR"))
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts)),
                          work / "corpus")
    split_corpus(work / "corpus")
    base = [sys.executable, "-m", "pipeline.cli", "-q", "cluster", str(work / "corpus")]
    # numba's cache is warmed on a tenth of the corpus: the same code paths (UMAP's exact
    # neighbours below 4,096 posts), at a tenth of the embedding time
    if not warm:
        simulate.write_corpus(simulate.simulate(simulate.SimConfig(
            seed=seed, n_posts=max(300, n_posts // 10))), work / "warmup-corpus")
        subprocess.run([*base[:-1], str(work / "warmup-corpus"), "--out", str(work / "warmup"),
                        "--set", f"embed.cache_dir={work / 'warm-cache'}"], check=True,
                       env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    rows = []
    for label, extra in (("local", []),
                         ("dask LocalCluster, 2 workers", ["--engine", "dask", "--set",
                                                           "engine.n_workers=2"])):
        out = work / label.split()[0]
        cmd = base + ["--out", str(out), "--set", f"embed.cache_dir={work / (out.name + '-cache')}",
                      *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        manifest = json.loads((out / "manifest.json").read_text())
        rows.append({"engine": label, "posts": manifest["counts"]["posts"],
                     "wall_seconds": round(wall, 1),
                     "load_average_after": [round(x, 1) for x in os.getloadavg()],
                     "client_peak_rss_mb": manifest["peak_rss_mb"],
                     "worker_peak_rss_mb": manifest["engine"].get("worker_peak_rss_mb", []),
                     "stage_seconds": {k: v["seconds"] for k, v in manifest["stages"].items()},
                     "command": " ".join(cmd[1:]).replace(str(work), "<tmp>")})
    identical = {name: (work / "local" / name).read_bytes() == (work / "dask" / name).read_bytes()
                 for name in COMPARED}
    shutil.rmtree(work, ignore_errors=True)
    return {"name": "engine", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": (("NUMBA_CACHE_DIR=<warm cache> " if warm else "")
                        + f".venv/bin/python benchmarks/run.py engine --sizes {n_posts}"),
            "corpus": f"pipeline.simulate seed={seed} n_posts={n_posts}, in {N_FILES} files",
            "rows": rows, "identical_outputs": identical}


if __name__ == "__main__":
    print(json.dumps(bench(*(int(a) for a in sys.argv[1:])), indent=2))
