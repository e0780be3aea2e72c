"""Incremental runs: `lockstep cluster` on a corpus, then on the same corpus with 10% more posts,
against the same embedding cache, with the real quality-tier model.

    .venv/bin/python benchmarks/run.py incremental

The corpus is simulated (pipeline.simulate, seed 31, ~5,500 posts); the first run sees it
without a seeded 1 in 11 of its posts (~5,000), the second sees all of it. Both runs are fresh
processes with a warm numba cache (a small warm-up run first), so the difference is what the
second run recomputes: it embeds only the texts the cache has not seen, and refits UMAP and
HDBSCAN on the whole corpus (the narratives of the larger corpus are a new clustering, not
the old one extended; `lockstep assign` is the path that places new posts in saved narratives).
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


def lockstep(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "-q", *args], check=True, cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench(n_posts: int = 5500, seed: int = 31) -> dict:
    from datetime import datetime, timezone

    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline import simulate
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="lockstep-incremental-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "NUMBA_CACHE_DIR": str(work / "numba")}
    corpus = simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts))
    posts = corpus.posts
    rng = np.random.default_rng(seed)
    held_out = rng.random(len(posts)) < 1 / 11
    for name, frame in (("base", posts[~held_out]), ("plus10", posts),
                        ("warmup", posts.iloc[:300])):
        (work / name).mkdir()
        frame.to_csv(work / name / "posts.csv", index=False)
    cache = ["--set", f"embed.cache_dir={work / 'embeddings'}"]
    lockstep(["cluster", str(work / "warmup"), "--out", str(work / "runs" / "warmup"),
              "--set", f"embed.cache_dir={work / 'warmup-embeddings'}"], env)
    rows = []
    for label, name in (("cold", "base"), ("10% more posts, same cache", "plus10")):
        out = work / "runs" / name
        wall = lockstep(["cluster", str(work / name), "--out", str(out), *cache], env)
        manifest = json.loads((out / "manifest.json").read_text())
        st = manifest["stages"]
        rows.append({"run": label, "posts": manifest["counts"]["posts"],
                     "embedded": st["embed"]["n_embedded"], "cached": st["embed"]["n_cached"],
                     "wall_seconds": round(wall, 1),
                     "stage_seconds": {k: v["seconds"] for k, v in st.items()},
                     "peak_rss_mb": manifest["peak_rss_mb"]})
    shutil.rmtree(work, ignore_errors=True)
    return {"name": "incremental", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py incremental",
            "corpus": f"pipeline.simulate seed={seed} n_posts={n_posts}; first run without a "
                      "seeded 1/11 of the posts",
            "rows": rows,
            "ratio_wall": round(rows[1]["wall_seconds"] / rows[0]["wall_seconds"], 3)}


if __name__ == "__main__":
    print(json.dumps(bench(), indent=2))
