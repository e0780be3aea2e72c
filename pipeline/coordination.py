"""Accounts that post the same narrative, near-identical text or the same link in sync, again
and again, more often than their activity and the crowd around them explain.

1. Events. Every post gives one event per signal it carries: its narrative, its near-duplicate
   text group (MinHash LSH), its links, the post it reshares, its hashtag sequence.
2. Co-occurrences. Two events of different accounts with the same (signal, key) within W seconds.
   The join buckets time (t // W) and joins each bucket with its neighbours: it never compares all
   pairs of a key. Buckets where more than ``max_crowd`` accounts post the same key are crowds
   (a viral link, a breaking story), counted and skipped.
3. Moments. A pair's co-occurrences on one signal are grouped into distinct moments: bursts of
   sync separated by more than W. Repetition across moments is what coordination looks like.
4. Null model. Moments are (key, bucket) groups of accounts. If accounts joined moments at random
   in proportion to how often each joins any moment (a bipartite configuration model), pair
   (i, j) would share  lambda_ij = (S_i k_j / (K - k_i) + S_j k_i / (K - k_j)) / 2  moments, where
   k_i is the number of moments i joins, S_i the number of partners it meets there, and K the sum
   of all k. Prolific accounts (large k) and big crowds (large S) raise the expectation, so
   hyperactive pages and breaking-news crowds are explained; a team that meets the same partners
   again and again is not. The pair's moment count is tested against Poisson(lambda), and the
   p-values of all observed pairs are corrected with Benjamini-Hochberg.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import duckdb
import numpy as np
import pandas as pd
import regex
from scipy import special

from .config import CoordinationConfig
from .lang import fold
from .narratives import dedupe_key

log = logging.getLogger(__name__)

REASON_CODES = {
    "narrative": "SYNC_NARRATIVE",
    "near_duplicate": "NEAR_DUPLICATE",
    "url": "CO_LINK",
    "domain": "CO_DOMAIN",
    "reshare": "CO_RESHARE",
    "hashtags": "CO_HASHTAGS",
}
SIGNALS = tuple(REASON_CODES)

_URL = regex.compile(r"(?i)\bhttps?://[^\s<>\"']+|\bwww\.[^\s<>\"']+")
_TRACKING = regex.compile(r"(?i)^(utm_\w+|fbclid|gclid|igshid|ref|ref_src|s|si|mibextid)$")


def parse_signals(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SIGNALS]
    if unknown:
        from .errors import ConfigError

        raise ConfigError(f"coordination.signals: unknown signal {unknown[0]!r}; "
                          f"valid signals are: {', '.join(SIGNALS)}")
    return names


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, no 'www.', no fragment, no tracking parameters."""
    url = url.strip().rstrip(".,;:!?)]}'\"")
    if url.lower().startswith("www."):
        url = "http://" + url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.lower()
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _TRACKING.match(k)])
    path = parts.path.rstrip("/") or ""
    return urlunsplit(("https", host, path, query, ""))


def post_urls(url: object, text: str) -> list[str]:
    found = []
    if isinstance(url, str) and url.strip():
        found.append(url)
    found.extend(_URL.findall(text or ""))
    out, seen = [], set()
    for u in found:
        n = normalise_url(u)
        if n not in seen and urlsplit(n).hostname:
            seen.add(n)
            out.append(n)
    return out


# -- near-duplicate text -------------------------------------------------------------------

_MERSENNE = np.uint64((1 << 61) - 1)


