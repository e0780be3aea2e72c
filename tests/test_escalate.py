import json

import igraph as ig
import numpy as np
import pandas as pd

from pipeline import coordination, escalate, export
from pipeline.config import CoordinationConfig
from tests.test_coordination import sim_posts


def run_escalation(tmp_path, **kw):
    posts, nid, truth = sim_posts(**kw)
    cfg = CoordinationConfig()
    coord = coordination.run(posts, nid, cfg, seed=1)
    from pipeline import simulate

    accounts = simulate.simulate(simulate.SimConfig(**kw)).accounts.copy()
    accounts["created_at"] = pd.to_datetime(accounts["created_at"], utc=True)
    esc = escalate.run(posts, nid, coord, cfg, seed=1,
                       narrative_labels=dict(enumerate(truth["narratives"])),
                       accounts_meta=accounts)
    export.write(esc, tmp_path)
    return esc, truth


def test_escalation_outputs(tmp_path):
    esc, truth = run_escalation(tmp_path, seed=7)
    acc = esc.accounts
    assert list(acc.columns) == escalate.ESCALATION_COLUMNS
    assert acc["rank"].tolist() == list(range(1, len(acc) + 1))
    assert acc["score"].between(0, 1).all()
    assert acc["score"].is_monotonic_decreasing
    assert (acc["note"] == escalate.REVIEW_NOTE).all()
    coordinated = {a for a, v in truth["accounts"].items() if v["role"] == "coordinated"}
    assert set(acc["account_id"]) == coordinated
    assert acc["network_id"].nunique() == 1
    assert acc["reasons"].str.contains("SYNC_NARRATIVE").all()
    assert acc["reasons"].str.contains("CO_LINK").any()
    for ev in acc["evidence"]:
        assert 1 <= len(ev) <= CoordinationConfig().n_evidence
        assert all({"post_id", "partner_post_id", "at", "partner_at", "signals",
                    "narrative_id"} <= set(e) for e in ev)
    # planted metadata: members were created together and share admin countries
    assert (acc["meta_created_near"] > 0).all()
    assert (acc["meta_shared_admin_countries"] != "").all()

    nets = pd.read_csv(tmp_path / "networks.csv")
    row = nets.iloc[0]
    assert row["n_accounts"] == len(acc)
    assert row[["n_pages", "n_groups", "n_profiles", "n_instagram", "n_other"]].sum() == len(acc)
    assert row["note"] == escalate.REVIEW_NOTE

    lines = (tmp_path / "escalations.jsonl").read_text().splitlines()
    assert len(lines) == len(acc) and json.loads(lines[0])["rank"] == 1
    g = ig.Graph.Read_GraphML(str(tmp_path / "network.graphml"))
    assert g.vcount() == len(acc) and g.ecount() > 0
    assert {"weight", "n_narrative", "n_url"} <= set(g.es.attributes())
    assert g["note"] == escalate.REVIEW_NOTE


def test_reload_and_reexport_round_trip(tmp_path):
    esc, _ = run_escalation(tmp_path, seed=2, network_size=8)
    again = export.load(tmp_path)
    assert again.accounts["account_id"].tolist() == esc.accounts["account_id"].tolist()
    assert again.accounts["evidence"].tolist() == esc.accounts["evidence"].tolist()
    out = tmp_path / "re"
    export.write(again, out, ("csv",))
    assert (out / "escalations.csv").read_text() == (tmp_path / "escalations.csv").read_text()


def test_nothing_significant_gives_empty_outputs(tmp_path):
    posts = pd.DataFrame({"post_id": ["p1", "p2"], "account_id": ["a", "b"],
                          "created_at": pd.to_datetime([0, 10], unit="s", utc=True),
                          "text": ["x", "y"], "url": [None, None]})
    cfg = CoordinationConfig()
    coord = coordination.run(posts, np.array([0, 0]), cfg, seed=1)
    esc = escalate.run(posts, np.array([0, 0]), coord, cfg, seed=1)
    export.write(esc, tmp_path)
    assert esc.accounts.empty and esc.networks.empty
    assert pd.read_csv(tmp_path / "escalations.csv").columns.tolist() == \
        escalate.ESCALATION_COLUMNS


def test_a_dense_group_is_one_network_and_separate_groups_stay_apart():
    import igraph as ig

    # a 12-clique, a separate 5-clique, and two 6-cliques joined by a single edge
    edges = [(a, b) for a in range(12) for b in range(a + 1, 12)]
    edges += [(a, b) for a in range(12, 17) for b in range(a + 1, 17)]
    edges += [(a, b) for a in range(17, 23) for b in range(a + 1, 23)]
    edges += [(a, b) for a in range(23, 29) for b in range(a + 1, 29)] + [(17, 23)]
    g = ig.Graph(n=29, edges=edges)
    g.es["weight"] = [1.0] * g.ecount()
    m = escalate.networks_of(g, seed=1)
    assert len(set(m[:12])) == 1 and len(set(m[12:17])) == 1 and m[0] != m[12]
    assert len(set(m[17:23])) == 1 and len(set(m[23:29])) == 1 and m[17] != m[23]
