import itertools

import numpy as np
import pandas as pd
import pytest

import fresh_python
from pipeline import coordination, simulate
from pipeline.config import CoordinationConfig
from pipeline.errors import ConfigError


def sim_posts(**kw):
    """A simulated corpus with its true narratives standing in for the clustering."""
    corpus = simulate.simulate(simulate.SimConfig(**kw))
    posts = corpus.posts.copy()
    posts["created_at"] = pd.to_datetime(posts["created_at"], utc=True).astype(
        "datetime64[us, UTC]")
    for col in ("url", "reshare_of", "hashtags"):
        posts[col] = posts[col].replace("", None)
    names = corpus.truth["narratives"]
    nid = np.array([names.index(corpus.truth["posts"][p][0]) for p in posts["post_id"]])
    return posts, nid, corpus.truth


def flagged(result):
    sig = result.pairs[result.pairs["significant"]]
    return set(result.accounts[sig["acc_a"].astype(int)]) | set(
        result.accounts[sig["acc_b"].astype(int)])


def test_bucketed_join_equals_all_pairs():
    rng = np.random.default_rng(0)
    n = 400
    events = pd.DataFrame({
        "signal": rng.choice(["narrative", "url"], n),
        "key": rng.choice(["a", "b", "c"], n),
        "post": np.arange(n),
        "account": rng.integers(0, 30, n),
        "t": rng.integers(0, 20_000, n),
    })
    window = 300
    got = coordination.cooccurrences(events, window)
    got = set(zip(got["post_a"], got["post_b"]))
    want = set()
    for i, j in itertools.combinations(range(n), 2):
        a, b = events.iloc[i], events.iloc[j]
        if (a.signal == b.signal and a.key == b.key and a.account != b.account
                and abs(a.t - b.t) <= window):
            want.add((i, j) if a.account < b.account else (j, i))
    assert got == want and len(want) > 50


@pytest.mark.parametrize("kw", [dict(seed=7), dict(seed=2, network_size=8),
                                dict(seed=3, network_size=30, text_mode="paraphrase"),
                                dict(seed=4, spread_seconds=900, text_mode="verbatim")])
def test_planted_network_found_and_no_crowd_flagged(kw):
    posts, nid, truth = sim_posts(**kw)
    result = coordination.run(posts, nid, CoordinationConfig(), seed=1)
    found = flagged(result)
    coordinated = {a for a, v in truth["accounts"].items() if v["role"] == "coordinated"}
    assert found == coordinated, {
        "missed": sorted(coordinated - found),
        "false": sorted((a, truth["accounts"][a]["role"]) for a in found - coordinated)}


def test_breaking_news_crowd_alone_is_not_coordination():
    # 40 accounts each post one story once, within minutes, on 3 different stories
    rows = []
    rng = np.random.default_rng(1)
    for story in range(3):
        start = 1_700_000_000 + story * 5 * 86400
        for acc in rng.choice(60, 40, replace=False):
            rows.append((f"s{story}-{acc}", f"acc{acc:02d}", start + int(rng.integers(0, 600)),
                         f"Story {story} breaking news", story))
    posts = pd.DataFrame(rows, columns=["post_id", "account_id", "t", "text", "nid"])
    posts["created_at"] = pd.to_datetime(posts["t"], unit="s", utc=True).astype(
        "datetime64[us, UTC]")
    posts["url"] = None
    result = coordination.run(posts, posts["nid"].to_numpy(), CoordinationConfig(), seed=1)
    assert not result.pairs["significant"].any()


def test_normalise_url():
    n = coordination.normalise_url
    assert n("https://www.Example.com/a/?utm_source=x&id=3#frag") == "https://example.com/a?id=3"
    assert n("http://example.com/a") == n("https://example.com/a/")
    assert n("www.example.com/x?fbclid=abc") == "https://example.com/x"


def test_near_duplicates_group_edited_copies_only():
    texts = [
        "Salute to the brave soldiers guarding our borders day and night #PakArmy",
        "Salute to the brave soldiers guarding our borders day and night!! #PakArmy 🇵🇰",
        "salute to the BRAVE soldiers guarding our borders day and night #PakArmy",
        "Cricket fever in Lahore tonight as the green shirts take on England",
    ]
    groups = coordination.near_duplicate_groups(texts, CoordinationConfig(), seed=1)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] != groups[0]


def test_benjamini_hochberg():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    q = coordination.benjamini_hochberg(p)
    assert np.allclose(q, [0.02, 0.04, 0.04, 0.02])


