"""Large corpora: fit UMAP and HDBSCAN on a seeded sample, then place the rest with that fit.

With more accepted posts than ``cluster.fit_sample``, the `cluster` job

1. draws the sample: the ``fit_sample`` posts with the smallest keyed hash of
   (``run.seed``, post_id) (ties by post_id), kept in corpus order. A post's membership depends
   only on its id, the seed and the sample size, never on the order of the rows;
2. fits UMAP, HDBSCAN and the refinement (merges, the noise rule) on the sample alone, exactly
   as a run on a corpus of only those posts would;
3. places every other post, with ``cluster.place_method = "transform"``, as `lockstep assign`
   places new posts with a saved model
   (assign.Placer: UMAP ``transform`` -> ``hdbscan.approximate_predict`` -> the fit's narrative
   ids -> the per-narrative similarity floor ``assign.member_quantile`` -> the fit's noise rule),
   or, with ``cluster.place_method = "knn"``, by a vote of each post's
   ``cluster.place_neighbors`` nearest fit posts in embedding space (exact when that is cheap,
   ``KNN_EXACT_PAIRS``, else found with the fitted UMAP's own pynndescent index; no transform,
   no approximate_predict) -> the same floor and noise rule. knn is the default: on the 1M
   simulated corpus it placed 8.5x the posts per second of transform and put 95.8% of the
   900,000 placed posts in the same narrative (99.1% of those both put in a narrative), noise
   18.8% against 19.7%, NMI against the planted narratives 0.5148 against 0.5162
   (benchmarks/place_bench.py, RESULTS.md "place").
   The rest is cut into fixed chunks of ``CHUNK`` posts in corpus order and each chunk is one
   task on the run's engine (engine.py), so the local and the Dask engine give the same labels.

Narrative ids are the fit's (ordered by size in the sample). A post placed by
``approximate_predict`` keeps its membership strength as probability; one placed by the noise
rule gets 0, as in the fit. Corpora with no more posts than ``fit_sample`` are fitted whole and
nothing here runs.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CHUNK = 50_000  # posts per placement task (fixed, so every engine cuts the same chunks)
METHOD = ("UMAP transform + hdbscan.approximate_predict + per-narrative similarity floor "
          "(assign.member_quantile) + the fit's noise rule")
METHOD_KNN = ("vote of the {k} nearest fit posts in embedding space ({how}; at least half in "
              "a narrative, else noise) + per-narrative similarity floor "
              "(assign.member_quantile) + the fit's noise rule")
# knn placement compares every placed post with every fit post (exact neighbours) when there
# are at most this many pairs, and searches the fitted UMAP's pynndescent index when there are
# more. Exact neighbours cost 0.18 ms a post against 5,000 fit posts and 0.86 ms against 100,000
# here (384 dimensions), so this is at most about 1 s of work: less than reading the index
# costs (importing umap with its numba machine code, and unpickling it: 1.1 to 1.6 s).
KNN_EXACT_PAIRS = 25_000_000


def knn_exact(n_fit: int, n_place: int) -> bool:
    """Whether knn placement of ``n_place`` posts with a fit of ``n_fit`` finds exact
    neighbours rather than searching the fitted UMAP's index."""
    return n_fit * n_place <= KNN_EXACT_PAIRS


def needs_reducer(cfg, n_fit: int, n_place: int) -> bool:
    """Whether placing ``n_place`` posts (cfg: ClusterConfig) uses the fitted UMAP: transform
    does, and knn does when it searches UMAP's index."""
    return cfg.place_method != "knn" or not knn_exact(n_fit, n_place)


def knn_fields(cfg, reducer, fit_labels: np.ndarray, fit_vectors: np.ndarray,
               n_place: int) -> dict:
    """The assign.Placer fields for cluster.place_method (cfg: ClusterConfig): nothing for
    transform; for knn the fit's labels, and the fit's vectors unless the neighbours of the
    ``n_place`` posts come from the fitted UMAP's index (over ``knn_exact``'s budget, with a
    cosine index to search). The Placer finds exact neighbours whenever it has the vectors."""
    if cfg.place_method != "knn":
        return {}
    has_index = not knn_exact(len(fit_labels), n_place) and \
        getattr(reducer, "_knn_search_index", None) is not None and \
        getattr(reducer, "metric", "") == "cosine"
    return {"method": "knn", "fit_labels": np.asarray(fit_labels, dtype=np.int64),
            "fit_vectors": None if has_index else np.asarray(fit_vectors, dtype=np.float32),
            "neighbors": int(cfg.place_neighbors)}


