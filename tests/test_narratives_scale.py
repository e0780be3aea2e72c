"""The columnar bookkeeping of the summaries (text ids, per-narrative samples, link domains),
checked against the plain per-post loops it replaced, on generated data with copies, empty
texts and narratives larger than the sample caps."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import narratives
from pipeline.config import SummariseConfig


def reference(texts, labels, cfg, seed):
    """The per-post loop of the earlier narratives.run: each narrative's distinct keys in the
    order of their first post, sampled with the same draws, the NER keys and post counts."""
    rng = np.random.default_rng(seed)
    out, want = {}, set()
    for c in sorted(int(c) for c in np.unique(labels) if c >= 0):
        counts = {}
        for i in np.flatnonzero(labels == c):
            key = narratives.text_key(texts[i])
            counts[key] = counts.get(key, 0) + 1
        uniq = [k for k in counts if k]
        if len(uniq) > cfg.max_texts_for_terms:
            uniq = [uniq[i] for i in np.sort(rng.choice(len(uniq), cfg.max_texts_for_terms,
                                                        replace=False))]
        ner = uniq
        if len(ner) > cfg.max_texts_for_entities:
            ner = [ner[i] for i in np.sort(rng.choice(len(ner), cfg.max_texts_for_entities,
                                                      replace=False))]
        want.update(ner)
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
    kid, first, empty = narratives._key_ids(pd.Series(texts), order, chunk=7)
    keys = [narratives.text_key(texts[order[i]]) for i in first]
    assert [keys[k] for k in kid] == [narratives.text_key(texts[i]) for i in order]
    assert len(set(keys)) == len(keys) and (empty == -1) == ("" not in keys)
    assert empty == -1 or keys[empty] == ""
    bounds = [(int(np.searchsorted(labels[order], c)),
               int(np.searchsorted(labels[order], c, "right"))) for c in ids]
    got, want = narratives._distinct_texts(kid, bounds, empty, cfg, np.random.default_rng(seed))
    for c, d in zip(ids, got):
        assert [keys[k] for k in d.terms] == expected[c][0]
        assert {keys[k]: n for k, n in d.n_posts.items()} == expected[c][1]
    assert {keys[k] for k in want} == expected_want


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
