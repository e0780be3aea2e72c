"""Escalation for human behavioural review: the account network, its communities, and per
account a score, reason codes and the synchronised posts that are the evidence.

Nothing here is a verdict. Every output carries REVIEW_NOTE so that nobody reads it as one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import CoordinationConfig
from .coordination import REASON_CODES, Coordination

log = logging.getLogger(__name__)

REVIEW_NOTE = ("Candidate for human behavioural review: synchronised behaviour beyond chance, "
               "not a finding of inauthenticity.")
ACCOUNT_TYPES = ("page", "group", "profile", "instagram")
CREATED_NEAR_DAYS = 7  # accounts created this close to another member's count as created together
DENSE = 0.5  # a connected group with at least this share of its pairs linked is one network
Q_CAP = 50.0  # -log10(q) per edge is capped, so one enormous edge cannot dominate a score
SCORE_HALF = 20.0  # the evidence (sum of capped -log10 q) at which an account scores 0.5

ESCALATION_COLUMNS = [
    "rank", "account_id", "account_name", "account_type", "network_id", "score", "reasons",
    "n_sync_events", "n_partners", "partners", "narratives", "first_sync_at", "last_sync_at",
    "evidence", "meta_created_near", "meta_shared_admin_countries", "meta_name_changes", "note",
]
NETWORK_COLUMNS = [
    "network_id", "n_accounts", "n_pages", "n_groups", "n_profiles", "n_instagram", "n_other",
    "narratives", "reasons", "n_sync_events", "first_sync_at", "last_sync_at", "active_days",
    "density", "score", "accounts", "note",
]


@dataclass
class Escalation:
    accounts: pd.DataFrame  # ESCALATION_COLUMNS, one row per escalated account, by rank
    networks: pd.DataFrame  # NETWORK_COLUMNS, one row per network
    graph: object  # igraph.Graph of escalated accounts, with per-signal edge counts


def _iso(t: int | float | None) -> str:
    if t is None or (isinstance(t, float) and np.isnan(t)):
        return ""
    return pd.Timestamp(int(t), unit="s", tz="UTC").isoformat()


def _account_profiles(posts: pd.DataFrame) -> pd.DataFrame:
    """Most frequent name and type per account (ties: alphabetical)."""
    cols = {"account_name": "", "account_type": ""}
    df = posts[["account_id"]].copy()
    for c, default in cols.items():
        df[c] = posts[c].fillna(default).astype(str) if c in posts else default
    out = {}
    for c in cols:
        counts = df.groupby(["account_id", c]).size().rename("n").reset_index()
        counts = counts.sort_values(["account_id", "n", c], ascending=[True, False, True])
        out[c] = counts.drop_duplicates("account_id").set_index("account_id")[c]
    return pd.DataFrame(out)


def _metadata(members: list[str], accounts_meta: pd.DataFrame | None) -> dict[str, dict]:
    """Per member: partners created within CREATED_NEAR_DAYS, shared admin countries, renames."""
    if accounts_meta is None or accounts_meta.empty:
        return {}
    meta = accounts_meta.set_index("account_id")
    meta = meta[~meta.index.duplicated()]
    out: dict[str, dict] = {}
    present = [m for m in members if m in meta.index]
    created = meta["created_at"] if "created_at" in meta else pd.Series(dtype="datetime64[ns, UTC]")
    countries = {}
    for m in present:
        raw = meta.at[m, "admin_countries"] if "admin_countries" in meta else None
        countries[m] = {c.strip().upper() for c in str(raw or "").replace(",", ";").split(";")
                        if c.strip() and str(raw) != "nan"}
    for m in present:
        near = 0
        if m in created.index and pd.notna(created.get(m)):
            for o in present:
                if o != m and pd.notna(created.get(o)) and abs(
                        (created[o] - created[m]).total_seconds()) <= CREATED_NEAR_DAYS * 86400:
                    near += 1
        shared = sorted(set().union(*[countries[m] & countries[o] for o in present if o != m])
                        if len(present) > 1 else set())
        renames = meta.at[m, "name_changes"] if "name_changes" in meta else None
        out[m] = {"created_near": near, "shared_admin_countries": ";".join(shared),
                  "name_changes": int(renames) if pd.notna(renames) else None}
    return out


def networks_of(g, seed: int) -> np.ndarray:
    """Network id per vertex. A connected group in which most pairs are in sync beyond chance
    (density >= DENSE) is one network, however large; a sparser one is split by Leiden
    (modularity, seeded) into the communities that are denser inside than between."""
    import leidenalg

    membership = np.full(g.vcount(), -1, dtype=np.int64)
    next_id = 0
    for comp in g.connected_components():
        sub = g.subgraph(comp)
        if len(comp) <= 2 or sub.density() >= DENSE:
            parts = [list(range(len(comp)))]
        else:
            part = leidenalg.find_partition(sub, leidenalg.ModularityVertexPartition,
                                            weights="weight", seed=seed)
            parts = [list(p) for p in part]
        for p in parts:
            for v in p:
                membership[comp[v]] = next_id
            next_id += 1
    return membership


def run(posts: pd.DataFrame, narrative_ids: np.ndarray, coord: Coordination,
        cfg: CoordinationConfig, seed: int, narrative_labels: dict[int, str] | None = None,
        accounts_meta: pd.DataFrame | None = None) -> Escalation:
    import igraph as ig

    narrative_labels = narrative_labels or {}
    sig = coord.pairs[coord.pairs["significant"]].copy()
    acc_names = coord.accounts
    if sig.empty:
        g = ig.Graph()
        return Escalation(pd.DataFrame(columns=ESCALATION_COLUMNS),
                          pd.DataFrame(columns=NETWORK_COLUMNS), g)

    sig["strength"] = np.minimum(-np.log10(np.maximum(sig["q_value"].to_numpy(), 1e-300)), Q_CAP)
    # one edge per account pair, fusing its signals; per-signal counts kept as attributes
    edges = sig.groupby(["acc_a", "acc_b"]).agg(
        weight=("effective_moments", "sum"), strength=("strength", "sum"),
        signals=("signal", lambda s: sorted(set(s)))).reset_index()
    # the per-signal counts of the edges' account pairs only (millions of pairs are observed)
    all_pairs = coord.pairs.merge(edges[["acc_a", "acc_b"]], on=["acc_a", "acc_b"]).set_index(
        ["acc_a", "acc_b", "signal"])["n_moments"]
    nodes = sorted(set(edges["acc_a"]) | set(edges["acc_b"]), key=lambda c: acc_names[c])
    index = {c: i for i, c in enumerate(nodes)}
    g = ig.Graph(n=len(nodes), edges=[(index[a], index[b]) for a, b in
                                      zip(edges["acc_a"], edges["acc_b"])])
    g.vs["account_id"] = [str(acc_names[c]) for c in nodes]
    g.es["weight"] = edges["weight"].astype(float).tolist()
    for signal in REASON_CODES:
        g.es[f"n_{signal}"] = [int(all_pairs.get((a, b, signal), 0)) for a, b in
                               zip(edges["acc_a"], edges["acc_b"])]
    g.es["significant_signals"] = [",".join(s) for s in edges["signals"]]

    membership = networks_of(g, seed)
    # network ids by size, then by first account id: stable and readable
    groups = {}
    for v, m in enumerate(membership):
        groups.setdefault(m, []).append(g.vs[v]["account_id"])
    order = sorted(groups, key=lambda m: (-len(groups[m]), min(groups[m])))
    net_of = {}
    for i, m in enumerate(order, start=1):
        for a in groups[m]:
            net_of[a] = f"N{i:02d}"
    g.vs["network_id"] = [net_of[a] for a in g.vs["account_id"]]

    profiles = _account_profiles(posts)
    meta = _metadata(g.vs["account_id"], accounts_meta)
    g.vs["account_name"] = [str(profiles["account_name"].get(a, "")) for a in g.vs["account_id"]]
    g.vs["account_type"] = [str(profiles["account_type"].get(a, "")) for a in g.vs["account_id"]]

    # per-account evidence from the synchronised post pairs of its significant pairs
    co = coord.cooccurrences.merge(sig[["signal", "acc_a", "acc_b"]], on=["signal", "acc_a", "acc_b"])
    pid = posts["post_id"].to_numpy()
    times = (posts["created_at"].astype("int64") // 1_000_000).to_numpy()
    rows = []
    strength = {}
    for a, b, s in zip(edges["acc_a"], edges["acc_b"], edges["strength"]):
        strength[a] = strength.get(a, 0.0) + s
        strength[b] = strength.get(b, 0.0) + s
    for c in nodes:
        aid = str(acc_names[c])
        mine = co[(co["acc_a"] == c) | (co["acc_b"] == c)]
        own_post = np.where(mine["acc_a"] == c, mine["post_a"], mine["post_b"])
        other_post = np.where(mine["acc_a"] == c, mine["post_b"], mine["post_a"])
        other_acc = np.where(mine["acc_a"] == c, mine["acc_b"], mine["acc_a"])
        own_posts = np.unique(own_post)
        e_here = edges[(edges["acc_a"] == c) | (edges["acc_b"] == c)]
        partner_w = {}
        for a, b, w in zip(e_here["acc_a"], e_here["acc_b"], e_here["weight"]):
            partner_w[str(acc_names[b if a == c else a])] = float(w)
        partners = sorted(partner_w, key=lambda p: (-partner_w[p], p))
        signals = pd.Series(mine["signal"]).value_counts()
        reasons = [REASON_CODES[s] for s in sorted(signals.index, key=lambda s: (-signals[s], s))]
        narr = pd.Series(narrative_ids[own_posts])
        narr = narr[narr >= 0].value_counts()
        narr = narr.sort_index().sort_values(ascending=False, kind="stable")
        narratives = [f"{int(n)}:{narrative_labels.get(int(n), '')}".rstrip(":")
                      for n in narr.index]
        # evidence: synchronised post pairs (all their signals together), one per own post,
        # earliest first, up to n_evidence
        ev_df = pd.DataFrame({"signal": mine["signal"].to_numpy(), "own": own_post,
                              "other": other_post, "other_acc": other_acc,
                              "tm": mine["tm"].to_numpy()})
        ev_df = (ev_df.groupby(["own", "other", "other_acc"], sort=False)
                 .agg(tm=("tm", "min"), signals=("signal", lambda s: sorted(set(s))))
                 .reset_index().sort_values(["tm", "own", "other"], kind="stable")
                 .drop_duplicates("own"))
        evidence = [{
            "signals": [REASON_CODES[x] for x in r.signals],
            "post_id": str(pid[r.own]), "at": _iso(times[r.own]),
            "partner_account_id": str(acc_names[r.other_acc]),
            "partner_post_id": str(pid[r.other]), "partner_at": _iso(times[r.other]),
            "narrative_id": int(narrative_ids[r.own]),
        } for r in ev_df.head(cfg.n_evidence).itertuples()]
        z = strength.get(c, 0.0)
        m = meta.get(aid, {})
        rows.append({
            "account_id": aid,
            "account_name": profiles["account_name"].get(aid, ""),
            "account_type": profiles["account_type"].get(aid, ""),
            "network_id": net_of[aid],
            "score": round(z / (z + SCORE_HALF), 4),
            "reasons": ";".join(reasons),
            "n_sync_events": int(len(own_posts)),
            "n_partners": len(partners),
            "partners": ";".join(partners),
            "narratives": ";".join(narratives),
            "first_sync_at": _iso(mine["tm"].min()),
            "last_sync_at": _iso(mine["tm"].max()),
            "evidence": evidence,
            "meta_created_near": m.get("created_near"),
            "meta_shared_admin_countries": m.get("shared_admin_countries"),
            "meta_name_changes": m.get("name_changes"),
            "note": REVIEW_NOTE,
        })
    acc_df = pd.DataFrame(rows)
    acc_df = acc_df.sort_values(["score", "account_id"], ascending=[False, True], kind="stable")
    acc_df.insert(0, "rank", np.arange(1, len(acc_df) + 1))
    acc_df = acc_df.reset_index(drop=True)[ESCALATION_COLUMNS]
    g.vs["score"] = [float(acc_df.set_index("account_id").at[a, "score"]) for a in g.vs["account_id"]]

    networks = []
    for net, members in acc_df.groupby("network_id", sort=True):
        types = members["account_type"].str.lower().value_counts()
        ids = set(members["account_id"])
        vs = [v.index for v in g.vs if v["account_id"] in ids]
        sub = g.subgraph(vs)
        narr = pd.Series(";".join(members["narratives"]).split(";"))
        narr = narr[narr != ""].value_counts()
        reasons = pd.Series(";".join(members["reasons"]).split(";")).value_counts()
        first = min(members["first_sync_at"])
        last = max(members["last_sync_at"])
        networks.append({
            "network_id": net,
            "n_accounts": len(members),
            "n_pages": int(types.get("page", 0)),
            "n_groups": int(types.get("group", 0)),
            "n_profiles": int(types.get("profile", 0)),
            "n_instagram": int(types.get("instagram", 0)),
            "n_other": int(len(members) - sum(types.get(t, 0) for t in ACCOUNT_TYPES)),
            "narratives": ";".join(narr.index[:5]),
            "reasons": ";".join(reasons.index),
            "n_sync_events": int(members["n_sync_events"].sum()),
            "first_sync_at": first,
            "last_sync_at": last,
            "active_days": round((pd.Timestamp(last) - pd.Timestamp(first)).total_seconds()
                                 / 86400, 2),
            "density": round(sub.density(), 4) if len(members) > 1 else 1.0,
            "score": round(float(members["score"].mean()), 4),
            "accounts": ";".join(sorted(ids)),
            "note": REVIEW_NOTE,
        })
    net_df = pd.DataFrame(networks, columns=NETWORK_COLUMNS)
    net_df = net_df.sort_values(["score", "network_id"], ascending=[False, True]).reset_index(drop=True)
    g["note"] = REVIEW_NOTE
    return Escalation(acc_df, net_df, g)


def evidence_json(evidence: list[dict]) -> str:
    return json.dumps(evidence, ensure_ascii=False, separators=(",", ":"))
