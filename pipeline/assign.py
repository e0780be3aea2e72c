"""New posts against a saved narrative model, without refitting; the rest are emerging candidates.

ingest -> embed (the model's tier, checked by model id) -> ``reducer.transform`` ->
``hdbscan.approximate_predict`` -> the model's own narrative ids (its relabelling and merges) ->
the fit's noise rule (when the model was fit with ``refine.reassign_noise``, a post HDBSCAN calls
noise joins the nearest narrative centroid at the same cosine threshold).

Why approximate_predict first and not only the nearest centroid: it places a post in the density
structure the model learnt, so a post between two narratives stays with the one whose dense core
it reaches instead of being pulled to whichever centroid is least far, and the training posts get
back (nearly) the labels of the fit. It needs one check from embedding space, though: UMAP's
transform puts every new post next to its nearest training posts however far they are, so a post
of a narrative the model never saw would land inside a known narrative. A post therefore keeps
its narrative only when its cosine to the narrative's centroid reaches the
``assign.member_quantile`` quantile of the training members' cosines (0.01: as typical as all
but the least typical 1%). The fit's noise rule is then applied only where the fit applied it.

Posts that fit no narrative are grouped among themselves with HDBSCAN (in the model's reduced
space; sizes by the automatic rule unless ``assign.emerging_min_cluster_size``); each group is
listed with top terms and examples as a candidate emerging narrative for an analyst to read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .atomic import write_csv, write_json, write_parquet
from .config import AssignConfig, ClusterConfig, Config, EmbedConfig, SummariseConfig
from .errors import InputError
from .model import NarrativeModel

log = logging.getLogger(__name__)


@dataclass
class Assignment:
    labels: np.ndarray  # narrative id per post (the model's ids), -1 = fits no narrative
    probabilities: np.ndarray  # float32 membership strength from approximate_predict
    via_centroid: np.ndarray  # bool: assigned by the nearest-centroid noise rule
    coords: np.ndarray | None  # the posts in the model's reduced space (None: not kept)


@dataclass
class Emerging:
    groups: pd.DataFrame  # one row per candidate group
    details: list[dict] = field(default_factory=list)
    labels: np.ndarray | None = None  # group id per unassigned post, -1 = no group


def model_embed_config(model: NarrativeModel, current: EmbedConfig) -> EmbedConfig:
    """The model's embedding settings (tier, text handling) with this run's cache and batch."""
    saved = model.card["config"]["embed"]
    return replace(current, tier=model.card["embedding"]["tier"], max_chars=int(saved["max_chars"]),
                   strip_urls=bool(saved["strip_urls"]))


def check_embedder(model: NarrativeModel, model_id: str, dim: int) -> None:
    want = model.card["embedding"]
    if model_id != want["model_id"] or dim != want["dim"]:
        raise InputError(f"model {model.path}: fitted on embeddings of {want['model_id']} "
                         f"({want['dim']} dimensions), these posts were embedded with {model_id} "
                         f"({dim} dimensions); use embed.tier = {want['tier']!r} or refit")


@dataclass
class Placer:
    """What placing a post needs from a fit, as plain data: the fitted reducer and clusterer,
    HDBSCAN's ids -> the fit's narrative ids, the narrative centroids in embedding space with
    each narrative's similarity floor, and the fit's noise rule. Shared by `lockstep assign`
    (from a saved model) and a `cluster` run that fits on a sample (pipeline/sampling.py)."""

    reducer: object | None  # fitted umap.UMAP, or None: coordinates are the vectors themselves
    clusterer: object | None  # fitted hdbscan.HDBSCAN with prediction data, or None
    raw_to_final: dict[int, int]
    centroids: np.ndarray  # float32 (n_narratives, d), L2-normalised
    floor: np.ndarray  # float64 per narrative: the least cosine to its centroid a post may have
    reassign_noise: bool  # the fit moved noise to the nearest centroid (refine.reassign_noise)
    reassign_min_similarity: float
    min_probability: float
    # "transform" (above) or "knn" (cluster.place_method): a post joins the narrative most of
    # its ``neighbors`` nearest fit posts in embedding space are in, when at least half of them
    # are in a narrative (else noise); needs the fit posts' final labels, and either their
    # vectors (exact cosine neighbours) or, without them, the fitted UMAP's pynndescent index
    # (sampling.knn_fields decides which)
    method: str = "transform"
    fit_labels: np.ndarray | None = None  # int64 narrative id per fit post (the fit's rows)
    fit_vectors: np.ndarray | None = None  # float32 fit posts' vectors: exact neighbours
    neighbors: int = 30

    @classmethod
    def from_model(cls, model: NarrativeModel, cfg: AssignConfig) -> "Placer":
        refine = model.card["config"]["refine"]
        return cls(model.reducer, model.clusterer, model.raw_to_final, model.centroids,
                   model.similarity_floor(cfg.member_quantile), bool(refine["reassign_noise"]),
                   float(refine["reassign_min_similarity"]), cfg.min_probability)

    def place(self, vectors: np.ndarray, with_coords: bool = True) -> Assignment:
        """Label vectors with the fit; never fits anything."""
        n = len(vectors)
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.method == "knn":
            return self._finish(vectors, *knn_vote(self, vectors), None)
        coords = (np.asarray(self.reducer.transform(vectors), dtype=np.float32)
                  if self.reducer is not None and n else vectors)
        labels = np.full(n, -1, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float32)
        if self.clusterer is not None and n:
            import hdbscan

            raw, strength = hdbscan.approximate_predict(self.clusterer,
                                                        np.asarray(coords, dtype=np.float64))
            mapping = self.raw_to_final
            labels = np.array([mapping.get(int(r), -1) if r >= 0 else -1 for r in raw],
                              dtype=np.int64)
            probs = np.asarray(strength, dtype=np.float32)
        return self._finish(vectors, labels, probs, coords if with_coords else None)

    def _finish(self, vectors: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                coords: np.ndarray | None) -> Assignment:
        """The checks every placement ends with: the least membership strength, the
        per-narrative similarity floor, then the fit's noise rule."""
        n = len(vectors)
        if n and (self.clusterer is not None or self.method == "knn"):
            weak = (labels >= 0) & (probs < self.min_probability)
            # UMAP's transform places a post near its nearest training posts whatever the
            # distance, so a post of a narrative the model never saw lands inside some known
            # narrative; it keeps that narrative only if it is as typical of it, in embedding
            # space, as all but the least typical assign.member_quantile of the narrative's
            # training members
            hit = np.flatnonzero(labels >= 0)
            sims = np.einsum("ij,ij->i", vectors[hit].astype(np.float64),
                             self.centroids[labels[hit]].astype(np.float64))
            atypical = np.zeros(n, dtype=bool)
            atypical[hit] = sims < self.floor[labels[hit]]
            weak |= atypical
            labels[weak] = -1
            probs = np.where(labels >= 0, probs, 0).astype(np.float32)
        via_centroid = np.zeros(n, dtype=bool)
        no_clusterer = self.clusterer is None and len(self.centroids)
        if (self.reassign_noise or no_clusterer) and len(self.centroids) and n:
            noise = np.flatnonzero(labels < 0)
            if len(noise):
                sims = vectors[noise].astype(np.float64) @ self.centroids.T.astype(np.float64)
                best = np.argmax(sims, axis=1)
                ok = sims[np.arange(len(noise)), best] >= self.reassign_min_similarity
                labels[noise[ok]] = best[ok]
                via_centroid[noise[ok]] = True
        return Assignment(labels, probs, via_centroid, coords)


