"""Narrative summaries: size, accounts, span, top terms (class-based TF-IDF) and examples.

Copypasta is the signal Lockstep hunts, so everything here is duplicate-aware: a text posted a
hundred times counts once for terms, and no two example posts share a text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import regex
from scipy import sparse

from .config import SummariseConfig

log = logging.getLogger(__name__)

_URL = regex.compile(r"(?i)\b(?:https?://|www\.)\S+")
_MENTION = regex.compile(r"(?<!\w)@\w+")
# letters, combining marks (Devanagari matras, Arabic harakat) and digits stay in one token
_TOKEN = regex.compile(r"[\p{L}\p{M}\p{N}_]+(?:['’][\p{L}]+)?")
_SPACE = regex.compile(r"\s+")


# Roman Urdu / Hinglish function words (spaCy has no list for romanised text)
ROMAN_URDU_STOP_WORDS = frozenset("""
    aa aap ab aur bhi bohat bahut bas de di diya diye do dono ek gaya gayi gaye hai hain ham hamara
    hamare hamari hum humara humare humari hi ho hoga hogi honge hua hui hue is isi jab jo ka kab
    kar karo karna karne kare karein ke kehte ki kiya kiye kis ko koi kuch kya le liye lo log
    magar main mein mera mere meri ne nahi nahin na par pe phir raha rahi rahe sab se tak tha
    the thi to tum un unka unki unke us uska uski uske wala wale wali woh wo ya yeh ye yahan
""".split())


# Urdu function words. spaCy's Urdu list is mis-encoded (many entries are mojibake), so the
# common ones are listed here in standard Urdu code points (ی U+06CC, ک U+06A9, ہ U+06C1).
URDU_STOP_WORDS = frozenset("""
    میں نے کے کی کا ہے ہیں تھا تھی تھے سے کو پر اور یہ وہ بھی تو ہی جو کہ کر رہا رہی رہے لیا لیے
    لئے گیا گئی گئے ہو ہوں ہوا ہوئی ہوئے ایک اس ان کیا کیے جب تک نہیں نہ ہم آپ اپنے اپنی اپنا سب
    کچھ یہاں وہاں ساتھ بعد پہلے والے والی والا کوئی کسی کرنے کرتے کریں گا گی گے دیا دی دیے
""".split())


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS as EN
    from spacy.lang.hi.stop_words import STOP_WORDS as HI
    from spacy.lang.ur.stop_words import STOP_WORDS as UR

    extra = {"amp", "rt", "via", "http", "https", "www", "com", "ll", "ve", "don", "didn"}
    return (frozenset(EN) | frozenset(HI) | frozenset(UR) | URDU_STOP_WORDS
            | ROMAN_URDU_STOP_WORDS | frozenset(extra))


STOP_WORDS = _stop_words()


def dedupe_key(text: str) -> str:
    """Two posts are the same text when they match after this (case, links, spacing ignored)."""
    text = _URL.sub(" ", text.casefold())
    return _SPACE.sub(" ", text).strip()


def tokens(text: str) -> list[str]:
    text = _MENTION.sub(" ", _URL.sub(" ", text.casefold()))
    out = []
    for tok in _TOKEN.findall(text):
        if len(tok) < 2 or tok in STOP_WORDS or tok.isdigit():
            continue
        out.append(tok)
    return out


def terms(text: str) -> list[str]:
    """Unigrams and bigrams of the non-stop-word tokens."""
    toks = tokens(text)
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


def class_tfidf(docs_by_class: dict[int, list[str]], n_terms: int) -> dict[int, list[str]]:
    """Top terms per class: tf within the class times log(1 + mean class size / term total)."""
    classes = sorted(docs_by_class)
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    doc_freq: dict[str, int] = {}
    for row, c in enumerate(classes):
        counts: dict[str, int] = {}
        for doc in docs_by_class[c]:
            seen = set()
            for t in terms(doc):
                counts[t] = counts.get(t, 0) + 1
                if t not in seen:
                    seen.add(t)
                    doc_freq[t] = doc_freq.get(t, 0) + 1
        for t, n in counts.items():
            rows.append(row)
            cols.append(vocab.setdefault(t, len(vocab)))
            vals.append(n)
    if not vocab:
        return {c: [] for c in classes}
    n_docs = sum(len(d) for d in docs_by_class.values())
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(classes), len(vocab)), dtype=np.float64)
    # terms seen in a single post are anecdotes, not a narrative's vocabulary
    names = np.empty(len(vocab), dtype=object)
    for t, j in vocab.items():
        names[j] = t
    if n_docs >= 20:
        keep = np.array([doc_freq[t] >= 2 for t in names])
        m = m.multiply(keep[None, :]).tocsr()
    class_sizes = np.asarray(m.sum(axis=1)).ravel()
    tf = sparse.diags(1.0 / np.maximum(class_sizes, 1)) @ m
    term_totals = np.asarray(m.sum(axis=0)).ravel()
    idf = np.log1p(class_sizes.mean() / np.maximum(term_totals, 1))
    scores = (tf @ sparse.diags(idf)).tocsr()
    out: dict[int, list[str]] = {}
    for row, c in enumerate(classes):
        r = scores.getrow(row)
        order = np.lexsort((names[r.indices], -r.data))  # score desc, then term for ties
        picked: list[str] = []
        for j in r.indices[order]:
            t = names[j]
            # a unigram already inside a chosen bigram adds nothing to a label
            if any(t in p.split(" ") for p in picked if " " in p):
                continue
            picked.append(t)
            if len(picked) == n_terms:
                break
        out[c] = picked
    return out


def representative(idx: np.ndarray, vectors: np.ndarray, texts: list[str], k: int) -> list[int]:
    """The k posts nearest the narrative's centroid, no two with the same text."""
    sub = vectors[idx]
    centroid = sub.mean(axis=0)
    norm = np.linalg.norm(centroid)
    sims = sub @ (centroid / norm) if norm > 0 else np.zeros(len(idx))
    order = np.lexsort((idx, -sims))
    chosen: list[int] = []
    seen: set[str] = set()
    for j in order:
        key = dedupe_key(texts[idx[j]])
        if key in seen:
            continue
        seen.add(key)
        chosen.append(int(idx[j]))
        if len(chosen) == k:
            break
    return chosen


