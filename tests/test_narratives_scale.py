"""The columnar bookkeeping of the summaries (text ids, per-narrative samples, link domains),
checked against the plain per-post loops it replaced, on generated data with copies, empty
texts and narratives larger than the sample caps."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import lang, narratives
from pipeline.config import SummariseConfig


def rank(key, seed):
    return int(narratives._ranks([lang.text_digest(key)], seed)[0])


def lowest(keys, k, seed):
    """keys (in order), or the k of lowest rank (still in order) when there are more."""
    if len(keys) <= k:
        return keys
    kept = set(sorted(keys, key=lambda key: rank(key, seed))[:k])
    return [key for key in keys if key in kept]


def reference(texts, labels, cfg, seed):
    """The per-post loop of the earlier narratives.run: each narrative's distinct keys in the
    order of their first post, cut to the lowest-ranked ones, the NER keys and post counts."""
    out, want = {}, set()
    for c in sorted(int(c) for c in np.unique(labels) if c >= 0):
        counts = {}
        for i in np.flatnonzero(labels == c):
            key = narratives.text_key(texts[i])
            counts[key] = counts.get(key, 0) + 1
        uniq = lowest([k for k in counts if k], cfg.max_texts_for_terms, seed)
        want.update(lowest(uniq, cfg.max_texts_for_entities, seed))
        out[c] = (uniq, {k: counts[k] for k in uniq})
    return out, want


WORDS = ["Flood", "flood", "relief", "@user", "https://t.co/x", "RT", "", "  ", "ﬁne", "fine!"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(WORDS), max_size=4),
                          st.integers(-1, 3)), min_size=1, max_size=80),
       st.integers(1, 6), st.integers(1, 4), st.integers(0, 3))
def test_distinct_texts_match_the_per_post_loop(rows, cap, ner_cap, seed):
    texts = [" ".join(w) for w, _ in rows]
    labels = np.array([c for _, c in rows])
    cfg = SummariseConfig(max_texts_for_terms=cap, max_texts_for_entities=ner_cap)
    expected, expected_want = reference(texts, labels, cfg, seed)

    ids = sorted(expected)
    member = np.flatnonzero(labels >= 0)
    order = member[np.argsort(labels[member], kind="stable")]
    if len(order) == 0:
        return
    kid, first, empty, digests = narratives._key_ids(pd.Series(texts), order, chunk=7)
    keys = [narratives.text_key(texts[order[i]]) for i in first]
    assert [keys[k] for k in kid] == [narratives.text_key(texts[i]) for i in order]
    assert len(set(keys)) == len(keys) and (empty == -1) == ("" not in keys)
    assert empty == -1 or keys[empty] == ""
    assert digests == [lang.text_digest(k) for k in keys]
    bounds = [(int(np.searchsorted(labels[order], c)),
               int(np.searchsorted(labels[order], c, "right"))) for c in ids]
    ranks = narratives._ranks(digests, seed)
    got, want = narratives._distinct_texts(kid, bounds, empty, cfg, ranks)
    for c, d in zip(ids, got):
        assert [keys[k] for k in d.terms] == expected[c][0]
        assert {keys[k]: n for k, n in d.n_posts.items()} == expected[c][1]
    assert {keys[k] for k in want} == expected_want


def summarised_keys(monkeypatch, texts, cfg, seed=1):
    """The keys narratives.run analyses (and those it wants entities of) for one narrative."""
    seen = {}

    def fake(texts, want, cfg, *rest):
        seen.update(terms=set(texts), entities=set(want))
        return {k: narratives.Analysis(k.split()[:1], []) for k in texts}

    monkeypatch.setattr(narratives, "analyse", fake)
    n = len(texts)
    posts = pd.DataFrame({
        "post_id": [f"p{i}" for i in range(n)], "account_id": ["a"] * n,
        "created_at": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "text": texts})
    narratives.run(posts, np.zeros(n, int), np.ones((n, 2), np.float32), cfg, seed)
    return seen["terms"], seen["entities"]


def test_added_posts_change_the_sample_only_by_their_own_texts(monkeypatch):
    """An update (10% more posts) analyses the new texts that enter the sample and nothing
    else: the texts they displace leave it, the rest stay, for terms and for entities."""
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(3000)]
    added = [" ".join(rng.choice(words, 6)) for _ in range(300)]
    mixed = texts + added
    order = rng.permutation(len(mixed))  # the new posts land anywhere in the corpus
    cfg = SummariseConfig(max_texts_for_terms=200, max_texts_for_entities=50, cache_dir="")
    terms, ents = summarised_keys(monkeypatch, texts, cfg)
    terms2, ents2 = summarised_keys(monkeypatch, [mixed[i] for i in order], cfg)
    new_keys = {narratives.text_key(t) for t in added} - {narratives.text_key(t) for t in texts}
    assert len(terms) == len(terms2) == 200 and len(ents) == len(ents2) == 50
    assert ents <= terms and ents2 <= terms2
    for before, after in ((terms, terms2), (ents, ents2)):
        entered = after - before
        assert entered <= new_keys and len(before - after) == len(entered)
    assert 0 < len(terms2 - terms) < 60  # about 10% of the sample, not a new draw


def test_the_sample_follows_the_seed(monkeypatch):
    rng = np.random.default_rng(6)
    texts = [f"post {i} " + " ".join(rng.choice(list("abcdefgh"), 4)) for i in range(1000)]
    cfg = SummariseConfig(max_texts_for_terms=100, max_texts_for_entities=20, cache_dir="")
    one, _ = summarised_keys(monkeypatch, texts, cfg, seed=1)
    again, _ = summarised_keys(monkeypatch, texts, cfg, seed=1)
    two, _ = summarised_keys(monkeypatch, texts, cfg, seed=2)
    assert one == again and len(one) == len(two) == 100
    assert len(one & two) < 40  # about 10 expected from two independent draws


def test_domains_match_the_per_post_function():
    urls = pd.Series(["", "https://www.Example.org/a", "", "ftp://x.org", "", "http://a.b:80/"])
    texts = pd.Series(["see https://t.co/x now", "", "no link here", "", "HTTP://NEWS.pk/z",
                       "www.c.com"])
    got = narratives._domains(urls, texts).tolist()
    assert got == [narratives._domain(u, t) for u, t in zip(urls, texts)]
    assert got == ["t.co", "example.org", "", "", "news.pk", "a.b"]


def test_terms_share_one_string_per_word():
    found = narratives.analyse({"a": ("Flood relief camps opened", "en"),
                                "b": ("The flood relief camps closed", "en")},
                               set(), SummariseConfig(cache_dir=""))
    a = {t: t for t in found["a"].terms}
    shared = [t for t in found["b"].terms if t in a]
    assert shared and all(a[t] is t for t in shared)
