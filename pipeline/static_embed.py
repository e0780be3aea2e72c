"""The fast tier's model: a static (model2vec) embedding, one vector per token, averaged.

Once the model is a table lookup, tokenising is nearly all of this tier's work, and the
tokenizer spends most of it on things a mean of token vectors does not use (offsets, masks,
one Python object per text). ``WordPieceIds`` gives the same token ids for less: printable
ASCII is split into the tokenizer's own pre-tokens by a regular expression, each distinct
pre-token's WordPiece ids are found once and then reused, and only the rest (other scripts,
emoji, controls) goes through the tokenizer. The ids, and so the vectors, are the same bit for
bit (tests/test_static_embed.py checks it against the tokenizer on generated texts).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np


class WordPieceIds:
    """Token ids of a BERT-style WordPiece tokenizer, without special tokens, for a batch of
    texts at once.

    Exact for the tokenizers it accepts (``accepts``): a BertNormalizer that lowercases, then a
    BertPreTokenizer, then WordPiece, with no padding and at most right-hand truncation.

    - Each of those steps works within a run of characters between two spaces (a chunk): the
      normaliser character by character, the pre-tokeniser splitting at whitespace and
      punctuation, WordPiece one pre-token at a time. So a text's ids are its chunks' ids, one
      after another, cut to the tokenizer's maximum length.
    - A chunk of printable ASCII (U+0021 to U+007E) is only lowercased by the normaliser (no
      control characters, other whitespace, accents or CJK), and the pre-tokeniser splits it
      around each ASCII punctuation character (every printable one but letters and digits):
      the ``WORDS`` pattern finds the same pre-tokens. A word's pieces come from the tokenizer's
      own WordPiece model (``model.tokenize``), which is all the tokenizer does with it.
    - Any other chunk is asked of the tokenizer. Pre-tokens and chunks are remembered, each with
      its ids, so a batch's ids are gathered with numpy.
    - A text holding an added token (``[MASK]``), which the tokenizer finds before normalising,
      goes to the tokenizer whole, as does every text when the tokenizer is of another kind.
    """

    WORDS = re.compile(r"[a-z0-9]+|[^a-z0-9 ]")
    MAX_KEYS = 1_000_000  # pre-tokens and chunks remembered; past that the memory starts again

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        spec = json.loads(tokenizer.to_str())
        truncation = tokenizer.truncation
        self.max_tokens = truncation["max_length"] if truncation else None
        added = sorted({t["content"] for t in spec.get("added_tokens") or []}, key=len,
                       reverse=True)
        self._added = re.compile("|".join(map(re.escape, added)), re.IGNORECASE) if added \
            else None
        model = spec.get("model") or {}
        self._vocab: dict[str, int] = model.get("vocab") or {}
        self._longest = model.get("max_input_chars_per_word", 100)
        self._unk = self._vocab.get(model.get("unk_token", "[UNK]"))
        self.exact = (self.accepts(spec, truncation, tokenizer.padding)
                      and self._unk is not None)
        self._lock = threading.Lock()  # what it remembers is shared by an engine's threads
        self._reset()

    def _reset(self) -> None:
        """Forget every remembered key (the vocabulary's own words are never forgotten)."""
        self._index: dict[str, int] = {}  # key -> its number
        self._start = np.zeros(1024, dtype=np.int64)  # key number -> first of its ids
        self._count = np.zeros(1024, dtype=np.int64)  # key number -> how many ids
        self._ids = np.zeros(4096, dtype=np.int64)  # every key's ids, one after another
        self._n_ids = 0
        self._learn([""], [[]])
        if self.exact:
            words = [t for t in self._vocab if len(t) <= self._longest and self.WORDS.fullmatch(t)]
            self._learn(words, [[self._vocab[t]] for t in words])
        self._n_fixed = len(self._index)

    @staticmethod
    def accepts(spec: dict, truncation: dict | None, padding: dict | None) -> bool:
        """Whether the chunk-by-chunk path gives this tokenizer's ids exactly (class docstring)."""
        normalizer = spec.get("normalizer") or {}
        return (normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase") is True
                and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
                and (spec.get("model") or {}).get("type") == "WordPiece"
                and padding is None
                and (truncation is None or (truncation.get("direction") == "right"
                                            and truncation.get("stride") == 0)))

    def _learn(self, keys: Sequence[str], ids: Sequence[Sequence[int]]) -> None:
        first = len(self._index)
        need_keys, need_ids = first + len(keys), self._n_ids + sum(map(len, ids))
        if need_keys > len(self._start):
            size = max(need_keys, 2 * len(self._start))
            self._start = np.resize(self._start, size)
            self._count = np.resize(self._count, size)
        if need_ids > len(self._ids):
            self._ids = np.resize(self._ids, max(need_ids, 2 * len(self._ids)))
        counts = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self._count[first:need_keys] = counts
        self._start[first:need_keys] = self._n_ids + np.cumsum(counts) - counts
        self._ids[self._n_ids:need_ids] = np.fromiter(itertools.chain.from_iterable(ids),
                                                      dtype=np.int64,
                                                      count=need_ids - self._n_ids)
        self._n_ids = need_ids
        self._index.update(zip(keys, range(first, need_keys)))

    def _keys(self, text: str) -> list[str]:
        """The text's pre-tokens (in chunks of printable ASCII) and other chunks, in order."""
        if text.isascii() and text.isprintable():  # the common case, in one pass
            return self.WORDS.findall(text.lower())
        keys: list[str] = []
        for chunk in text.split(" "):
            if chunk.isascii() and chunk.isprintable():
                keys += self.WORDS.findall(chunk.lower())
            else:
                keys.append(chunk)
        return keys

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's token ids one after another (int64), and where each text's start: what
        ``StaticEmbedding.preprocess`` makes of ``tokenizer.encode_batch(texts,
        add_special_tokens=False)``, truncation included."""
        with self._lock:
            return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        n = len(texts)
        keys: list[list[str]] = []
        whole: list[int] = []
        for i, text in enumerate(texts):
            if self.exact and not (self._added is not None and self._added.search(text)):
                keys.append(self._keys(text))
            else:
                keys.append([])
                whole.append(i)
        flat = list(itertools.chain.from_iterable(keys))
        new = set(flat).difference(self._index)
        if new:
            if len(self._index) - self._n_fixed + len(new) > self.MAX_KEYS:
                self._reset()
                new = set(flat).difference(self._index)
            words = [k for k in new if k.isascii() and k.isalnum()]
            chunks = sorted(new.difference(words))
            # a lowercase word of letters and digits is its own pre-token, as it is: the
            # tokenizer's WordPiece model gives its pieces (an unknown token when too long or
            # when some rest of it starts no piece)
            tokenize = self.tokenizer.model.tokenize
            self._learn(words, [[t.id for t in tokenize(w)] for w in words])
            if chunks:
                encoded = self.tokenizer.encode_batch_fast(chunks, add_special_tokens=False)
                self._learn(chunks, [e.ids for e in encoded])
        number = np.fromiter(map(self._index.__getitem__, flat), dtype=np.int64,
                             count=len(flat))
        count = self._count[number]
        ends = np.cumsum(count)
        ids = self._ids[np.repeat(self._start[number] - (ends - count), count)
                        + np.arange(ends[-1] if len(ends) else 0)]
        n_keys = np.fromiter(map(len, keys), dtype=np.int64, count=n)
        per_text = np.bincount(np.repeat(np.arange(n), n_keys), weights=count,
                               minlength=n).astype(np.int64)
        long = np.flatnonzero(per_text > self.max_tokens) if self.max_tokens is not None \
            else np.empty(0, dtype=np.int64)
        if whole or len(long):  # rare: rebuild the batch text by text
            parts = np.split(ids, np.cumsum(per_text)[:-1])
            for i in long:
                parts[i] = parts[i][: self.max_tokens]
            if whole:
                encoded = self.tokenizer.encode_batch_fast([texts[i] for i in whole],
                                                           add_special_tokens=False)
                for i, e in zip(whole, encoded):
                    parts[i] = np.asarray(e.ids, dtype=np.int64)
            per_text = np.fromiter(map(len, parts), dtype=np.int64, count=n)
            ids = np.concatenate(parts) if n else ids
        offsets = np.cumsum(per_text) - per_text
        return ids.astype(np.int64, copy=False), offsets

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text, as ``tokenizer.encode(text, add_special_tokens=False)``
        gives them (truncated as the tokenizer truncates)."""
        ids, offsets = self.encode(texts)
        return [part.tolist() for part in np.split(ids, offsets[1:])]


class StaticEmbedder:
    """A model2vec static model (one vector per token, averaged) through sentence-transformers."""

    def __init__(self, folder: str | Path, model_id: str, batch_size: int = 1024):
        self.folder = Path(folder)
        self.model_id = model_id
        self.batch_size = batch_size
        self._model = None
        self._ids: WordPieceIds | None = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import StaticEmbedding

            module = StaticEmbedding.from_model2vec(str(self.folder))
            self._model = SentenceTransformer(modules=[module], device="cpu")
            self._ids = WordPieceIds(module.tokenizer)
        return self._model

    def __getstate__(self):  # an engine sends the embedder to its workers: not the model
        return {**self.__dict__, "_model": None, "_ids": None}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The model's ``StaticEmbedding`` forward step (a mean of token vectors) on the ids its
        ``preprocess`` would give (``WordPieceIds``), and the L2 normalisation ``encode`` does:
        the vectors are the ones ``SentenceTransformer.encode`` gives, bit for bit (a row
        depends only on its own text), without its per-text Python work (modality checks,
        length sorting), which cost more than the model here. Torch runs on one thread: the
        work per call is a few milliseconds, and waiting for a second, busy thread cost ten
        times that."""
        import torch

        module = self._load()[0]
        texts = list(texts)
        vectors = np.empty((0, module.embedding_dim), dtype=np.float32)
        if not texts:
            return vectors
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                parts = []
                for start in range(0, len(texts), self.batch_size):
                    ids, offsets = self._ids.encode(texts[start:start + self.batch_size])
                    features = {"input_ids": torch.from_numpy(ids),
                                "offsets": torch.from_numpy(offsets)}
                    pooled = module(features)["sentence_embedding"]
                    parts.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
        finally:
            torch.set_num_threads(n_threads)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
