"""CooRTweet baseline: every expected value below is worked out by hand from the definition in
pipeline/coortweet.py (CooRTweet 2.x detect_groups / generate_coordinated_network)."""

from __future__ import annotations

import itertools

import igraph as ig
import numpy as np
import pandas as pd
import pytest

from pipeline import coortweet
from pipeline.errors import ConfigError, InputError


def shares(*rows):
    """rows of (object_id, account_id, content_id, timestamp_share)."""
    return pd.DataFrame(rows, columns=["object_id", "account_id", "content_id", "timestamp_share"])


def triples(groups):
    return sorted(zip(groups["content_id"], groups["content_id_y"], groups["time_delta"]))


# ---------------------------------------------------------------------------------------------
# detect_groups


def test_window_is_inclusive_and_pairs_beyond_it_are_dropped():
    df = shares(("u", "A", "a", 0), ("u", "B", "b", 10), ("u", "C", "c", 11))
    g = coortweet.detect_groups(df, time_window=10, min_participation=1)
    # a-b: 10 s (on the limit, kept); b-c: 1 s; a-c: 11 s (dropped)
    assert triples(g) == [("a", "b", 10), ("b", "c", 1)]
    assert list(g.columns) == coortweet.GROUP_COLUMNS


def test_neighbouring_time_buckets_are_compared_but_not_further_ones():
    # window 10: 19 and 29 sit in buckets 1 and 2 (10 s apart, kept);
    # 9 and 20 in buckets 0 and 2 (11 s apart, dropped)
    df = shares(("u", "A", "a", 19), ("u", "B", "b", 29),
                ("v", "A", "c", 9), ("v", "B", "d", 20))
    g = coortweet.detect_groups(df, time_window=10, min_participation=1)
    assert triples(g) == [("a", "b", 10)]


def test_zero_window_keeps_only_same_second_shares():
    df = shares(("u", "A", "a", 5), ("u", "B", "b", 5), ("u", "C", "c", 6))
    g = coortweet.detect_groups(df, time_window=0, min_participation=1)
    assert triples(g) == [("a", "b", 0)]


def test_pairs_need_the_same_object():
    df = shares(("u", "A", "a", 0), ("v", "B", "b", 1))
    assert coortweet.detect_groups(df, time_window=60, min_participation=1).empty


def test_older_share_comes_first_whatever_the_row_order():
    df = shares(("u", "B", "late", 30), ("u", "A", "early", 0))
    g = coortweet.detect_groups(df, time_window=60, min_participation=1)
    row = g.iloc[0]
    assert (row.account_id, row.content_id, row.timestamp_share) == ("A", "early", 0)
    assert (row.account_id_y, row.content_id_y, row.timestamp_share_y) == ("B", "late", 30)
    assert row.time_delta == 30


def test_same_account_loops_are_removed_unless_asked_to_keep_them():
    df = shares(("u", "A", "a1", 0), ("u", "A", "a2", 5), ("u", "B", "b", 7))
    kept = coortweet.detect_groups(df, time_window=60, min_participation=1, remove_loops=True)
    assert triples(kept) == [("a1", "b", 7), ("a2", "b", 2)]
    loops = coortweet.detect_groups(df, time_window=60, min_participation=1, remove_loops=False)
    assert triples(loops) == [("a1", "a2", 5), ("a1", "b", 7), ("a2", "b", 2)]


def test_a_share_of_the_object_itself_is_a_loop():
    # retweets: the object is tweet t1; t1 is also in the data as A's own post
    df = shares(("t1", "A", "t1", 0), ("t1", "B", "rt1", 3), ("t1", "C", "rt2", 4))
    g = coortweet.detect_groups(df, time_window=60, min_participation=1)
    assert triples(g) == [("rt1", "rt2", 1)]


def test_min_participation_prefilters_accounts_by_their_shares_in_the_input():
    # X shares once in the whole input, so it is gone before pairing; with 1 it stays
    df = shares(("u", "X", "x1", 0), ("u", "Y", "y1", 1), ("v", "Y", "y2", 500))
    assert coortweet.detect_groups(df, time_window=60, min_participation=2).empty
    assert triples(coortweet.detect_groups(df, 60, 1)) == [("x1", "y1", 1)]


