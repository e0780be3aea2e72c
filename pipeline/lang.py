"""Language of each post: script first, then a small classifier for Latin-script South Asian text.

Codes are BCP 47: ``en`` English, ``ur`` Urdu (Arabic script), ``hi`` Hindi (Devanagari),
``ur-Latn`` Roman Urdu, ``hi-Latn`` Hinglish (Hindi written in Latin letters), any other code
py3langid gives, and ``und`` when a post has no letters at all.

- The dominant script decides first (letters counted per script). Arabic script with the letters
  only Urdu uses (ٹ ڈ ڑ ں ے ۓ ھ) is Urdu; other Arabic-script text and every other script go to
  py3langid restricted to the languages written in that script.
- Latin script: py3langid has no Roman Urdu or Hinglish and calls them Hausa, Fula, Javanese and
  so on. A multinomial naive Bayes over character 1-4-grams and words, trained on sentences
  written for the project (``pipeline/data/langid/``, README there), separates English, Roman
  Urdu and Hinglish. A text the classifier does not call English, but that holds none of the
  common Urdu/Hindi function words while py3langid is sure of another language (French, Turkish,
  ...), takes py3langid's code; so does a text the classifier calls English when py3langid is
  sure it is something else.

Everything is deterministic: no sampling, fixed training data, ties broken by class order.
A corpus that gives a language keeps it; only empty values are filled (``run``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import re
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import regex

from .atomic import atomic_path, file_sha256, write_json

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent / "data" / "langid"
# py3langid's model unpacked (Py3Langid), one folder per model file: in the repository's
# models/, beside the embedding models, where `make install`'s warm-up first writes it
LANGID_CACHE = Path(__file__).resolve().parent.parent / "models" / ".py3langid"
LATIN_CLASSES = ("en", "ur-Latn", "hi-Latn")  # the classifier's classes, in tie-break order
UNDETERMINED = "und"

_LETTER = regex.compile(r"\p{L}")
_URL = regex.compile(r"(?i)\b(?:https?://|www\.)\S+")
_HANDLE = regex.compile(r"[@#][\p{L}\p{N}_]+")
_WORD = regex.compile(r"[\p{L}\p{M}']+")
_ASCII_WORD = re.compile(r"[a-z']+")  # _WORD on casefolded ASCII text
_ASCII_LETTER = re.compile(r"[A-Za-z]")  # _LETTER on ASCII text
_SCRIPTS = {
    "Latin": regex.compile(r"\p{Script=Latin}"),
    "Arabic": regex.compile(r"\p{Script=Arabic}"),
    "Devanagari": regex.compile(r"\p{Script=Devanagari}"),
}
# letters Urdu uses and Arabic and Persian do not (retroflex consonants, noon ghunna, bari ye,
# do-chashmi he)
_URDU_ONLY = regex.compile(r"[\u0679\u0688\u0691\u06BA\u06D2\u06D3\u06BE]")
# py3langid candidates per script, when script alone does not decide
_SCRIPT_LANGS = {
    "Arabic": ["ur", "ar", "fa", "ps", "ug", "ku"],
    "Devanagari": ["hi", "mr", "ne", "sa"],
}
# function words common to Roman Urdu and Hinglish, rare in English and in other Latin-script
# languages; a Latin text with none of them is not called Roman Urdu / Hinglish on the
# classifier's word alone when py3langid is sure of another language
MARKERS = frozenset("""
    hai hain ka ki ke ko se mein mai mujhe nahi nahin aur bhi kya kyun kyon ye yeh woh wo kar
    karo karein karen kare ho hoga hogi gaya gayi gaye raha rahi rahe tha thi thay hum humari
    humara hamari hamara hamare humare apne apni apna liye lie jo bhai yaar ab aaj kal sab bahut
    bohat bohot kuch koi diya kiya karna wala wali wale hota hoti jab tak agar lekin magar phir
    ji acha accha theek sirf zaroor zarur kaise kaisa kahan yahan wahan unki unka uski uska iski
    iska inki tum aap
