import json
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import config, lang, runner, simdata
from pipeline.errors import ConfigError


def test_scripts_decide_urdu_and_hindi():
    assert lang.detect("ہمارے بہادر فوجی سرحد پر پہرہ دیتے ہیں۔") == "ur"
    assert lang.detect("हमारे बहादुर सैनिक सरहद पर पहरा देते हैं।") == "hi"
    # a link or a Latin hashtag does not outvote the script of the words
    assert lang.detect("پاک فوج زندہ باد #PakArmy https://example.com/a") == "ur"


def test_roman_urdu_and_hinglish_are_not_english():
    assert lang.detect("Pakistan Zindabad, humari fauj hamara fakhar hai.") == "ur-Latn"
    assert lang.detect("Bharat Mata ki jai, hamari sena hamara garv hai.") == "hi-Latn"
    assert not lang.is_english(lang.detect("Proud of our jawans yaar, kya baat hai"))
    assert lang.detect("Salute to the brave soldiers standing guard in the cold.") == "en"


def test_other_languages_come_from_py3langid():
    assert lang.detect("Bonjour tout le monde, nous allons au marché demain matin.") == "fr"
    assert lang.detect("Das Wetter ist heute sehr schön in Berlin.") == "de"
    assert lang.detect("Привет всем, как дела сегодня?") == "ru"
    assert lang.detect("سلام، امروز هوا خیلی خوب است") == "fa"  # Arabic script, not Urdu


@pytest.mark.parametrize("text", ["", "   ", "😀🔥", "https://example.com/x", "123 456", None,
                                  float("nan")])
def test_no_letters_is_undetermined(text):
    assert lang.detect(text) == "und"


def test_held_out_split_accuracy():
    res = lang.evaluate("eval")
    assert res["n"] == 90
    # the distinction the pipeline acts on: nothing Roman Urdu or Hinglish is called English,
    # and no English sentence is called anything else
    assert res["roman_south_asian_called_english"] == 0
    assert res["english_called_other"] == 0 and res["per_class"]["en"] == 1.0
    # Roman Urdu vs Hinglish is harder (many eval lines are the same sentence in both)
    assert res["per_class"]["ur-Latn"] >= 0.8 and res["per_class"]["hi-Latn"] >= 0.7
    assert res["accuracy"] >= 0.85


def test_eval_split_is_held_out():
    train, _ = lang.read_split("train")
    held, _ = lang.read_split("eval")
    assert len(train) == 210 and not set(train) & set(held)


def test_simulator_roman_urdu_is_never_english():
    """The simulator's templates were written separately and never trained on."""
    got = {}
    for narrative in simdata.NARRATIVES.values():
        for language, sentences in narrative["sentences"].items():
            for s in sentences:
                got.setdefault(language, []).append(lang.detect(re.sub(r"\{\w+\}", "X", s)))
    assert got["ur_roman"] and all(c in ("ur-Latn", "hi-Latn") for c in got["ur_roman"])
    assert set(got["en"]) == {"en"}
    assert set(got["ur"]) == {"ur"} and set(got["hi"]) == {"hi"}


def test_run_keeps_given_languages_and_fills_empty_ones():
    posts = pd.DataFrame({
        "text": ["Salute to the brave soldiers.", "Pak fauj zindabad, humari shaan hai",
                 "ہماری فوج ہمارا فخر ہے", "", "Same text, given language"],
        "lang": [None, "", "  ", None, "fr"],
    })
    out, stats = lang.run(posts)
    assert out["lang"].tolist() == ["en", "ur-Latn", "ur", "und", "fr"]
    assert stats == {"n_given": 1, "n_detected": 4,
                     "posts": {"en": 1, "fr": 1, "und": 1, "ur": 1, "ur-Latn": 1}}
    assert pd.isna(posts["lang"][0]) and posts["lang"][2] == "  "  # the input is not modified


def test_run_without_a_lang_column_and_deterministic():
    posts = pd.DataFrame({"text": ["Hukumat ne awam ko mayoos kar diya hai"] * 3
                          + ["Great match today"]})
    a, _ = lang.run(posts)
    b, _ = lang.run(posts)
    assert a["lang"].tolist() == b["lang"].tolist() == ["ur-Latn"] * 3 + ["en"]


