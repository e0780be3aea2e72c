"""Coordinates -> narrative ids with HDBSCAN. Noise stays -1; ids are ordered by size."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, replace

import numpy as np

from .config import ClusterConfig

log = logging.getLogger(__name__)


@dataclass
class Clustering:
    labels: np.ndarray  # int64 narrative id per post, -1 = noise
    probabilities: np.ndarray  # float32 membership strength in [0, 1]
    model: object | None  # the fitted hdbscan.HDBSCAN, or None when there were too few posts
    min_cluster_size: int = 0  # the sizes actually used (the config's 0 = auto resolved)
    min_samples: int = 0
    # HDBSCAN's own labels_ (int64), kept beside a packed model (``packed``); None in a
    # Clustering whose model is the fitted object itself, or from a run before they were kept
    raw_labels: np.ndarray | None = None


class PickledModel:
    """A fitted model kept as its pickle's bytes (protocol 5). The cluster stage's checkpoint
    holds HDBSCAN this way, so reading it back imports neither hdbscan nor scikit-learn (with
    scipy.stats, 0.5 s here): an update that places by nearest neighbours and a saved model
    (which gets these bytes as they are) never need the object."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def load(self) -> object:
        return pickle.loads(self.data)  # noqa: S301 (this run's own checkpoint, hash-checked)

    def __getstate__(self) -> bytes:
        return self.data

    def __setstate__(self, data: bytes) -> None:
        self.data = data


def packed(clustering: Clustering) -> Clustering:
    """The Clustering as its checkpoint keeps it: the model as a PickledModel, its labels_
    beside it."""
    model = clustering.model
    if model is None or isinstance(model, PickledModel):
        return clustering
    return replace(clustering, model=PickledModel(pickle.dumps(model, protocol=5)),
                   raw_labels=np.asarray(model.labels_, dtype=np.int64))


def fitted_model(clustering: Clustering) -> object | None:
    """The fitted HDBSCAN (unpickled when the Clustering is packed), or None."""
    model = clustering.model
    return model.load() if isinstance(model, PickledModel) else model


def raw_labels(clustering: Clustering) -> np.ndarray:
    """HDBSCAN's own labels_ of the fitted posts (the model must not be None)."""
    if clustering.raw_labels is not None:
        return np.asarray(clustering.raw_labels, dtype=np.int64)
    return np.asarray(fitted_model(clustering).labels_, dtype=np.int64)


def resolve_sizes(n: int, cfg: ClusterConfig, n_languages: float = 1.0) -> tuple[int, int]:
    """(min_cluster_size, min_samples) for n posts; 0 in the config means the automatic rule.

    ``n_languages`` > 1 (the effective number of languages, given only for the multilingual
    tier): the automatic min_samples is divided by it, rounded up, at least 2. In a shared
    multilingual space language still parts posts (on the translation triples, after the common
    direction is removed, posts of one narrative score 0.29 in the same language and 0.14
    across languages, no more than unrelated posts in the same language, 0.13; 82% of a post's
    two nearest neighbours that are not its translations share its language). A narrative
    written in L languages is then L language groups joined by translations, each with 1/L of
    its posts, and min_samples, a count of near neighbours that makes a post dense, is scaled to
    the group a post's neighbours come from.
    """
    mcs = cfg.min_cluster_size or int(np.clip(round(np.sqrt(n)), 15, 500))
    ms = cfg.min_samples or max(5, mcs // 4)
    if not cfg.min_samples and cfg.min_samples_per_language and n_languages > 1.0:
        ms = max(2, int(np.ceil(ms / n_languages - 1e-9)))
    return mcs, ms


def run(coords: np.ndarray, cfg: ClusterConfig, n_languages: float = 1.0) -> Clustering:
    n = len(coords)
    mcs, ms = resolve_sizes(n, cfg, n_languages)
    if n < mcs or n < 2:
        log.info("cluster: %d posts is fewer than min_cluster_size (%d); all noise", n, mcs)
        return Clustering(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32), None,
                          mcs, ms)
    if len(np.unique(np.asarray(coords), axis=0)) == 1:
        # every post is the same point (one text, copied): HDBSCAN only ever splits a tree, so
        # it would call one undivided cluster noise; it is one narrative
        log.info("cluster: all %d posts are the same point; one narrative", n)
        return Clustering(np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32), None,
                          mcs, ms)
    import hdbscan

    model = hdbscan.HDBSCAN(
        min_cluster_size=mcs,
        min_samples=min(ms, n - 1),
        cluster_selection_method=cfg.cluster_selection_method,
        cluster_selection_epsilon=cfg.cluster_selection_epsilon,
        metric="euclidean",
        prediction_data=True,
        core_dist_n_jobs=1,
    )
    labels = model.fit_predict(np.asarray(coords, dtype=np.float64))
    labels = relabel_by_size(np.asarray(labels, dtype=np.int64))
    return Clustering(labels, np.asarray(model.probabilities_, dtype=np.float32), model, mcs, ms)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1, largest first (ties: the one whose first post comes first)."""
    ids = [c for c in np.unique(labels) if c >= 0]
    if not ids:
        return labels.copy()
    sizes = {c: int((labels == c).sum()) for c in ids}
    first = {c: int(np.argmax(labels == c)) for c in ids}
    order = sorted(ids, key=lambda c: (-sizes[c], first[c]))
    mapping = np.full(int(labels.max()) + 2, -1, dtype=np.int64)
    for new, old in enumerate(order):
        mapping[old] = new
    return np.where(labels >= 0, mapping[labels], -1)
