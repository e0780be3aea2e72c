"""Fit on a sample, place the rest: how far the labels are from a fit on the whole corpus, and
what placing costs.

    .venv/bin/python benchmarks/run.py sample_fit [--sizes 20000]

One simulated corpus (the scale benchmark's, `lockstep simulate --seed 21 --n-posts N`), small
enough to fit whole, is clustered twice by `lockstep cluster` in the fast tier, each in its own
process with a fresh embedding cache: with `cluster.fit_sample=0` (UMAP and HDBSCAN on every
post) and with `cluster.fit_sample=N/4` (fit on a seeded quarter, the rest placed as `lockstep
assign` places new posts: UMAP transform + approximate_predict + the similarity floor).
Agreement is ARI and NMI between the two label vectors (noise = -1 is a label), over all posts
and over the placed posts alone; each run is also scored against the planted narratives. The
cluster stage's seconds of the sampled run include placing the rest, so the placement speed is
(placed posts) / (sampled run's cluster stage - the same fit's HDBSCAN part, not separable) and
is reported as an upper bound on its cost: placed posts per second of the whole cluster stage.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "sample_fit"
DEFAULT_SIZE = 20_000


def one(n_posts: int) -> dict:
    import shutil

    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from scale_bench import (OUT as SCALE_OUT, cluster_measured, planted_labels, shown,
                             simulate_corpus)

    corpus = SCALE_OUT / "corpora" / f"sim-{n_posts}"
    sim_cmd, _ = simulate_corpus(n_posts, corpus)
    runs = {}
    for name, fit in (("whole", 0), ("sample", n_posts // 4)):
        run_dir = OUT / f"{name}-{n_posts}"
        shutil.rmtree(run_dir, ignore_errors=True)
        runs[name] = cluster_measured(corpus, run_dir,
                                      ["embed.tier=fast", f"cluster.fit_sample={fit}"],
                                      ("--no-save-model",))
    whole, sample = runs["whole"]["assign"], runs["sample"]["assign"]
    assert whole["post_id"].equals(sample["post_id"])
    a, b = whole["narrative_id"].to_numpy(), sample["narrative_id"].to_numpy()
    fit_info = runs["sample"]["manifest"]["fit_sample"]
    from pipeline import sampling

    rows = sampling.sample_rows(sample["post_id"], fit_info["n_fit"],
                                runs["sample"]["manifest"]["config"]["run"]["seed"])
    placed = np.ones(len(a), dtype=bool)
    placed[rows] = False
    truth = planted_labels(corpus, whole["post_id"])

    def side(name: str, labels: np.ndarray) -> dict:
        m = runs[name]["manifest"]
        st = m["stages"]
        return {"narratives": int(m["counts"]["narratives"]),
                "noise_share": round(float((labels < 0).mean()), 3),
                "nmi_vs_planted": round(float(normalized_mutual_info_score(truth, labels)), 4),
                "reduce_seconds": st["reduce"]["seconds"],
                "cluster_seconds": st["cluster"]["seconds"],
                "peak_rss_mb": m["peak_rss_mb"],
                "wall_seconds": runs[name]["measured"]["wall_seconds"],
                "command": runs[name]["command"]}

    return {
        "size": n_posts, "n_fit": fit_info["n_fit"], "n_placed": fit_info["n_placed"],
        "method": fit_info["method"],
        "ari_all": round(float(adjusted_rand_score(a, b)), 4),
        "nmi_all": round(float(normalized_mutual_info_score(a, b)), 4),
        "ari_placed": round(float(adjusted_rand_score(a[placed], b[placed])), 4),
        "nmi_placed": round(float(normalized_mutual_info_score(a[placed], b[placed])), 4),
        "placed_per_second_upper": round(
            fit_info["n_placed"] / runs["sample"]["manifest"]["stages"]["cluster"]["seconds"], 1),
        "whole": side("whole", a), "sample": side("sample", b),
        "simulate_command": shown(sim_cmd),
    }


def bench(sizes: list[int] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    rows = [one(n) for n in (sizes or [DEFAULT_SIZE])]
    return {"name": "sample_fit", "kind": "sample_fit", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py sample_fit --sizes N", "rows": rows}


def render(res: dict) -> list[str]:
    lines = ["`lockstep cluster` (fast tier) on one simulated corpus, fitted whole "
             "(`cluster.fit_sample=0`) and fitted on a seeded quarter with the rest placed "
             "(`cluster.fit_sample=N/4`). Agreement is between the two runs' `narrative_id` "
             "(noise = -1 counts as a label); NMI vs planted scores each run against the "
             "simulator's narratives.", "",
             "| posts | fitted | placed | ARI all | NMI all | ARI placed | NMI placed | "
             "NMI vs planted (whole / sample) | narratives (whole / sample) | "
             "reduce s (whole / sample) | cluster s (whole / sample) | wall s (whole / sample) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        w, s = r["whole"], r["sample"]
        lines.append(f"| {r['size']:,} | {r['n_fit']:,} | {r['n_placed']:,} | {r['ari_all']} | "
                     f"{r['nmi_all']} | {r['ari_placed']} | {r['nmi_placed']} | "
                     f"{w['nmi_vs_planted']} / {s['nmi_vs_planted']} | {w['narratives']} / "
                     f"{s['narratives']} | {w['reduce_seconds']} / {s['reduce_seconds']} | "
                     f"{w['cluster_seconds']} / {s['cluster_seconds']} | {w['wall_seconds']} / "
                     f"{s['wall_seconds']} |")
    lines += ["", "Placement: " + res["rows"][0]["method"] + ". Commands:", ""]
    for r in res["rows"]:
        lines += [f"- `{r['simulate_command']}`", f"- `{r['whole']['command']}`",
                  f"- `{r['sample']['command']}`"]
    if res.get("note"):
        lines += ["", res["note"]]
    return lines


if __name__ == "__main__":
    print(json.dumps(bench([int(a) for a in sys.argv[1:]] or None), indent=2))
