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
import logging
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import regex

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent / "data" / "langid"
LATIN_CLASSES = ("en", "ur-Latn", "hi-Latn")  # the classifier's classes, in tie-break order
UNDETERMINED = "und"

_LETTER = regex.compile(r"\p{L}")
_URL = regex.compile(r"(?i)\b(?:https?://|www\.)\S+")
_HANDLE = regex.compile(r"[@#][\p{L}\p{N}_]+")
_WORD = regex.compile(r"[\p{L}\p{M}']+")
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


def is_english(code: str) -> bool:
    """``en`` and its regional variants (``en-GB``); Roman Urdu (``ur-Latn``) is not English."""
    return code == "en" or (code.startswith("en-") and not code.endswith("-Latn"))


def features(text: str) -> list[str]:
    """Character 1-4-grams of each lower-cased word (padded with spaces), and the words."""
    out: list[str] = []
    lo, hi = NGRAM_RANGE
    for word in _WORD.findall(text.casefold()):
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

    def scores(self, text: str) -> np.ndarray:
        """Log posterior per class (uniform priors), normalised to sum to one in probability."""
        feats = features(text)
        get = self.vocab.get
        idx = [i for i in map(get, feats) if i is not None]
        n_unseen = len(feats) - len(idx)
        logp = self.log_prob.take(idx, axis=0).sum(axis=0) + n_unseen * self.log_unseen
        logp = logp - logp.max()
        return logp - math.log(float(np.exp(logp).sum()))

    def predict(self, text: str) -> str:
        return self.classes[int(np.argmax(self.scores(text)))]


@functools.lru_cache(maxsize=1)
def latin_classifier() -> LatinClassifier:
    texts, labels = read_split("train")
    return LatinClassifier.fit(texts, labels)


@functools.lru_cache(maxsize=1)
def _langid():
    """py3langid's model, loaded once (a private instance: the global one is left alone)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _classify(text: str, langs: Sequence[str] | None = None) -> tuple[str, float]:
    """py3langid's best language for ``text`` among ``langs`` (all when None), with its
    probability renormalised over ``langs``."""
    ident = _langid()
    if not langs:
        return ident.classify(text)
    ranked = [(code, p) for code, p in ident.rank(text) if code in langs]
    total = sum(p for _, p in ranked) or 1.0
    code, p = ranked[0]
    return code, p / total


def _dominant_script(text: str) -> tuple[str | None, int]:
    letters = _LETTER.findall(text)
    if not letters:
        return None, 0
    counts = {name: len(rx.findall(text)) for name, rx in _SCRIPTS.items()}
    name, n = max(counts.items(), key=lambda kv: (kv[1], -list(_SCRIPTS).index(kv[0])))
    other = len(letters) - sum(counts.values())
    if other > n:
        return "Other", other
    return name, n


def detect(text: str | None) -> str:
    """The language code of one post (see the module docstring); ``und`` without letters."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return UNDETERMINED
    clean = _HANDLE.sub(" ", _URL.sub(" ", str(text)))
    script, _ = _dominant_script(clean)
    if script is None:
        return UNDETERMINED
    if script == "Arabic":
        if _URDU_ONLY.search(clean):
            return "ur"
        return _classify(clean, _SCRIPT_LANGS["Arabic"])[0]
    if script == "Devanagari":
        code, conf = _classify(clean, _SCRIPT_LANGS["Devanagari"])
        return code if code != "hi" and conf >= 0.95 else "hi"
    if script == "Other":
        return _classify(clean)[0]
    return _detect_latin(clean)


def _detect_latin(text: str) -> str:
    label = latin_classifier().predict(text)
    if label != "en":
        words = {w.casefold() for w in _WORD.findall(text)}
        if words & MARKERS:  # Urdu/Hindi function words: no other language to rule out
            return label
    other, conf = _classify(text)
    sure_other = other != "en" and conf >= OTHER_LANGUAGE_CONFIDENCE
    return other if sure_other else label


def detect_many(texts: Iterable[str | None]) -> list[str]:
    """``detect`` for each text; identical texts are classified once."""
    seen: dict[str | None, str] = {}
    out = []
    for t in texts:
        key = t if isinstance(t, str) or t is None else str(t)
        if key not in seen:
            seen[key] = detect(key)
        out.append(seen[key])
    return out


def run(posts: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Fill empty ``lang`` values of ``posts`` by detection; a given language is kept.

    Returns the posts (a copy) and the counts: given, detected, and posts per language.
    """
    posts = posts.copy()
    if "lang" not in posts.columns:
        posts["lang"] = None
    given = posts["lang"].astype("string").str.strip()
    empty = given.isna() | (given == "")
    langs = given.astype(object).where(~empty, None)
    if empty.any():
        langs[empty] = detect_many(posts.loc[empty, "text"].tolist())
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
