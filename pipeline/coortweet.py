"""CooRTweet's published method, reimplemented as a baseline: accounts that share the same object
(URL, hashtag, domain, image hash, retweeted post) within ``time_window`` seconds, repeatedly.

Reference: the R package CooRTweet by Righetti and Balluff (github.com/nicolarighetti/CooRTweet,
MIT), read in its 2.x form: ``R/detect_groups.R`` (commit 02bcffb4), ``R/calc_group_combinations.R``
(CRAN 2.1.2), ``R/generate_coordinated_network.R`` (commit 39b70f01) and ``R/account_stats.R``
(commit 3ef5de77). This is our own Python (DuckDB for the self-join), written from that definition.

detect_groups(x, time_window, min_participation, remove_loops)
  1. Pre-filter: keep only accounts with at least ``min_participation`` rows (shares) in the input.
  2. Within each object, pair every share with every later-numbered share of the same object and
     keep the pairs with |t - t_y| <= time_window (both ends inclusive).
  3. remove_loops: drop pairs where the two accounts are the same, the two content ids are the
     same, or either content id equals the object id.
  4. Participation filter (when min_participation >= 1): take the content ids that occur in any
     remaining pair; count, per account, the pre-filtered input rows carrying one of them; the
     accounts with at least ``min_participation`` such rows "pass". A pair is kept when *either*
     of its two content ids belongs to a passing account's rows.
  5. Orient: ``content_id``/``account_id``/``timestamp_share`` is the older share,
     ``*_y`` the newer; ``time_delta`` = t_y - t >= 0.

generate_coordinated_network(x, edge_weight, subgraph)
  - Undirected edges: ``account_id`` = min, ``account_id_y`` = max of the two accounts (only the
    account columns are reordered; the content columns keep their older/newer meaning).
  - ``weight`` = number of co-share rows of the pair (not distinct objects: three shares of one
    URL by A within the window of one share by B give weight 3); ``avg_time_delta`` = mean
    time_delta; ``n_content_id``/``n_content_id_y`` = distinct older-side/newer-side content ids;
    ``edge_symmetry_score`` = min/max of those two counts.
  - threshold = the ``edge_weight`` quantile of all edge weights (R's default type 7, linear
    interpolation); ``weight_threshold`` = 1 when weight > threshold (strictly), else 0.
  - subgraph 0 returns every edge; 1 keeps edges with weight_threshold == 1 and drops vertices left
    without an edge. 2 and 3 need CooRTweet's flag_speed_share columns and are not implemented.

Two differences, both about ties only: CooRTweet numbers shares within an object in input-row
order, so of two shares at the same second the one earlier in the file is "older"; by default we
number them by (timestamp_share, account_id, content_id) so the output does not depend on row order
(``ties="input"`` restores CooRTweet's rule). R's pmin/pmax compare account ids in the locale's
collation; we compare code points, which only decides which account of an edge is written first.
Neither changes which pairs exist, the weights or the threshold.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_csv, write_parquet
from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

REQUIRED = ("object_id", "account_id", "content_id", "timestamp_share")
ID_COLUMNS = ("object_id", "account_id", "content_id")
GROUP_COLUMNS = ["object_id", "content_id", "content_id_y", "account_id", "account_id_y",
                 "timestamp_share", "timestamp_share_y", "time_delta"]
EDGE_COLUMNS = ["account_id", "account_id_y", "weight", "avg_time_delta", "n_content_id",
                "n_content_id_y", "edge_symmetry_score", "weight_threshold"]
ACCOUNT_COLUMNS = ["account_id", "degree", "strength", "n_edges_above_threshold",
                   "avg_time_delta", "avg_edge_symmetry_score", "unique_shares_count"]
SUBGRAPHS = {0: "the full network", 1: "edges above the edge_weight quantile"}
TIES = {"ids": "timestamp_share, account_id, content_id", "input": "timestamp_share, input_row"}


@dataclass
class CoortweetResult:
    groups: pd.DataFrame  # detect_groups: one row per co-share pair, GROUP_COLUMNS
    edges: pd.DataFrame  # one row per account pair, EDGE_COLUMNS (+ object_ids when asked)
    accounts: pd.DataFrame  # one row per vertex, ACCOUNT_COLUMNS
    stats: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Input


def read_objects(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file with object_id, account_id, content_id, timestamp_share (Unix s)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a CSV or Parquet file with the columns "
                         f"{', '.join(REQUIRED)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            raise InputError(f"{path}: cannot read '{suffix or 'no'}' files; expected .csv or "
                             f".parquet with the columns {', '.join(REQUIRED)}")
    except InputError:
        raise
    except Exception as exc:  # a parser error: say which file and what the parser said
        raise InputError(f"{path}: could not be read as {suffix[1:]} ({exc}); expected a CSV or "
                         f"Parquet file with the columns {', '.join(REQUIRED)}") from exc
    return validate(df, source=str(path))


def validate(df: pd.DataFrame, source: str = "input") -> pd.DataFrame:
    """The four CooRTweet columns, ids as non-empty strings and timestamps as int64 seconds.

    Extra columns are dropped. A missing column, an empty id or a timestamp that is not whole Unix
    seconds is an InputError naming the source, the row (1-based, header not counted) and the fix.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)}; found columns: {found}. CooRTweet "
            f"needs {', '.join(REQUIRED)}: rename your columns, e.g. object_id = the shared URL, "
            f"hashtag or domain; account_id = who shared it; content_id = the post; "
            f"timestamp_share = when, in Unix seconds")
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for col in ID_COLUMNS:
        values = df[col].reset_index(drop=True)
        bad = values.isna() | (values.astype(str).str.strip() == "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            raise InputError(
                f"{source} row {row:,}: {col} is empty ({int(bad.sum()):,} rows in all); every "
                f"share needs an {col}. Drop rows without one before running CooRTweet")
        out[col] = values.astype(str)
    ts = df["timestamp_share"].reset_index(drop=True)
    numeric = pd.to_numeric(ts, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.astype("float64"))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise InputError(
            f"{source} row {row:,}: timestamp_share {ts.iloc[row - 1]!r} is not a number; "
            f"expected Unix seconds (e.g. 1629589836). Convert dates to Unix time first")
    as_float = numeric.astype("float64")
    fractional = as_float != np.floor(as_float)
    if fractional.any():
        row = int(np.flatnonzero(fractional.to_numpy())[0]) + 1
        raise InputError(
            f"{source} row {row:,}: timestamp_share {ts.iloc[row - 1]!r} is not whole seconds; "
            f"CooRTweet works in whole Unix seconds. Floor the column")
    out["timestamp_share"] = numeric.astype("int64")
    return out


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} ({value!r}) must be a whole number of at least {minimum}")
    return int(value)


