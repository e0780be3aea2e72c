"""Numba JIT cache: the reduce and cluster stages of a fresh `lockstep cluster` process with an
empty numba cache, then again with the cache the first run left behind.

    .venv/bin/python benchmarks/run.py numba_cache

umap-learn and pynndescent compile their numba functions on first use (hdbscan is Cython);
pipeline.jitcache gives them numba's on-disk cache in NUMBA_CACHE_DIR (the CLI sets a per-user
default). Each run is its own process, so nothing is shared in memory: the only difference
between the cold and the warm run is the folder of cached machine code. The embedding cache is
warmed first, so embedding is not timed. The pure compute is UMAP fitted twice in one process on
the same vectors (the second fit has nothing left to compile); the warm run's reduce should be
close to it. The cold and warm runs must lay out the same coordinates, byte for byte.
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


PURE = """
import json, sys, time
import numpy as np
from pipeline import config, reduce
vectors = np.load(sys.argv[1])
cfg = config.load(None, [])
times = []
for _ in range(2):
    t0 = time.perf_counter()
    reduce.run(vectors, cfg.reduce, cfg.run.seed)
    times.append(round(time.perf_counter() - t0, 3))
print(json.dumps(times))
"""


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench() -> dict:
    from datetime import datetime, timezone

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="lockstep-numba-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    sets = ["--set", f"embed.cache_dir={work / 'embeddings'}",
            "--set", f"summarise.cache_dir={work / 'analysis'}"]
    # warm the embedding cache (and a throwaway numba cache), so only numba differs below
    lockstep("cluster", str(CORPUS), "--out", str(work / "warmup"), *sets,
             env={**env, "NUMBA_CACHE_DIR": str(work / "numba-throwaway")})
    numba_dir = work / "numba"
    rows = []
    for label in ("cold numba cache", "warm numba cache"):
        out = work / label.replace(" ", "-")
        load_before = load_average()
        wall = lockstep("cluster", str(CORPUS), "--out", str(out), *sets,
                        env={**env, "NUMBA_CACHE_DIR": str(numba_dir)})
        stages = json.loads((out / "manifest.json").read_text())["stages"]
        rows.append({"run": label, "wall_seconds": round(wall, 1),
                     "reduce_seconds": stages["reduce"]["seconds"],
                     "cluster_seconds": stages["cluster"]["seconds"],
                     "embed_seconds": stages["embed"]["seconds"],
                     "n_cache_files": sum(1 for _ in numba_dir.rglob("*.nbi")),
                     "load_average_before": load_before, "load_average_after": load_average()})
    coords = [(work / r["run"].replace(" ", "-") / ".lockstep" / "coords.npy").read_bytes()
              for r in rows]
    # the pure compute: UMAP twice in one process (warm cache); the second fit compiles nothing
    load_before = load_average()
    done = subprocess.run([sys.executable, "-c", PURE,
                           str(work / "warm-numba-cache" / ".lockstep" / "vectors.npy")],
                          check=True, cwd=ROOT, env={**env, "NUMBA_CACHE_DIR": str(numba_dir)},
                          capture_output=True, text=True)
    fits = json.loads(done.stdout.strip().splitlines()[-1])
    pure = {"first_fit_seconds": fits[0], "second_fit_seconds": fits[1],
            "load_average_before": load_before, "load_average_after": load_average()}
    shutil.rmtree(work, ignore_errors=True)
    return {"name": "numba_cache", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py numba_cache",
            "corpus": "corpora/sample", "rows": rows, "pure_compute": pure,
            "identical_coords": coords[0] == coords[1],
            "warm_over_pure": round(rows[1]["reduce_seconds"] / pure["second_fit_seconds"], 2),
            "cold_over_pure": round(rows[0]["reduce_seconds"] / pure["second_fit_seconds"], 2)}


if __name__ == "__main__":
    print(json.dumps(bench(), indent=2))