def test_participation_filter_drops_pairs_where_neither_account_takes_part_enough():
    # all four accounts have 2 shares (pass the pre-filter); A and B co-share twice, C and D once
    df = shares(("u1", "A", "a1", 0), ("u2", "A", "a2", 100),
                ("u1", "B", "b1", 5), ("u2", "B", "b2", 105),
                ("u3", "C", "c1", 200), ("u9", "C", "c2", 999),
                ("u3", "D", "d1", 203), ("u8", "D", "d2", 5000))
    g = coortweet.detect_groups(df, time_window=10, min_participation=2)
    assert triples(g) == [("a1", "b1", 5), ("a2", "b2", 5)]


def test_participation_filter_keeps_a_pair_when_either_side_takes_part_enough():
    # A co-shares twice (a1 with C, a2 with B); B and C once each. CooRTweet keeps a pair when
    # either content id belongs to an account that passes, so both pairs stay.
    df = shares(("u1", "A", "a1", 0), ("u2", "A", "a2", 100),
                ("u2", "B", "b1", 101), ("u5", "B", "b2", 0),
                ("u1", "C", "c1", 3), ("u7", "C", "c2", 9999))
    g = coortweet.detect_groups(df, time_window=10, min_participation=2)
    assert triples(g) == [("a1", "c1", 3), ("a2", "b1", 1)]
    # at 3 nobody passes, so nothing is left
    assert coortweet.detect_groups(df, time_window=10, min_participation=3).empty