def test_auto_tier_follows_the_share_of_non_english_posts():
    langs = ["ur"] * 30 + ["ur-Latn"] * 20 + ["hi"] * 12 + ["en"] * 38 + ["und"] * 50
    tier, reason = lang.choose_tier(langs, "auto", 0.5)
    assert tier == "multilingual"
    # und (no letters) is left out: 62 of 100 posts with a language are not English
    assert reason.startswith("auto: 62% of posts not English") and "ur-Latn 20%" in reason
    tier, reason = lang.choose_tier(langs, "auto", 0.7)
    assert tier == "quality" and "< embed.auto_multilingual_share 70%" in reason
    # Roman Urdu alone counts as not English
    assert lang.choose_tier(["ur-Latn"] * 6 + ["en"] * 4, "auto", 0.5)[0] == "multilingual"
    assert lang.choose_tier(["en"] * 9 + ["ur"], "auto", 0.5)[0] == "quality"
    # explicit tiers are kept as they are
    assert lang.choose_tier(["ur"] * 10, "quality", 0.5) == (
        "quality", "embed.tier = 'quality' in the config")


def test_auto_is_the_default_and_the_share_is_checked():
    cfg = config.load()
    assert cfg.embed.tier == "auto" and cfg.embed.auto_multilingual_share == 0.5
    assert config.load(None, ["embed.tier=multilingual"]).embed.tier == "multilingual"
    with pytest.raises(ConfigError, match=r"embed\.auto_multilingual_share \(1\.5\) must be "
                                          r"between 0 and 1"):
        config.load(None, ["embed.auto_multilingual_share=1.5"])
    with pytest.raises(ConfigError, match=r"must be one of: quality, .*multilingual.*, auto"):
        config.load(None, ["embed.tier=turbo"])


