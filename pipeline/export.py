"""Writing escalation lists and the account network: CSV, JSONL and GraphML (for Gephi).

CSV cells are formula-neutralised; every format carries the human-review note."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .atomic import atomic_open, atomic_path, restore_formula, write_csv
from .escalate import REVIEW_NOTE, Escalation, evidence_json

FORMATS = ("csv", "jsonl", "graphml")


def escalations_csv(accounts: pd.DataFrame, path: Path) -> None:
    df = accounts.copy()
    df["evidence"] = df["evidence"].map(evidence_json)
    write_csv(df, path)


def escalations_jsonl(accounts: pd.DataFrame, path: Path) -> None:
    with atomic_open(path) as fh:
        for row in accounts.to_dict(orient="records"):
            clean = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
            fh.write(json.dumps(clean, ensure_ascii=False, default=str) + "\n")


def network_graphml(esc: Escalation, path: Path) -> None:
    g = esc.graph.copy()
    g["note"] = REVIEW_NOTE
    # GraphML needs plain attribute values; None is not one
    for attr in g.vs.attributes():
        g.vs[attr] = ["" if v is None else v for v in g.vs[attr]]
    if g.vcount():
        g.vs["label"] = g.vs["account_id"]
    with atomic_path(path) as tmp:
        g.write_graphml(str(tmp))


def write(esc: Escalation, out_dir: Path, formats: tuple[str, ...] = FORMATS,
          stem: str = "escalations", pseudonymise_key: bytes | None = None) -> list[Path]:
    """Write the escalation in ``formats``; with a key, account ids become keyed pseudonyms."""
    if pseudonymise_key is not None:
        from .privacy import pseudonymise_escalation

        esc = pseudonymise_escalation(esc, pseudonymise_key)
    out_dir = Path(out_dir)
    paths = []
    if "csv" in formats:
        escalations_csv(esc.accounts, out_dir / f"{stem}.csv")
        write_csv(esc.networks, out_dir / "networks.csv")
        paths += [out_dir / f"{stem}.csv", out_dir / "networks.csv"]
    if "jsonl" in formats:
        escalations_jsonl(esc.accounts, out_dir / f"{stem}.jsonl")
        paths.append(out_dir / f"{stem}.jsonl")
    if "graphml" in formats:
        network_graphml(esc, out_dir / "network.graphml")
        paths.append(out_dir / "network.graphml")
    return paths


def load(run_dir: Path) -> Escalation:
    """The escalation of a finished run, read back from its outputs."""
    import igraph as ig

    from .errors import InputError

    run_dir = Path(run_dir)
    needed = [run_dir / "escalations.jsonl", run_dir / "networks.csv", run_dir / "network.graphml"]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise InputError(f"{run_dir}: {', '.join(missing)} not found; run `lockstep cluster` or "
                         f"`lockstep escalate {run_dir}` first")
    with open(needed[0], encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    from .escalate import ESCALATION_COLUMNS, NETWORK_COLUMNS

    accounts = pd.DataFrame(rows, columns=ESCALATION_COLUMNS)
    networks = pd.read_csv(needed[1], keep_default_na=False, dtype=str)
    networks = networks.map(restore_formula)
    networks = networks.reindex(columns=NETWORK_COLUMNS)
    graph = ig.Graph.Read_GraphML(str(needed[2]))
    return Escalation(accounts, networks, graph)