def method_text(placer) -> str:
    """How ``placer`` (assign.Placer) places posts, for the manifest."""
    if getattr(placer, "method", "") != "knn":
        return METHOD
    how = ("exact neighbours" if placer.fit_vectors is not None
           else "neighbours from the fitted UMAP's pynndescent index")
    return METHOD_KNN.format(k=placer.neighbors, how=how)


def sample_rows(post_ids, n_sample: int, seed: int) -> np.ndarray | None:
    """Row indices (ascending) of the fit sample, or None when every post is fitted."""
    ids = [str(p) for p in post_ids]
    if n_sample <= 0 or len(ids) <= n_sample:
        return None
    salt = f"lockstep fit sample {int(seed)}".encode()
    keys = np.fromiter(
        (int.from_bytes(hashlib.blake2b(p.encode("utf-8"), digest_size=8, key=salt[:64])
                        .digest(), "big") for p in ids),
        dtype=np.uint64, count=len(ids))
    order = np.lexsort((np.asarray(ids, dtype=object).argsort().argsort(), keys))
    return np.sort(order[:n_sample]).astype(np.int64)


def rest_rows(n_posts: int, sample: np.ndarray) -> np.ndarray:
    mask = np.ones(n_posts, dtype=bool)
    mask[sample] = False
    return np.flatnonzero(mask)


def chunks(rows: np.ndarray, size: int = 0) -> list[np.ndarray]:
    size = size or CHUNK
    return [rows[i:i + size] for i in range(0, len(rows), size)]


@dataclass(frozen=True)
class PlacerFile:
    """A pickled assign.Placer this run wrote, with its sha256: what a Dask task receives
    instead of the fitted objects themselves (the file is checked before it is unpickled)."""

    path: str
    sha256: str


_LOADED: dict[tuple[str, str], object] = {}


def save_placer(placer, path: Path) -> PlacerFile:
    from .atomic import atomic_path

    data = pickle.dumps(placer, protocol=pickle.HIGHEST_PROTOCOL)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return PlacerFile(str(path), hashlib.sha256(data).hexdigest())


def _placer(ref):
    if not isinstance(ref, PlacerFile):
        return ref
    key = (ref.path, ref.sha256)
    if key not in _LOADED:
        data = Path(ref.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise RuntimeError(f"{ref.path} changed after this run wrote it; not unpickled")
        _LOADED.clear()  # one fit per worker process at a time
        _LOADED[key] = pickle.loads(data)  # noqa: S301 (this run's own bytes, hash-checked)
    return _LOADED[key]


def place_chunk(placer, vectors_path: str, rows: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One placement task: the rows' vectors (memory-mapped) -> labels, probabilities and
    whether the noise rule placed them."""
    vectors = np.load(vectors_path, mmap_mode="r")
    a = _placer(placer).place(np.asarray(vectors[rows], dtype=np.float32), with_coords=False)
    return a.labels, a.probabilities, a.via_centroid


@dataclass
class Placed:
    labels: np.ndarray  # int64 narrative id per post of the corpus
    probabilities: np.ndarray  # float32
    reassigned: np.ndarray  # bool: moved into a narrative by the noise rule (fit or placement)
    info: dict  # for the manifest


def place_rest(n_posts: int, sample: np.ndarray, fit_labels: np.ndarray,
               fit_probabilities: np.ndarray, fit_reassigned: np.ndarray, placer,
               vectors_path: Path, mapper, placer_path: Path | None = None) -> Placed:
    """Labels for the whole corpus: the sample's from the fit, the rest placed in chunks by
    ``mapper`` (engine.map). With ``placer_path``, tasks get the placer as a hash-checked
    file (for engines whose workers are other processes)."""
    rest = rest_rows(n_posts, sample)
    labels = np.full(n_posts, -1, dtype=np.int64)
    probs = np.zeros(n_posts, dtype=np.float32)
    reassigned = np.zeros(n_posts, dtype=bool)
    labels[sample], probs[sample], reassigned[sample] = fit_labels, fit_probabilities, \
        fit_reassigned
    parts = chunks(rest)
    ref = save_placer(placer, placer_path) if placer_path is not None else placer
    results = mapper(place_chunk, [ref] * len(parts), [str(vectors_path)] * len(parts), parts)
    for rows, (lab, pr, via) in zip(parts, results):
        labels[rows], probs[rows], reassigned[rows] = lab, pr, via
    placed = labels[rest]
    method = method_text(placer)
    info = {"n_fit": int(len(sample)), "n_placed": int(len(rest)), "method": method,
            "n_chunks": len(parts), "chunk": CHUNK,
            "placed_in_narratives": int((placed >= 0).sum()),
            "placed_by_noise_rule": int(reassigned[rest].sum()),
            "placed_as_noise": int((placed < 0).sum())}
    return Placed(labels, probs, reassigned, info)