def _check_edge_weight(edge_weight) -> float:
    if (isinstance(edge_weight, bool) or not isinstance(edge_weight, numbers.Real)
            or math.isnan(edge_weight) or not 0 <= edge_weight <= 1):
        raise ConfigError(f"edge_weight ({edge_weight!r}) must be a quantile between 0 and 1, "
                          "e.g. 0.5 for the median edge weight")
    return float(edge_weight)


def _check_subgraph(subgraph) -> int:
    if subgraph not in SUBGRAPHS or isinstance(subgraph, bool):
        valid = "; ".join(f"{k} = {v}" for k, v in SUBGRAPHS.items())
        raise ConfigError(f"subgraph ({subgraph!r}) is not available; choose {valid}. (2 and 3 "
                          "need CooRTweet's flag_speed_share, which this baseline leaves out)")
    return int(subgraph)


# ---------------------------------------------------------------------------------------------
# Stage 1: co-shares


def detect_groups(df: pd.DataFrame, time_window: int, min_participation: int,
                  remove_loops: bool = True, *, ties: str = "ids") -> pd.DataFrame:
    """Pairs of shares of the same object within ``time_window`` seconds (see module docstring).

    ``ties`` says which of two same-second shares is the older one: "ids" (default) the one with
    the smaller (account_id, content_id), so the output does not depend on row order; "input" the
    one earlier in ``df``, exactly as CooRTweet does. It changes only the orientation of tied
    pairs (and so n_content_id / n_content_id_y / edge_symmetry_score downstream), never which
    pairs exist. Sorted by object_id, timestamp_share, timestamp_share_y, account_id,
    account_id_y, content_id, content_id_y.
    """
    window = _check_int("time_window", time_window, 0)
    min_part = _check_int("min_participation", min_participation, 1)
    if ties not in TIES:
        raise ConfigError(f"ties ({ties!r}) must be one of: {', '.join(TIES)}")
    shares = validate(df)
    shares["input_row"] = np.arange(len(shares), dtype="int64")

    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.register("shares_in", shares)
        # 1. accounts with enough shares in the input
        con.execute("""
            CREATE TEMP TABLE x AS
            SELECT object_id, account_id, content_id, timestamp_share, input_row FROM shares_in
            WHERE account_id IN (SELECT account_id FROM shares_in GROUP BY account_id
                                 HAVING count(*) >= $m)""", {"m": min_part})
        # 2. number shares within each object by time, and cut time into window-wide buckets.
        # A share pairs only with later-numbered (so not older) shares at most `window` seconds
        # later, which sit in its own bucket or the next one: the self-join probes those two
        # buckets instead of comparing every pair of shares of a busy object.
        bucket = "timestamp_share" if window == 0 else f"floor(timestamp_share / {window})"
        offsets = "(0)" if window == 0 else "(0), (1)"
        con.execute(f"""
            CREATE TEMP TABLE s AS
            SELECT *, row_number() OVER (PARTITION BY object_id
                       ORDER BY {TIES[ties]}) AS rn,
                   CAST({bucket} AS BIGINT) AS bucket
            FROM x""")
        # 3. loops, dropped in the join itself
        loops = ("AND a.account_id <> b.account_id AND a.content_id <> b.content_id "
                 "AND a.object_id <> a.content_id AND a.object_id <> b.content_id"
                 if remove_loops else "")
        con.execute(f"""
            CREATE TEMP TABLE pairs AS
            WITH probe AS (
                SELECT s.*, s.bucket + o.d AS probe_bucket
                FROM s CROSS JOIN (VALUES {offsets}) AS o(d))
            SELECT a.object_id, a.content_id, b.content_id AS content_id_y,
                   a.account_id, b.account_id AS account_id_y,
                   a.timestamp_share, b.timestamp_share AS timestamp_share_y,
                   b.timestamp_share - a.timestamp_share AS time_delta
            FROM probe a JOIN s b
              ON b.object_id = a.object_id AND b.bucket = a.probe_bucket
            WHERE a.rn < b.rn AND b.timestamp_share - a.timestamp_share <= $w {loops}""",
                    {"w": window})
        # 4. participation: per account, input rows whose content takes part in some pair
        con.execute("""
            CREATE TEMP TABLE kept AS
            WITH c AS (SELECT content_id FROM pairs UNION SELECT content_id_y FROM pairs),
                 xc AS (SELECT account_id, content_id FROM x SEMI JOIN c USING (content_id)),
                 ok AS (SELECT account_id FROM xc GROUP BY account_id HAVING count(*) >= $m)
            SELECT DISTINCT content_id FROM xc SEMI JOIN ok USING (account_id)""",
                    {"m": min_part})
        groups = con.execute(f"""
            SELECT {', '.join(GROUP_COLUMNS)} FROM pairs
            WHERE content_id IN (SELECT content_id FROM kept)
               OR content_id_y IN (SELECT content_id FROM kept)
            ORDER BY object_id, timestamp_share, timestamp_share_y, account_id, account_id_y,
                     content_id, content_id_y""").df()
    finally:
        con.close()
    for col in ("object_id", "content_id", "content_id_y", "account_id", "account_id_y"):
        groups[col] = groups[col].astype(str)
    for col in ("timestamp_share", "timestamp_share_y", "time_delta"):
        groups[col] = groups[col].astype("int64")
    return groups.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Stage 2: network


