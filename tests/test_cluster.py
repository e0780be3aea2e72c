import numpy as np

from pipeline import cluster, reduce
from pipeline.config import ClusterConfig, ReduceConfig


def blobs(seed=0, n=60, k=3, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(k, dim))
    x = np.concatenate([c + rng.normal(0, 0.3, size=(n, dim)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n)


def test_hdbscan_finds_blobs_and_orders_by_size():
    x, truth = blobs()
    x = np.concatenate([x, x[:30] + 0.01])  # make blob 0 the largest
    result = cluster.run(x, ClusterConfig(min_cluster_size=10, min_samples=5))
    assert set(np.unique(result.labels)) - {-1} == {0, 1, 2}
    sizes = [(result.labels == c).sum() for c in range(3)]
    assert sizes == sorted(sizes, reverse=True)
    assert result.probabilities.dtype == np.float32


def test_too_few_posts_are_all_noise():
    x, _ = blobs(n=3, k=1)
    result = cluster.run(x, ClusterConfig(min_cluster_size=15))
    assert (result.labels == -1).all() and len(result.labels) == 3


def test_noise_is_kept_as_minus_one():
    x, _ = blobs()
    outlier = np.full((1, x.shape[1]), 500.0, dtype=np.float32)
    result = cluster.run(np.concatenate([x, outlier]), ClusterConfig(min_cluster_size=10))
    assert result.labels[-1] == -1


def test_umap_is_seeded_and_repeatable():
    x, _ = blobs(n=40)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cfg = ReduceConfig(n_neighbors=10, n_components=3)
    a = reduce.run(x, cfg, seed=3)
    b = reduce.run(x, cfg, seed=3)
    assert a.shape == (120, 3) and np.array_equal(a, b)


def test_tiny_inputs_skip_umap():
    x, _ = blobs(n=2, k=2)
    assert reduce.run(x, ReduceConfig(), seed=1).shape == x.shape


def test_relabel_by_size():
    labels = np.array([2, 2, -1, 0, 1, 1, 1, 0, 0, 0])
    assert cluster.relabel_by_size(labels).tolist() == [2, 2, -1, 0, 1, 1, 1, 0, 0, 0]
    assert cluster.relabel_by_size(np.array([5, 5, 3, -1])).tolist() == [0, 0, 1, -1]


def test_automatic_sizes_follow_the_corpus():
    auto = ClusterConfig()
    assert cluster.resolve_sizes(100, auto) == (15, 5)
    assert cluster.resolve_sizes(3_000, auto) == (55, 13)
    assert cluster.resolve_sizes(10_000_000, auto) == (500, 125)
    assert cluster.resolve_sizes(3_000, ClusterConfig(min_cluster_size=20, min_samples=3)) == (20, 3)


def test_all_identical_posts_are_one_narrative():
    x = np.ones((40, 5), dtype=np.float32)
    result = cluster.run(x, ClusterConfig())
    assert (result.labels == 0).all() and (result.probabilities == 1).all()


def test_identical_vectors_skip_umap():
    x = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (30, 1))
    coords = reduce.run(x, ReduceConfig(n_components=3), seed=1)
    assert coords.shape == (30, 3) and (coords == 0).all()


def test_min_samples_is_scaled_to_the_languages_only_when_automatic():
    from dataclasses import replace

    from pipeline import lang

    cfg = ClusterConfig()
    three = lang.effective_languages(["en"] * 120 + ["ur"] * 120 + ["hi"] * 120)
    assert three == 3.0 and lang.effective_languages(["en"] * 50) == 1.0
    assert lang.effective_languages([]) == 1.0
    assert 1.3 < lang.effective_languages(["en"] * 90 + ["ur"] * 10) < 1.4
    assert cluster.resolve_sizes(360, cfg) == (19, 5)  # English tiers: unchanged
    assert cluster.resolve_sizes(360, cfg, three) == (19, 2)  # ceil(5 / 3)
    assert cluster.resolve_sizes(100_000, cfg, three) == (316, 27)  # ceil(79 / 3)
    assert cluster.resolve_sizes(360, cfg, 50.0) == (19, 2)  # never below 2
    off = replace(cfg, min_samples_per_language=False)
    assert cluster.resolve_sizes(360, off, three) == (19, 5)
    given = replace(cfg, min_samples=7)  # a value set by the user is never changed
    assert cluster.resolve_sizes(360, given, three) == (19, 7)
