"""Fill numba's on-disk cache once, at install time (`make install` runs ``python -m
pipeline.jitwarm``), so the first real run loads umap's and pynndescent's machine code instead of
compiling it.

Compiling is not only time: numba and LLVM keep what they built for the life of the process. A
1M-post run with an empty cache held several hundred MB more from the reduce stage on than the
same run with a filled one, and that memory was still there under the coordination join, the
run's peak (benchmarks/RESULTS.md, ``scale_fast``). Loading cached code costs a fraction.

The warm-up is the real job on small simulated corpora, so it compiles exactly what a run
compiles: `cluster` with a fit sample (UMAP on at least 4,096 posts takes the nearest-neighbour
descent path a large corpus takes, not the exact one umap uses for small data), placing the
rest by kNN on UMAP's index (as placing more posts than ``sampling.KNN_EXACT_PAIRS`` allows
does; these few would get exact neighbours), then `assign` with the saved model (UMAP's
transform). Then `cluster` on a corpus under 4,096 posts and an update of it, for umap's exact
small-data path (the bundled sample takes it; without this its first run compiled for about
4 s). It writes only under a temporary folder and ``NUMBA_CACHE_DIR``; results are not kept.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

N_POSTS = 7_000
N_FIT = 5_000  # above umap's small-data cut-off (4,096 rows)
N_SMALL = 1_000  # below it


def warm() -> float:
    """Run `cluster` and `assign` on a small simulated corpus; returns the seconds taken."""
    from . import assign, config, runner, sampling, simulate

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lockstep-jitwarm-") as tmp:
        base = Path(tmp)
        sim = simulate.simulate(simulate.SimConfig(seed=11, n_posts=N_POSTS, n_accounts=300))
        simulate.write_corpus(sim, base / "corpus")
        cfg = config.load(None, [f"embed.cache_dir={base / 'cache'}", "embed.tier=fast",
                                 f"cluster.fit_sample={N_FIT}", "cluster.place_method=knn"])
        exact_pairs = sampling.KNN_EXACT_PAIRS
        sampling.KNN_EXACT_PAIRS = 0  # search UMAP's index, as a large corpus's placement does
        try:
            runner.cluster_corpus(base / "corpus", base / "run", cfg,
                                  model_dir=base / "models" / "m")
        finally:
            sampling.KNN_EXACT_PAIRS = exact_pairs
        assign.assign_corpus(base / "corpus", base / "models" / "m", base / "assigned", cfg)
        # a small corpus, then the same with 10% more posts as an update
        small = simulate.simulate(simulate.SimConfig(seed=12, n_posts=N_SMALL, n_accounts=80))
        posts = small.posts
        simulate.write_corpus(small, base / "small")
        (base / "small-base").mkdir()
        posts.iloc[: len(posts) * 10 // 11].to_csv(base / "small-base" / "posts.csv",
                                                   index=False)
        cfg = config.load(None, [f"embed.cache_dir={base / 'cache'}", "embed.tier=fast"])
        runner.cluster_corpus(base / "small-base", base / "run-small", cfg)
        runner.cluster_corpus(base / "small", base / "run-small", cfg, update=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    import os

    from . import cli  # noqa: F401  (the CLI's defaults: offline, and its NUMBA_CACHE_DIR)

    logging.basicConfig(level=logging.WARNING)
    seconds = warm()
    print(f"numba cache filled in {seconds:.0f} s: {os.environ['NUMBA_CACHE_DIR']}")