""".split())
# py3langid must be at least this sure to overrule the classifier (see the module docstring)
OTHER_LANGUAGE_CONFIDENCE = 0.85
NGRAM_RANGE = (1, 4)
ALPHA = 0.5  # additive smoothing of the naive Bayes counts
WORD_CACHE_SIZE = 2_000_000  # words whose naive Bayes score is kept (cleared when full)
LANGID_BATCH_BYTES = 1 << 24  # py3langid's byte automaton runs on at most this many padded bytes


def is_english(code: str) -> bool:
    """``en`` and its regional variants (``en-GB``); Roman Urdu (``ur-Latn``) is not English."""
    return code == "en" or (code.startswith("en-") and not code.endswith("-Latn"))


def words(text: str) -> list[str]:
    """The lower-cased (casefolded) words of ``text``: letters, marks and apostrophes."""
    folded = text.casefold()
    # the same words; the standard library's engine is faster on the (common) ASCII text
    return _ASCII_WORD.findall(folded) if folded.isascii() else _WORD.findall(folded)


def features(text: str) -> list[str]:
    """Character 1-4-grams of each lower-cased word (padded with spaces), and the words."""
    out: list[str] = []
    lo, hi = NGRAM_RANGE
    for word in words(text):
        out.append("w:" + word)
        padded = f" {word} "
        for n in range(lo, hi + 1):
            out.extend(padded[i:i + n] for i in range(len(padded) - n + 1))
    return out


def read_split(split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of the shipped ``train`` or ``eval`` split: ``<split>_<label>.txt``."""
    texts: list[str] = []
    labels: list[str] = []
    for label in LATIN_CLASSES:
        path = DATA / f"{split}_{label}.txt"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line.strip())
                labels.append(label)
    return texts, labels


@dataclass
class LatinClassifier:
    """Multinomial naive Bayes with uniform priors (a corpus's mix of languages is unknown)."""

    classes: tuple[str, ...]
    vocab: dict[str, int]
    log_prob: np.ndarray  # (n_features, n_classes)
    log_unseen: np.ndarray  # (n_classes,) log probability of a feature never seen in training

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str],
            classes: tuple[str, ...] = LATIN_CLASSES, alpha: float = ALPHA) -> "LatinClassifier":
        counts = {c: Counter() for c in classes}
        for text, label in zip(texts, labels):
            counts[label].update(features(text))
        vocab_list = sorted(set().union(*counts.values()))
        vocab = {f: i for i, f in enumerate(vocab_list)}
        mat = np.zeros((len(vocab_list), len(classes)), dtype=np.float64)
        for j, c in enumerate(classes):
            for f, n in counts[c].items():
                mat[vocab[f], j] = n
        totals = mat.sum(axis=0) + alpha * (len(vocab_list) + 1)
        log_prob = np.log(mat + alpha) - np.log(totals)
        log_unseen = np.log(alpha) - np.log(totals)
        return cls(tuple(classes), vocab, log_prob, log_unseen)

    def __post_init__(self) -> None:
        self._word_row: dict[str, int] = {}
        self._word_scores: list[np.ndarray] = []

    def _word_ids(self, words: list[str]) -> list[int]:
        """Rows of the per-word score table for ``words``, adding the words not seen before.

        A text's score is a sum over its features, and every feature belongs to one word (the
        word itself and its padded character n-grams), so a word's share is computed once per
        process and a text costs one sum over its words."""
        row = self._word_row
        out = []
        for w in words:
            i = row.get(w)
            if i is None:
                if len(row) >= WORD_CACHE_SIZE:
                    row.clear()
                    self._word_scores.clear()
                feats = features(w)
                idx = [j for j in map(self.vocab.get, feats) if j is not None]
                self._word_scores.append(self.log_prob.take(idx, axis=0).sum(axis=0)
                                         + (len(feats) - len(idx)) * self.log_unseen)
                i = row[w] = len(self._word_scores) - 1
            out.append(i)
        return out

    def scores_many(self, words_per_text: Sequence[list[str]]) -> np.ndarray:
        """Log posterior per class (uniform priors, normalised) of each text, given its words
        (``words``); (n_texts, n_classes)."""
        n, k = len(words_per_text), len(self.classes)
        logp = np.zeros((n, k), dtype=np.float64)
        ids = [self._word_ids(ws) for ws in words_per_text]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        has = lengths > 0
        if has.any():
            table = np.vstack(self._word_scores)
            flat = np.fromiter((i for row in ids for i in row), dtype=np.int64,
                               count=int(lengths.sum()))
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[has]
            logp[has] = np.add.reduceat(table[flat], starts, axis=0)
        logp -= logp.max(axis=1, keepdims=True)
        return logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))


@functools.lru_cache(maxsize=1)
def latin_classifier() -> LatinClassifier:
    texts, labels = read_split("train")
    return LatinClassifier.fit(texts, labels)


