"""Vectors -> low-dimensional coordinates for density clustering (UMAP, seeded)."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from . import jitcache
from .config import ReduceConfig

log = logging.getLogger(__name__)

# Below this many posts UMAP's spectral layout is not defined; the vectors are used as they are.
MIN_POSTS_FOR_UMAP = 10


class UmapReducer:
    """UMAP with a fixed random_state (which also makes it single-threaded and repeatable)."""

    def __init__(self, n_neighbors: int, n_components: int, min_dist: float, metric: str,
                 seed: int, init: str = "spectral"):
        self.init = init
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
            low_memory=True,
            n_jobs=1,  # a seeded UMAP is single-threaded anyway; saying so avoids a warning
        )
        return np.asarray(self.model_.fit_transform(vectors), dtype=np.float32)


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
                                init=cfg.init)


def run(vectors: np.ndarray, cfg: ReduceConfig, seed: int) -> np.ndarray:
    return make_reducer(cfg, seed).fit_transform(vectors)