def test_groups_are_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(7)
    n = 400
    df = pd.DataFrame({
        "object_id": rng.choice([f"o{i}" for i in range(15)], n),
        "account_id": rng.choice([f"acc{i}" for i in range(25)], n),
        "content_id": [f"p{i}" for i in range(n)],
        "timestamp_share": rng.integers(0, 600, n),  # plenty of same-second ties
    })
    a = coortweet.run(df, time_window=30, min_participation=3)
    b = coortweet.run(df.sample(frac=1, random_state=1).reset_index(drop=True),
                      time_window=30, min_participation=3)
    assert len(a.groups) > 50
    pd.testing.assert_frame_equal(a.groups, b.groups)
    pd.testing.assert_frame_equal(a.edges, b.edges)
    pd.testing.assert_frame_equal(a.accounts, b.accounts)
    ordered = a.groups.sort_values(["object_id", "timestamp_share", "timestamp_share_y",
                                    "account_id", "account_id_y", "content_id",
                                    "content_id_y"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.groups, ordered)


def naive_detect_groups(df, time_window, min_participation):
    """CooRTweet's steps read literally: all pairs per object in row order, then the filters."""
    counts = df["account_id"].value_counts()
    x = df[df["account_id"].map(counts) >= min_participation].reset_index(drop=True)
    rows = []
    for _, grp in x.groupby("object_id", sort=False):
        recs = grp.to_dict("records")
        for r, s in itertools.combinations(recs, 2):
            delta = r["timestamp_share"] - s["timestamp_share"]
            if abs(delta) <= time_window:
                rows.append((r["object_id"], r["content_id"], s["content_id"], r["account_id"],
                             s["account_id"], delta))
    res = pd.DataFrame(rows, columns=["object_id", "content_id", "content_id_y", "account_id",
                                      "account_id_y", "time_delta"])
    res = res[(res.object_id != res.content_id) & (res.object_id != res.content_id_y)
              & (res.content_id != res.content_id_y) & (res.account_id != res.account_id_y)]
    cids = set(res.content_id) | set(res.content_id_y)
    sub = x[x.content_id.isin(cids)]
    ok = sub.groupby("account_id").size()
    keep = set(sub[sub.account_id.isin(ok[ok >= min_participation].index)].content_id)
    res = res[res.content_id.isin(keep) | res.content_id_y.isin(keep)].copy()
    swap = res.time_delta > 0
    res.loc[swap, ["content_id", "content_id_y", "account_id", "account_id_y"]] = \
        res.loc[swap, ["content_id_y", "content_id", "account_id_y", "account_id"]].to_numpy()
    res["time_delta"] = res.time_delta.abs()
    return sorted(map(tuple, res.itertuples(index=False)))


@pytest.mark.parametrize("window,min_part", [(5, 1), (20, 2), (60, 3), (0, 2)])
def test_duckdb_join_matches_the_literal_all_pairs_definition(window, min_part):
    rng = np.random.default_rng(window + min_part)
    n = 300
    df = pd.DataFrame({
        "object_id": rng.choice([f"o{i}" for i in range(12)], n),
        "account_id": rng.choice([f"a{i}" for i in range(40)], n),
        "content_id": [f"c{i}" for i in range(n)],
        "timestamp_share": rng.integers(0, 40 if window == 0 else 400, n),  # with ties
    })
    expected = naive_detect_groups(df, window, min_part)
    assert len(expected) > 10 and any(t[5] == 0 for t in expected)
    cols = ["object_id", "content_id", "content_id_y", "account_id", "account_id_y",
            "time_delta"]
    # ties="input" is CooRTweet's own rule, so even same-second pairs match exactly
    got = coortweet.detect_groups(df, window, min_part, ties="input")
    assert sorted(map(tuple, got[cols].itertuples(index=False))) == expected
    # the default only orients same-second pairs differently
    got = coortweet.detect_groups(df, window, min_part)
    unordered = sorted((o, min(c, cy), max(c, cy), d) for o, c, cy, _, _, d in expected)
    assert sorted((o, min(c, cy), max(c, cy), d) for o, c, cy, d in zip(
        got.object_id, got.content_id, got.content_id_y, got.time_delta)) == unordered


def test_ties_decide_which_same_second_share_is_older():
    df = shares(("u", "B", "b", 5), ("u", "A", "a", 5))
    by_ids = coortweet.detect_groups(df, 10, 1).iloc[0]
    assert (by_ids.account_id, by_ids.account_id_y, by_ids.time_delta) == ("A", "B", 0)
    by_input = coortweet.detect_groups(df, 10, 1, ties="input").iloc[0]
    assert (by_input.account_id, by_input.account_id_y) == ("B", "A")
    with pytest.raises(ConfigError, match=r"ties \('file'\) must be one of: ids, input"):
        coortweet.detect_groups(df, 10, 1, ties="file")


# ---------------------------------------------------------------------------------------------
# generate_coordinated_network


def pairs_frame(spec):
    """groups rows from {(older account, newer account): n co-shares}, each with fresh content."""
    rows, k = [], 0
    for (a, b), n in spec.items():
        for _ in range(n):
            rows.append(("obj", f"c{k}", f"c{k + 1}", a, b, 0, 1, 1))
            k += 2
    return pd.DataFrame(rows, columns=coortweet.GROUP_COLUMNS)


def test_edge_weight_counts_co_share_rows_not_distinct_objects():
    # one object: A posts once, B posts twice within the window -> two pairs, one edge
    df = shares(("u", "A", "a1", 0), ("u", "B", "b1", 1), ("u", "B", "b2", 2))
    g = coortweet.detect_groups(df, time_window=10, min_participation=1)
    edges, accounts = coortweet.generate_coordinated_network(g)
    assert len(edges) == 1
    e = edges.iloc[0]
    assert (e.account_id, e.account_id_y, e.weight) == ("A", "B", 2)
    assert e.avg_time_delta == 1.5
    assert (e.n_content_id, e.n_content_id_y) == (1, 2)  # older side {a1}, newer side {b1, b2}
    assert e.edge_symmetry_score == 0.5
    assert accounts.set_index("account_id")["unique_shares_count"].to_dict() == {"A": 1, "B": 2}


def test_edge_accounts_are_ordered_but_content_counts_keep_their_older_newer_slot():
    # Z is older in every pair, but the edge is written (A, Z); n_content_id still counts
    # the older-side contents (Z's one post), as CooRTweet only reorders the account columns
    df = shares(("u", "Z", "z1", 0), ("u", "A", "a1", 1), ("u", "A", "a2", 2))
    edges, _ = coortweet.generate_coordinated_network(
        coortweet.detect_groups(df, time_window=10, min_participation=1))
    e = edges.iloc[0]
    assert (e.account_id, e.account_id_y) == ("A", "Z")
    assert (e.n_content_id, e.n_content_id_y) == (1, 2)


def test_threshold_is_the_type7_quantile_and_flags_strictly_greater_weights():
    groups = pairs_frame({("A", "B"): 1, ("A", "C"): 2, ("B", "C"): 3, ("C", "D"): 4})
    # weights 1, 2, 3, 4: median 2.5 -> 3 and 4 flagged
    edges, _ = coortweet.generate_coordinated_network(groups, edge_weight=0.5)
    assert edges[["account_id", "account_id_y", "weight", "weight_threshold"]].values.tolist() \
        == [["A", "B", 1, 0], ["A", "C", 2, 0], ["B", "C", 3, 1], ["C", "D", 4, 1]]
    # 0.75 quantile = 1 + 0.75 * 3 = 3.25 -> only 4
    edges, _ = coortweet.generate_coordinated_network(groups, edge_weight=0.75)
    assert edges["weight_threshold"].tolist() == [0, 0, 0, 1]
    # q = 1 is the maximum: nothing is strictly above it
    edges, _ = coortweet.generate_coordinated_network(groups, edge_weight=1.0)
    assert edges["weight_threshold"].sum() == 0


def test_a_weight_equal_to_the_threshold_is_not_flagged():
    groups = pairs_frame({("A", "B"): 1, ("A", "C"): 1, ("B", "C"): 1, ("C", "D"): 2})
    edges, _ = coortweet.generate_coordinated_network(groups, edge_weight=0.5)  # median 1
    assert edges["weight_threshold"].tolist() == [0, 0, 0, 1]


def test_subgraph_1_keeps_flagged_edges_and_drops_accounts_left_alone():
    groups = pairs_frame({("A", "B"): 1, ("A", "C"): 2, ("B", "C"): 3, ("C", "D"): 4})
    edges, accounts = coortweet.generate_coordinated_network(groups, 0.5, subgraph=1)
    assert edges[["account_id", "account_id_y"]].values.tolist() == [["B", "C"], ["C", "D"]]
    assert accounts["account_id"].tolist() == ["B", "C", "D"]
    full_edges, full_accounts = coortweet.generate_coordinated_network(groups, 0.5, subgraph=0)
    assert len(full_edges) == 4 and full_accounts["account_id"].tolist() == ["A", "B", "C", "D"]
    c = full_accounts.set_index("account_id").loc["C"]
    assert (c.degree, c.strength, c.n_edges_above_threshold) == (3, 9, 2)


def test_objects_lists_the_objects_behind_each_edge():
    df = shares(("u", "A", "a1", 0), ("u", "B", "b1", 1), ("v", "A", "a2", 50),
                ("v", "B", "b2", 52), ("w", "A", "a3", 90), ("w", "C", "c1", 91))
    edges, _ = coortweet.generate_coordinated_network(
        coortweet.detect_groups(df, time_window=10, min_participation=1), objects=True)
    assert edges.set_index("account_id_y")["object_ids"].to_dict() == {"B": "u,v", "C": "w"}


def test_no_pairs_gives_empty_tables_with_the_right_columns():
    result = coortweet.run(shares(("u", "A", "a", 0), ("v", "B", "b", 1)), 60, 1)
    assert result.groups.empty and result.edges.empty and result.accounts.empty
    assert list(result.edges.columns) == coortweet.EDGE_COLUMNS
    assert list(result.accounts.columns) == coortweet.ACCOUNT_COLUMNS
    assert result.stats["n_edges"] == 0 and result.stats["n_shares"] == 2


# ---------------------------------------------------------------------------------------------
# run, write, errors


def test_run_counts_and_write_outputs(tmp_path):
    df = shares(("u1", "A", "a1", 0), ("u2", "A", "a2", 100), ("u1", "B", "b1", 5),
                ("u2", "B", "b2", 105), ("u2", "C", "c1", 104), ("u3", "C", "c2", 700))
    result = coortweet.run(df, time_window=10, min_participation=2, edge_weight=0.5)
    # pairs: u1 a1-b1; u2 a2-c1, a2-b2, c1-b2 -> edges A-B 2, A-C 1, B-C 1; median 1
    assert result.edges[["account_id", "account_id_y", "weight", "weight_threshold"]] \
        .values.tolist() == [["A", "B", 2, 1], ["A", "C", 1, 0], ["B", "C", 1, 0]]
    s = result.stats
    assert (s["n_objects"], s["n_shares"], s["n_pairs"], s["n_edges"], s["n_accounts"]) \
        == (3, 6, 4, 3, 3)
    assert s["n_edges_above_threshold"] == 1 and s["edge_weight_threshold"] == 1.0
    paths = coortweet.write(result, tmp_path / "out")
    assert [p.name for p in paths] == ["coortweet_groups.parquet", "coortweet_edges.csv",
                                       "coortweet_network.graphml"]
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), result.groups)
    assert pd.read_csv(paths[1])["weight"].tolist() == [2, 1, 1]
    graph = ig.Graph.Read_GraphML(str(paths[2]))
    assert sorted(graph.vs["name"]) == ["A", "B", "C"]
    assert sorted(graph.es["weight"]) == [1, 1, 2]
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_read_objects_reads_csv_and_parquet(tmp_path):
    df = shares(("u", "A", "007", 1629589836), ("u", "B", "008", 1629589840))
    df.to_csv(tmp_path / "s.csv", index=False)
    df.assign(timestamp_share=df.timestamp_share.astype(float)).to_parquet(tmp_path / "s.parquet")
    a = coortweet.read_objects(tmp_path / "s.csv")
    b = coortweet.read_objects(tmp_path / "s.parquet")
    assert a["content_id"].tolist() == ["007", "008"]  # ids stay strings, leading zeros kept
    pd.testing.assert_frame_equal(a, b)
    assert a["timestamp_share"].dtype == "int64"


