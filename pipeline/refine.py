"""After clustering: merge near-identical narratives, optionally move noise posts into narratives.

Both work in embedding space (not the UMAP space) on narrative centroids, the normalised mean of
a narrative's post vectors, so a threshold means the same cosine in every corpus.

- **Merges.** HDBSCAN sometimes splits one narrative in two dense parts (a copypasta core and its
  paraphrases). Pairs whose centroids have cosine >= ``refine.merge_min_similarity`` are merged,
  most similar pair first, recomputing the merged centroid each time, so merges never chain
  through a string of pairwise-similar narratives. ``1.0`` switches merging off.
- **Noise.** With ``refine.reassign_noise = true``, a noise post joins the narrative whose centroid
  is nearest when the cosine is >= ``refine.reassign_min_similarity``. Off by default: noise is a
  finding too (one-off organic posts), and a post moved into a narrative takes part in that
  narrative's synchronisation signal.

Narrative ids are renumbered by size afterwards (largest first), as cluster.relabel_by_size does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .cluster import relabel_by_size
from .codebook import centroids
from .config import RefineConfig

log = logging.getLogger(__name__)


@dataclass
class Refined:
    labels: np.ndarray  # final narrative id per post, -1 noise, ids ordered by size
    reassigned: np.ndarray  # bool per post: moved from noise into a narrative
    merges: list[dict] = field(default_factory=list)  # per final narrative made of several
    # clusters: {"narrative_id", "cluster_ids", "steps": [{"into", "merged", "similarity"}]}
    id_map: dict[int, int] = field(default_factory=dict)  # clustering id -> final id

    @property
    def n_reassigned(self) -> int:
        return int(self.reassigned.sum())


def merge_groups(labels: np.ndarray, vectors: np.ndarray,
                 min_similarity: float) -> tuple[dict[int, int], list[dict]]:
    """Greedy centroid merging; returns (id -> surviving id, merge records in merge order)."""
    ids, cents = centroids(labels, vectors)
    parent = {int(c): int(c) for c in ids}
    if len(ids) < 2 or min_similarity >= 1.0:
        return parent, []
    sums = {int(c): np.asarray(vectors[labels == c], np.float64).sum(axis=0) for c in ids}
    alive = [int(c) for c in ids]
    records: list[dict] = []
    while len(alive) > 1:
        unit = np.stack([sums[c] / (np.linalg.norm(sums[c]) or 1.0) for c in alive])
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)
        i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)  # first max: smallest ids
        if sims[i, j] < min_similarity:
            break
        keep, gone = alive[min(i, j)], alive[max(i, j)]  # the lower (larger) id absorbs
        records.append({"into": keep, "merged": gone, "similarity": round(float(sims[i, j]), 4)})
        sums[keep] = sums[keep] + sums.pop(gone)
        alive.remove(gone)
        for c, p in parent.items():
            if p == gone:
                parent[c] = keep
    return parent, records


def run(labels: np.ndarray, vectors: np.ndarray, cfg: RefineConfig) -> Refined:
    labels = np.asarray(labels, dtype=np.int64)
    parent, records = merge_groups(labels, vectors, cfg.merge_min_similarity)
    merged = np.array([parent[int(c)] if c >= 0 else -1 for c in labels], dtype=np.int64)
    reassigned = np.zeros(len(labels), dtype=bool)
    if cfg.reassign_noise and (merged < 0).any() and (merged >= 0).any():
        ids, cents = centroids(merged, vectors)
        noise = np.flatnonzero(merged < 0)
        sims = np.asarray(vectors[noise], np.float64) @ np.asarray(cents, np.float64).T
        best = np.argmax(sims, axis=1)
        ok = sims[np.arange(len(noise)), best] >= cfg.reassign_min_similarity
        merged[noise[ok]] = ids[best[ok]]
        reassigned[noise[ok]] = True
    final = relabel_by_size(merged)
    # clustering id -> final id: every post of a clustering id ends in one final narrative
    id_map: dict[int, int] = {}
    for c in sorted(parent):
        targets = np.unique(final[labels == c])
        assert len(targets) == 1, (c, targets)
        id_map[c] = int(targets[0])
    # one record per final narrative made of several clusters: which clustering ids it holds
    # and each merge step (clustering ids, centroid cosine when merged)
    out_records: dict[int, dict] = {}
    for r in records:
        into = id_map[r["into"]]
        rec = out_records.setdefault(into, {"narrative_id": into, "cluster_ids": [],
                                            "steps": []})
        rec["steps"].append(r)
    for into, rec in out_records.items():
        rec["cluster_ids"] = sorted(c for c, t in id_map.items() if t == into)
    merges = [out_records[k] for k in sorted(out_records)]
    if merges or reassigned.any():
        log.info("refine: %d narratives merged into %d, %d noise posts moved into narratives",
                 sum(len(m["cluster_ids"]) for m in merges), len(merges), int(reassigned.sum()))
    return Refined(final, reassigned, merges, id_map)


def describe(refined: Refined) -> str:
    """A suffix for the cluster stage's log line: merges and noise moved, if any."""
    parts = []
    if refined.merges:
        n = sum(len(m["cluster_ids"]) for m in refined.merges)
        parts.append(f"{n} clusters merged into {len(refined.merges)}")
    if refined.n_reassigned:
        parts.append(f"{refined.n_reassigned:,} noise posts moved into narratives")
    return f" ({'; '.join(parts)})" if parts else ""


def annotate(details: list[dict], refined: Refined) -> None:
    """Record in each narrative's details the clusters it was merged from and posts moved in."""
    merges = {m["narrative_id"]: m for m in refined.merges}
    for d in details:
        nid = int(d["narrative_id"])
        m = merges.get(nid)
        d["merged_from"] = ({"cluster_ids": m["cluster_ids"], "steps": m["steps"]}
                            if m else None)
        d["n_reassigned_noise"] = int(((refined.labels == nid) & refined.reassigned).sum())