def _corpus(tmp_path, texts):
    rows = [{"post_id": f"p{i}", "account_id": f"a{i % 3}",
             "created_at": f"2024-01-0{1 + i % 5}T10:00:00Z", "text": t}
            for i, t in enumerate(texts)]
    path = tmp_path / "posts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("texts,tier", [
    (["ہماری فوج ہمارا فخر ہے", "سیلاب زدگان کی مدد کریں", "Pak fauj zindabad yaar",
      "Flood relief camps opened today", "हमारी फ़ौज हमारा गर्व है"], "multilingual"),
    (["Flood relief camps opened today", "Our soldiers guard the border",
      "What a cricket match", "Sailab mutasireen ki madad karein"], "quality"),
])
def test_runner_picks_the_tier_and_says_why(tmp_path, monkeypatch, hashing_embedder, texts,
                                            tier):
    from pipeline import embed

    used = []

    def factory(name):
        def make(cfg):
            used.append(name)
            return hashing_embedder
        return make

    for name in ("quality", "multilingual"):
        monkeypatch.setitem(embed.TIERS, name, factory(name))
    cfg = config.load(None, [f"embed.cache_dir={tmp_path / 'cache'}"])
    runner.cluster_corpus(_corpus(tmp_path, texts), tmp_path / "run", cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert used == [tier]
    assert manifest["embed"]["tier"] == tier
    assert manifest["embed"]["reason"].startswith("auto: ")
    assert sum(manifest["languages"]["posts"].values()) == len(texts)
    assert manifest["languages"]["n_detected"] == len(texts)
    posts = pd.read_parquet(tmp_path / "run" / "posts.parquet")
    assert posts["lang"].notna().all()
    assert np.isin(posts["lang"], ["en", "ur", "hi", "ur-Latn", "hi-Latn"]).all()


# texts in many scripts and shapes, for the batched classifiers against their references
MIXED = [
    "Salute to the brave soldiers standing guard in the cold.",
    "Pakistan Zindabad, humari fauj hamara fakhar hai.",
    "Bonjour tout le monde, nous allons au marché demain matin.",
    "Das Wetter ist heute sehr schön in Berlin.",
    "Привет всем, как дела сегодня?",
    "ہمارے بہادر فوجی سرحد پر پہرہ دیتے ہیں۔",
    "سلام، امروز هوا خیلی خوب است",
    "हमारे बहादुर सैनिक सरहद पर पहरा देते हैं।",
    "मी आज बाजारात गेलो होतो",
    "今天天气很好，我们去公园吧",
    "SHOUTING IN CAPITALS ABOUT THE MATCH TODAY",
    "Mixed: Pak فوج zindabad हमारी सेना 🇵🇰🔥",
    "😀🔥", "", "   ", "123 456", "x",
    "Karachi " * 400,  # long: one text per automaton batch when batches are small
]


def test_batched_py3langid_matches_py3langid(monkeypatch):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    reference = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    monkeypatch.setattr(lang, "LANGID_BATCH_BYTES", 600)  # several batches, one text per batch
    got = lang._langid().probs(MIXED)
    want = np.array([reference._decide(t) for t in MIXED])
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    # restricted to a script's languages: py3langid's rank, filtered and renormalised
    for row, text in enumerate(MIXED):
        ranked = [(c, p) for c, p in reference.rank(text) if c in lang._SCRIPT_LANGS["Arabic"]]
        code, conf = lang._langid().best(got[row:row + 1], lang._SCRIPT_LANGS["Arabic"])[0]
        assert code == ranked[0][0]
        assert conf == pytest.approx(ranked[0][1] / sum(p for _, p in ranked), abs=1e-4)


def test_the_unpacked_model_is_cached_and_gives_the_same_probabilities(tmp_path):
    """py3langid's model is unpacked once and written to the cache folder; the next process
    reads it back (mapped) and scores exactly as the unpacked model does."""
    fresh = lang.Py3Langid(cache=tmp_path)
    assert not fresh.from_cache
    (folder,) = tmp_path.iterdir()
    assert {p.name for p in folder.iterdir()} == {"step.npy", "emit.npy", "weights.npy",
                                                 "prior.npy", "meta.json"}
    cached = lang.Py3Langid(cache=tmp_path)
    assert cached.from_cache
    assert np.array_equal(cached.probs(MIXED), fresh.probs(MIXED))
    assert cached.classes == fresh.classes and cached.alias_pairs == fresh.alias_pairs
    assert np.array_equal(lang.Py3Langid(cache=None).probs(MIXED), fresh.probs(MIXED))


def test_a_damaged_or_foreign_cache_is_unpacked_again(tmp_path):
    lang.Py3Langid(cache=tmp_path)
    (folder,) = tmp_path.iterdir()
    want = lang.Py3Langid(cache=None).probs(MIXED)
    (folder / "weights.npy").write_bytes((folder / "weights.npy").read_bytes()[:1000])
    damaged = lang.Py3Langid(cache=tmp_path)
    assert not damaged.from_cache and np.array_equal(damaged.probs(MIXED), want)
    assert lang.Py3Langid(cache=tmp_path).from_cache  # written again whole
    np.save(folder / "prior.npy", np.zeros(3, dtype=np.float32))  # does not fit the rest
    assert not lang.Py3Langid(cache=tmp_path).from_cache
    stale = tmp_path / "0123456789abcdef"  # another model file's: removed by a write
    stale.mkdir()
    (stale / "meta.json").write_text("{}")
    other = tmp_path / "notes"  # anything else is left alone
    other.mkdir()
    (folder / "meta.json").unlink()  # a write killed before its last file
    assert not lang.Py3Langid(cache=tmp_path).from_cache
    assert not stale.exists() and other.exists() and lang.Py3Langid(cache=tmp_path).from_cache


def test_a_cache_folder_that_cannot_be_written_is_left_alone(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    ident = lang.Py3Langid(cache=blocked)
    assert not ident.from_cache
    assert np.array_equal(ident.probs(MIXED), lang.Py3Langid(cache=None).probs(MIXED))


def test_word_table_scores_equal_the_sum_over_features():
    nb = lang.latin_classifier()
    texts = MIXED + ["Proud of our jawans yaar, kya baat hai", "zzqx unseenword qqq"]
    got = nb.scores_many([lang.words(t) for t in texts])
    for row, text in enumerate(texts):
        feats = lang.features(text)
        idx = [i for i in map(nb.vocab.get, feats) if i is not None]
        logp = nb.log_prob[idx].sum(axis=0) + (len(feats) - len(idx)) * nb.log_unseen
        logp = logp - logp.max()
        want = logp - np.log(np.exp(logp).sum())
        np.testing.assert_allclose(got[row], want, rtol=1e-10, atol=1e-9)


def test_ascii_shortcuts_find_the_same_words_and_script():
    for text in ["It's the BEST day", "a-b_c d'e 42x", "no letters? 123 !!", "Straße", "İstanbul"]:
        assert lang.words(text) == lang._WORD.findall(text.casefold())
    for text in MIXED + ["abc", "ABC def", "١٢٣ abc", "ٹٹ abc", "abc ٹ"]:
        clean = text.strip()
        letters = lang._LETTER.findall(clean)
        counts = {name: len(rx.findall(clean)) for name, rx in lang._SCRIPTS.items()}
        name, n = max(counts.items(), key=lambda kv: (kv[1], -list(lang._SCRIPTS).index(kv[0])))
        want = (None if not letters else
                "Other" if len(letters) - sum(counts.values()) > n else name)
        assert lang._dominant_script(clean) == want, text


def test_detect_many_is_detect_one_by_one(monkeypatch):
    monkeypatch.setattr(lang, "LANGID_BATCH_BYTES", 300)
    texts = MIXED + [None, float("nan"), MIXED[1], MIXED[0], 42]
    batched = lang.detect_many(texts)
    assert batched == [lang.detect(t) for t in texts]
    assert batched[:3] == ["en", "ur-Latn", "fr"] and batched[-1] == "und"


def test_detect_many_in_blocks_gives_the_codes_of_one_block(monkeypatch):
    # the blocks only bound memory: each text's code is its own, so the block size is invisible
    texts = ([f"The army parade in town {i} was a great day for the regiment" for i in range(7)]
             + ["Kashmir ki awaam ne aaj phir apni awaaz buland ki hai", "कश्मीर में आज बारिश हुई",
                "کشمیر میں آج بارش ہوئی", None, "", "12345", "Der Zug kommt heute spät an"] * 3)
    whole = lang.detect_many(texts)
    monkeypatch.setattr(lang, "DETECT_BLOCK", 2)
    assert lang.detect_many(texts) == whole
    assert len(set(whole)) >= 4


MEMO_TEXTS = ["The army parade in town was a great day", "Kashmir ki awaam ne aaj phir awaaz di",
              "कश्मीर में आज बारिश हुई", "کشمیر میں آج بارش ہوئی", "Der Zug kommt heute spät an",
              None, "", "12345"]


def classified(monkeypatch) -> list:
    """The texts the classifiers are given from now on (detect_many's misses)."""
    seen, real = [], lang._detect_distinct

    def spy(block):
        seen.extend(block)
        return real(block)

    monkeypatch.setattr(lang, "_detect_distinct", spy)
    return seen


def test_a_memo_gives_a_later_run_the_same_codes_and_classifies_only_new_texts(
        tmp_path, monkeypatch):
    path = tmp_path / "languages.parquet"
    first = lang.LanguageMemo(path)
    assert lang.detect_many(MEMO_TEXTS, first) == lang.detect_many(MEMO_TEXTS)
    first.write()
    seen = classified(monkeypatch)
    new = ["Nayi sarak ka kaam shuru ho gaya hai", "Le train arrive en retard ce soir"]
    later = MEMO_TEXTS[::-1] + new + MEMO_TEXTS[:2]
    memo = lang.LanguageMemo(path)
    assert lang.detect_many(later, memo) == lang.detect_many(later)
    assert set(seen[:3]) == {*new, None}  # then the whole list again, without the memo
    memo.write()  # holds this run's texts only
    assert len(pq.read_table(path)) == len(set(later) - {None})


def test_another_detectors_memo_or_a_torn_one_is_not_used(tmp_path, monkeypatch, caplog):
    path = tmp_path / "languages.parquet"
    memo = lang.LanguageMemo(path)
    lang.detect_many(MEMO_TEXTS, memo)
    memo.write()
    monkeypatch.setattr(lang, "detector_id", lambda: "another")
    assert lang.LanguageMemo(path).known == {}
    monkeypatch.undo()
    assert len(lang.LanguageMemo(path).known) == len(MEMO_TEXTS) - 1
    path.write_bytes(path.read_bytes()[:40])
    assert lang.LanguageMemo(path).known == {}
    assert "cannot be read" in caplog.text


def test_a_memo_keeps_given_languages_and_fills_the_rest_as_without(tmp_path):
    posts = pd.DataFrame({"text": MEMO_TEXTS, "lang": ["fr", None, "", None, "de", None, "",
                                                        "en"]})
    path = tmp_path / "languages.parquet"
    for _ in range(2):  # the second run reads the first's memo
        memo = lang.LanguageMemo(path)
        got, stats = lang.run(posts, memo)
        memo.write()
        want, want_stats = lang.run(posts)
        assert got["lang"].tolist() == want["lang"].tolist() and stats == want_stats
        assert got["lang"].tolist()[0] == "fr" and got["lang"].tolist()[-1] == "en"