def test_missing_columns_name_the_file_the_columns_found_and_the_fix(tmp_path):
    path = tmp_path / "posts.csv"
    pd.DataFrame({"url": ["u"], "account_id": ["A"], "post_id": ["p"], "timestamp": [1]}) \
        .to_csv(path, index=False)
    with pytest.raises(InputError, match=r"posts\.csv: missing column\(s\) object_id, content_id, "
                       r"timestamp_share; found columns: url, account_id, post_id, timestamp\. "
                       r"CooRTweet needs .* rename your columns"):
        coortweet.read_objects(path)


def test_bad_rows_and_files_are_named(tmp_path):
    path = tmp_path / "s.csv"
    shares(("u", "A", "a", 1), ("", "B", "b", 2)).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"s\.csv row 2: object_id is empty .* Drop rows"):
        coortweet.read_objects(path)
    shares(("u", "A", "a", "yesterday")).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"row 1: timestamp_share 'yesterday' is not a number; "
                                         r"expected Unix seconds"):
        coortweet.read_objects(path)
    shares(("u", "A", "a", 1.5)).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"row 1: timestamp_share '1\.5' is not whole seconds"):
        coortweet.read_objects(path)
    with pytest.raises(InputError, match=r"nope\.csv: no such file"):
        coortweet.read_objects(tmp_path / "nope.csv")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(InputError,
                       match=r"cannot read '\.json' files; expected \.csv or \.parquet"):
        coortweet.read_objects(tmp_path / "s.json")


