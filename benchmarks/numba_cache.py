"""Numba JIT cache: the reduce and cluster stages of a fresh `lockstep cluster` process with an
empty numba cache, then again with the cache the first run left behind.

    .venv/bin/python benchmarks/run.py numba_cache

umap-learn, pynndescent and hdbscan compile their numba functions on first use; numba keeps the
machine code in NUMBA_CACHE_DIR (the CLI sets a per-user default). Each run is its own process,
so nothing is shared in memory: the only difference between the cold and the warm run is the
folder of cached machine code. The embedding cache is warmed first, so embedding is not timed.
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
CORPUS = ROOT / "corpora" / "sample"


def lockstep(*args: str, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "-q", *args], check=True, cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench() -> dict:
    from datetime import datetime, timezone

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="lockstep-numba-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    sets = ["--set", f"embed.cache_dir={work / 'embeddings'}"]
    # warm the embedding cache (and a throwaway numba cache), so only numba differs below
    lockstep("cluster", str(CORPUS), "--out", str(work / "warmup"), *sets,
             env={**env, "NUMBA_CACHE_DIR": str(work / "numba-throwaway")})
    numba_dir = work / "numba"
    rows = []
    for label in ("cold numba cache", "warm numba cache"):
        out = work / label.replace(" ", "-")
        wall = lockstep("cluster", str(CORPUS), "--out", str(out), *sets,
                        env={**env, "NUMBA_CACHE_DIR": str(numba_dir)})
        stages = json.loads((out / "manifest.json").read_text())["stages"]
        rows.append({"run": label, "wall_seconds": round(wall, 1),
                     "reduce_seconds": stages["reduce"]["seconds"],
                     "cluster_seconds": stages["cluster"]["seconds"],
                     "embed_seconds": stages["embed"]["seconds"],
                     "n_cache_files": sum(1 for _ in numba_dir.rglob("*.nbi"))})
    shutil.rmtree(work, ignore_errors=True)
    return {"name": "numba_cache", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py numba_cache",
            "corpus": "corpora/sample", "rows": rows}


if __name__ == "__main__":
    print(json.dumps(bench(), indent=2))
