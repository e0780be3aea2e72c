import numpy as np
import pytest

from pipeline.diskvectors import DiskVectors


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(3)
    array = rng.standard_normal((1000, 7)).astype(np.float32)
    path = tmp_path / "vectors.npy"
    np.save(path, array)
    return array, path


def test_rows_come_back_in_the_order_asked(saved):
    array, path = saved
    v = DiskVectors(path, block_rows=64)  # many blocks
    assert v.shape == (1000, 7) and v.ndim == 2 and len(v) == 1000 and v.dtype == np.float32
    rows = np.array([999, 3, 64, 63, 3, 500, 0, 128])
    np.testing.assert_array_equal(v[rows], array[rows])
    mask = np.zeros(1000, dtype=bool)
    mask[[5, 70, 900]] = True
    np.testing.assert_array_equal(v[mask], array[mask])
    np.testing.assert_array_equal(v[10:300:7], array[10:300:7])
    np.testing.assert_array_equal(v[:], array)
    assert v[np.array([], dtype=np.int64)].shape == (0, 7)


def test_bad_indexes_and_whole_array_conversion_fail(saved):
    _, path = saved
    v = DiskVectors(path)
    with pytest.raises(IndexError):
        v[np.array([1000])]
    with pytest.raises(IndexError):
        v[np.array([-1])]
    with pytest.raises(IndexError):
        v[np.zeros(10, dtype=bool)]
    with pytest.raises(TypeError):
        np.asarray(v)


def test_narratives_and_codebook_read_rows_the_same(saved):
    from pipeline import codebook, narratives

    array, path = saved
    v = DiskVectors(path, block_rows=100)
    labels = np.random.default_rng(0).integers(-1, 6, 1000)
    a_ids, a = codebook.centroids(labels, array)
    b_ids, b = codebook.centroids(labels, v)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_array_equal(a, b)
    texts = [f"text {i % 97}" for i in range(1000)]
    idx = np.flatnonzero(labels == 2)
    assert (narratives.representative(idx, v, texts, 5)
            == narratives.representative(idx, array, texts, 5))


def test_embed_run_to_a_file_gives_the_vectors_it_would_hold(tmp_path, hashing_embedder):
    from pipeline import config, embed

    cfg = config.load(None, [f"embed.cache_dir={tmp_path}/cache"]).embed
    texts = [f"post number {i % 37} about the match" for i in range(300)] + ["", "solo"]
    held, stats_held = embed.run(texts, cfg, embedder=hashing_embedder, chunk_size=16)
    (tmp_path / f".vectors.npy.999999.tmp").write_bytes(b"left by a killed run")
    out = tmp_path / "vectors.npy"
    for cache in ("cache", "new-cache"):  # from the cache, then embedded chunk by chunk
        cfg_run = config.load(None, [f"embed.cache_dir={tmp_path}/{cache}"]).embed
        on_disk, stats_disk = embed.run(texts, cfg_run, embedder=hashing_embedder,
                                        chunk_size=16, out_path=out)
        assert isinstance(on_disk, DiskVectors) and stats_disk.n_unique == stats_held.n_unique
        assert stats_disk.n_embedded == (0 if cache == "cache" else stats_held.n_unique)
        np.testing.assert_array_equal(np.load(out), held)  # repeats filled in
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