def test_poisson_sf_is_scipy_stats_own():
    from scipy import stats

    k = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 7.0, 29.0, 30.0, 200.0, 1e6, np.inf, np.nan])
    lam = np.array([0.0, 1e-12, 1e-3, 0.37, 1.0, 2.5, 9.0, 31.4, 1e3, 1e5, -1.0, np.nan])
    kk, ll = np.meshgrid(k, lam)
    want = stats.poisson.sf(kk, ll)
    got = coordination.poisson_sf(kk, ll)
    assert np.array_equal(got, want, equal_nan=True)
    assert coordination.poisson_sf(-1.0, 2.0) == 1.0


def test_a_command_s_start_does_not_import_scipy_stats():
    """scipy.stats took 0.4 s of every `lockstep` start; only umap (when a run needs it) and
    the tests import it."""
    out = fresh_python.run("""
        import sys
        from pipeline import cli, runner, report, escalate, coordination
        print("scipy.stats" in sys.modules)
    """)
    assert out == "False"


def test_unknown_signal_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown signal 'likes'; valid signals are: narrative"):
        coordination.parse_signals("narrative,likes")


def test_estimate_window_follows_the_quick_sharers():
    rows = []
    for k in range(40):  # links a team re-shares within ~30 s, and links shared slowly
        base = k * 10_000
        fast = k < 10
        gaps = [0, 20, 30, 40] if fast else [0, 3000, 6000, 9000]
        rows += [(f"u{k}", a, base + g) for a, g in enumerate(gaps)]
    ev = pd.DataFrame(rows, columns=["key", "account", "t"])
    ev["signal"] = "url"
    ev["post"] = np.arange(len(ev))
    w = coordination.estimate_window(ev, q=0.1, p=0.5)
    assert w == 20


def test_same_input_same_pairs():
    posts, nid, _ = sim_posts(seed=11, n_posts=1200)
    a = coordination.run(posts, nid, CoordinationConfig(), seed=3).pairs
    b = coordination.run(posts, nid, CoordinationConfig(), seed=3).pairs
    pd.testing.assert_frame_equal(a, b)


def _shingles(text, k):
    from pipeline.narratives import dedupe_key

    d = dedupe_key(text)
    return {d[i:i + k] for i in range(max(1, len(d) - k + 1))}


def test_vectorised_minhash_matches_exact_jaccard_and_datasketch():
    """The numpy MinHash LSH against exact Jaccard, and against datasketch as an oracle."""
    from datasketch import MinHash, MinHashLSH

    posts, _, _ = sim_posts(seed=5, n_posts=600, text_mode="edited")
    texts = list(dict.fromkeys(posts["text"].tolist()))[:400]
    cfg = CoordinationConfig()
    groups = coordination.near_duplicate_groups(texts, cfg, seed=1)
    sh = [_shingles(t, cfg.shingle_chars) for t in texts]
    same, strong, weak = 0, 0, 0
    for i, j in itertools.combinations(range(len(texts)), 2):
        jac = len(sh[i] & sh[j]) / len(sh[i] | sh[j])
        if jac >= 0.85:
            strong += 1
            same += groups[i] == groups[j]
    assert strong > 5 and same == strong  # every clearly near-identical pair is grouped
    # no group joins texts that share little: each member is near some other member
    for g in set(groups[groups >= 0]):
        members = np.flatnonzero(groups == g)
        for m in members if len(members) > 1 else []:
            best = max(len(sh[m] & sh[o]) / len(sh[m] | sh[o]) for o in members if o != m)
            assert best >= 0.5, (texts[m], [texts[o] for o in members])
    # datasketch, the reference implementation, links the same pairs (up to LSH noise)
    lsh = MinHashLSH(threshold=cfg.near_duplicate_threshold, num_perm=128)
    hashes = []
    for i, s in enumerate(sh):
        mh = MinHash(num_perm=128, seed=1)
        mh.update_batch([x.encode() for x in s])
        hashes.append(mh)
        lsh.insert(i, mh)
    ref_pairs = {(min(i, j), max(i, j)) for i, mh in enumerate(hashes) for j in lsh.query(mh)
                 if i != j and len(sh[i] & sh[j]) / len(sh[i] | sh[j]) >=
                 cfg.near_duplicate_threshold}
    agree = sum(groups[i] == groups[j] for i, j in ref_pairs)
    assert ref_pairs and agree / len(ref_pairs) >= 0.95


# -- the in-memory implementation the out-of-core one replaced, kept as the reference --------

