"""Vectors -> low-dimensional coordinates for density clustering (UMAP, seeded)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import Callable, Iterator

import numpy as np

from . import jitcache
from .config import ReduceConfig

log = logging.getLogger(__name__)

# Below this many posts UMAP's spectral layout is not defined; the vectors are used as they are.
MIN_POSTS_FOR_UMAP = 10


@contextlib.contextmanager
def seeded_eigsh(seed: int) -> Iterator[None]:
    """Give ARPACK a seeded random generator while UMAP computes its spectral layout.

    scipy's ARPACK (1.15 and later) asks its caller for a new random starting vector whenever a
    Lanczos run has to restart (ARPACK's ``ido == 4``), and draws it from ``eigsh(rng=...)``, which
    is seeded from the operating system when not given. umap's spectral layout and
    scikit-learn's SpectralEmbedding (umap's layout of a graph in several pieces) call eigsh
    without one, so on a large neighbour graph, or one in several pieces, the starting layout
    and so the narratives differed from one process to the next on the same vectors and seed
    (the 1M run's 100,000-post fit gave one of two layouts in each of 15 processes). Inside this
    block every eigsh call that passes no ``rng`` gets a new generator seeded with ``seed``.
    """
    import scipy.sparse.linalg as splinalg
    from sklearn.manifold import _spectral_embedding

    original = splinalg.eigsh
    if "rng" not in inspect.signature(original).parameters:  # older scipy: ARPACK's own seeds
        yield
        return

    @functools.wraps(original)
    def eigsh(*args, **kwargs):
        if kwargs.get("rng") is None:
            kwargs["rng"] = np.random.default_rng(seed)
        return original(*args, **kwargs)

    # umap looks eigsh up on scipy.sparse.linalg at call time; scikit-learn imported the name
    patched = [m for m in (splinalg, _spectral_embedding) if getattr(m, "eigsh", None) is original]
    for module in patched:
        module.eigsh = eigsh
    try:
        yield
    finally:
        for module in patched:
            module.eigsh = original


class UmapReducer:
    """UMAP with a fixed random_state (which also makes it single-threaded and repeatable)."""

    def __init__(self, n_neighbors: int, n_components: int, min_dist: float, metric: str,
                 seed: int, init: str = "spectral", n_epochs: int = 0):
        self.init = init
        self.n_epochs = n_epochs
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.min_dist = min_dist
        self.metric = metric
        self.seed = seed

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        n = len(vectors)
        if n < MIN_POSTS_FOR_UMAP or n <= self.n_components + 1:
            log.info("reduce: %d posts is too few for UMAP; using the vectors as they are", n)
            self.model_ = None
            return np.asarray(vectors, dtype=np.float32)
        if len(np.unique(np.asarray(vectors), axis=0)) == 1:
            log.info("reduce: all %d posts have the same vector; nothing to lay out", n)
            self.model_ = None
            return np.zeros((n, self.n_components), dtype=np.float32)
        umap = jitcache.import_umap()  # umap's numba functions load from the on-disk cache
        self.model_ = umap.UMAP(
            n_neighbors=min(self.n_neighbors, n - 1),
            n_components=self.n_components,
            min_dist=self.min_dist,
            metric=self.metric,
            random_state=self.seed,
            transform_seed=self.seed,
            init=self.init,
            n_epochs=self.n_epochs or None,
            low_memory=True,
            n_jobs=1,  # a seeded UMAP is single-threaded anyway; saying so avoids a warning
        )
        with seeded_eigsh(self.seed):
            coords = self.model_.fit_transform(vectors)
        return np.asarray(coords, dtype=np.float32)


class IdentityReducer:
    """Skip reduction: cluster the embedding vectors directly."""

    def __init__(self, **_: object):
        self.model_ = None

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32)


REDUCERS: dict[str, Callable[..., object]] = {"umap": UmapReducer, "none": IdentityReducer}


def make_reducer(cfg: ReduceConfig, seed: int):
    return REDUCERS[cfg.method](n_neighbors=cfg.n_neighbors, n_components=cfg.n_components,
                                min_dist=cfg.min_dist, metric=cfg.metric, seed=seed,
                                init=cfg.init, n_epochs=cfg.n_epochs)


def run(vectors: np.ndarray, cfg: ReduceConfig, seed: int) -> np.ndarray:
    return make_reducer(cfg, seed).fit_transform(vectors)
