"""Analysing ahead (pipeline/prefetch.py): what it plans, that the summaries come out the same
with all, part or none of it, that a failure costs nothing, and the property it rests on: a
text's analysis does not depend on the batch it is in."""

from __future__ import annotations

import logging
import random
import re
import time
from concurrent.futures import wait
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline import analysis_cache, config, narratives, prefetch, runner, simulate
from pipeline.config import SummariseConfig
from pipeline.lang import text_digest


def sim_corpus(n_posts=900, seed=3):
    """Simulated posts (some Urdu and Hindi, some noise) in which every text key has one raw
    text, so the text a narrative's first post carries is the one the corpus's first post has."""
    corpus = simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts, multilingual=0.15))
    posts = corpus.posts.copy().reset_index(drop=True)
    posts["created_at"] = pd.to_datetime(posts["created_at"], utc=True)
    first: dict[str, str] = {}
    posts["text"] = [first.setdefault(narratives.text_key(t), t) for t in posts["text"]]
    posts.loc[5, "text"] = ""  # an empty text: no sample holds it
    # languages as ingest gives them, left empty for one text in seven (a Latin-script text
    # of unknown language is analysed as English with the Roman Urdu stop words too)
    posts["lang"] = [("" if text_digest(narratives.text_key(t))[0] % 7 == 0 else
                      narratives.script_lang(t)) for t in posts["text"]]
    names = corpus.truth["narratives"]
    labels = np.array([names.index(corpus.truth["posts"][p][0]) for p in posts["post_id"]])
    labels[::11] = -1
    vectors = np.random.default_rng(0).normal(size=(len(posts), 8)).astype(np.float32)
    vectors[:, 0] += labels
    return posts, labels, vectors


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    posts, labels, vectors = sim_corpus()
    path = tmp_path_factory.mktemp("prefetch") / "posts.parquet"
    posts.to_parquet(path)
    return path, posts, labels, vectors


# small caps, so each narrative's samples are a part of its texts, chosen by rank
CFG = SummariseConfig(cache_dir="", n_process=1, max_texts_for_terms=40,
                      max_texts_for_entities=12)


def same(a: narratives.Summary, b: narratives.Summary) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.details == b.details


def finished(ahead: prefetch.Prefetch) -> prefetch.Prefetch:
    wait(ahead.futures, timeout=600)
    assert all(f.done() for f in ahead.futures)
    return ahead


def counts(caplog) -> dict[str, int]:
    line = [r.getMessage() for r in caplog.records if "distinct English texts" in r.getMessage()]
    n = re.search(r"(\d+) distinct English texts, (\d+) from the analysis cache, (\d+) analysed "
                  r"ahead, (\d+) analysed now", line[-1])
    return dict(zip(("english", "cache", "ahead", "now"), map(int, n.groups())))


def test_a_texts_analysis_is_the_same_in_any_batch_and_order():
    posts, _, _ = sim_corpus(400)
    texts = [t for t, lang in zip(posts["text"], posts["lang"]) if lang in ("en", "") and t]
    items = [(t, "en") for t in texts]
    model = CFG.spacy_model
    whole = narratives._analyse_part(items, True, model, 256)
    assert any(ents for _, ents in whole)
    order = list(range(len(items)))
    random.Random(1).shuffle(order)
    for batch in (1, 7):
        shuffled = narratives._analyse_part([items[i] for i in order], True, model, batch)
        assert [shuffled[order.index(i)] for i in range(len(items))] == whole
    # NER has its own layers: the terms are the same without it (what a sample without
    # entities takes from an analysis made with them)
    assert [t for t, _ in narratives._analyse_part(items, False, model, 64)] == \
        [t for t, _ in whole]


def test_the_plan_is_the_corpus_english_texts_one_per_key_in_order_of_rank(corpus, monkeypatch):
    path, posts, _, _ = corpus
    plan = prefetch.plan_texts(prefetch.Plan(str(path), 9, CFG, max_texts=10_000))
    english = {}  # key -> (text, analyser) of the corpus's distinct English texts
    for text, lang in zip(posts["text"], posts["lang"]):
        key = narratives.text_key(text)
        if key and narratives.analyser_for(lang or narratives.script_lang(text)) == "en":
            english.setdefault(key, (text, "en" if lang else "latin"))
    assert len(plan) == len(english) < len(posts)
    assert {a for _, _, a in plan} == {"en", "latin"}
    assert [(text, a) for _, text, a in plan] == sorted(
        english.values(), key=lambda ta: int(narratives._ranks(
            [text_digest(narratives.text_key(ta[0]))], 9)[0]))
    assert all(h == analysis_cache.text_hash(a, t) for h, t, a in plan)
    # another seed, another order; a shorter plan is the same plan cut short
    other = prefetch.plan_texts(prefetch.Plan(str(path), 10, CFG, max_texts=10_000))
    assert [h for h, _, _ in other] != [h for h, _, _ in plan]
    short = prefetch.plan_texts(prefetch.Plan(str(path), 9, CFG, max_texts=50))
    assert short == plan[:50]
    # read a few posts at a time (a large corpus is read in batches): the same plan
    monkeypatch.setattr(prefetch, "BATCH_ROWS", 7)
    assert prefetch.plan_texts(prefetch.Plan(str(path), 9, CFG, max_texts=10_000)) == plan
    assert prefetch.plan_texts(prefetch.Plan(str(path), 9, CFG, max_texts=50)) == short


def test_the_plan_leaves_out_texts_the_cache_has_with_entities(corpus, tmp_path):
    path, _, _, _ = corpus
    cfg = SummariseConfig(cache_dir=str(tmp_path))
    plan = prefetch.plan_texts(prefetch.Plan(str(path), 9, cfg, max_texts=100))
    cache = narratives._analysis_cache(cfg)
    cache.put({plan[0][0]: (["x"], [("ORG", "x", "X")]), plan[1][0]: (["y"], None)})
    again = prefetch.plan_texts(prefetch.Plan(str(path), 9, cfg, max_texts=100))
    assert again == plan[1:]  # the second has no entities in the cache: still wanted