def _reference_effective_moments(events, co, pairs, window, min_moments):
    moments = co.groupby("moment").agg(signal=("signal", "first"), key=("key", "first"),
                                       tm=("tm", "min")).reset_index()
    import duckdb

    con = duckdb.connect()
    con.register("moments", moments)
    con.register("events", events[["signal", "key", "account", "t"]])
    W = int(window)
    crowd = con.execute(
        f"""
        WITH m3 AS (SELECT m.*, tm // {W} + o AS bb FROM moments m, (VALUES (-1), (0), (1)) v(o)),
             e AS (SELECT *, t // {W} AS b FROM events)
        SELECT DISTINCT m3.moment, e.account
        FROM m3 JOIN e ON m3.signal = e.signal AND m3.key = e.key AND m3.bb = e.b
        WHERE abs(e.t - m3.tm) <= {W}
        """).df()
    con.close()
    span = max(int(events["t"].max()) - int(events["t"].min()), 1)
    key_rate = (events.groupby(["signal", "key"]).size() * (2 * window) / span).rename("expected")
    recurring = pairs.loc[pairs["n_moments"] >= min_moments, ["acc_a", "acc_b"]]
    selves = pd.DataFrame({"x": np.union1d(co["acc_a"], co["acc_b"])})
    selves["y"] = selves["x"]
    known = pd.concat([recurring.set_axis(["x", "y"], axis=1),
                       recurring[["acc_b", "acc_a"]].set_axis(["x", "y"], axis=1),
                       selves], ignore_index=True).drop_duplicates()
    known["k"] = True
    first = co.drop_duplicates("moment")[["moment", "signal", "key", "acc_a", "acc_b"]]
    rows = crowd.merge(first, on="moment")
    for side in ("acc_a", "acc_b"):
        rows = rows.merge(known.rename(columns={"x": side, "y": "account", "k": f"k_{side}"}),
                          on=[side, "account"], how="left")
    is_stranger = ~(rows["k_acc_a"].fillna(False).astype(bool)
                    | rows["k_acc_b"].fillna(False).astype(bool))
    strangers = is_stranger.groupby(rows["moment"]).sum()
    w = first.copy()
    w["strangers"] = w["moment"].map(strangers).fillna(0).to_numpy()
    w = w.merge(key_rate.reset_index(), on=["signal", "key"], how="left")
    w["w"] = 1.0 / (1.0 + np.maximum(0.0, w["strangers"] - w["expected"].fillna(0.0)))
    return w.groupby(["signal", "acc_a", "acc_b"])["w"].sum()


def reference_run(posts, narrative_ids, cfg, seed):
    """coordination.run as it was: every synchronised post pair in pandas."""
    from scipy import stats as sstats

    events = coordination.build_events(posts, narrative_ids, cfg, seed)
    window = cfg.window_seconds
    events, _ = coordination.drop_crowds(events, window, cfg.max_crowd)
    co = coordination.pair_moments(coordination.cooccurrences(events, window), window)
    pairs = co.groupby(["signal", "acc_a", "acc_b"], sort=True).agg(
        n_moments=("moment", "nunique"), n_cooccurrences=("moment", "size"),
        first_at=("tm", "min"), last_at=("tm", "max")).reset_index()
    cand = pairs["n_moments"] >= cfg.min_moments
    pairs["effective_moments"] = 0.0
    pairs["expected"] = np.nan
    pairs["p_value"] = 1.0
    co_cand = co.merge(pairs.loc[cand, ["signal", "acc_a", "acc_b"]],
                       on=["signal", "acc_a", "acc_b"])
    eff = _reference_effective_moments(events, co_cand, pairs, window, cfg.min_moments)
    idx = pd.MultiIndex.from_frame(pairs.loc[cand, ["signal", "acc_a", "acc_b"]])
    pairs.loc[cand, "effective_moments"] = eff.reindex(idx).fillna(0).to_numpy()
    lam = coordination.shift_expectation(events, pairs.loc[cand], window, cfg.null_shifts)
    topical = pairs.loc[cand, "signal"].isin(["narrative", "domain"]).to_numpy()
    vol = coordination.volume_expectation(events, pairs.loc[cand][topical], window)
    lam[topical] = np.maximum(lam[topical], vol)
    pairs.loc[cand, "expected"] = lam
    n_eff = np.ceil(pairs.loc[cand, "effective_moments"].to_numpy() - 1e-9)
    pairs.loc[cand, "p_value"] = sstats.poisson.sf(n_eff - 1, lam)
    pairs["q_value"] = coordination.benjamini_hochberg(pairs["p_value"].to_numpy())
    pairs["significant"] = (pairs["q_value"] <= cfg.fdr) & (
        pairs["effective_moments"] >= cfg.min_moments)
    pairs["effective_moments"] = pairs["effective_moments"].round(3)
    pairs["expected"] = pairs["expected"].round(4)
    return pairs, co


