"""Incremental runs: `lockstep cluster` on a corpus, then on the same corpus with 10% more posts,
against the same embedding cache, with the real quality-tier model.

    .venv/bin/python benchmarks/run.py incremental

The corpus is simulated (pipeline.simulate, seed 31, ~5,500 posts); the first run sees it
without a seeded 1 in 11 of its posts (~5,000), the second sees all of it. Both runs are fresh
processes with a warm numba cache: a warm-up run first, on the larger corpus with the fast
(static) tier and caches of its own, so the same UMAP code paths (nearest neighbours by
NN-descent above 4,096 posts) are compiled and cached before anything is timed. The first timed
run starts with empty embedding and analysis caches; the second shares them, so the difference
is what the second run recomputes: it embeds and analyses (spaCy) only the texts the caches have
not seen, and refits UMAP and HDBSCAN on the whole corpus (the narratives of the larger corpus
are a new clustering, not the old one extended; `lockstep assign` is the path that places new
posts in saved narratives). A third run repeats the second without the analysis cache: its
outputs must be byte-identical to the second's.
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
    cache = ["--set", f"embed.cache_dir={work / 'embeddings'}",
             "--set", f"summarise.cache_dir={work / 'analysis'}"]
    lockstep(["cluster", str(work / "plus10"), "--out", str(work / "runs" / "warmup"),
              "--set", "embed.tier=fast",
              "--set", f"embed.cache_dir={work / 'warmup-embeddings'}",
              "--set", f"summarise.cache_dir={work / 'warmup-analysis'}"], env)
    rows = []
    for label, name, sets in (("cold", "base", cache),
                              ("10% more posts, same caches", "plus10", cache),
                              ("10% more posts, no analysis cache", "plus10",
                               [*cache[:2], "--set", "summarise.cache_dir="])):
        out = work / "runs" / f"{name}-{len(rows)}"
        load_before = [round(x, 2) for x in os.getloadavg()]
        wall = lockstep(["cluster", str(work / name), "--out", str(out), *sets], env)
        manifest = json.loads((out / "manifest.json").read_text())
        st = manifest["stages"]
        rows.append({"run": label, "posts": manifest["counts"]["posts"],
                     "embedded": st["embed"]["n_embedded"], "cached": st["embed"]["n_cached"],
                     "wall_seconds": round(wall, 1),
                     "stage_seconds": {k: v["seconds"] for k, v in st.items()},
                     "peak_rss_mb": manifest["peak_rss_mb"], "load_average_before": load_before,
                     "load_average_after": [round(x, 2) for x in os.getloadavg()]})
    same = {f: (work / "runs" / "plus10-1" / f).read_bytes()
            == (work / "runs" / "plus10-2" / f).read_bytes()
            for f in ("assignments.parquet", "narratives.csv", "narratives.json")}
    shutil.rmtree(work, ignore_errors=True)
    return {"name": "incremental", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py incremental",
            "corpus": f"pipeline.simulate seed={seed} n_posts={n_posts}; first run without a "
                      "seeded 1/11 of the posts",
            "rows": rows, "identical_with_and_without_analysis_cache": same,
            "ratio_wall": round(rows[1]["wall_seconds"] / rows[0]["wall_seconds"], 3)}


if __name__ == "__main__":
    print(json.dumps(bench(), indent=2))