_LINK = regex.compile(r"(?i)\bhttps?://([^/\s:?#]+)")


def _column(posts: pd.DataFrame, name: str) -> pd.Series:
    if name not in posts:
        return pd.Series([""] * len(posts), index=posts.index)
    return posts[name].fillna("").astype(str).str.strip()


def _domain(url: str, text: str) -> str:
    """The host of the post's link (its url column, else the first link in its text)."""
    m = _LINK.search(url) or _LINK.search(text or "")
    host = m.group(1).lower() if m else ""
    return host[4:] if host.startswith("www.") else host


def _top(values: pd.Series, k: int) -> list[dict]:
    """The k most common non-empty values with counts (ties alphabetical)."""
    v = values.dropna()
    v = v[v.astype(str) != ""]
    counts = v.value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return [{"value": str(x), "n": int(n)} for x, n in counts.head(k).items()]


@dataclass
class Summary:
    table: pd.DataFrame  # one row per narrative (noise excluded), for narratives.csv
    details: list[dict] = field(default_factory=list)  # full detail, for narratives.json
    n_noise: int = 0


def run(posts: pd.DataFrame, labels: np.ndarray, vectors: np.ndarray, cfg: SummariseConfig,
        seed: int) -> Summary:
    texts = posts["text"].tolist()
    rng = np.random.default_rng(seed)
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    docs: dict[int, list[str]] = {}
    members: dict[int, np.ndarray] = {}
    for c in ids:
        idx = np.flatnonzero(labels == c)
        members[c] = idx
        distinct: dict[str, str] = {}
        for i in idx:
            distinct.setdefault(dedupe_key(texts[i]), texts[i])
        uniq = list(distinct.values())
        if len(uniq) > cfg.max_texts_for_terms:
            pick = np.sort(rng.choice(len(uniq), cfg.max_texts_for_terms, replace=False))
            uniq = [uniq[i] for i in pick]
        docs[c] = uniq
    top = class_tfidf(docs, cfg.n_terms) if ids else {}

    rows, details = [], []
    hashtags = _column(posts, "hashtags")
    domains = pd.Series([_domain(u, t) for u, t in zip(_column(posts, "url"), texts)],
                        index=posts.index)
    langs = _column(posts, "lang")
    created = posts["created_at"]
    accounts = posts["account_id"]
    types = posts["account_type"].fillna("") if "account_type" in posts else None
    for c in ids:
        idx = members[c]
        examples = representative(idx, vectors, texts, cfg.n_examples)
        acc_counts = accounts.iloc[idx].value_counts()
        acc_counts = acc_counts.sort_index().sort_values(ascending=False, kind="stable")
        type_mix = ""
        if types is not None:
            tc = types.iloc[idx].replace("", "unknown").value_counts().sort_index()
            type_mix = " ".join(f"{t}:{n}" for t, n in tc.items())
        label = ", ".join(top[c][:3]) if top[c] else f"narrative {c}"
        first_at, last_at = created.iloc[idx].min(), created.iloc[idx].max()
        rows.append({
            "narrative_id": c,
            "label": label,
            "n_posts": len(idx),
            "n_accounts": int(acc_counts.size),
            "account_types": type_mix,
            "first_at": first_at,
            "last_at": last_at,
            "top_terms": "; ".join(top[c]),
            "example_post_id": posts["post_id"].iloc[examples[0]],
            "example_text": texts[examples[0]],
        })
        details.append({
            "narrative_id": c,
            "label": label,
            "top_terms": top[c],
            "examples": [{"post_id": posts["post_id"].iloc[i], "account_id": accounts.iloc[i],
                          "created_at": created.iloc[i].isoformat(), "text": texts[i]}
                         for i in examples],
            "top_accounts": [{"account_id": a, "n_posts": int(n)}
                             for a, n in acc_counts.head(cfg.n_accounts).items()],
            "top_hashtags": _top(hashtags.iloc[idx].str.split().explode(), cfg.n_terms),
            "top_domains": _top(domains.iloc[idx], cfg.n_terms),
            "languages": _top(langs.iloc[idx], 10),
            "posts_per_day": round(len(idx) / max(1.0, (last_at - first_at).total_seconds()
                                                  / 86400), 2),
        })
    columns = ["narrative_id", "label", "n_posts", "n_accounts", "account_types", "first_at",
               "last_at", "top_terms", "example_post_id", "example_text"]
    table = pd.DataFrame(rows, columns=columns)
    return Summary(table, details, int((labels < 0).sum()))
