"""The corpus simulator: determinism, size, planted networks, roles, languages, text modes."""

from __future__ import annotations

import difflib
import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline import simdata
from pipeline.errors import ConfigError
from pipeline.schema import ACCOUNT_COLUMNS
from pipeline.simulate import POST_COLUMNS, SimConfig, simulate, write_corpus

URDU = "[\u0600-\u06ff]"
DEVANAGARI = "[\u0900-\u097f]"
ROMAN_URDU = r"\b(?:hai|hain|mein|aur|humari|hamara|nahi|kar|ke liye)\b"


@pytest.fixture(scope="module")
def corpus():
    return simulate(SimConfig())


def labelled(corpus) -> pd.DataFrame:
    """Posts with their truth narrative, event and account role."""
    posts = corpus.posts.copy()
    labels = corpus.truth["posts"]
    posts["narrative"] = [labels[p][0] for p in posts["post_id"]]
    posts["event"] = [labels[p][1] or "" for p in posts["post_id"]]
    roles = {a: v["role"] for a, v in corpus.truth["accounts"].items()}
    posts["role"] = posts["account_id"].map(roles)
    posts["at"] = pd.to_datetime(posts["created_at"])
    return posts


def campaigns(posts: pd.DataFrame) -> dict[str, pd.DataFrame]:
    mask = posts["event"].str.match(r"^n\d+-c\d+$")
    return dict(tuple(posts[mask].groupby("event")))


def ratio(a: str, b: str) -> float:
    """Word-level similarity of two texts (1.0 = same words in the same order)."""
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


# -- files, size, columns --------------------------------------------------------------------

