"""embed.distinct: texts normalised, keyed and deduplicated a chunk at a time, held in Arrow.

Everything is checked against the way ``embed.run`` did it with one list of Python strings
(``reference`` below: every text normalised into a list, ``np.unique`` over it, the chunks in
``sorted(key=(-len, text))`` order), so the cache keys, the rows vectors are copied from, the
batches the model sees and the vectors themselves stay what they were.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import embed
from pipeline.config import EmbedConfig

TRICKY = [
    "Same text  here", "same text here https://x.co/1", "Same text here", "", "   ", "\x00\x01",
    "cafe\u0301 au lait", "caf\u00e9 au lait",  # NFD and NFC: the same text once normalised
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",  # Hindi
    "\u0633\u0644\u0627\u0645 \u062f\u0646\u06cc\u0627",  # Urdu
    "emoji \U0001F600 here", "emoji \U0001F600  here\u200b", "a\u200db", "lone \ud800 surrogate",
    "tab\there\nnewline", "www.example.org/x only", "zzz", "ZZZ", "zzz", "a" * 30,
    "\u00e9" * 30, "b" * 30, "\U0001F600" * 30, "",
]
VALID = [t for t in TRICKY if "\ud800" not in t]  # valid UTF-8 (Arrow strings, the test model)


def reference(texts, cfg):
    """What embed.run computed before, with Python lists."""
    normalised = [embed.normalise_text(t, cfg) for t in texts]
    unique, first, inverse = np.unique(np.asarray(normalised, dtype=object), return_index=True,
                                       return_inverse=True)
    unique_list = [str(u) for u in unique]
    keys = embed.text_keys(unique_list)
    todo = sorted(range(len(unique_list)), key=lambda i: (-len(unique_list[i]), unique_list[i]))
    return normalised, unique_list, first, inverse.ravel(), keys, todo


def check_same(texts, cfg, chunk_size):
    normalised, unique_list, first, inverse, keys, todo = reference(texts, cfg)
    got = embed.distinct(texts, cfg, chunk_size=chunk_size)
    assert len(got) == len(unique_list)
    strings = got.strings(np.arange(len(got)))
    # the same distinct texts (in another order: by key, not by text), each with its text's key
    by_text = {t: i for i, t in enumerate(strings)}
    assert sorted(by_text) == sorted(unique_list)
    to_got = np.array([by_text[t] for t in unique_list], dtype=np.int64)
    assert np.array_equal(got.keys, embed.text_keys(strings))
    assert np.array_equal(got.keys[to_got], keys)
    assert np.array_equal(got.first[to_got], first)  # the row where each text first occurs
    assert np.array_equal(got.lengths, [len(t) for t in strings])
    # every row points at its own normalised text, and copies from the same row as before
    assert [strings[u] for u in got.inverse] == normalised
    assert np.array_equal(got.first[got.inverse], first[inverse])
    # the model's order: longest first, ties by text in code point order
    order = got.longest_first(np.arange(len(got)))
    assert [strings[i] for i in order] == [unique_list[i] for i in todo]
    return got


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 65_536])
def test_distinct_matches_the_list_reference(chunk_size):
    check_same(TRICKY * 3, EmbedConfig(), chunk_size)


def test_distinct_honours_the_normalisation_settings():
    got = check_same(TRICKY, EmbedConfig(strip_urls=False, max_chars=5), 4)
    assert "www.e" in got.strings(np.arange(len(got)))


@pytest.mark.parametrize("as_input", [
    list, tuple, lambda t: pd.Series(t, dtype=object), lambda t: pd.Series(t, dtype="str"),
    lambda t: pa.array(t, type=pa.string()), lambda t: pa.chunked_array([t[:5], t[5:]]),
])
def test_distinct_reads_lists_series_and_arrow_alike(as_input):
    texts = VALID
    want = embed.distinct(texts, EmbedConfig(), chunk_size=3)
    got = embed.distinct(as_input(texts), EmbedConfig(), chunk_size=3)
    for name in ("keys", "lengths", "first", "inverse"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.texts.equals(want.texts)


def test_distinct_reads_an_object_series_with_a_lone_surrogate():
    texts = pd.Series(TRICKY, index=range(100, 100 + len(TRICKY)), dtype=object)
    check_same(TRICKY, EmbedConfig(), 5)
    want = embed.distinct(TRICKY, EmbedConfig(), chunk_size=5)
    got = embed.distinct(texts, EmbedConfig(), chunk_size=5)
    assert np.array_equal(got.keys, want.keys) and np.array_equal(got.inverse, want.inverse)


def test_distinct_of_nothing():
    got = embed.distinct([], EmbedConfig())
    assert len(got) == 0 and got.keys.shape == (0, 2) and len(got.inverse) == 0
    assert len(got.longest_first(np.arange(0))) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(
    ["a", "b", "B", " ", "\t", "\u00e9", "e\u0301", "\u0928", "\U0001F600", "\x07", "\u200b",
     "://", "www.", "\ud800"]), max_size=6).map("".join), max_size=40), st.integers(1, 9))
def test_distinct_matches_the_reference_on_any_texts(texts, chunk_size):
    check_same(texts, EmbedConfig(max_chars=4), chunk_size)


def reference_run(texts, cfg, embedder, chunk_size):
    """The vectors and model batches of embed.run before (no cache)."""
    normalised, unique_list, first, inverse, keys, todo = reference(texts, cfg)
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(todo), chunk_size):
        idx = todo[start:start + chunk_size]
        vectors[first[idx]] = embed.embed_chunk(embedder, [unique_list[i] for i in idx])
    return vectors[first[inverse]]


@pytest.mark.parametrize("as_input", [list, lambda t: pd.Series(t, dtype=object)])
def test_run_gives_the_reference_batches_and_vectors(tmp_path, hashing_embedder, as_input):
    from tests.conftest import HashingEmbedder

    texts = [f"post {i % 37} about {'x' * (i % 5)} narrative {i % 11}" for i in range(300)]
    texts += VALID
    cfg = EmbedConfig(cache_dir="")
    reference_embedder = HashingEmbedder()
    want = reference_run(texts, cfg, reference_embedder, chunk_size=16)
    got, stats = embed.run(as_input(texts), cfg, embedder=hashing_embedder, chunk_size=16,
                           progress_every=8)
    assert hashing_embedder.calls == [c for call in reference_embedder.calls
                                      for c in (call[:8], call[8:]) if c]
    assert np.array_equal(got, want)
    assert stats.n_texts == len(texts) and stats.n_unique == len(set(
        embed.normalise_text(t, cfg) for t in texts))


@pytest.mark.parametrize("lookup_block", [7, 65_536])
def test_run_to_disk_with_a_half_warm_cache_equals_in_memory(tmp_path, hashing_embedder,
                                                            monkeypatch, lookup_block):
    monkeypatch.setattr(embed, "LOOKUP_BLOCK", lookup_block)
    monkeypatch.setattr(embed._Sink, "BLOCK", 5)
    texts = pd.Series([f"text {i % 53} {'y' * (i % 4)}" for i in range(400)], dtype="str")
    cfg = EmbedConfig(cache_dir=str(tmp_path / "cache"))
    embed.run(texts[:150], cfg, embedder=hashing_embedder, chunk_size=8)  # part of it cached
    memory, s_mem = embed.run(texts, EmbedConfig(cache_dir=""), embedder=hashing_embedder)
    disk, s_disk = embed.run(texts, cfg, embedder=hashing_embedder, chunk_size=8,
                             out_path=tmp_path / "vectors.npy")
    assert s_disk.n_cached > 0 and s_disk.n_embedded > 0
    assert s_disk.n_cached + s_disk.n_embedded == s_mem.n_unique == s_disk.n_unique
    assert np.array_equal(np.load(tmp_path / "vectors.npy"), memory)


def test_cache_reads_its_own_new_shards_from_disk(tmp_path):
    cache = embed.VectorCache(tmp_path, "test/model")
    keys = embed.text_keys(["one", "two", "three"])
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put(keys[:2], vectors[:2])
    cache.put(keys[2:], vectors[2:])
    # the written shards are mapped from their files, not kept as copies in memory
    assert all(isinstance(s, np.memmap) for s in cache._shards) and len(cache) == 3
    found, got = cache.get(keys[::-1])
    assert found.all() and np.array_equal(got, vectors[::-1])