@pytest.mark.parametrize("n_partitions", [1, 3])
def test_out_of_core_pairs_equal_the_in_memory_reference(n_partitions):
    from pipeline import escalate

    posts, nid, _ = sim_posts(seed=8, n_posts=2500, n_networks=2, network_size=10,
                              text_mode="mixed")
    cfg = CoordinationConfig(signals="narrative,near_duplicate,url,domain,reshare,hashtags")
    want, want_co = reference_run(posts, nid, cfg, seed=1)
    got = coordination.run(posts, nid, cfg, seed=1, n_partitions=n_partitions)
    assert want["significant"].sum() >= 10 and len(want) > 1000
    pd.testing.assert_frame_equal(got.pairs.reset_index(drop=True),
                                  want[got.pairs.columns].reset_index(drop=True))
    assert got.stats["n_cooccurrences"] == len(want_co)
    # the evidence kept is exactly the post pairs of the significant pairs
    sig = want.loc[want["significant"], ["signal", "acc_a", "acc_b"]]
    keep = want_co.merge(sig, on=["signal", "acc_a", "acc_b"])
    cols = ["signal", "key", "post_a", "post_b", "acc_a", "acc_b", "tm"]
    pd.testing.assert_frame_equal(
        got.cooccurrences[cols].sort_values(cols, ignore_index=True),
        keep[cols].sort_values(cols, ignore_index=True), check_dtype=False)
    ref = coordination.Coordination(want[got.pairs.columns], keep, got.accounts, got.window)
    a = escalate.run(posts, nid, got, cfg, seed=1).accounts
    b = escalate.run(posts, nid, ref, cfg, seed=1).accounts
    pd.testing.assert_frame_equal(a, b)


def _reference_events(posts, narrative_ids, cfg, seed):
    """build_events as first written: a Python string per key and per post, one factorize of
    "signal\\0key" over all events, links looked for in every post."""
    from urllib.parse import urlsplit

    account = pd.Categorical(posts["account_id"]).codes.astype(np.int64)
    t = (posts["created_at"].astype("int64") // 1_000_000).to_numpy(dtype=np.int64)
    texts = posts["text"].tolist()
    rows = []
    for i in np.flatnonzero(narrative_ids >= 0):
        rows.append(("narrative", str(narrative_ids[i]), i))
    groups = coordination.near_duplicate_groups(list(texts), cfg, seed)
    by_group = pd.Series(account).groupby(groups).nunique()
    for i, g in enumerate(groups):
        if by_group[g] > 1:
            rows.append(("near_duplicate", str(g), i))
    links = [(i, u) for i, (url, text) in enumerate(zip(posts["url"].tolist(), texts))
             for u in coordination.post_urls(url, text)]
    rows += [("url", u, i) for i, u in links]
    rows += [("domain", d, i) for i, d in dict.fromkeys(
        (i, urlsplit(u).hostname or "") for i, u in links)]
    for i, r in enumerate(posts["reshare_of"].tolist()):
        if isinstance(r, str) and r.strip():
            rows.append(("reshare", r.strip(), i))
    for i, h in enumerate(posts["hashtags"].tolist()):
        if isinstance(h, str) and len(h.split()) >= cfg.min_hashtags:
            rows.append(("hashtags", h.strip(), i))
    order = {s: k for k, s in enumerate(coordination.SIGNALS)}
    rows.sort(key=lambda r: (order[r[0]], r[2]))
    ev = pd.DataFrame(rows, columns=["signal", "key", "post"])
    ev["key"] = pd.factorize(ev["signal"] + "\x00" + ev["key"])[0]
    ev["account"] = account[ev["post"]]
    ev["t"] = t[ev["post"]]
    return ev


def test_events_keys_and_links_match_the_per_post_reference():
    """Keys are numbered per signal without a string per event, and links are looked for only
    in posts that can hold one: the same events, keys and order as the per-post reference."""
    posts, nid, _ = sim_posts(seed=5, n_posts=1500)
    posts.loc[3, "text"] = posts.loc[3, "text"] + " see WWW.Example.org/a?utm_source=x"
    posts.loc[4, "url"] = "  "
    posts.loc[5, "url"] = "https://news.example.com/story#top"
    cfg = CoordinationConfig(signals="narrative,near_duplicate,url,domain,reshare,hashtags")
    got = coordination.build_events(posts, nid, cfg, seed=3)
    want = _reference_events(posts, nid, cfg, seed=3)
    assert set(got["signal"]) == set(coordination.SIGNALS)
    cols = ["signal", "key", "post", "account", "t"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True),
                                  want[cols].astype(got[cols].dtypes.to_dict()),
                                  check_dtype=False)


def test_near_duplicate_groups_same_from_a_series_and_a_list():
    posts, _, _ = sim_posts(seed=6, n_posts=800)
    cfg = CoordinationConfig()
    a = coordination.near_duplicate_groups(posts["text"], cfg, seed=2)
    b = coordination.near_duplicate_groups(posts["text"].tolist(), cfg, seed=2)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) < len(a)  # the corpus has copies: the test can tell groups apart
