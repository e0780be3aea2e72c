"""static_embed.WordPieceIds: the fast tier's token ids, found chunk by chunk and remembered,
must be the tokenizer's own ids for every text (so the vectors are the same bit for bit).

Checked against ``tokenizer.encode_batch`` on generated texts built from pieces chosen to break
it: case, ASCII punctuation and controls, other whitespace, accents (composed and combining),
letters whose lowercase is longer, CJK, emoji, Urdu, added tokens in any case, the WordPiece
prefix, words longer than WordPiece's limit and texts past the maximum length.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from pipeline import build_models, static_embed
from pipeline.static_embed import WordPieceIds

PIECES = [
    "the", "The", "THE", "unaffable", "affable", "running", "Runner", "x", "zq", "a1b2",
    "2008", "3.14", "#election2024", "@newsdesk", "https://t.co/AbC123?x=1&y=2", "it's",
    "can't", "e-mail", "(cont'd)", "...", "!!!", "?!", "_", "`", "~", "|", "\\", "^", "{}",
    " ", "  ", "\t", "\n", "\r", "\x00", "\x01", "\x7f", "\x0b", "\x1c", "\xa0", "\u3000",
    "\u200b", "\u200d", "\ufeff", "café", "cafe\u0301", "\u0301", "naïve", "Ünïcödé", "ß",
    "İstanbul", "ΣΊΣΥΦΟΣ", "ﬁne", "中文字", "日本", "😂", "🔥🔥", "👍🏽", "پاکستان", "نمستे",
    "[MASK]", "[mask]", "[Mask]", "[UNK]", "[PAD]", "[CLS]x", "##", "##ing", "#", "[", "]",
    "a" * 99, "b" * 100, "c" * 101, "word " * 3,
]

texts_strategy = st.lists(st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
                          min_size=1, max_size=8)


def reference(tokenizer, texts):
    return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


@pytest.fixture(scope="module")
def real_tokenizer(built_models):
    """The fast tier's own tokenizer (built at install time, 512-token truncation), with no
    padding, as sentence-transformers' StaticEmbedding sets it."""
    tok = Tokenizer.from_file(str(build_models.ARTEFACTS["minilm-l6-static"].folder
                                  / "tokenizer.json"))
    tok.no_padding()
    return tok


def small_tokenizer(max_length=None, lowercase=True):
    vocab = {t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##aff", "##able", "aff",
         "run", "##ning", "##n", "##er", "a", "b", "c", "1", "2", "##1", "##2", "x", ".", "!",
         "'", "#", "s", "##s", "t", "caf", "##e", "e", "é", "中", "naive", "na", "##ive"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=8))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    if max_length is not None:
        tok.enable_truncation(max_length)
    return tok


@settings(max_examples=300, deadline=None)
@given(texts=texts_strategy)
def test_the_real_tokenizer_gives_the_same_ids(real_tokenizer, texts):
    ids = WordPieceIds(real_tokenizer)
    assert ids.exact  # BertNormalizer, BertPreTokenizer, WordPiece: the chunk path is used
    assert ids(texts) == reference(real_tokenizer, texts)
    assert ids(texts) == reference(real_tokenizer, texts)  # again, from what it remembered


@settings(max_examples=300, deadline=None)
@given(texts=texts_strategy, max_length=st.sampled_from([None, 1, 3, 8]))
def test_a_small_vocabulary_and_truncation_give_the_same_ids(texts, max_length):
    # unknown words, words past max_input_chars_per_word, pieces with no split and truncation
    tok = small_tokenizer(max_length)
    assert WordPieceIds(tok)(texts) == reference(tok, texts)


def test_texts_past_the_maximum_length_are_cut_as_the_tokenizer_cuts(real_tokenizer):
    texts = ["word " * 700, "pre " + "unaffable " * 300, "x", "中" * 600, "[MASK] " * 600]
    got = WordPieceIds(real_tokenizer)(texts)
    assert [len(x) for x in got] == [512, 512, 1, 512, 512]
    assert got == reference(real_tokenizer, texts)


def test_encode_gives_the_flat_ids_and_offsets_preprocess_gives(real_tokenizer):
    texts = ["The army held a parade", "", "ok ok", "  ", "Café 😂 [MASK]"]
    ids, offsets = WordPieceIds(real_tokenizer).encode(texts)
    per_text = reference(real_tokenizer, texts)
    assert ids.dtype == np.int64 and offsets.dtype == np.int64
    assert ids.tolist() == [i for x in per_text for i in x]
    assert offsets.tolist() == np.cumsum([0] + [len(x) for x in per_text[:-1]]).tolist()
    empty_ids, empty_offsets = WordPieceIds(real_tokenizer).encode([])
    assert len(empty_ids) == 0 and len(empty_offsets) == 0


def test_a_tokenizer_of_another_kind_goes_through_the_tokenizer():
    tok = small_tokenizer(lowercase=False)  # "The" would not be "the": the chunk path is wrong
    ids = WordPieceIds(tok)
    assert not ids.exact
    texts = ["The the THE", "naive Naive", "a.b!c"]
    assert ids(texts) == reference(tok, texts)


def test_forgetting_past_max_keys_changes_nothing(real_tokenizer, monkeypatch):
    monkeypatch.setattr(static_embed.WordPieceIds, "MAX_KEYS", 50)
    ids = WordPieceIds(real_tokenizer)
    batches = [[f"zzq{i}x{j} qqv{i} café{i}" for j in range(10)] for i in range(8)]
    for batch in batches:
        assert ids(batch) == reference(real_tokenizer, batch)
        assert len(ids._index) - ids._n_fixed <= 50


def test_threads_sharing_one_instance_get_the_tokenizer_s_ids(real_tokenizer):
    # an engine's worker may run several tasks at once on one embedder: what it remembers
    # must not be torn by two batches learning new words at the same time
    from concurrent.futures import ThreadPoolExecutor

    # (without its lock, 8 of 10 such trials got wrong ids or failed)
    for trial in range(3):
        ids = WordPieceIds(real_tokenizer)
        batches = [[f"zq{i}w{j}t{trial} unaffable{i} qx{j}vv café{j}" for j in range(40)]
                   for i in range(16)]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(ids, batches))
        assert got == [reference(real_tokenizer, b) for b in batches]
