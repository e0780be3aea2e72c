"""The on-disk cache of per-text spaCy analysis: same summaries with it, without it, cold or
warm; a rerun analyses nothing; a torn shard is refused and its texts analysed again."""

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline import analysis_cache, narratives, simulate
from pipeline.config import SummariseConfig


def sim_corpus(n_posts=400, seed=5):
    corpus = simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts, multilingual=0.15))
    posts = corpus.posts.copy()
    posts["created_at"] = pd.to_datetime(posts["created_at"], utc=True)
    names = corpus.truth["narratives"]
    labels = np.array([names.index(corpus.truth["posts"][p][0]) for p in posts["post_id"]])
    labels[::13] = -1  # some noise
    vectors = np.random.default_rng(0).normal(size=(len(posts), 8)).astype(np.float32)
    vectors[:, 0] += labels
    return posts.reset_index(drop=True), labels, vectors


def summarise(posts, labels, vectors, cache_dir=""):
    return narratives.run(posts, labels, vectors, SummariseConfig(cache_dir=str(cache_dir)), 1)


def same(a: narratives.Summary, b: narratives.Summary) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.details == b.details
    assert a.n_noise == b.n_noise


def shards(root):
    return sorted(root.rglob("shard-*.parquet"))


def no_spacy(monkeypatch):
    def refuse(model):
        raise AssertionError("spaCy was loaded although every text was in the cache")

    monkeypatch.setattr(narratives, "english", refuse)


def test_summaries_are_the_same_without_the_cache_cold_and_warm(tmp_path, monkeypatch):
    posts, labels, vectors = sim_corpus()
    plain = summarise(posts, labels, vectors)
    cold = summarise(posts, labels, vectors, tmp_path)
    assert len(shards(tmp_path)) == 1
    no_spacy(monkeypatch)
    warm = summarise(posts, labels, vectors, tmp_path)
    same(plain, cold)
    same(plain, warm)
    assert len(shards(tmp_path)) == 1  # nothing new to write
    assert any(n["entities"] for n in plain.details)  # the entities went through the cache


def test_a_grown_corpus_analyses_only_its_new_texts(tmp_path):
    posts, labels, vectors = sim_corpus()
    base = np.arange(len(posts)) % 10 != 3
    summarise(posts[base].reset_index(drop=True), labels[base], vectors[base], tmp_path)
    (first,) = shards(tmp_path)
    n_first = len(pd.read_parquet(first))
    grown = summarise(posts, labels, vectors, tmp_path)
    same(summarise(posts, labels, vectors), grown)
    second = [s for s in shards(tmp_path) if s != first]
    assert len(second) == 1
    n_second = len(pd.read_parquet(second[0]))
    assert 0 < n_second < n_first / 3  # ~10% of the posts are new (plus a few re-run for NER)


def test_a_torn_shard_is_refused_and_its_texts_analysed_again(tmp_path, caplog):
    posts, labels, vectors = sim_corpus(n_posts=200)
    plain = summarise(posts, labels, vectors)
    summarise(posts, labels, vectors, tmp_path)
    (shard,) = shards(tmp_path)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a torn write under the final name
    with caplog.at_level(logging.WARNING, logger="pipeline.analysis_cache"):
        again = summarise(posts, labels, vectors, tmp_path)
    assert "damaged" in caplog.text
    same(plain, again)
    assert len(shards(tmp_path)) == 2  # the texts were analysed and cached again


def test_an_altered_shard_of_the_right_length_is_refused(tmp_path, caplog):
    posts, labels, vectors = sim_corpus(n_posts=150)
    plain = summarise(posts, labels, vectors)
    summarise(posts, labels, vectors, tmp_path)
    (shard,) = shards(tmp_path)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="pipeline.analysis_cache"):
        same(plain, summarise(posts, labels, vectors, tmp_path))
    assert "damaged" in caplog.text


def test_entities_wanted_later_are_analysed_then_and_terms_do_not_depend_on_ner(tmp_path):
    text = "Imran Khan spoke to supporters of PTI in Lahore about the floods in Pakistan"
    on = SummariseConfig(cache_dir=str(tmp_path))
    off = SummariseConfig(cache_dir="")
    texts = {"k": (text, "en")}
    without = narratives.analyse(texts, set(), on)["k"]
    assert without.entities is None
    with_ner = narratives.analyse(texts, {"k"}, on)["k"]
    reference = narratives.analyse(texts, {"k"}, off)["k"]
    assert with_ner.entities == reference.entities and reference.entities
    assert without.terms == with_ner.terms == reference.terms
    # served from the cache both ways now
    assert narratives.analyse(texts, {"k"}, on)["k"] == reference
    assert narratives.analyse(texts, set(), on)["k"].entities is None


def test_the_folder_depends_on_pipeline_version_and_settings(tmp_path):
    a = analysis_cache.AnalysisCache(tmp_path, "en_core_web_sm", "3.8.0", ("stop", 1))
    assert a.folder == analysis_cache.AnalysisCache(tmp_path, "en_core_web_sm", "3.8.0",
                                                    ("stop", 1)).folder
    assert a.folder != analysis_cache.AnalysisCache(tmp_path, "en_core_web_sm", "3.7.1",
                                                    ("stop", 1)).folder
    assert a.folder != analysis_cache.AnalysisCache(tmp_path, "en_core_web_sm", "3.8.0",
                                                    ("stop", 2)).folder
    # the analyser is part of a text's key: the same words with other stop words are another text
    assert analysis_cache.text_hash("en", "hai") != analysis_cache.text_hash("latin", "hai")


@pytest.mark.parametrize("entities", [None, [("GPE", "lahore", "Lahore")]])
def test_records_round_trip(tmp_path, entities):
    cache = analysis_cache.AnalysisCache(tmp_path, "m", "1", ())
    key = analysis_cache.text_hash("en", "x")
    cache.put({key: (["flood", "water"], entities)})
    want = {key} if entities is not None else set()
    assert cache.get([key], want) == {key: (["flood", "water"], entities)}
    if entities is None:
        assert cache.get([key], {key}) == {}  # entities wanted, none recorded: a miss
