"""Merging near-identical narratives and moving noise posts into narratives (pipeline.refine)."""

import numpy as np
import pytest

from pipeline import refine
from pipeline.config import RefineConfig


def unit(rows):
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(rng, centre, n, spread=0.02):
    c = np.asarray(centre, dtype=np.float32)
    return unit(c + rng.normal(0, spread, (n, len(c))).astype(np.float32))


@pytest.fixture
def corpus():
    """Clusters 0 and 2 are the same topic (near-identical centroids); 1 is another; 3 noise."""
    rng = np.random.default_rng(0)
    a = blobs(rng, [1, 0, 0, 0], 30)
    b = blobs(rng, [0, 1, 0, 0], 20)
    a2 = blobs(rng, [1, 0.05, 0, 0], 12)
    near_b = blobs(rng, [0.1, 1, 0, 0], 3)  # noise, close to b
    far = blobs(rng, [0, 0, 1, 0], 4)  # noise, close to nothing
    vectors = np.vstack([a, b, a2, near_b, far])
    labels = np.array([0] * 30 + [1] * 20 + [2] * 12 + [-1] * 7, dtype=np.int64)
    return labels, vectors


def test_near_identical_narratives_are_merged_and_recorded(corpus):
    labels, vectors = corpus
    out = refine.run(labels, vectors, RefineConfig(merge_min_similarity=0.95,
                                                   reassign_noise=False))
    assert sorted(np.unique(out.labels).tolist()) == [-1, 0, 1]
    assert (out.labels[:30] == 0).all() and (out.labels[50:62] == 0).all()
    assert (out.labels[30:50] == 1).all()
    assert out.merges == [{"narrative_id": 0, "cluster_ids": [0, 2],
                           "steps": [{"into": 0, "merged": 2,
                                      "similarity": out.merges[0]["steps"][0]["similarity"]}]}]
    assert out.merges[0]["steps"][0]["similarity"] >= 0.95
    assert out.id_map == {0: 0, 1: 1, 2: 0}
    assert out.n_reassigned == 0 and (out.labels[62:] == -1).all()


def test_merging_is_off_at_1_and_below_threshold(corpus):
    labels, vectors = corpus
    for cfg in (RefineConfig(merge_min_similarity=1.0), RefineConfig(merge_min_similarity=0.9999)):
        out = refine.run(labels, vectors, cfg)
        assert out.merges == [] and np.array_equal(out.labels, labels)


def test_ids_stay_ordered_by_size_after_merging():
    rng = np.random.default_rng(1)
    # 0 (30 posts) and 1 (25) are different; 2 (20) and 3 (15) merge into 35 posts: the largest
    vectors = np.vstack([blobs(rng, [1, 0, 0], 30), blobs(rng, [0, 1, 0], 25),
                         blobs(rng, [0, 0, 1], 20), blobs(rng, [0, 0.02, 1], 15)])
    labels = np.repeat([0, 1, 2, 3], [30, 25, 20, 15])
    out = refine.run(labels, vectors, RefineConfig(merge_min_similarity=0.95))
    assert np.bincount(out.labels).tolist() == [35, 30, 25]
    assert (out.labels[55:] == 0).all()
    assert out.merges[0]["narrative_id"] == 0 and out.merges[0]["cluster_ids"] == [2, 3]
    assert out.id_map == {0: 1, 1: 2, 2: 0, 3: 0}


def test_merges_do_not_chain():
    # a ~ b and b ~ c above the threshold, a and c not: b joins one of them, c stays apart
    vectors = unit([[1, 0], [np.cos(0.3), np.sin(0.3)], [np.cos(0.6), np.sin(0.6)]])
    vectors = np.repeat(vectors, [10, 10, 10], axis=0)
    labels = np.repeat([0, 1, 2], 10)
    threshold = float(np.cos(0.3)) - 1e-3
    out = refine.run(labels, vectors, RefineConfig(merge_min_similarity=threshold))
    assert len(np.unique(out.labels)) == 2


def test_noise_reassignment_moves_only_posts_above_the_threshold(corpus):
    labels, vectors = corpus
    out = refine.run(labels, vectors, RefineConfig(merge_min_similarity=1.0,
                                                   reassign_noise=True,
                                                   reassign_min_similarity=0.9))
    assert out.n_reassigned == 3
    assert (out.labels[62:65] == 1).all() and out.reassigned[62:65].all()
    assert (out.labels[65:] == -1).all() and not out.reassigned[65:].any()
    # off by default
    assert refine.run(labels, vectors, RefineConfig()).n_reassigned == 0


def test_refine_is_deterministic(corpus):
    labels, vectors = corpus
    cfg = RefineConfig(merge_min_similarity=0.95, reassign_noise=True)
    a, b = refine.run(labels, vectors, cfg), refine.run(labels, vectors, cfg)
    assert np.array_equal(a.labels, b.labels) and a.merges == b.merges


def test_annotate_and_describe(corpus):
    labels, vectors = corpus
    out = refine.run(labels, vectors, RefineConfig(merge_min_similarity=0.95,
                                                   reassign_noise=True,
                                                   reassign_min_similarity=0.9))
    details = [{"narrative_id": 0}, {"narrative_id": 1}]
    refine.annotate(details, out)
    assert details[0]["merged_from"]["cluster_ids"] == [0, 2]
    assert details[1]["merged_from"] is None and details[1]["n_reassigned_noise"] == 3
    assert refine.describe(out) == " (2 clusters merged into 1; 3 noise posts moved into narratives)"
