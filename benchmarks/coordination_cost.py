"""Coordination cost at scale: posts per second and peak memory of the coordination and
escalation stages on simulated corpora of 100k and 1M posts.

    .venv/bin/python benchmarks/run.py coordination_cost

The planted narratives stand in for the clustering, so the figures are the coordination stage
alone (signals, MinHash LSH, the bucketed window join, the null model, Leiden, evidence). Each
size runs in its own process so its peak RSS is its own."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (100_000, 1_000_000)


def planted(n_posts: int):
    """A simulated corpus (seed 21) with its posts typed as ingest types them, and each post's
    planted narrative as its narrative id (standing in for the clustering): corpus, posts, ids."""
    import numpy as np
    import pandas as pd

    from pipeline import simulate

    corpus = simulate.simulate(simulate.SimConfig(seed=21, n_posts=n_posts,
                                                  n_accounts=max(160, n_posts // 20)))
    posts = corpus.posts
    posts["created_at"] = pd.to_datetime(posts["created_at"], utc=True).astype(
        "datetime64[us, UTC]")
    for col in ("url", "reshare_of", "hashtags"):
        posts[col] = posts[col].replace("", None)
    index = {name: i for i, name in enumerate(corpus.truth["narratives"])}
    nid = np.array([index[corpus.truth["posts"][p][0]] for p in posts["post_id"]])
    return corpus, posts, nid


def one(n_posts: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from pipeline import coordination, escalate
    from pipeline.config import CoordinationConfig

    corpus, posts, nid = planted(n_posts)
    coordinated = {a for a, v in corpus.truth["accounts"].items() if v["role"] == "coordinated"}
    del corpus
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = CoordinationConfig()
    t0 = time.perf_counter()
    coord = coordination.run(posts, nid, cfg, seed=1)
    t1 = time.perf_counter()
    esc = escalate.run(posts, nid, coord, cfg, seed=1)
    t2 = time.perf_counter()
    found = set(esc.accounts["account_id"])
    return {
        "posts": len(posts), "accounts": int(posts["account_id"].nunique()),
        "events": coord.stats["n_events"], "cooccurrences": coord.stats["n_cooccurrences"],
        "pairs_tested": coord.stats.get("n_pairs_tested", 0),
        "coordination_seconds": round(t1 - t0, 1), "escalate_seconds": round(t2 - t1, 1),
        "posts_per_second": round(len(posts) / (t2 - t0), 0),
        "peak_rss_mb_before": round(rss_before, 0),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "precision": round(len(found & coordinated) / len(found), 3) if found else None,
        "recall": round(len(found & coordinated) / len(coordinated), 3),
    }


def bench() -> dict:
    from datetime import datetime, timezone
    import os

    rows = []
    for n in SIZES:
        proc = subprocess.run([sys.executable, __file__, str(n)], capture_output=True, text=True,
                              check=True, cwd=ROOT)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    return {"name": "coordination_cost", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py coordination_cost", "rows": rows}


if __name__ == "__main__":
    if len(sys.argv) == 2:
        print(json.dumps(one(int(sys.argv[1]))))
    else:
        print(json.dumps(bench(), indent=2))