def test_summaries_are_the_same_with_everything_analysed_ahead(corpus, monkeypatch, caplog):
    path, posts, labels, vectors = corpus
    plain = narratives.run(posts, labels, vectors, CFG, 9)
    with finished(prefetch.Prefetch(path, CFG, 9, max_texts=10_000, per_task=64)) as ahead:
        monkeypatch.setattr(narratives, "english", lambda model: pytest.fail("spaCy loaded"))
        caplog.set_level(logging.INFO, "pipeline")
        early = narratives.run(posts, labels, vectors, CFG, 9, ahead.collect)
    same(plain, early)
    n = counts(caplog)
    assert n["now"] == 0 and n["ahead"] == n["english"] > 0
    assert any(d["entities"] for d in early.details)


def test_summaries_are_the_same_with_part_analysed_ahead(corpus, tmp_path, caplog):
    path, posts, labels, vectors = corpus
    cfg = replace(CFG, cache_dir=str(tmp_path))
    plain = narratives.run(posts, labels, vectors, CFG, 9)
    with finished(prefetch.Prefetch(path, cfg, 9, max_texts=96, per_task=32)) as ahead:
        caplog.set_level(logging.INFO, "pipeline")
        early = narratives.run(posts, labels, vectors, cfg, 9, ahead.collect)
    same(plain, early)
    n = counts(caplog)
    # the lowest-ranked texts are in the samples: most of the 96 are used
    assert 48 <= n["ahead"] <= 96 and n["now"] == n["english"] - n["ahead"]
    # everything analysed ahead went into the cache, used now or not
    caplog.clear()
    warm = narratives.run(posts, labels, vectors, cfg, 9)
    same(plain, warm)
    assert counts(caplog)["now"] == 0


def test_a_stopped_prefetch_does_no_more_work(corpus):
    path, _, _, _ = corpus
    with prefetch.Prefetch(path, CFG, 9, max_texts=10_000, per_task=8) as ahead:
        assert ahead.collect() == {}  # stopped before its process has started
    deadline = time.monotonic() + 600  # (wait() never counts a future cancelled here as done)
    while not all(f.done() for f in ahead.futures) and time.monotonic() < deadline:
        time.sleep(0.05)
    ran = [f for f in ahead.futures if not f.cancelled()]
    assert len(ran) < len(ahead.futures)  # the queue was dropped
    assert sum(bool(f.result()) for f in ran) <= 1  # at most a task running at the stop


def test_a_failing_prefetch_leaves_the_work_to_the_summaries(corpus, caplog):
    path, posts, labels, vectors = corpus
    bad = replace(CFG, spacy_model="no_such_pipeline")
    with finished(prefetch.Prefetch(path, bad, 9, max_texts=1_000, per_task=16)) as ahead:
        failed = [f for f in ahead.futures if f.exception() is not None]
        assert len(failed) == 1  # raised once; the tasks after it return at once
        assert ahead.collect() == {}
    plain = narratives.run(posts, labels, vectors, CFG, 9)
    with finished(prefetch.Prefetch(path, bad, 9, max_texts=100, per_task=16)) as ahead:
        same(plain, narratives.run(posts, labels, vectors, CFG, 9, ahead.collect))


def test_a_prefetch_that_cannot_start_costs_the_run_nothing(corpus, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(prefetch, "ProcessPoolExecutor", refuse)
    caplog.set_level(logging.INFO, "pipeline")
    with prefetch.Prefetch(corpus[0], CFG, 9) as ahead:
        assert ahead.futures == [] and ahead.collect() == {}
    assert "cannot analyse ahead (BlockingIOError" in caplog.text


@pytest.mark.parametrize("sets, n_fit, expected", [
    ([], prefetch.MIN_POSTS, True),
    ([], prefetch.MIN_POSTS - 1, False),
    (["summarise.prefetch=false"], 100_000, False),
    (["reduce.method=none"], 100_000, False),
    (["summarise.n_process=1"], 100_000, False),
    (["summarise.n_process=2"], 100_000, True),
])
def test_when_a_run_analyses_ahead(sets, n_fit, expected, monkeypatch):
    monkeypatch.setattr(narratives.os, "cpu_count", lambda: 2)
    assert prefetch.wanted(config.load(None, sets), n_fit) is expected
    monkeypatch.setattr(narratives.os, "cpu_count", lambda: 1)
    assert prefetch.wanted(config.load(None, sets), n_fit) is ("summarise.n_process=2" in sets)


def test_a_run_that_analyses_ahead_writes_the_same_outputs(tmp_path, monkeypatch, caplog):
    path = tmp_path / "corpus"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=11, n_posts=1500, n_accounts=60, network_size=7)), path)
    monkeypatch.setattr(prefetch, "MIN_POSTS", 0)
    caplog.set_level(logging.INFO, "pipeline")
    outs = {}
    for on in ("true", "false"):
        cfg = config.load(None, [f"summarise.prefetch={on}", f"embed.cache_dir={tmp_path}/emb",
                                 f"summarise.cache_dir={tmp_path}/an-{on}",
                                 "summarise.max_texts_for_terms=60"])
        runner.cluster_corpus(path, tmp_path / on, cfg)
        outs[on] = {f: (tmp_path / on / f).read_bytes()
                    for f in ("narratives.csv", "narratives.json", "escalations.csv")}
    assert outs["true"] == outs["false"]
    assert any("analysed ahead in" in r.getMessage() for r in caplog.records)