def test_bad_parameters_quote_the_value():
    df = shares(("u", "A", "a", 0), ("u", "B", "b", 1))
    with pytest.raises(ConfigError,
                       match=r"edge_weight \(1\.5\) must be a quantile between 0 and 1"):
        coortweet.run(df, edge_weight=1.5)
    with pytest.raises(ConfigError,
                       match=r"time_window \(-1\) must be a whole number of at least 0"):
        coortweet.detect_groups(df, time_window=-1, min_participation=2)
    with pytest.raises(ConfigError, match=r"min_participation \(0\) must be a whole number"):
        coortweet.detect_groups(df, time_window=10, min_participation=0)
    with pytest.raises(ConfigError, match=r"subgraph \(2\) is not available; choose 0 = .*"
                                          r"flag_speed_share"):
        coortweet.generate_coordinated_network(coortweet.detect_groups(df, 10, 1), subgraph=2)


def test_cli_coordination_coortweet_method(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    shares = tmp_path / "shares.csv"
    rows = ["object_id,account_id,content_id,timestamp_share"]
    for k in range(4):  # A and B share the same four links within seconds, C much later
        base = 1_000_000 + k * 10_000
        rows += [f"u{k},A,a{k},{base}", f"u{k},B,b{k},{base + 20}", f"u{k},C,c{k},{base + 5000}"]
    shares.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["coordination", str(shares), "--method", "coortweet",
                                      "--time-window", "60", "--min-participation", "2",
                                      "--edge-weight", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    edges = pd.read_csv(out / "coortweet_edges.csv")
    assert edges[["account_id", "account_id_y"]].values.tolist() == [["A", "B"]]
    assert int(edges["weight"].iloc[0]) == 4
    assert (out / "coortweet_network.graphml").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("object_id,account_id\nu1,A\n")
    result = CliRunner().invoke(app, ["coordination", str(bad), "--method", "coortweet"])
    assert result.exit_code == 1 and "content_id" in result.output
    result = CliRunner().invoke(app, ["coordination", str(bad), "--method", "magic"])
    assert result.exit_code == 2
