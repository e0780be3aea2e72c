import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import embed
from pipeline.config import EmbedConfig


def cfg(tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return EmbedConfig(**kw)


def test_vectors_are_normalised_float32(tmp_path, hashing_embedder):
    vectors, stats = embed.run(["army parade today", "cricket match"], cfg(tmp_path),
                               embedder=hashing_embedder)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_identical_texts_are_embedded_once(tmp_path, hashing_embedder):
    texts = ["Same text  here", "same text here https://x.co/1", "Same text here", "other"]
    vectors, stats = embed.run(texts, cfg(tmp_path, cache_dir=""), embedder=hashing_embedder)
    # whitespace and links are normalised away; case is kept (the model sees it)
    assert stats.n_unique == 3 and hashing_embedder.n_embedded == 3
    assert np.array_equal(vectors[0], vectors[2])


def test_cache_means_a_second_run_embeds_nothing(tmp_path, hashing_embedder):
    texts = [f"post number {i} about narrative {i % 3}" for i in range(50)]
    first, s1 = embed.run(texts, cfg(tmp_path), embedder=hashing_embedder)
    assert s1.n_embedded == 50 and s1.n_cached == 0
    second, s2 = embed.run(texts + ["a new post"], cfg(tmp_path), embedder=hashing_embedder)
    assert s2.n_cached == 50 and s2.n_embedded == 1
    assert hashing_embedder.calls[-1] == ["a new post"]
    assert np.array_equal(first, second[:50])


def test_cache_is_keyed_by_model(tmp_path, hashing_embedder):
    embed.run(["hello world"], cfg(tmp_path), embedder=hashing_embedder)

    class Other(type(hashing_embedder)):
        model_id = "test/other"

    other = Other()
    _, stats = embed.run(["hello world"], cfg(tmp_path), embedder=other)
    assert stats.n_embedded == 1 and other.n_embedded == 1


def test_half_written_shard_is_ignored(tmp_path, hashing_embedder):
    c = cfg(tmp_path)
    embed.run(["one", "two"], c, embedder=hashing_embedder)
    folder = embed.VectorCache(c.cache_dir, hashing_embedder.model_id).folder
    # what a kill in the middle of a write leaves behind: a temporary file, never a shard
    (folder / ".shard-000001-dead.npy.1234.tmp").write_bytes(b"\x93NUMPY garbage")
    # and a damaged shard from some other cause
    (folder / "shard-999999-bad.npy").write_bytes(b"not numpy at all")
    _, stats = embed.run(["one", "two", "three"], c, embedder=hashing_embedder)
    assert stats.n_cached == 2 and stats.n_embedded == 1


def test_normalise_text_strips_controls_links_and_space():
    c = EmbedConfig(max_chars=20)
    assert embed.normalise_text("a\x00b \u202e c\n\nhttps://t.co/x  d", c) == "ab c d"
    assert len(embed.normalise_text("x" * 100, c)) == 20


def _normalise_text_by_regex(text: str, cfg: EmbedConfig) -> str:
    """normalise_text as it was before its fast paths: every regex on every text."""
    import unicodedata

    text = embed._CONTROL.sub("", unicodedata.normalize("NFC", text))
    if cfg.strip_urls:
        text = embed._URL.sub(" ", text)
    return embed._SPACE.sub(" ", text).strip()[: cfg.max_chars]


# the characters the fast paths reason about: every kind of space and control character, format
# characters, combining marks, case variants of link prefixes, and ordinary letters
_TRICKY = st.lists(st.sampled_from(
    list(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
         "\x00\x7f\u200b\u200c\u200d\u202e\ufeff\u180e\u0301\u0308e\u00e9K\u212a\u017fsStTpPhH"
         "wW.:/_-xyz\u4e2d\u0627") + ["http://", "HTTPS://", "www.", "WwW.", "://"]),
    max_size=40).map("".join)


@settings(max_examples=3000, deadline=None)
@given(text=st.one_of(_TRICKY, st.text(max_size=40)), strip_urls=st.booleans())
def test_normalise_text_fast_paths_match_the_regexes(text, strip_urls):
    cfg = EmbedConfig(strip_urls=strip_urls, max_chars=30)
    assert embed.normalise_text(text, cfg) == _normalise_text_by_regex(text, cfg)


def test_text_keys_are_blake2b_digests():
    import hashlib

    texts = ["", "a", "ünï", "\ud800 lone surrogate"]
    keys = embed.text_keys(texts)
    assert keys.dtype == np.uint64 and keys.shape == (4, 2) and keys.flags.writeable
    for t, k in zip(texts, keys):
        digest = hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        assert k.tobytes() == digest
    assert embed.text_keys([]).shape == (0, 2)


def test_batches_are_longest_first_and_stable(tmp_path, hashing_embedder):
    texts = ["bb", "a", "cccc", "dd"]
    embed.run(texts, cfg(tmp_path, cache_dir=""), embedder=hashing_embedder, chunk_size=2)
    assert hashing_embedder.calls == [["cccc", "bb"], ["dd", "a"]]


def test_progress_reports_every_few_batches(tmp_path, hashing_embedder):
    seen = []
    texts = [f"text {i}" for i in range(10)]
    embed.run(texts, cfg(tmp_path), embedder=hashing_embedder, chunk_size=6, progress_every=4,
              progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 10), (4, 10), (6, 10), (10, 10)]


@pytest.mark.slow
def test_packaged_minilm_loads_offline_and_is_semantic(tmp_path):
    """The real model in torch, loaded from the installed package with the hub switched off."""
    code = (
        "import numpy as np\n"
        "from pipeline import embed\n"
        "from pipeline.config import EmbedConfig\n"
        "v, s = embed.run(['The army held a parade for the martyrs',"
        " 'Soldiers marched in the military parade',"
        " 'Pakistan won the cricket match by five wickets'],"
        f" EmbedConfig(tier='quality-torch', cache_dir={str(tmp_path / 'c')!r}))\n"
        "assert v.shape == (3, 384) and v.dtype == np.float32, v.shape\n"
        "print(float(v[0] @ v[1]), float(v[0] @ v[2]))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    near, far = map(float, proc.stdout.split())
    assert near > far + 0.2