def test_same_config_writes_byte_identical_files(tmp_path):
    cfg = SimConfig(n_posts=1500, seed=3)
    first = write_corpus(simulate(cfg), tmp_path / "a")
    second = write_corpus(simulate(cfg), tmp_path / "b")
    assert [p.name for p in first] == ["posts.csv", "accounts.csv", "truth.json"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    other = write_corpus(simulate(SimConfig(n_posts=1500, seed=4)), tmp_path / "c")
    assert other[0].read_bytes() != first[0].read_bytes()


def test_written_files_read_back(tmp_path, corpus):
    paths = write_corpus(corpus, tmp_path)
    posts = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    assert list(posts.columns) == list(POST_COLUMNS)
    assert posts["text"].tolist() == corpus.posts["text"].tolist()
    assert posts["reshare_of"].tolist() == corpus.posts["reshare_of"].tolist()
    accounts = pd.read_csv(paths[1], keep_default_na=False)
    assert accounts["followers"].dtype.kind == "i"
    truth = json.loads(paths[2].read_text(encoding="utf-8"))
    assert truth["generator"] == "lockstep.simulate"
    assert truth["config"]["n_posts"] == 3000
    assert set(truth) == {"generator", "config", "narratives", "networks", "accounts", "bursts",
                          "posts"}


@pytest.mark.parametrize("n_posts", [300, 3000, 12000])
def test_size_is_within_ten_percent(n_posts):
    assert abs(len(simulate(SimConfig(n_posts=n_posts)).posts) - n_posts) <= 0.1 * n_posts


def test_columns_ids_and_order(corpus):
    posts, accounts = corpus.posts, corpus.accounts
    assert list(posts.columns) == list(POST_COLUMNS)
    assert list(accounts.columns) == list(ACCOUNT_COLUMNS)
    assert posts["post_id"].is_unique and posts["post_id"].str.fullmatch(r"p\d{6}").all()
    assert accounts["account_id"].is_unique
    assert accounts["account_id"].str.fullmatch(r"a\d{4}").all()
    assert set(posts["account_id"]) <= set(accounts["account_id"])
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert posts["created_at"].str.fullmatch(iso).all()
    assert accounts["created_at"].str.fullmatch(iso).all()
    keys = list(zip(posts["created_at"], posts["post_id"]))
    assert keys == sorted(keys)
    assert posts["created_at"].min() >= "2024-03-01" and posts["created_at"].max() < "2024-03-31"
    assert (posts["lang"] == "").all()
    assert set(posts["account_type"]) == {"page", "group", "profile", "instagram"}
    assert ((posts["platform"] == "instagram") == (posts["account_type"] == "instagram")).all()
    names = posts.groupby("account_id")["account_name"].nunique()
    assert (names == 1).all() and accounts["name"].is_unique


def test_hashtags_links_and_reshares_are_consistent(corpus):
    posts = corpus.posts
    in_text = posts["text"].map(lambda t: " ".join(re.findall(r"#(\w+)", t)).lower())
    assert (in_text == posts["hashtags"]).all()
    with_url = posts[posts["url"] != ""]
    assert all(u in t for u, t in zip(with_url["url"], with_url["text"]))
    shares = posts[posts["reshare_of"] != ""]
    assert len(shares) > 20
    source = posts.set_index("post_id").loc[shares["reshare_of"]]
    assert (source["created_at"].to_numpy() <= shares["created_at"].to_numpy()).all()
    assert (source["text"].to_numpy() == shares["text"].to_numpy()).all()
    assert (source["reshare_of"] == "").all()  # reshares point at the original


def test_texts_look_like_social_posts(corpus):
    posts = corpus.posts
    n_words = posts["text"].str.split().str.len()
    assert n_words.between(8, 45).mean() > 0.97
    assert 0.2 < (posts["hashtags"] != "").mean() < 0.8
    assert 0.1 < (posts["url"] != "").mean() < 0.6
    assert posts["text"].nunique() > 0.6 * len(posts)


# -- truth ------------------------------------------------------------------------------------

def test_every_post_has_a_truth_label(corpus):
    truth = corpus.truth
    assert list(truth["posts"]) == corpus.posts["post_id"].tolist()
    topical = [n for n in truth["narratives"] if n in simdata.NARRATIVES]
    assert 7 <= len(topical) <= 9 and len(truth["narratives"]) > len(topical)
    event_ids = {f"b{i + 1}" for i in range(len(truth["bursts"]))}
    for net in truth["networks"]:
        event_ids |= {f"{net['network_id']}-c{i + 1:02d}" for i in range(net["n_campaigns"])}
    for narrative, event in truth["posts"].values():
        assert narrative in truth["narratives"]
        assert event is None or event in event_ids
    assert set(truth["accounts"]) == set(corpus.accounts["account_id"])


def test_truth_narratives_follow_the_text():
    posts = labelled(simulate(SimConfig(n_posts=2000, multilingual=0.0)))
    cues = {"cricket": "cricket|stadium|over|match|PSL|bowl|captain|selectors|series|yorker"
                       "|green shirts|World Cup",
            "cars": "car|Mehran|Corolla|Civic|Alto|Fortuner|City|Sportage|Tucson|Cultus|Cruiser"
                    "|Alsvin|Datsun|drag racing|driver",
            "political_news": "assembly|senate|commission|court|minister|PML|PPP|PTI|MQM|JUI"
                              "|Jamaat|coalition|opposition|IMF|budget|tax|KSE|election|rupee"}
    for narrative, cue in cues.items():
        texts = posts.loc[posts["narrative"] == narrative, "text"]
        assert len(texts) > 10
        assert texts.str.contains(cue, case=False).mean() > 0.95, narrative


# -- the planted network ----------------------------------------------------------------------

def test_network_is_planted_with_campaigns_inside_spread(corpus):
    posts = labelled(corpus)
    (net,) = corpus.truth["networks"]
    members = set(net["accounts"])
    assert net["network_id"] == "n1" and len(members) == 14
    assert {corpus.truth["accounts"][a]["role"] for a in members} == {"coordinated"}
    assert sum(v["role"] == "coordinated" for v in corpus.truth["accounts"].values()) == 14
    types = posts.loc[posts["account_id"].isin(members), "account_type"]
    assert set(types) == {"page", "group", "profile", "instagram"}
    found = campaigns(posts)
    assert 25 <= net["n_campaigns"] <= 40 and len(found) == net["n_campaigns"]
    for event, group in found.items():
        assert set(group["account_id"]) <= members and group["account_id"].is_unique
        assert 7 <= len(group) <= 13, event
        assert (group["at"].max() - group["at"].min()).total_seconds() <= 300
        assert set(group["narrative"]) <= set(net["narratives"])
    starts = sorted(g["at"].min() for g in found.values())
    assert (np.diff(starts) > pd.Timedelta(0)).all()  # many distinct moments
    own = posts[posts["account_id"].isin(members) & (posts["event"] == "")]
    assert own["account_id"].nunique() >= 10  # members also post on their own


def test_spread_seconds_and_network_count_are_respected():
    cfg = SimConfig(n_posts=2000, n_networks=3, network_size=6, spread_seconds=60)
    corpus = simulate(cfg)
    nets = corpus.truth["networks"]
    assert [n["network_id"] for n in nets] == ["n1", "n2", "n3"]
    accounts = [a for n in nets for a in n["accounts"]]
    assert len(accounts) == len(set(accounts)) == 18
    spans = [(g["at"].max() - g["at"].min()).total_seconds()
             for g in campaigns(labelled(corpus)).values()]
    assert max(spans) <= 60 and np.mean(spans) > 20


def test_no_networks_means_no_coordinated_accounts():
    corpus = simulate(SimConfig(n_posts=800, n_networks=0))
    assert corpus.truth["networks"] == []
    assert "coordinated" not in {v["role"] for v in corpus.truth["accounts"].values()}
    assert campaigns(labelled(corpus)) == {}


def test_network_metadata_differs_from_organic_accounts(corpus):
    accounts = corpus.accounts.assign(
        created=pd.to_datetime(corpus.accounts["created_at"]),
        role=corpus.accounts["account_id"].map(
            {a: v["role"] for a, v in corpus.truth["accounts"].items()}))
    net = accounts[accounts["role"] == "coordinated"]
    organic = accounts[accounts["role"] == "organic"]
    assert net["created"].max() - net["created"].min() <= pd.Timedelta(days=4)
    assert organic["created"].max() - organic["created"].min() > pd.Timedelta(days=5 * 365)
    assert net["admin_countries"].nunique() == 1
    assert organic["admin_countries"].nunique() > 3
    assert net["name_changes"].mean() > 1.5 > 0.5 > organic["name_changes"].mean()


# -- the other roles --------------------------------------------------------------------------

def test_hyperactive_pages_post_many_times_more(corpus):
    posts = labelled(corpus)
    roles = pd.Series({a: v["role"] for a, v in corpus.truth["accounts"].items()})
    assert 4 <= (roles == "hyperactive").sum() <= 6
    counts = posts.groupby("account_id").size().reindex(roles.index, fill_value=0)
    assert counts[roles == "hyperactive"].median() >= 4 * counts[roles == "organic"].median()
    hyper = posts[posts["role"] == "hyperactive"]
    assert set(hyper["account_type"]) == {"page"}
    assert (hyper["narrative"] == "political_news").mean() > 0.5
    assert hyper["narrative"].str.startswith("news_").any()  # breaking-news follow-ups


def test_bursts_are_many_organic_accounts_posting_once(corpus):
    posts = labelled(corpus)
    bursts = corpus.truth["bursts"]
    assert 4 <= len(bursts) <= 6
    assert len({b["story"] for b in bursts}) == len(bursts)
    for burst in bursts:
        group = posts[posts["event"] == burst["burst_id"]]
        assert 25 <= len(group) <= 60
        assert sorted(group["account_id"]) == sorted(burst["accounts"])
        assert group["account_id"].is_unique and set(group["role"]) == {"organic"}
        assert (group["narrative"] == burst["story"]).all()
        lag = (group["at"] - pd.Timestamp(burst["at"])).dt.total_seconds()
        assert lag.min() >= 0 and lag.max() <= 2 * 3600
        assert group["url"].value_counts().drop("", errors="ignore").iloc[0] >= 0.3 * len(group)
        assert group["text"].nunique() > 0.7 * len(group)
    joins = [len(v["bursts"]) for v in corpus.truth["accounts"].values()]
    assert max(joins) <= 4 and 0 < np.mean(joins) < 2


def test_fans_repost_one_quote_verbatim_days_apart(corpus):
    posts = labelled(corpus)
    fans = [a for a, v in corpus.truth["accounts"].items() if v["role"] == "fan"]
    assert 8 <= len(fans) <= 12
    quotes = {q[0] for q in simdata.QUOTES}
    reposts = posts[posts["text"].isin(quotes) & posts["account_id"].isin(fans)
                    & (posts["reshare_of"] == "")]
    assert set(reposts["account_id"]) == set(fans)
    for _, group in reposts.groupby("account_id"):
        assert len(group) >= 2 and group["text"].nunique() == 1
        assert group["at"].diff().dropna().min() >= pd.Timedelta(days=1)
    assert (reposts.groupby("text")["account_id"].nunique() >= 2).all()


# -- languages ---------------------------------------------------------------------------------

def test_multilingual_share_and_scripts(corpus):
    text = corpus.posts["text"]
    urdu, hindi = text.str.contains(URDU).mean(), text.str.contains(DEVANAGARI).mean()
    assert urdu > 0.02 and hindi > 0.01
    assert 0.05 < urdu + hindi < 0.11  # 15% multilingual, half of it in Urdu or Hindi script
    assert 0.04 < text.str.contains(ROMAN_URDU, case=False).mean() < 0.15


def test_multilingual_zero_and_high():
    plain = simulate(SimConfig(n_posts=1000, multilingual=0.0)).posts["text"]
    assert not plain.str.contains(URDU).any() and not plain.str.contains(DEVANAGARI).any()
    assert plain.str.contains(ROMAN_URDU, case=False).mean() < 0.01
    heavy = simulate(SimConfig(n_posts=1000, multilingual=0.6)).posts["text"]
    assert 0.2 < (heavy.str.contains(URDU) | heavy.str.contains(DEVANAGARI)).mean() < 0.4


# -- text modes --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["verbatim", "edited", "paraphrase"])
def test_text_mode_shapes_campaign_texts(mode):
    found = campaigns(labelled(simulate(SimConfig(n_posts=1500, text_mode=mode))))
    assert len(found) >= 10
    ratios, n_texts, n_posts = [], 0, 0
    for group in found.values():
        first = group["text"].iloc[0]
        own = group.loc[group["reshare_of"] == "", "text"]
        n_texts, n_posts = n_texts + own.nunique(), n_posts + len(own)
        ratios += [ratio(first, t) for t in own.iloc[1:]]
        if mode == "verbatim":
            assert group["text"].nunique() == 1
        elif mode == "edited":
            assert own.nunique() >= 2
    if mode == "edited":
        assert min(ratios) > 0.75 and np.mean(ratios) > 0.9
    if mode == "paraphrase":
        assert n_texts > 0.85 * n_posts and np.mean(ratios) < 0.7


def test_mixed_mode_uses_all_three_and_shares_links_and_tags(corpus):
    kinds, shared_link, shared_tags, reshared = [], 0, 0, 0
    for group in campaigns(labelled(corpus)).values():
        own = group.loc[group["reshare_of"] == "", "text"]
        if own.nunique() == 1:
            kinds.append("verbatim")
        elif min(ratio(own.iloc[0], t) for t in own) > 0.75:
            kinds.append("edited")
        else:
            kinds.append("paraphrase")
        urls = group["url"].value_counts()
        shared_link += urls.index[0] != "" and urls.iloc[0] >= len(group) / 2
        shared_tags += group["hashtags"].value_counts().iloc[0] >= len(group) / 2
        reshared += group["reshare_of"].isin(group["post_id"]).any()
    assert {k: kinds.count(k) >= 5 for k in ("verbatim", "edited", "paraphrase")} == {
        "verbatim": True, "edited": True, "paraphrase": True}
    assert shared_link > 0.5 * len(kinds) and shared_tags > 0.7 * len(kinds)
    assert reshared > 0.3 * len(kinds)


# -- data and config checks -------------------------------------------------------------------

def test_every_template_fills_in_every_language():
    from pipeline.simulate import _Fill, _Stream, _facts, _topics

    st = _Stream(np.random.default_rng(0))
    for topic in _topics():
        facts = _facts(st, topic) if topic["facts"] else {}
        assert set(topic["sentences"]) == set(simdata.LANGS), topic["name"]
        for lang, sentences in topic["sentences"].items():
            assert len(sentences) >= (12 if lang == "en" and not facts else 1), topic["name"]
            for sentence in sentences:
                text = sentence.format_map(_Fill(st, topic["pools"][lang], facts.get(lang)))
                assert "{" not in text and "}" not in text
                assert 4 <= len(text.split()) <= 25, text


@pytest.mark.parametrize("change, message", [
    ({"text_mode": "copy"}, r"text_mode \('copy'\) must be one of: verbatim, edited"),
    ({"n_posts": 10}, r"n_posts \(10\) must be at least 100"),
    ({"network_size": 1}, r"network_size \(1\) must be at least 2"),
    ({"multilingual": 1.5}, r"multilingual \(1.5\) must be between 0 and 1"),
    ({"start": "1st of March"}, r"start \('1st of March'\) is not an ISO 8601 UTC time"),
])
def test_invalid_config_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        simulate(SimConfig(**change))


def test_bundled_sample_is_what_the_simulator_makes(tmp_path):
    """corpora/sample is generated, not hand-edited: `make sample` reproduces it exactly."""
    from pathlib import Path

    sample = Path(__file__).resolve().parent.parent / "corpora" / "sample"
    paths = write_corpus(simulate(SimConfig(seed=7)), tmp_path)
    for p in paths:
        assert (sample / p.name).read_bytes() == p.read_bytes(), p.name
