"""Coordination quality on simulated corpora with planted truth (`make eval`).

    .venv/bin/python benchmarks/eval_coordination.py [--quick]

Each corpus is simulated, then run through the whole pipeline with the default config (the
real clustering, not the planted narratives), and the escalated accounts are compared with the
planted networks: account-level precision and recall, and every false positive by kind
(hyperactive page, fan, breaking-news burst participant, other organic). The goal is precision
>= 0.95 and recall >= 0.90 on every corpus, with no burst, fan or hyperactive account escalated.
Results go to benchmarks/results/coordination_quality.json and RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import config, runner, simulate  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "eval"
CORPORA = [
    ("sample", None),  # the bundled corpora/sample
    ("small-paraphrase", dict(seed=11, network_size=8, text_mode="paraphrase")),
    ("large-net-slow", dict(seed=12, network_size=30, spread_seconds=900)),
    ("verbatim-tight", dict(seed=13, text_mode="verbatim", spread_seconds=60)),
    ("two-networks-edited", dict(seed=14, n_networks=2, network_size=10, text_mode="edited")),
    ("no-network", dict(seed=15, n_networks=0)),
    ("bigger-corpus", dict(seed=16, n_posts=8000, n_accounts=400, network_size=12)),
]


def score(truth: dict, escalated: set[str]) -> dict:
    roles = {a: v["role"] for a, v in truth["accounts"].items()}
    bursts = {a for a, v in truth["accounts"].items() if v.get("bursts")}
    coordinated = {a for a, r in roles.items() if r == "coordinated"}
    tp = len(escalated & coordinated)
    fps = sorted(escalated - coordinated)
    kinds = {"hyperactive": 0, "fan": 0, "burst": 0, "organic": 0}
    for a in fps:
        role = roles.get(a, "organic")
        kind = role if role in ("hyperactive", "fan") else ("burst" if a in bursts else "organic")
        kinds[kind] += 1
    return {
        "planted": len(coordinated), "escalated": len(escalated), "true_positives": tp,
        "precision": round(tp / len(escalated), 4) if escalated else None,
        "recall": round(tp / len(coordinated), 4) if coordinated else None,
        "false_positives": kinds, "false_positive_ids": fps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the sample corpus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = config.load(ROOT / "configs" / "default.toml",
                      [f"embed.cache_dir={ROOT / '.cache' / 'embeddings'}"])
    rows = []
    for name, sim in CORPORA[:1] if args.quick else CORPORA:
        if sim is None:
            corpus = ROOT / "corpora" / "sample"
            sim_cfg = {"seed": 7}
        else:
            corpus = OUT / "corpora" / name
            simulate.write_corpus(simulate.simulate(simulate.SimConfig(**sim)), corpus)
            sim_cfg = sim
        truth = json.loads((corpus / "truth.json").read_text())
        t0 = time.perf_counter()
        result = runner.cluster_corpus(corpus, OUT / "runs" / name, cfg)
        seconds = time.perf_counter() - t0
        escalated = set(result.escalation.accounts["account_id"])
        row = {"corpus": name, "simulation": sim_cfg, "posts": len(result.posts),
               "networks_found": int(len(result.escalation.networks)),
               "coordination_seconds": result.stages["coordination"]["seconds"],
               "pipeline_seconds": round(seconds, 1), **score(truth, escalated)}
        rows.append(row)
        fp = row["false_positives"]
        print(f"{name:22s} P={row['precision']} R={row['recall']} escalated={row['escalated']} "
              f"planted={row['planted']} FP hyperactive={fp['hyperactive']} fan={fp['fan']} "
              f"burst={fp['burst']} organic={fp['organic']}", flush=True)
    res = {"name": "coordination_quality",
           "machine": machine(),
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": ".venv/bin/python benchmarks/eval_coordination.py" +
                      (" --quick" if args.quick else ""),
           "rows": rows}
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / "coordination_quality.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import run as bench_run

        (ROOT / "benchmarks" / "RESULTS.md").write_text(bench_run.render())


if __name__ == "__main__":
    main()
