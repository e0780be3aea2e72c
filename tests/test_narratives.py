"""Narrative summaries on a simulated corpus whose narratives are known."""

import numpy as np
import pandas as pd

from pipeline import narratives, simulate
from pipeline.config import SummariseConfig


def summary_of_truth(seed=3, n_posts=900):
    corpus = simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts))
    posts = corpus.posts.copy()
    posts["created_at"] = pd.to_datetime(posts["created_at"], utc=True)
    names = corpus.truth["narratives"]
    labels = np.array([names.index(corpus.truth["posts"][p][0]) for p in posts["post_id"]])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(posts), 8)).astype(np.float32)
    vectors[:, 0] += labels  # one direction per narrative, so centrality is meaningful
    return posts, labels, names, narratives.run(posts, labels, vectors, SummariseConfig(), seed=1)


def test_top_terms_name_the_planted_narrative():
    posts, labels, names, summary = summary_of_truth()
    terms = dict(zip(summary.table["narrative_id"], summary.table["top_terms"]))
    hits = {"cricket": "cricket", "cars": "car", "photography": "photography",
            "air_force": "paf", "kashmir_solidarity": "kashmir"}
    for name, word in hits.items():
        assert word in terms[names.index(name)], (name, terms[names.index(name)])


def test_examples_are_distinct_texts_even_for_copypasta():
    posts, labels, names, _ = summary_of_truth()
    posts = posts.copy()
    idx = np.flatnonzero(labels == 0)
    posts.loc[idx[:40], "text"] = posts.loc[idx[0], "text"]  # the same text 40 times
    vectors = np.zeros((len(posts), 4), dtype=np.float32)
    vectors[idx[:40]] = 1.0  # and the copies sit right at the centre
    vectors[:, 1] = np.random.default_rng(1).normal(size=len(posts)) * 0.1
    summary = narratives.run(posts, labels, vectors, SummariseConfig(n_examples=4), seed=1)
    ex = [e["text"] for e in summary.details[0]["examples"]]
    keys = {narratives.dedupe_key(t) for t in ex}
    assert len(ex) == 4 and len(keys) == 4


def test_hashtags_domains_languages_and_rate():
    posts, labels, names, summary = summary_of_truth()
    detail = {d["narrative_id"]: d for d in summary.details}
    cricket = detail[names.index("cricket")]
    assert cricket["top_hashtags"] and all(h["n"] >= 1 for h in cricket["top_hashtags"])
    counts = [h["n"] for h in cricket["top_hashtags"]]
    assert counts == sorted(counts, reverse=True)
    assert any(d["top_domains"] for d in summary.details)
    assert all("." in d["value"] and "/" not in d["value"] for x in summary.details
               for d in x["top_domains"])
    assert all(x["posts_per_day"] > 0 for x in summary.details)


def test_urdu_and_devanagari_tokens_stay_whole():
    assert narratives.tokens("पाकिस्तान की सेना ने परेड की") == ["पाकिस्तान", "सेना", "परेड"]
    assert "پاکستان" in narratives.tokens("پاکستان زندہ باد")
    assert narratives.tokens("Visit https://x.com/a @someone now") == ["visit"]