class Py3Langid:
    """py3langid's language probabilities for many texts at once.

    py3langid scores one text at a time: a byte automaton walked in a Python loop finds its
    features (byte n-grams), and a naive Bayes sums their weights. Here the automaton takes one
    step for a whole batch of texts per numpy call (texts sorted by length, so the ones still
    running are a prefix of the batch), and the sums are one sparse matrix product. The result
    is py3langid's ``norm_probs`` output (``LanguageIdentifier._decide``): the same features,
    counts and weights, summed in float32 in another order, so probabilities agree with
    py3langid's to rounding (tests/test_lang.py compares them)."""

    ARRAYS = ("step", "emit", "weights", "prior")  # what is kept of the model, and cached

    def __init__(self, cache: Path | None = LANGID_CACHE) -> None:
        """The model's arrays from ``cache`` (a folder named by the model file's hash), or else
        from py3langid's compressed model, then written there for the next process: unpacking
        the model cost every run 0.35-0.5 s. ``cache=None``: neither read nor written."""
        from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

        self._encode = LanguageIdentifier._encode
        source = MODEL_DIR / MODEL_FILE
        folder = None if cache is None else Path(cache) / file_sha256(source)[:16]
        self.from_cache = folder is not None and self._read(folder)
        if not self.from_cache:
            self._unpack(LanguageIdentifier.from_model_file(source, norm_probs=True))
            if folder is not None:
                self._write(folder)

    def _unpack(self, ident) -> None:
        # the automaton with states named by their row offset: reading byte b in the state at
        # offset s leads to the state at offset step[s + b] and emits feature emit[s + b] (-1: none)
        nextmove = np.frombuffer(ident.tk_nextmove, dtype=np.uint32)
        rowbase = np.asarray(ident._rowbase, dtype=np.int32)
        self.start = int(rowbase[0])
        self.step = rowbase[nextmove]
        self.emit = np.asarray(ident.tk_output, dtype=np.int32)[nextmove]
        self.weights = np.asarray(ident.nb_ptc, dtype=np.float32)
        self.prior = np.asarray(ident.nb_pc, dtype=np.float32)
        self.classes = list(ident.nb_classes)
        self.alias_pairs = [tuple(p) for p in ident._alias_pairs]  # (first, duplicate) columns

    def _read(self, folder: Path) -> bool:
        """The arrays of an earlier ``_write``; False when they are missing or do not fit
        together (a half-written folder has no ``meta.json``, written last)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r")
                      for name in self.ARRAYS}
            classes, pairs, start = list(meta["classes"]), meta["alias_pairs"], meta["start"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("language identifier: no usable cache in %s (%s)", folder, exc)
            return False
        fits = (arrays["step"].dtype == np.int32 and arrays["emit"].dtype == np.int32
                and arrays["step"].shape == arrays["emit"].shape
                and arrays["weights"].dtype == np.float32 and arrays["prior"].dtype == np.float32
                and arrays["weights"].ndim == 2 and arrays["weights"].shape[1] == len(classes)
                and arrays["prior"].shape == (len(classes),)
                and int(arrays["emit"].max()) < arrays["weights"].shape[0])
        if not fits:
            log.debug("language identifier: the cache in %s does not fit together", folder)
            return False
        # the automaton's arrays are read at every byte: in memory; the weights (most of the
        # model) stay mapped, and only the rows of features met are read
        self.step, self.emit = np.array(arrays["step"]), np.array(arrays["emit"])
        self.weights, self.prior = np.asarray(arrays["weights"]), np.array(arrays["prior"])
        self.start, self.classes = int(start), classes
        self.alias_pairs = [tuple(p) for p in pairs]
        return True

    def _write(self, folder: Path) -> None:
        """Each array atomically, then ``meta.json``; the folders of other model files beside it
        are removed. A folder that cannot be written leaves the run as it was, uncached."""
        try:
            for name in self.ARRAYS:
                with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
                    np.save(fh, getattr(self, name))
            write_json({"start": self.start, "classes": self.classes,
                        "alias_pairs": self.alias_pairs}, folder / "meta.json")
        except OSError as exc:
            log.debug("language identifier: not cached in %s (%s)", folder, exc)
            return
        for old in folder.parent.iterdir():
            if old != folder and old.is_dir() and (old / "meta.json").exists():
                shutil.rmtree(old, ignore_errors=True)

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_classes) float32 probabilities; a label that has two columns (a script
        alias) holds their sum in its first column and 0 in the other, as py3langid does."""
        data = [self._encode(t) for t in texts]
        out = np.empty((len(data), len(self.classes)), dtype=np.float32)
        lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < len(order):
            width = max(int(lengths[order[start]]), 1)
            size = max(1, min(len(order) - start, LANGID_BATCH_BYTES // width))
            rows = order[start:start + size]
            out[rows] = self._raw([data[i] for i in rows], lengths[rows])
            start += size
        out *= (1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32)[:, None]
        np.exp(out - out.max(axis=1, keepdims=True), out=out)
        out /= out.sum(axis=1, keepdims=True)
        for i, j in self.alias_pairs:
            out[:, i] += out[:, j]
            out[:, j] = 0.0
        return out

    def _raw(self, data: list[bytes], lengths: np.ndarray) -> np.ndarray:
        """Naive Bayes scores of one batch, longest text first; 0 for a text with no feature."""
        n, width = len(data), int(lengths[0]) if len(data) else 0
        grid = np.zeros((width, n), dtype=np.uint8)  # byte p of text j at grid[p, j]
        for j, b in enumerate(data):
            grid[:len(b), j] = np.frombuffer(b, dtype=np.uint8)
        running = np.searchsorted(-lengths, -np.arange(1, width + 1), side="right")
        state = np.full(n, self.start, dtype=np.int32)  # every text starts in state 0
        hit_rows, hit_feats = [], []
        for p in range(width):
            k = int(running[p])  # texts longer than p bytes: a prefix (sorted by length)
            at = state[:k] + grid[p, :k]
            feat = self.emit[at]
            state[:k] = self.step[at]
            hit = np.flatnonzero(feat >= 0)
            hit_rows.append(hit)
            hit_feats.append(feat[hit])
        scores = np.zeros((n, len(self.classes)), dtype=np.float32)
        if n == 0:
            return scores
        key = (np.concatenate(hit_rows) * len(self.weights)
               + np.concatenate(hit_feats).astype(np.int64)
               if hit_rows else np.empty(0, dtype=np.int64))
        if key.size:
            from scipy import sparse

            key, counts = np.unique(key, return_counts=True)
            row, feat = np.divmod(key, len(self.weights))
            mat = sparse.csr_matrix((np.log1p(counts.astype(np.float32)), (row, feat)),
                                    shape=(n, len(self.weights)), dtype=np.float32)
            has = np.zeros(n, dtype=bool)
            has[row] = True
            scores = np.asarray(mat @ self.weights, dtype=np.float32) + self.prior
            scores[~has] = 0.0  # py3langid: no feature gives a flat score (uniform)
        return scores

    def best(self, probs: np.ndarray, langs: Sequence[str] | None = None
             ) -> list[tuple[str, float]]:
        """(code, probability) of each row's best language: among all, or among ``langs`` with
        the probabilities renormalised over them (ties: the first in py3langid's class order)."""
        if not langs:
            cols = np.arange(len(self.classes))
        else:
            first: dict[str, int] = {}
            for i, c in enumerate(self.classes):
                first.setdefault(c, i)
            cols = np.array(sorted(first[c] for c in set(langs) if c in first))
        sub = probs[:, cols]
        pick = sub.argmax(axis=1)
        total = sub.sum(axis=1)
        total[total == 0] = 1.0
        conf = sub[np.arange(len(sub)), pick] / (total if langs else 1.0)
        return [(self.classes[cols[i]], float(c)) for i, c in zip(pick, conf)]


@functools.lru_cache(maxsize=1)
def _langid() -> Py3Langid:
    """py3langid's model, loaded once (a private instance: the global one is left alone)."""
    return Py3Langid()


def release_models() -> None:
    """Forget the loaded language identifiers (py3langid's arrays are about 130 MB); the next
    detection loads them again. A run calls this once ingest has detected every post's language."""
    _langid.cache_clear()
    latin_classifier.cache_clear()


_IS_LETTER = 4  # bit of a code point's entry in _CHAR_TABLE: the code point is a letter (\p{L})


_UNKNOWN = 255
_CHAR_TABLE = np.full(0x110000, _UNKNOWN, dtype=np.uint8)


def _char_classes(codes: np.ndarray) -> np.ndarray:
    """Per code point: 1 + the index of its script in _SCRIPTS (0: none of them), plus
    _IS_LETTER for letters; each code point is looked up with the same regexes once per
    process and remembered, so the counts stay exact."""
    found = _CHAR_TABLE[codes]
    if (found == _UNKNOWN).any():
        for cp in np.unique(codes[found == _UNKNOWN]).tolist():
            ch = chr(cp)
            code = next((k for k, rx in enumerate(_SCRIPTS.values(), start=1) if rx.match(ch)),
                        0)
            _CHAR_TABLE[cp] = code | (_IS_LETTER if _LETTER.match(ch) else 0)
        found = _CHAR_TABLE[codes]
    return found


def _dominant_script(text: str) -> str | None:
    """The script with the most characters (``Latin``, ``Arabic``, ``Devanagari``), ``Other``
    when letters of other scripts outnumber it, or None without letters."""
    if text.isascii():  # the common case: ASCII letters are all Latin
        return "Latin" if _ASCII_LETTER.search(text) else None
    found = _char_classes(np.frombuffer(text.encode("utf-32-le", "surrogatepass"),
                                        dtype=np.uint32))
    n_letters = int(np.count_nonzero(found & _IS_LETTER))
    if not n_letters:
        return None
    counts = np.bincount(found & (_IS_LETTER - 1), minlength=len(_SCRIPTS) + 1)[1:]
    best = int(counts.argmax())  # ties: the first script in _SCRIPTS
    other = n_letters - int(counts.sum())
    return "Other" if other > counts[best] else list(_SCRIPTS)[best]


def detect(text: str | None) -> str:
    """The language code of one post (see the module docstring); ``und`` without letters."""
    return detect_many([text])[0]


def _key(text) -> str | None:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    return text if isinstance(text, str) else str(text)


DETECT_BLOCK = 32_768  # distinct texts classified at once by detect_many


def detect_many(texts: Iterable[str | None], memo: LanguageMemo | None = None) -> list[str]:
    """The language code of each text (see the module docstring); identical texts are
    classified once, and the classifiers run on ``DETECT_BLOCK`` distinct texts at a time
    (each text's code depends on that text alone: the blocks only bound the memory, which at a
    million texts at once was gigabytes of word lists and probability rows). With ``memo``, a
    text it knows takes its code from there, and every text's code goes into it."""
    keys = [_key(t) for t in texts]
    distinct = list(dict.fromkeys(keys))
    codes: dict[str | None, str] = {}
    hashes: dict[str, bytes] = {}
    todo = distinct
    if memo is not None:
        hashes = {t: text_digest(t) for t in distinct if t is not None}
        codes = {t: memo.known[h] for t, h in hashes.items() if h in memo.known}
        todo = [t for t in distinct if t not in codes]
        if memo.known:
            log.info("ingest: %d of %d distinct texts have their language from the earlier run "
                     "in this folder; detecting %d", len(codes), len(distinct), len(todo))
    for start in range(0, len(todo), DETECT_BLOCK):
        block = todo[start:start + DETECT_BLOCK]
        codes.update(zip(block, _detect_distinct(block)))
    if memo is not None:
        memo.found.update((h, codes[t]) for t, h in hashes.items())
    return [codes[k] for k in keys]


def text_digest(text: str) -> bytes:
    """A text's 16-byte blake2b digest (UTF-8, lone surrogates kept): the memo's key here, and
    the summaries' key of a folded text (narratives._key_ids)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@functools.lru_cache(maxsize=1)
def detector_id() -> str:
    """What decides a text's code besides the text: this module's code, the Latin classifier's
    training data and py3langid's version."""
    h = hashlib.blake2b(digest_size=8)
    h.update(Path(__file__).read_bytes())
    for path in sorted(DATA.glob("train_*.txt")):
        h.update(path.name.encode("utf-8"))
        h.update(path.read_bytes())
    h.update(importlib.metadata.version("py3langid").encode("utf-8"))
    return h.hexdigest()


MEMO_SCHEMA = pa.schema([("key", pa.binary(16)), ("lang", pa.string())])


class LanguageMemo:
    """The languages detected in a run folder, by text hash, for the next run there (an update
    with new posts, a rerun). A text's code depends on that text alone, so a text seen before
    takes its code without being classified again: an update classifies only its new texts.
    The memo is kept only while the detector is the same (``detector_id``); another detector's
    memo, or a file that cannot be read (a warning), is ignored and every text is classified.
    ``write`` keeps the texts of this run only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.known: dict[bytes, str] = self._read()
        self.found: dict[bytes, str] = {}

    def _read(self) -> dict[bytes, str]:
        if not self.path.exists():
            return {}
        try:
            table = pq.read_table(self.path)
            if (table.schema.metadata or {}).get(b"detector") != detector_id().encode():
                log.info("ingest: %s was made by another language detector; detecting every "
                         "language", self.path)
                return {}
            return dict(zip(table.column("key").to_pylist(), table.column("lang").to_pylist()))
        except (OSError, KeyError, pa.ArrowException) as exc:
            log.warning("ingest: the language memo %s cannot be read (%s); detecting every "
                        "language", self.path, exc)
            return {}

    def write(self) -> None:
        table = pa.table({"key": list(self.found), "lang": list(self.found.values())},
                         schema=MEMO_SCHEMA.with_metadata({"detector": detector_id()}))
        with atomic_path(self.path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.known, self.found = {}, {}


def _detect_distinct(texts: list[str | None]) -> list[str]:
    out: list[str] = [UNDETERMINED] * len(texts)
    latin: list[int] = []
    clean: dict[int, str] = {}
    # py3langid's questions: (text index, its dominant script)
    ask: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        if text is None:
            continue
        c = clean[i] = _HANDLE.sub(" ", _URL.sub(" ", text))
        script = _dominant_script(c)
        if script is None:
            continue
        if script == "Latin":
            latin.append(i)
        elif script == "Arabic" and _URDU_ONLY.search(c):
            out[i] = "ur"
        else:
            ask.append((i, script))
    if latin:
        nb = latin_classifier()
        word_lists = [words(clean[i]) for i in latin]
        labels = nb.scores_many(word_lists).argmax(axis=1)
        for i, label, ws in zip(latin, labels, word_lists):
            out[i] = nb.classes[label]
            # a Roman Urdu / Hinglish label with Urdu/Hindi function words stands; any other
            # Latin text is checked against py3langid (below)
            if out[i] == "en" or not MARKERS.intersection(ws):
                ask.append((i, "Latin"))
    if ask:
        ident = _langid()
        probs = ident.probs([clean[i] for i, _ in ask])
        by_script: dict[str, list[int]] = {}
        for row, (_, script) in enumerate(ask):
            by_script.setdefault(script, []).append(row)
        for script, rows in by_script.items():
            # Arabic and Devanagari choose among their script's languages, the others among all
            for row, (code, conf) in zip(rows, ident.best(probs[rows], _SCRIPT_LANGS.get(script))):
                i = ask[row][0]
                if script == "Latin":  # py3langid overrules the classifier only when sure
                    sure_other = code != "en" and conf >= OTHER_LANGUAGE_CONFIDENCE
                    out[i] = code if sure_other else out[i]
                elif script == "Devanagari":
                    out[i] = code if code != "hi" and conf >= 0.95 else "hi"
                else:
                    out[i] = code
    return out


def run(posts: pd.DataFrame, memo: LanguageMemo | None = None) -> tuple[pd.DataFrame, dict]:
    """Fill empty ``lang`` values of ``posts`` by detection (``detect_many``, with ``memo``); a
    given language is kept.

    Returns the posts (a copy) and the counts: given, detected, and posts per language.
    """
    posts = posts.copy()
    if "lang" not in posts.columns:
        posts["lang"] = None
    given = posts["lang"].astype("string").str.strip()
    empty = given.isna() | (given == "")
    langs = given.astype(object).where(~empty, None)
    if empty.any():
        langs[empty] = detect_many(posts.loc[empty, "text"].tolist(), memo)
    posts["lang"] = langs.astype(object)
    counts = posts["lang"].value_counts()
    by_lang = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    stats = {"n_given": int((~empty).sum()), "n_detected": int(empty.sum()), "posts": by_lang}
    return posts, stats


def non_english_share(langs: Sequence[str] | pd.Series) -> tuple[float, dict[str, int], int]:
    """(share of posts not in English, posts per language, posts with a language).

    Posts with no letters (``und``) have no language and are left out of the share.
    """
    counts = Counter(str(x) for x in langs if x is not None and str(x) not in ("", UNDETERMINED))
    n = sum(counts.values())
    n_other = sum(v for k, v in counts.items() if not is_english(k))
    return (n_other / n if n else 0.0), dict(counts), n


def effective_languages(langs: Sequence[str] | pd.Series) -> float:
    """exp of the Shannon entropy of the language shares: 3 languages of equal share give 3.0,
    90% English and 10% Urdu 1.38, one language 1.0 (no posts: 1.0)."""
    counts = np.array(list(Counter(str(x) for x in langs).values()), dtype=np.float64)
    if not len(counts):
        return 1.0
    p = counts / counts.sum()
    return round(float(np.exp(-(p * np.log(p)).sum())), 4)


def choose_tier(langs: Sequence[str] | pd.Series, tier: str, share_threshold: float
                ) -> tuple[str, str]:
    """The embedding tier to run and why. ``auto`` picks ``multilingual`` when the share of posts
    not in English is at least ``share_threshold`` and ``quality`` otherwise; any other tier is
    kept as configured."""
    share, counts, n = non_english_share(langs)
    if tier != "auto":
        return tier, f"embed.tier = {tier!r} in the config"
    mix = ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(counts.items(),
                                                         key=lambda kv: (-kv[1], kv[0]))[:6])
    if n == 0:
        return "quality", "auto: no post has letters to identify a language; English-only tier"
    if share >= share_threshold:
        return "multilingual", (f"auto: {share:.0%} of posts not English (>= "
                                f"embed.auto_multilingual_share {share_threshold:.0%}; {mix})")
    return "quality", (f"auto: {share:.0%} of posts not English (< "
                       f"embed.auto_multilingual_share {share_threshold:.0%}; {mix})")


# Spelling variants that change no word: Arabic-keyboard letters typed for Urdu ones, short-vowel
# marks, tatweel, zero-width joiners, Eastern digits, the Devanagari nukta (often left out) and
# chandrabindu written as anusvara. Latin text is left as it is.
_FOLD = {
    0x064A: "\u06CC", 0x0649: "\u06CC",  # Arabic yeh, alef maksura -> Farsi/Urdu yeh
    0x0643: "\u06A9",  # Arabic kaf -> keheh
    0x0647: "\u06C1", 0x06D5: "\u06C1",  # heh, ae -> heh goal
    0x0640: None, 0x0670: None, 0x200C: None, 0x200D: None,  # tatweel, dagger alef, ZWNJ, ZWJ
    **{c: None for c in range(0x064B, 0x0660)},  # harakat
    **{0x0660 + i: str(i) for i in range(10)}, **{0x06F0 + i: str(i) for i in range(10)},
    **{0x0966 + i: str(i) for i in range(10)},
    0x093C: None,  # nukta
    0x0901: "\u0902",  # chandrabindu -> anusvara
}


def fold(text: str) -> str:
    """``text`` with Urdu and Hindi spelling variants folded, for comparing copies of a post:
    the same Urdu post typed on an Arabic keyboard, or with vowel marks, folds to one string."""
    return unicodedata.normalize("NFD", text).translate(_FOLD) if not text.isascii() else text


def evaluate(split: str = "eval") -> dict:
    """Accuracy of ``detect`` on a shipped split, overall and per true class, with confusion."""
    texts, labels = read_split(split)
    pred = [detect(t) for t in texts]
    confusion: dict[str, dict[str, int]] = {}
    for y, p in zip(labels, pred):
        row = confusion.setdefault(y, {})
        row[p] = row.get(p, 0) + 1
    per_class = {c: round(confusion[c].get(c, 0) / sum(confusion[c].values()), 4)
                 for c in LATIN_CLASSES}
    south_asian = [i for i, y in enumerate(labels) if y != "en"]
    english = [i for i, y in enumerate(labels) if y == "en"]
    return {
        "split": split,
        "n": len(texts),
        "accuracy": round(float(np.mean([y == p for y, p in zip(labels, pred)])), 4),
        "per_class": per_class,
        "confusion": confusion,
        # the distinction that decides the embedding tier: English or not
        "english_vs_not": round(float(np.mean([is_english(y) == is_english(p)
                                               for y, p in zip(labels, pred)])), 4),
        "roman_south_asian_called_english": sum(is_english(pred[i]) for i in south_asian),
        "english_called_other": sum(not is_english(pred[i]) for i in english),
        # Roman Urdu and Hinglish as one class (Latin-script Urdu/Hindi)
        "accuracy_merged": round(float(np.mean([
            (y if y == "en" else "x") == (p if p == "en" else ("x" if p in LATIN_CLASSES else p))
            for y, p in zip(labels, pred)])), 4),
    }