def generate_coordinated_network(groups: pd.DataFrame, edge_weight: float = 0.5,
                                 subgraph: int = 0, objects: bool = False
                                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """detect_groups output -> (edges, accounts) of the undirected weighted account network.

    ``objects=True`` adds CooRTweet's ``object_ids`` edge attribute (comma-joined, in the order
    the objects first appear in ``groups``). Edges are sorted by (account_id, account_id_y),
    accounts by account_id.
    """
    q = _check_edge_weight(edge_weight)
    subgraph = _check_subgraph(subgraph)
    missing = [c for c in ("object_id", "content_id", "content_id_y", "account_id",
                           "account_id_y", "time_delta") if c not in groups.columns]
    if missing:
        raise InputError(f"groups: missing column(s) {', '.join(missing)}; pass the output of "
                         "detect_groups")
    edges = _aggregate_edges(groups, objects)
    if len(edges):
        threshold = float(np.quantile(edges["weight"].to_numpy(dtype=float), q))
        edges["weight_threshold"] = (edges["weight"] > threshold).astype("int64")
    else:
        threshold = float("nan")
        edges["weight_threshold"] = pd.Series(dtype="int64")
    edges.attrs["threshold"] = threshold
    if subgraph == 1:
        edges = edges[edges["weight_threshold"] == 1].reset_index(drop=True)
        edges.attrs["threshold"] = threshold
    return edges, _account_table(edges, groups)


def _aggregate_edges(groups: pd.DataFrame, objects: bool) -> pd.DataFrame:
    columns = EDGE_COLUMNS[:-1] + (["object_ids"] if objects else [])
    if groups.empty:
        return pd.DataFrame({c: pd.Series(dtype=str if c.startswith(("account", "object"))
                                          else "float64") for c in columns})
    a = groups["account_id"].astype(str).to_numpy()
    b = groups["account_id_y"].astype(str).to_numpy()
    g = pd.DataFrame({
        "account_id": np.where(a <= b, a, b), "account_id_y": np.where(a <= b, b, a),
        "content_id": groups["content_id"].to_numpy(),
        "content_id_y": groups["content_id_y"].to_numpy(),
        "time_delta": groups["time_delta"].to_numpy(dtype="float64"),
        "object_id": groups["object_id"].to_numpy()})
    by = g.groupby(["account_id", "account_id_y"], sort=True)
    edges = by.agg(weight=("time_delta", "size"), avg_time_delta=("time_delta", "mean"),
                   n_content_id=("content_id", "nunique"),
                   n_content_id_y=("content_id_y", "nunique")).reset_index()
    edges["account_id"] = edges["account_id"].astype(str)
    edges["account_id_y"] = edges["account_id_y"].astype(str)
    lo = np.minimum(edges["n_content_id"], edges["n_content_id_y"])
    hi = np.maximum(edges["n_content_id"], edges["n_content_id_y"])
    edges["edge_symmetry_score"] = lo / hi
    for col in ("weight", "n_content_id", "n_content_id_y"):
        edges[col] = edges[col].astype("int64")
    if objects:
        joined = by["object_id"].agg(lambda s: ",".join(pd.unique(s))).reset_index(drop=True)
        edges["object_ids"] = joined.to_numpy()
    return edges[columns]


def _account_table(edges: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """One row per vertex of the network.

    degree, strength (sum of edge weights) and n_edges_above_threshold are plain graph facts.
    avg_time_delta, avg_edge_symmetry_score and unique_shares_count follow CooRTweet's
    account_stats(weight_threshold = "none"): the means are taken over the account's distinct
    (avg_time_delta, edge_symmetry_score) pairs, as CooRTweet deduplicates before averaging, and
    the share count is the account's distinct content ids in ``groups``.
    """
    if edges.empty:
        return pd.DataFrame({c: pd.Series(dtype=str if c == "account_id" else "float64")
                             for c in ACCOUNT_COLUMNS})
    ends = pd.concat([
        edges[["account_id", "weight", "weight_threshold", "avg_time_delta",
               "edge_symmetry_score"]],
        edges[["account_id_y", "weight", "weight_threshold", "avg_time_delta",
               "edge_symmetry_score"]].rename(columns={"account_id_y": "account_id"})])
    acc = ends.groupby("account_id", sort=True).agg(
        degree=("weight", "size"), strength=("weight", "sum"),
        n_edges_above_threshold=("weight_threshold", "sum"))
    distinct = ends[["account_id", "avg_time_delta", "edge_symmetry_score"]].drop_duplicates()
    means = distinct.groupby("account_id", sort=True).agg(
        avg_time_delta=("avg_time_delta", "mean"),
        avg_edge_symmetry_score=("edge_symmetry_score", "mean"))
    shared = pd.concat([
        groups[["account_id", "content_id"]],
        groups[["account_id_y", "content_id_y"]].set_axis(["account_id", "content_id"],
                                                          axis=1)])
    counts = shared.groupby("account_id")["content_id"].nunique().rename("unique_shares_count")
    acc = acc.join(means).join(counts).reset_index()
    for col in ("degree", "strength", "n_edges_above_threshold", "unique_shares_count"):
        acc[col] = acc[col].astype("int64")
    return acc[ACCOUNT_COLUMNS]


# ---------------------------------------------------------------------------------------------
# Whole run and outputs


def run(df: pd.DataFrame, time_window: int = 60, min_participation: int = 2,
        edge_weight: float = 0.5, subgraph: int = 0, *, ties: str = "ids") -> CoortweetResult:
    """detect_groups then generate_coordinated_network, with counts and wall time."""
    _check_edge_weight(edge_weight)
    _check_subgraph(subgraph)
    t0 = time.perf_counter()
    shares = validate(df)
    groups = detect_groups(shares, time_window, min_participation, ties=ties)
    t1 = time.perf_counter()
    log.info("coortweet: %s shares of %s objects -> %s co-share pairs (%.1f s)",
             f"{len(shares):,}", f"{shares['object_id'].nunique():,}", f"{len(groups):,}", t1 - t0)
    edges, accounts = generate_coordinated_network(groups, edge_weight, subgraph)
    seconds = time.perf_counter() - t0
    n_above = int(edges["weight_threshold"].sum()) if len(edges) else 0
    stats = {
        "n_objects": int(shares["object_id"].nunique()),
        "n_shares": int(len(shares)),
        "n_pairs": int(len(groups)),
        "n_edges": int(len(edges)),
        "n_edges_above_threshold": n_above,
        "n_accounts": int(len(accounts)),
        "n_accounts_above_threshold": int((accounts["n_edges_above_threshold"] > 0).sum())
        if len(accounts) else 0,
        "edge_weight_threshold": edges.attrs.get("threshold"),
        "params": {"time_window": time_window, "min_participation": min_participation,
                   "edge_weight": edge_weight, "subgraph": subgraph, "ties": ties},
        "seconds": round(seconds, 3),
    }
    log.info("coortweet: %s pairs -> %s edges (%s above the %.2f quantile, weight > %s), "
             "%s accounts (%.1f s)", f"{len(groups):,}", f"{len(edges):,}", f"{n_above:,}",
             edge_weight, stats["edge_weight_threshold"], f"{len(accounts):,}", seconds)
    return CoortweetResult(groups, edges, accounts, stats)


def to_igraph(result: CoortweetResult):
    """The network as an undirected igraph.Graph with CooRTweet's edge attributes."""
    import igraph as ig

    names = result.accounts["account_id"].astype(str).tolist()
    index = {n: i for i, n in enumerate(names)}
    edges = result.edges
    pairs = [(index[a], index[b]) for a, b in zip(edges["account_id"].astype(str),
                                                  edges["account_id_y"].astype(str))]
    graph = ig.Graph(n=len(names), edges=pairs, directed=False)
    graph.vs["name"] = names
    for col in result.accounts.columns.drop("account_id"):
        graph.vs[col] = result.accounts[col].tolist()
    for col in edges.columns.drop(["account_id", "account_id_y"]):
        graph.es[col] = edges[col].tolist()
    return graph


def write(result: CoortweetResult, out_dir: Path) -> list[Path]:
    """coortweet_groups.parquet, coortweet_edges.csv and coortweet_network.graphml, atomically."""
    out_dir = Path(out_dir)
    paths = [out_dir / "coortweet_groups.parquet", out_dir / "coortweet_edges.csv",
             out_dir / "coortweet_network.graphml"]
    write_parquet(result.groups, paths[0])
    write_csv(result.edges, paths[1])
    graph = to_igraph(result)
    with atomic_path(paths[2]) as tmp:
        graph.write_graphml(str(tmp))
    return paths