def knn_vote(placer: Placer, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cluster.place_method = knn: (narrative id, vote share) per post from its
    ``placer.neighbors`` nearest fit posts by cosine. A post joins the narrative with the most
    votes among the neighbours that are in a narrative (ties: the lower id, the larger
    narrative) when at least half of all its neighbours are in one; else it is noise, as a post
    in a sparse region between narratives is noise in HDBSCAN's fit."""
    n = len(vectors)
    if placer.fit_labels is None or not n or not len(placer.fit_labels):
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
    fit_labels = np.asarray(placer.fit_labels, dtype=np.int64)
    k = min(placer.neighbors, len(fit_labels))
    ind = _nearest_fit_posts(placer, vectors, k)
    lab = fit_labels[ind]  # (n, k)
    n_ids = int(fit_labels.max()) + 2
    counts = np.zeros((n, n_ids), dtype=np.int32)  # column 0: noise, c + 1: narrative c
    np.add.at(counts, (np.repeat(np.arange(n), k), lab.ravel() + 1), 1)
    votes = counts[:, 1:]
    best = votes.argmax(axis=1) if votes.shape[1] else np.zeros(n, dtype=np.int64)
    in_narrative = votes.sum(axis=1) * 2 >= k
    labels = np.where(in_narrative, best, -1).astype(np.int64)
    share = (votes[np.arange(n), best] / k if votes.shape[1] else np.zeros(n))
    return labels, np.where(labels >= 0, share, 0).astype(np.float32)


def _nearest_fit_posts(placer: Placer, vectors: np.ndarray, k: int) -> np.ndarray:
    """(n, k) row indices of the fit posts nearest each vector by cosine: exact neighbours of
    the placer's fit_vectors; without them, the fitted UMAP's pynndescent index (approximate,
    the neighbours UMAP's transform starts from), run single-threaded with the index's own
    seeded search state, so a chunk gives the same neighbours in every process and engine."""
    if placer.fit_vectors is None:
        import numba

        index = placer.reducer._knn_search_index
        threads = numba.get_num_threads()
        state = np.copy(index.search_rng_state)
        numba.set_num_threads(1)  # the search shares one random state between its threads
        try:
            ind, _ = index.query(np.ascontiguousarray(vectors, dtype=np.float32), k=k)
        finally:
            numba.set_num_threads(threads)
            index.search_rng_state = state
        return np.asarray(ind, dtype=np.int64)
    fit = np.asarray(placer.fit_vectors, dtype=np.float32)
    fit = fit / np.maximum(np.linalg.norm(fit, axis=1, keepdims=True), 1e-12)
    out = np.empty((len(vectors), k), dtype=np.int64)
    step = max(1, 20_000_000 // max(1, len(fit)))  # rows per block: ~80 MB of similarities
    for lo in range(0, len(vectors), step):
        q = np.asarray(vectors[lo:lo + step], dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sims = q @ fit.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(fit) else \
            np.tile(np.arange(len(fit)), (len(q), 1))
        # nearest first, ties by fit row: the same order on every machine
        order = np.lexsort((part, -np.take_along_axis(sims, part, axis=1)), axis=1)
        out[lo:lo + step] = np.take_along_axis(part, order, axis=1)
    return out


def run(vectors: np.ndarray, model: NarrativeModel, cfg: AssignConfig) -> Assignment:
    """Label vectors with a fitted model; never fits anything."""
    return Placer.from_model(model, cfg).place(vectors)


def emerging(posts: pd.DataFrame, vectors: np.ndarray, coords: np.ndarray, labels: np.ndarray,
             cfg: AssignConfig, seed: int) -> Emerging:
    """Group the unassigned posts among themselves: candidates for an emerging narrative."""
    from . import cluster, narratives

    idx = np.flatnonzero(labels < 0)
    columns = ["group_id", "n_posts", "n_accounts", "first_at", "last_at", "top_terms",
               "example_post_id", "example_text"]
    if len(idx) < 2:
        return Emerging(pd.DataFrame(columns=columns), [], np.full(len(idx), -1))
    ccfg = ClusterConfig(min_cluster_size=cfg.emerging_min_cluster_size)
    grouped = cluster.run(coords[idx], ccfg)
    g = grouped.labels
    ids = sorted(int(c) for c in np.unique(g) if c >= 0)
    texts = posts["text"].tolist()
    sub_texts = [texts[i] for i in idx]
    langs, _, _ = narratives.post_languages(posts.iloc[idx])
    sub_langs = langs.tolist()
    distinct: dict[str, tuple[str, str]] = {}  # text key -> (text, analyser), each analysed once
    keys_by_group: dict[int, list[str]] = {}
    for c in ids:
        keys = keys_by_group.setdefault(c, [])
        for j in np.flatnonzero(g == c):
            key = narratives.text_key(sub_texts[j])
            if key not in keys:
                keys.append(key)
                distinct.setdefault(key, (sub_texts[j], narratives.analyser_for(sub_langs[j])))
    analysed = narratives.analyse(distinct, set(), SummariseConfig()) if ids else {}
    docs = {c: [analysed[k].terms for k in keys_by_group[c]] for c in ids}
    top = narratives.class_tfidf(docs, 8) if ids else {}
    rows, details = [], []
    sub_vectors = vectors[idx]
    for c in ids:
        members = np.flatnonzero(g == c)
        ex = narratives.representative(members, sub_vectors, sub_texts, cfg.n_examples)
        p = posts.iloc[idx[members]]
        rows.append({"group_id": c, "n_posts": len(members),
                     "n_accounts": int(p["account_id"].nunique()),
                     "first_at": p["created_at"].min().isoformat(),
                     "last_at": p["created_at"].max().isoformat(),
                     "top_terms": "; ".join(top[c]),
                     "example_post_id": posts["post_id"].iloc[idx[ex[0]]],
                     "example_text": sub_texts[ex[0]]})
        details.append({"group_id": c, "n_posts": len(members), "top_terms": top[c],
                        "examples": [{"post_id": posts["post_id"].iloc[idx[j]],
                                      "account_id": posts["account_id"].iloc[idx[j]],
                                      "created_at": posts["created_at"].iloc[idx[j]].isoformat(),
                                      "text": sub_texts[j]} for j in ex],
                        "post_ids": posts["post_id"].iloc[idx[members]].tolist()})
    return Emerging(pd.DataFrame(rows, columns=columns), details, g)


@dataclass
class AssignResult:
    out_dir: Path
    posts: pd.DataFrame
    counts: pd.DataFrame  # per narrative: id, label, codebook name, posts, share
    n_unassigned: int
    emerging: Emerging
    stats: dict
    ingest_stats: dict


def assign_corpus(corpus: Path, model_dir: Path, out_dir: Path, cfg: Config,
                  embedder=None, progress=None) -> AssignResult:
    """The `assign` job: label a corpus with a saved model and write the outputs."""
    from . import embed, ingest, lang, model as model_mod
    from .runner import accepted_posts, package_versions, posts_table
    from .schema import ASSIGNMENTS

    corpus, out_dir = Path(corpus), Path(out_dir)
    if not corpus.exists():
        raise InputError(f"corpus {corpus} does not exist; pass a folder or a CSV, JSONL or "
                         "Parquet file of posts (see corpora/README.md)")
    t0 = time.perf_counter()
    nm = model_mod.load(model_dir)  # verifies every file before unpickling
    result = ingest.run(corpus, cfg.ingest)
    stats = result.stats
    posts = accepted_posts(result, corpus, out_dir)
    posts, lang_stats = lang.run(posts)  # as the cluster job's ingest stage: a given lang is kept
    write_parquet(posts_table(posts), out_dir / "posts.parquet")

    ecfg = model_embed_config(nm, cfg.embed)
    embedder = embedder or embed.make_embedder(ecfg)
    vectors, estats = embed.run(posts["text"].tolist(), ecfg, embedder=embedder,
                                progress=progress("embedding posts") if progress else None)
    check_embedder(nm, estats.model_id, int(vectors.shape[1]))
    a = run(vectors, nm, cfg.assign)
    labels = a.labels
    assignments = pd.DataFrame({"post_id": posts["post_id"].to_numpy(),
                                "narrative_id": labels.astype(np.int64),
                                "probability": np.round(a.probabilities, 6).astype(np.float32)})
    if len(assignments) != len(posts):
        raise AssertionError("assignments must have exactly one row per accepted post")
    write_parquet(pa.Table.from_pandas(assignments, schema=ASSIGNMENTS, preserve_index=False),
                  out_dir / "assignments.parquet")

    narr = pd.DataFrame(nm.card["narratives"],
                        columns=list(nm.card["narratives"][0]) if nm.card["narratives"]
                        else ["narrative_id", "label", "n_posts"])
    counts = pd.Series(labels[labels >= 0]).value_counts()
    table = pd.DataFrame({
        "narrative_id": narr["narrative_id"].astype(int),
        "label": narr["label"],
        "codebook_name": narr.get("codebook_name", pd.Series([""] * len(narr))).fillna(""),
        "n_posts": [int(counts.get(i, 0)) for i in narr["narrative_id"].astype(int)],
        "n_posts_in_training": narr["n_posts"].astype(int),
    })
    table["share"] = (table["n_posts"] / len(posts)).round(4)
    write_csv(table, out_dir / "summary.csv")

    em = emerging(posts, vectors, a.coords, labels, cfg.assign, cfg.run.seed)
    write_csv(em.groups, out_dir / "emerging.csv")
    write_json({"note": "posts that fit no narrative of the model, grouped among themselves: "
                        "candidates for an emerging narrative, for an analyst to read",
                "n_unassigned": int((labels < 0).sum()), "groups": em.details},
               out_dir / "emerging.json")
    n_unassigned = int((labels < 0).sum())
    summary = {
        "model": str(model_dir),
        "model_name": nm.card["name"],
        "model_input_hash": nm.card["input_hash"],
        "corpus": str(corpus),
        "input_hash": ingest.input_hash(corpus),
        "packages": package_versions(),
        "embedding": {"model_id": estats.model_id, "n_embedded": estats.n_embedded,
                      "n_cached": estats.n_cached},
        "counts": {"rows_in": stats["n_rows_in"], "accepted": stats["n_accepted"],
                   "rejected": stats["n_rejected"], "posts": len(posts),
                   "assigned": int((labels >= 0).sum()), "unassigned": n_unassigned,
                   "assigned_by_centroid": int(a.via_centroid.sum()),
                   "emerging_groups": int(len(em.groups))},
        "languages": lang_stats,
        "narratives": table.to_dict(orient="records"),
        "config": {"assign": cfg.to_dict()["assign"]},
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    write_json(summary, out_dir / "summary.json")
    log.info("assign: %s posts -> %s in narratives, %s unassigned, %d emerging candidate groups",
             f"{len(posts):,}", f"{int((labels >= 0).sum()):,}", f"{n_unassigned:,}",
             len(em.groups))
    return AssignResult(out_dir, posts, table, n_unassigned, em, summary, stats)