def shingle_hashes(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every character k-gram of every text, vectorised.

    Returns (hashes, owner): owner[i] is the index of the text hashes[i] came from. Texts
    shorter than k give one shingle, the whole text."""
    codes = [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32) for t in texts]
    lengths = np.fromiter((len(c) for c in codes), dtype=np.int64, count=len(codes))
    flat = np.concatenate(codes).astype(np.uint64) if len(codes) else np.zeros(0, np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(codes) else np.zeros(0, int)
    n_sh = np.maximum(lengths - k + 1, 1)
    owner = np.repeat(np.arange(len(texts)), n_sh)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(n_sh) - n_sh, n_sh)
    pos = np.repeat(starts, n_sh) + offset
    h = np.zeros(len(owner), dtype=np.uint64)
    prime = np.uint64(1_099_511_628_211)  # FNV-style mixing of the k code points
    for j in range(k):
        idx = np.minimum(pos + j, np.repeat(starts + lengths - 1, n_sh))
        valid = (offset + j) < np.repeat(lengths, n_sh)
        h = h * prime + np.where(valid, flat[idx] + np.uint64(1), np.uint64(0))
    return h, owner


def minhash_signatures(texts: list[str], num_perm: int, k: int, seed: int,
                       batch: int = 5_000) -> np.ndarray:
    """(n, num_perm) MinHash signatures over character k-gram sets, vectorised with numpy.

    Texts are hashed ``batch`` at a time, so memory stays bounded on millions of posts."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    sig = np.empty((len(texts), num_perm), dtype=np.uint64)
    for start in range(0, len(texts), batch):
        h, owner = shingle_hashes(texts[start:start + batch], k)
        cuts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        hm = h % _MERSENNE
        for p in range(num_perm):
            # (a*h + b) mod 2^64, folded: a cheap universal family, exact in uint64
            v = (a[p] * hm + b[p]) >> np.uint64(16)
            sig[start:start + batch, p] = np.minimum.reduceat(v, cuts)
    return sig


def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the area of missed pairs above the threshold plus, at a tenth
    weight, the area of spurious candidates below it (they are only checked, not kept)."""
    grid = np.linspace(0, 1, 201)
    best, best_cost = (num_perm, 1), np.inf
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        p = 1 - (1 - grid ** rows) ** bands
        cost = np.trapezoid(np.where(grid >= threshold, 1 - p, 0), grid) + \
            0.1 * np.trapezoid(np.where(grid < threshold, p, 0), grid)
        if cost < best_cost:
            best, best_cost = (bands, rows), cost
    return best


def near_duplicate_groups(texts: list[str] | pd.Series, cfg: CoordinationConfig,
                          seed: int) -> np.ndarray:
    """Group id per text: texts whose character-shingle sets have an estimated Jaccard similarity
    of at least the threshold share a group (transitively); exact duplicates (after case, link
    and space folding) always do. Candidates come from LSH banding of MinHash signatures and are
    confirmed by the share of equal signature values."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # each raw text is folded once (a million posts repeat many texts), and the folded keys are
    # made unique in sorted order as before: group ids do not depend on this first step
    # (a Series of Arrow strings is factorised without a Python string per post)
    raw_codes, raw = pd.factorize(texts if isinstance(texts, pd.Series) else
                                  pd.Series(texts, dtype=object), sort=False,
                                  use_na_sentinel=False)
    keys = np.asarray([fold(dedupe_key(t)) for t in raw], dtype=object)  # Urdu/Hindi variants
    del raw
    distinct, key_inverse = np.unique(keys, return_inverse=True)
    del keys
    inverse = key_inverse.reshape(-1)[raw_codes]
    del raw_codes, key_inverse
    distinct = [str(d) for d in distinct]
    n = len(distinct)
    k = cfg.shingle_chars
    usable = np.fromiter((len(d) >= 2 * k for d in distinct), dtype=bool, count=n)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    if usable.sum() > 1:
        ids = np.flatnonzero(usable)
        sig = minhash_signatures([distinct[i] for i in ids], cfg.minhash_num_perm, k, seed)
        del distinct  # only the signatures are needed from here on
        bands, rows = _bands(cfg.near_duplicate_threshold, cfg.minhash_num_perm)
        m = np.int64(len(ids))
        # confirmed pairs as lo * m + hi: each band's candidates are checked at once and only
        # those that pass are kept (the bands repeat most candidates; tens of millions on a
        # million posts), so the result is the confirmed subset of all bands' candidates
        code = np.zeros(0, dtype=np.int64)
        for band in range(bands):
            block = np.ascontiguousarray(sig[:, band * rows:(band + 1) * rows])
            bucket = pd.util.hash_array(block.view(f"V{8 * rows}").ravel())
            order = np.argsort(bucket, kind="stable")
            sb = bucket[order]
            same = np.flatnonzero(sb[1:] == sb[:-1]) + 1  # positions continuing a bucket
            if not len(same):
                continue
            head = np.maximum.accumulate(np.where(np.r_[True, sb[1:] != sb[:-1]],
                                                  np.arange(len(sb)), 0))
            # each member is checked against its bucket's first member and its predecessor:
            # linear in the bucket size, and enough to connect a bucket of near-duplicates
            a = np.concatenate([order[head[same]], order[same - 1]])
            b = np.concatenate([order[same], order[same]])
            del order, sb, same, head, bucket, block
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            keep = lo != hi
            band_code = np.unique(lo[keep] * m + hi[keep])
            del a, b, lo, hi, keep
            band_code = band_code[~np.isin(band_code, code, assume_unique=True)]
            lo, hi = band_code // m, band_code % m
            ok = np.zeros(len(lo), dtype=bool)
            for start in range(0, len(lo), 100_000):
                sl = slice(start, start + 100_000)
                ok[sl] = (sig[lo[sl]] == sig[hi[sl]]).mean(axis=1) >= cfg.near_duplicate_threshold
            code = np.union1d(code, band_code[ok])
            del band_code, lo, hi, ok
        if len(code):
            src.append(ids[code // m])
            dst.append(ids[code % m])
    src_all = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    dst_all = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    if len(src_all):
        graph = coo_matrix((np.ones(len(src_all)), (src_all, dst_all)), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
    else:
        comp = np.arange(n)
    # a component's id is its smallest member, so ids do not depend on the traversal
    first = pd.Series(np.arange(n)).groupby(comp).transform("min").to_numpy()
    return first[inverse].astype(np.int64)


# -- events --------------------------------------------------------------------------------

def build_events(posts: pd.DataFrame, narrative_ids: np.ndarray, cfg: CoordinationConfig,
                 seed: int) -> pd.DataFrame:
    """One row per (post, signal, key): columns signal, key, post, account, t."""
    signals = parse_signals(cfg.signals)
    n = len(posts)
    post = np.arange(n, dtype=np.int64)
    account = pd.Categorical(posts["account_id"]).codes.astype(np.int64)
    t = (posts["created_at"].astype("int64") // 1_000_000).to_numpy(dtype=np.int64)  # us -> s
    frames = []
    n_keys = [0]

    def add(name: str, idx: np.ndarray, keys) -> None:
        # keys as integers (unique across signals): millions of synchronised pairs carry a key
        # each, and an int64 costs a fraction of a Python string. Numbered in order of first
        # appearance over the signals in turn, as one factorize of "signal\0key" would number
        # them (each signal is added once; integer keys number alike as their decimal strings)
        if len(idx):
            keys = keys if isinstance(keys, np.ndarray) and keys.dtype.kind == "i" else \
                pd.Series(keys, dtype=str).to_numpy()
            codes, uniques = pd.factorize(keys, sort=False)
            frames.append(pd.DataFrame({"signal": name,
                                        "key": codes.astype(np.int64) + n_keys[0],
                                        "post": post[idx], "account": account[idx], "t": t[idx]}))
            n_keys[0] += len(uniques)

    if "narrative" in signals:
        idx = np.flatnonzero(narrative_ids >= 0)
        add("narrative", idx, np.asarray(narrative_ids[idx], dtype=np.int64))
    if "near_duplicate" in signals:
        groups = near_duplicate_groups(posts["text"], cfg, seed)
        # a group is a signal only when more than one account posted it
        shared = pd.Series(account).groupby(groups).nunique()
        keep = np.isin(groups, shared.index[shared > 1].to_numpy())
        idx = np.flatnonzero(keep)
        add("near_duplicate", idx, groups[idx])
    if "url" in signals or "domain" in signals:
        urls = posts["url"] if "url" in posts else pd.Series([None] * n)
        # only posts with a link field or a link-like text can give a link (_URL needs "http"
        # or "www"), and those are read a chunk at a time: no Python string per post
        text = posts["text"]
        maybe = urls.fillna("").astype(str).str.strip().ne("").to_numpy() | \
            text.fillna("").str.contains("http|www", case=False, regex=True).to_numpy()
        cand = np.flatnonzero(maybe)
        rows, keys = [], []
        for start in range(0, len(cand), 50_000):
            chunk = cand[start:start + 50_000]
            for i, u, t_ in zip(chunk.tolist(), urls.iloc[chunk].tolist(),
                                text.iloc[chunk].tolist()):
                for norm in post_urls(u, t_):
                    rows.append(i)
                    keys.append(norm)
        rows = np.asarray(rows, dtype=np.int64)
        if "url" in signals:
            add("url", rows, keys)
        if "domain" in signals:
            doms = [urlsplit(k).hostname or "" for k in keys]
            dom_df = pd.DataFrame({"r": rows, "d": doms}).drop_duplicates()
            add("domain", dom_df["r"].to_numpy(), dom_df["d"].tolist())
    if "reshare" in signals and "reshare_of" in posts:
        r = posts["reshare_of"].fillna("").astype(str).str.strip()
        idx = np.flatnonzero(r.to_numpy() != "")
        add("reshare", idx, r.iloc[idx].tolist())
    if "hashtags" in signals and "hashtags" in posts:
        h = posts["hashtags"].fillna("").astype(str).str.strip()
        n_tags = h.str.split().str.len().fillna(0).to_numpy()
        idx = np.flatnonzero(n_tags >= cfg.min_hashtags)
        add("hashtags", idx, h.iloc[idx].tolist())
    if not frames:
        return pd.DataFrame({"signal": pd.Series(dtype=str), "key": pd.Series(dtype=np.int64),
                             "post": pd.Series(dtype=np.int64), "account": pd.Series(dtype=np.int64),
                             "t": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True)


# -- the window join -----------------------------------------------------------------------

def drop_crowds(events: pd.DataFrame, window: int, max_crowd: int) -> tuple[pd.DataFrame, int]:
    """Remove events in (signal, key, bucket) groups with more than max_crowd accounts."""
    if events.empty:
        return events, 0
    b = events["t"].to_numpy() // window
    crowd = events.assign(b=b).groupby(["signal", "key", "b"])["account"].transform("nunique")
    keep = crowd.to_numpy() <= max_crowd
    return events[keep].reset_index(drop=True), int((~keep).sum())


def cooccurrences(events: pd.DataFrame, window: int) -> pd.DataFrame:
    """Pairs of events of distinct accounts, same (signal, key), at most ``window`` s apart.

    Each pair of posts appears once, with acc_a < acc_b. Time is bucketed (t // window) and each
    bucket is joined with itself and its two neighbours by an equi-join: never all pairs."""
    con = duckdb.connect()
    try:
        con.register("events", events)
        return con.execute(
            f"""
            WITH e AS (SELECT signal, key, post, account, t, t // {int(window)} AS b FROM events),
                 shifted AS (SELECT e.*, b + d AS bb FROM e, (VALUES (-1), (0), (1)) v(d))
            SELECT a.signal, a.key, a.post AS post_a, c.post AS post_b,
                   a.account AS acc_a, c.account AS acc_b, a.t AS t_a, c.t AS t_b
            FROM e a JOIN shifted c
              ON a.signal = c.signal AND a.key = c.key AND a.b = c.bb
            WHERE a.account < c.account AND abs(a.t - c.t) <= {int(window)}
            ORDER BY a.signal, acc_a, acc_b, least(a.t, c.t), post_a, post_b
            """
        ).df()
    finally:
        con.close()


def pair_moments(co: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per (signal, acc_a, acc_b): co-occurrences grouped into moments separated by > window s."""
    if co.empty:
        return co.assign(moment=pd.Series(dtype=np.int64))
    co = co.copy()
    co["tm"] = np.minimum(co["t_a"].to_numpy(), co["t_b"].to_numpy())
    co = co.sort_values(["signal", "acc_a", "acc_b", "tm", "post_a", "post_b"], kind="stable")
    same_pair = (co["signal"].eq(co["signal"].shift()) & co["acc_a"].eq(co["acc_a"].shift())
                 & co["acc_b"].eq(co["acc_b"].shift()))
    new = ~same_pair | (co["tm"].diff() > window)
    co["moment"] = new.cumsum().astype(np.int64)
    return co.reset_index(drop=True)


def poisson_sf(k, lam) -> np.ndarray:
    """P(X > k) for X ~ Poisson(lam): ``scipy.stats.poisson.sf(k, lam)``, value for value, without
    importing scipy.stats (0.4 s of every `lockstep` command's start). Its ``_sf`` is
    ``special.pdtrc(floor(k), lam)``; below the support (k < 0) it is 1, and nan for a
    negative or nan ``lam``."""
    k, lam = np.broadcast_arrays(np.asarray(k, dtype=np.float64),
                                 np.asarray(lam, dtype=np.float64))
    valid = (lam >= 0) & ~np.isnan(k)  # False for a nan lam too
    out = special.pdtrc(np.floor(np.maximum(k, 0)), np.where(valid, lam, np.nan))
    return np.where(valid & (k < 0), 1.0, out)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


# -- the whole stage -----------------------------------------------------------------------

@dataclass
class Coordination:
    pairs: pd.DataFrame  # one row per (signal, account pair) observed in sync, with its test
    cooccurrences: pd.DataFrame  # the synchronised post pairs of the significant pairs, with
    # moment ids (the evidence; all others stay on disk during the run and are counted in stats)
    accounts: np.ndarray  # account_id per account code
    window: int
    stats: dict = field(default_factory=dict)


def estimate_window(events: pd.DataFrame, q: float, p: float) -> int | None:
    """CooRnet's idea: among keys shared by several posts, take the share q whose second post
    came quickest, and return the median seconds those keys took to reach the share p of their
    posts. Uses link and reshare keys (what CooRnet saw), else near-duplicate text."""
    for names in (("url", "reshare"), ("near_duplicate",)):
        ev = events[events["signal"].isin(names)]
        if ev.empty:
            continue
        ev = ev.sort_values(["signal", "key", "t"], kind="stable")
        g = ev.groupby(["signal", "key"])["t"]
        counts = g.transform("size")
        ev = ev[counts.to_numpy() >= 2]
        if ev.empty:
            continue
        g = ev.groupby(["signal", "key"])["t"]
        rank = g.cumcount()
        first = g.transform("min")
        n = g.transform("size")
        delta = (ev["t"] - first).to_numpy()
        second = pd.Series(delta[rank.to_numpy() == 1],
                           index=pd.MultiIndex.from_frame(ev.loc[rank == 1, ["signal", "key"]]))
        cutoff = second.quantile(q)
        quick = second[second <= cutoff].index
        need = np.maximum(np.ceil(n.to_numpy() * p).astype(int) - 1, 1)
        reach = ev.assign(delta=delta, need=need, rank=rank.to_numpy())
        reach = reach[reach["rank"] == reach["need"]].set_index(["signal", "key"])["delta"]
        reach = reach[reach.index.isin(quick)]
        if len(reach):
            return max(1, int(np.median(reach.to_numpy())))
    return None


def shift_expectation(events: pd.DataFrame, pairs: pd.DataFrame, window: int,
                      n_shifts: int, memory_mb: int = 1024,
                      spill: str | None = None) -> np.ndarray:
    """Null expectation per candidate pair: co-occurrences when one account's whole timeline is
    shifted by whole days (circularly over the corpus span), averaged over the shifts.

    Shifting by days keeps each account's own volume, keys and time-of-day rhythm, and breaks
    only the alignment between the two accounts: a prolific page still meets another prolific
    page as often as before, a team that posts together stops meeting."""
    if pairs.empty:
        return np.zeros(0)
    t0 = int(events["t"].min())
    span_days = max(1, int(np.ceil((int(events["t"].max()) - t0 + 1) / 86400)))
    if span_days >= 3:
        period, step = span_days * 86400, 86400
        max_shift = min(n_shifts // 2, span_days - 1)
        shifts = [d * step for d in range(1, max_shift + 1)]
        shifts += [period - s for s in shifts]
    else:  # a very short corpus: shift by fractions of its span instead
        period = int(events["t"].max()) - t0 + 2 * window + 1
        shifts = [int(period * (i + 1) / (n_shifts + 1)) for i in range(n_shifts)]
    shifts = sorted(set(s % period for s in shifts) - {0})
    cand = pairs[["signal", "acc_a", "acc_b"]].drop_duplicates()
    accs = np.union1d(cand["acc_a"].to_numpy(), cand["acc_b"].to_numpy())
    ev = events[events["account"].isin(accs)][["signal", "key", "account", "t"]].copy()
    ev["t"] = ev["t"] - t0
    # held to memory_mb like the window join (the shifted copies of the events are n_shifts
    # times the events of the candidate accounts); beyond it, DuckDB spills under ``spill``
    con = _duckdb(memory_mb, spill)
    try:
        con.register("ev", ev)
        con.register("cand", cand)
        con.register("shifts", pd.DataFrame({"d": np.asarray(shifts, dtype=np.int64)}))
        W = int(window)
        counts = con.execute(
            f"""
            WITH a AS (SELECT e.signal, e.key, e.account, e.t, e.t // {W} AS b
                       FROM ev e WHERE e.account IN (SELECT acc_a FROM cand)),
                 bs AS (SELECT e.signal, e.key, e.account, s.d,
                               (e.t + s.d) % {period} AS t
                        FROM ev e, shifts s WHERE e.account IN (SELECT acc_b FROM cand)),
                 b3 AS (SELECT bs.*, t // {W} + o AS bb FROM bs, (VALUES (-1), (0), (1)) v(o))
            SELECT a.signal, a.account AS acc_a, b3.account AS acc_b, count(*) AS n
            FROM a JOIN b3 ON a.signal = b3.signal AND a.key = b3.key AND a.b = b3.bb
            JOIN cand c ON c.signal = a.signal AND c.acc_a = a.account AND c.acc_b = b3.account
            WHERE abs(a.t - b3.t) <= {W}
            GROUP BY ALL
            """
        ).df()
    finally:
        con.close()
    merged = pairs[["signal", "acc_a", "acc_b"]].merge(counts, how="left",
                                                       on=["signal", "acc_a", "acc_b"])
    total = merged["n"].fillna(0).to_numpy(dtype=float)
    # +0.5 pseudo-count: a pair never seen together under any shift is rare, not impossible
    return (total + 0.5) / max(len(shifts), 1)


def key_sync_share(events: pd.DataFrame, window: int) -> pd.Series:
    """Per (signal, key): the share of its post pairs that fall within the window of each other.

    If the accounts behind a key's posts were shuffled while the posts' times stayed put (the
    key's own volume over time, breaking-news peaks included), two given posts would be in sync
    with this probability."""
    ev = events.sort_values(["signal", "key", "t"], kind="stable")
    group = ev.groupby(["signal", "key"], sort=False).ngroup().to_numpy()
    t = ev["t"].to_numpy(dtype=np.int64)
    stride = int(t.max() - t.min()) + 2 * int(window) + 2
    tt = group.astype(np.int64) * stride + (t - t.min())
    within = np.searchsorted(tt, tt + window, side="right") - np.arange(len(tt)) - 1
    per = pd.DataFrame({"g": group, "within": within}).groupby("g")["within"].sum()
    n = pd.Series(group).value_counts().sort_index()
    share = per / np.maximum(n * (n - 1) / 2, 1)
    keys = ev[["signal", "key"]].drop_duplicates().reset_index(drop=True)
    return pd.Series(share.sort_index().to_numpy(), index=pd.MultiIndex.from_frame(keys))


def volume_expectation(events: pd.DataFrame, pairs: pd.DataFrame, window: int) -> np.ndarray:
    """Null expectation per pair from the keys' volume: sum over shared keys of
    n_i,key * n_j,key * (share of the key's post pairs in sync)."""
    share = key_sync_share(events, window).rename("share").reset_index()
    counts = events.groupby(["signal", "key", "account"]).size().rename("n").reset_index()
    accs = np.union1d(pairs["acc_a"].to_numpy(), pairs["acc_b"].to_numpy())
    counts = counts[counts["account"].isin(accs)]
    a = counts.rename(columns={"account": "acc_a", "n": "n_a"})
    b = counts.rename(columns={"account": "acc_b", "n": "n_b"})
    joined = (pairs[["signal", "acc_a", "acc_b"]].merge(a, on=["signal", "acc_a"])
              .merge(b, on=["signal", "key", "acc_b"]).merge(share, on=["signal", "key"]))
    joined["e"] = joined["n_a"] * joined["n_b"] * joined["share"]
    e = joined.groupby(["signal", "acc_a", "acc_b"])["e"].sum()
    idx = pd.MultiIndex.from_frame(pairs[["signal", "acc_a", "acc_b"]])
    return e.reindex(idx).fillna(0.0).to_numpy()


# -- the pair counts, out of core ----------------------------------------------------------
#
# Millions of posts give tens of millions of synchronised post pairs; they never come back to
# Python. Each partition of the events (by key, so one (signal, key) never straddles two) is
# joined in DuckDB and its post pairs are written to Parquet, bucketed by account pair. Each
# bucket then holds every post pair of its account pairs, whatever their key, so moments are
# sessionised there (lag() over the pair, ordered by time) and only per-pair counts and the
# moments of the candidate pairs come back. The partitions and buckets are independent tasks:
# the local engine runs them one after the other, the Dask engine on its workers.

_PAIR_ORDER = "tm, post_a, post_b, key"  # a total order of a pair's post pairs


def _duckdb(memory_mb: int, spill: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection held to ``memory_mb``; beyond it, it spills under ``spill``."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
    con.execute("SET preserve_insertion_order = false")
    if spill:
        con.execute(f"SET temp_directory = '{_quote(spill)}'")
    return con


def partition_of_key(keys: np.ndarray, n_partitions: int) -> np.ndarray:
    """The partition of each event: by its (signal, key) id, so a key never straddles two."""
    return (np.asarray(keys, dtype=np.int64) % max(1, n_partitions)).astype(np.int64)


def sync_pairs_partition(events: pd.DataFrame, window: int, n_buckets: int, folder: str,
                         part: int, memory_mb: int = 1024) -> int:
    """The synchronised post pairs of one partition of the events, written as Parquet under
    ``folder/bucket=<b>/`` (b a hash of the account pair). Returns how many were written."""
    con = _duckdb(memory_mb, f"{folder}/.spill-{int(part)}")
    try:
        con.register("events", events[["signal", "key", "post", "account", "t"]])
        W = int(window)
        join = f"""
            WITH e AS (SELECT signal, key, post, account, t, t // {W} AS b FROM events),
                 shifted AS (SELECT e.*, b + d AS bb FROM e, (VALUES (-1), (0), (1)) v(d))
            SELECT a.signal, a.key, a.post AS post_a, c.post AS post_b,
                   a.account AS acc_a, c.account AS acc_b, a.t AS t_a, c.t AS t_b,
                   least(a.t, c.t) AS tm,
                   CAST(hash(a.signal, a.account, c.account) % {int(n_buckets)} AS INTEGER)
                       AS bucket
            FROM e a JOIN shifted c
              ON a.signal = c.signal AND a.key = c.key AND a.b = c.bb
            WHERE a.account < c.account AND abs(a.t - c.t) <= {W}"""
        # one pass: COPY reports how many rows it wrote (none written: no files)
        n = con.execute(f"COPY ({join}) TO '{_quote(folder)}' (FORMAT parquet, "
                        f"PARTITION_BY (bucket), FILENAME_PATTERN 'part{int(part)}_{{i}}', "
                        "OVERWRITE_OR_IGNORE true)").fetchone()[0]
        return int(n)
    finally:
        con.close()


def _quote(path) -> str:
    return str(path).replace("'", "''")


def _bucket_glob(folder: str, bucket: int | str) -> str:
    return f"{_quote(folder)}/bucket={bucket}/*.parquet"


def pair_counts_bucket(folder: str, bucket: int, window: int, min_moments: int,
                       memory_mb: int = 1024) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per account pair of one bucket: moments and counts; and the moments of the candidate
    pairs (at least ``min_moments``), one row each with its first post pair's key and time."""
    empty = (pd.DataFrame({c: pd.Series(dtype=d) for c, d in PAIR_DTYPES.items()}),
             pd.DataFrame({c: pd.Series(dtype=d) for c, d in MOMENT_DTYPES.items()}))
    if not list(Path(folder).glob(f"bucket={bucket}/*.parquet")):
        return empty
    con = _duckdb(memory_mb, f"{folder}/.spill-b{int(bucket)}")
    try:
        W = int(window)
        con.execute(f"""
            CREATE TEMP TABLE co AS
            WITH g AS (SELECT signal, key, post_a, post_b, acc_a, acc_b, tm,
                              lag(tm) OVER (PARTITION BY signal, acc_a, acc_b
                                            ORDER BY {_PAIR_ORDER}) AS prev
                       FROM read_parquet('{_bucket_glob(folder, bucket)}'))
            SELECT signal, key, post_a, post_b, acc_a, acc_b, tm,
                   CAST(sum(CASE WHEN prev IS NULL OR tm - prev > {W} THEN 1 ELSE 0 END)
                        OVER (PARTITION BY signal, acc_a, acc_b ORDER BY {_PAIR_ORDER}
                              ROWS UNBOUNDED PRECEDING) AS BIGINT) AS mi
            FROM g""")
        pairs = con.execute("""
            SELECT signal, acc_a, acc_b, max(mi) AS n_moments, count(*) AS n_cooccurrences,
                   min(tm) AS first_at, max(tm) AS last_at
            FROM co GROUP BY signal, acc_a, acc_b""").df()
        moments = con.execute(f"""
            SELECT co.signal, co.acc_a, co.acc_b, mi, min(tm) AS tm,
                   first(key ORDER BY {_PAIR_ORDER}) AS key
            FROM co JOIN (SELECT signal, acc_a, acc_b FROM co GROUP BY ALL
                          HAVING max(mi) >= {int(min_moments)}) c
              ON co.signal = c.signal AND co.acc_a = c.acc_a AND co.acc_b = c.acc_b
            GROUP BY co.signal, co.acc_a, co.acc_b, mi""").df()
        return _typed(pairs, PAIR_DTYPES), _typed(moments, MOMENT_DTYPES)
    finally:
        con.close()


PAIR_DTYPES = {"signal": "str", "acc_a": np.int64, "acc_b": np.int64, "n_moments": np.int64,
               "n_cooccurrences": np.int64, "first_at": np.int64, "last_at": np.int64}
MOMENT_DTYPES = {"signal": "str", "acc_a": np.int64, "acc_b": np.int64, "mi": np.int64,
                 "tm": np.int64, "key": np.int64}


def _typed(frame: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    return frame[list(dtypes)].astype(dtypes)


def moment_strangers(events: pd.DataFrame, moments: pd.DataFrame, known: pd.DataFrame,
                     window: int, memory_mb: int = 1024) -> pd.Series:
    """Per moment: accounts posting its key within the window of it that are neither of the
    pair nor a recurring partner (in ``known``, both directions) of either."""
    con = _duckdb(memory_mb)
    try:
        con.register("moments", moments[["moment", "signal", "key", "tm", "acc_a", "acc_b"]])
        con.register("events", events[["signal", "key", "account", "t"]])
        con.register("known", known[["x", "y"]])
        W = int(window)
        got = con.execute(f"""
            WITH m3 AS (SELECT m.*, tm // {W} + o AS bb
                        FROM moments m, (VALUES (-1), (0), (1)) v(o)),
                 e AS (SELECT *, t // {W} AS b FROM events),
                 crowd AS (SELECT DISTINCT m3.moment, m3.acc_a, m3.acc_b, e.account
                           FROM m3 JOIN e ON m3.signal = e.signal AND m3.key = e.key
                                          AND m3.bb = e.b
                           WHERE abs(e.t - m3.tm) <= {W})
            SELECT c.moment, count(*) AS strangers
            FROM crowd c
            LEFT JOIN known ka ON ka.x = c.acc_a AND ka.y = c.account
            LEFT JOIN known kb ON kb.x = c.acc_b AND kb.y = c.account
            WHERE c.account <> c.acc_a AND c.account <> c.acc_b
              AND ka.x IS NULL AND kb.x IS NULL
            GROUP BY c.moment""").df()
    finally:
        con.close()
    return got.set_index("moment")["strangers"]


def effective_from_moments(events: pd.DataFrame, moments: pd.DataFrame, pairs: pd.DataFrame,
                           window: int, min_moments: int, memory_mb: int = 1024) -> pd.Series:
    """``effective_moments`` from one row per candidate moment (what the buckets return)."""
    recurring = pairs.loc[pairs["n_moments"] >= min_moments, ["acc_a", "acc_b"]]
    known = pd.concat([recurring.set_axis(["x", "y"], axis=1),
                       recurring[["acc_b", "acc_a"]].set_axis(["x", "y"], axis=1)],
                      ignore_index=True).drop_duplicates()
    strangers = moment_strangers(events, moments, known, window, memory_mb)
    span = max(int(events["t"].max()) - int(events["t"].min()), 1)
    key_rate = (events.groupby(["signal", "key"]).size() * (2 * window) / span).rename("expected")
    w = moments[["moment", "signal", "key", "acc_a", "acc_b"]].copy()
    w["strangers"] = w["moment"].map(strangers).fillna(0).to_numpy()
    w = w.merge(key_rate.reset_index(), on=["signal", "key"], how="left")
    w["w"] = 1.0 / (1.0 + np.maximum(0.0, w["strangers"] - w["expected"].fillna(0.0)))
    return w.groupby(["signal", "acc_a", "acc_b"])["w"].sum()


def cooccurrences_of(folder: str, pairs: pd.DataFrame, window: int,
                     memory_mb: int = 1024) -> pd.DataFrame:
    """The synchronised post pairs of the given account pairs, with moment ids, read back from
    the bucket files (the evidence behind the significant pairs)."""
    columns = ["signal", "key", "post_a", "post_b", "acc_a", "acc_b", "t_a", "t_b", "tm", "moment"]
    if pairs.empty or not list(Path(folder).glob("bucket=*/*.parquet")):
        return pd.DataFrame({c: pd.Series(dtype="str" if c == "signal" else np.int64)
                             for c in columns})
    con = _duckdb(memory_mb)
    try:
        con.register("sel", pairs[["signal", "acc_a", "acc_b"]])
        co = con.execute(f"""
            SELECT co.signal, co.key, co.post_a, co.post_b, co.acc_a, co.acc_b, co.t_a, co.t_b,
                   co.tm
            FROM read_parquet('{_bucket_glob(folder, "*")}', hive_partitioning = false) co
            JOIN sel ON co.signal = sel.signal AND co.acc_a = sel.acc_a AND co.acc_b = sel.acc_b
            ORDER BY co.signal, co.acc_a, co.acc_b, {_PAIR_ORDER}""").df()
    finally:
        con.close()
    return pair_moments(co, window)[columns]


def serial_map(fn, *iterables) -> list:
    """The local engine's map: the partition tasks one after the other, in this process."""
    return [fn(*args) for args in zip(*iterables)]


def run(posts: pd.DataFrame, narrative_ids: np.ndarray, cfg: CoordinationConfig,
        seed: int, n_partitions: int = 1, mapper=serial_map,
        work_dir: str | None = None) -> Coordination:
    """Coordination on a clustered corpus. ``mapper(fn, *iterables) -> list`` runs the
    partition tasks (``serial_map`` here, a Dask client's map in the Dask engine); any number of
    partitions gives the same result."""
    import shutil
    import tempfile

    accounts = pd.Categorical(posts["account_id"]).categories.to_numpy()
    events = build_events(posts, narrative_ids, cfg, seed)
    window = cfg.window_seconds
    if cfg.auto_window:
        est = estimate_window(events, cfg.auto_window_q, cfg.auto_window_p)
        if est is not None:
            window = est
        log.info("coordination: estimated window %s s (configured %d s)", est, cfg.window_seconds)
    events, n_crowd = drop_crowds(events, window, cfg.max_crowd)
    mem = cfg.duckdb_memory_mb
    n_partitions = max(1, int(n_partitions))
    folder = tempfile.mkdtemp(prefix="lockstep-sync-", dir=work_dir)
    try:
        part = partition_of_key(events["key"].to_numpy(), n_partitions)
        pieces = [events[part == i].reset_index(drop=True) for i in range(n_partitions)]
        written = mapper(sync_pairs_partition, pieces, [window] * n_partitions,
                         [n_partitions] * n_partitions, [folder] * n_partitions,
                         range(n_partitions), [mem] * n_partitions)
        del pieces
        counted = mapper(pair_counts_bucket, [folder] * n_partitions, range(n_partitions),
                         [window] * n_partitions, [cfg.min_moments] * n_partitions,
                         [mem] * n_partitions)
        pairs = pd.concat([c[0] for c in counted], ignore_index=True)
        moments = pd.concat([c[1] for c in counted], ignore_index=True)
        del counted
        stats = {"n_events": int(len(events)), "n_crowd_events_skipped": n_crowd,
                 "n_cooccurrences": int(sum(written)), "window_seconds": int(window)}
        columns = ["signal", "acc_a", "acc_b", "n_moments", "n_cooccurrences", "first_at",
                   "last_at", "effective_moments", "expected", "p_value", "q_value",
                   "significant"]
        if pairs.empty:
            return Coordination(pd.DataFrame(columns=columns),
                                cooccurrences_of(folder, pairs, window, mem), accounts, window, stats)
        pairs = pairs.sort_values(["signal", "acc_a", "acc_b"], kind="stable",
                                  ignore_index=True)
        moments = moments.sort_values(["signal", "acc_a", "acc_b", "mi"], kind="stable",
                                      ignore_index=True)
        moments.insert(0, "moment", np.arange(1, len(moments) + 1, dtype=np.int64))
        cand = pairs["n_moments"] >= cfg.min_moments
        pairs["effective_moments"] = 0.0
        pairs["expected"] = np.nan
        pairs["p_value"] = 1.0
        if cand.any():
            eff = effective_from_moments(events, moments, pairs, window, cfg.min_moments, mem)
            idx = pd.MultiIndex.from_frame(pairs.loc[cand, ["signal", "acc_a", "acc_b"]])
            pairs.loc[cand, "effective_moments"] = eff.reindex(idx).fillna(0).to_numpy()
            lam = shift_expectation(events, pairs.loc[cand], window, cfg.null_shifts, mem,
                                    f"{folder}/.spill-shift")
            # topic-level signals: the narrative's own volume over time (a story that breaks
            # puts every news page on it at once) is part of what chance explains
            topical = pairs.loc[cand, "signal"].isin(["narrative", "domain"]).to_numpy()
            if topical.any():
                vol = volume_expectation(events, pairs.loc[cand][topical], window)
                lam[topical] = np.maximum(lam[topical], vol)
            pairs.loc[cand, "expected"] = lam
            n_eff = np.ceil(pairs.loc[cand, "effective_moments"].to_numpy() - 1e-9)
            pairs.loc[cand, "p_value"] = poisson_sf(n_eff - 1, lam)
        del moments
        pairs["q_value"] = benjamini_hochberg(pairs["p_value"].to_numpy())
        pairs["significant"] = (pairs["q_value"] <= cfg.fdr) & (
            pairs["effective_moments"] >= cfg.min_moments)
        pairs["effective_moments"] = pairs["effective_moments"].round(3)
        pairs["expected"] = pairs["expected"].round(4)
        stats.update(n_pairs_observed=int(len(pairs)), n_pairs_tested=int(cand.sum()),
                     n_pairs_significant=int(pairs["significant"].sum()))
        # only the post pairs behind the significant pairs come back: the evidence
        co = cooccurrences_of(folder, pairs[pairs["significant"]], window, mem)
        return Coordination(pairs[columns], co, accounts, window, stats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
