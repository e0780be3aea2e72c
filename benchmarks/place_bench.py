"""Placing the posts past the fit sample: `cluster.place_method` transform against knn.

    .venv/bin/python benchmarks/run.py place

Needs a finished fast-tier `lockstep cluster` run of the 1M simulated corpus made with
`cluster.place_method = "transform"` (the default before knn): its checkpoint folder (vectors.npy,
reducer.pkl, clustering.pkl) and its assignments.parquet, the "before" labels, in
benchmarks/out/scale/runs/fast-1000000 (or $LOCKSTEP_PLACE_RUN), and the corpus's truth.json in
benchmarks/out/scale/corpora/sim-1000000 (or $LOCKSTEP_PLACE_CORPUS). Nothing is written there.

In one process: the fit's parts are rebuilt from the checkpoint as the cluster stage builds them
(the same sample, refine.run on the fit's HDBSCAN labels, model.fitted_parts; the fit's labels
must equal the run's), then

- transform: the first $LOCKSTEP_PLACE_TRANSFORM_ROWS placed posts (50,000, one placement
  chunk, by default) are placed as the run placed them (assign.Placer, UMAP transform +
  approximate_predict); they must get the run's labels back, and the time per post is the
  "before" speed;
- knn: every placed post is placed with `cluster.place_method = "knn"` through
  sampling.place_rest, in the run's chunks, on the local engine; timed whole.

Reported: seconds and posts per second of both (the ratio is what counts: the machine is
shared), the share of placed posts that knn puts in the same narrative as the run (noise = -1
is a label), the noise shares, and NMI against the planted narratives over all posts (fit sample
+ placed) for the run and for knn. Peak RSS is this whole measuring process's.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("LOCKSTEP_PLACE_RUN",
                          ROOT / "benchmarks" / "out" / "scale" / "runs" / "fast-1000000"))
CORPUS = Path(os.environ.get("LOCKSTEP_PLACE_CORPUS",
                             ROOT / "benchmarks" / "out" / "scale" / "corpora" / "sim-1000000"))
TRANSFORM_ROWS = int(os.environ.get("LOCKSTEP_PLACE_TRANSFORM_ROWS", 50_000))
# optional: a run of the same corpus fitted whole (cluster.fit_sample=0), to score both methods
# against, and the name of the result (benchmarks/results/<name>.json)
WHOLE = os.environ.get("LOCKSTEP_PLACE_WHOLE", "")
NAME = os.environ.get("LOCKSTEP_PLACE_NAME", "place")
ENV = ("LOCKSTEP_PLACE_RUN", "LOCKSTEP_PLACE_CORPUS", "LOCKSTEP_PLACE_TRANSFORM_ROWS",
       "LOCKSTEP_PLACE_WHOLE", "LOCKSTEP_PLACE_NAME", "LOCKSTEP_PLACE_NEIGHBORS")


def bench(transform_rows: int = TRANSFORM_ROWS,
          neighbors: int = int(os.environ.get("LOCKSTEP_PLACE_NEIGHBORS", 0))) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    sys.path.insert(0, str(ROOT))
    from pipeline import assign, config, model, refine, sampling
    from pipeline.diskvectors import DiskVectors
    from pipeline.engine import LocalEngine

    cfg = config.load(None)
    knn_cluster = replace(cfg.cluster, place_method="knn",
                          place_neighbors=neighbors or cfg.cluster.place_neighbors)
    ck = RUN / ".lockstep"
    posts = pd.read_parquet(RUN / "posts.parquet", columns=["post_id"])
    n_fit = json.loads((ck / "cluster.json").read_text())["info"]["fit_sample"]["n_fit"]
    sample = sampling.sample_rows(posts["post_id"], n_fit, cfg.run.seed)
    fit_vectors = DiskVectors(ck / "vectors.npy")[sample]
    with open(ck / "clustering.pkl", "rb") as fh:
        clustering = pickle.load(fh)  # noqa: S301 (a run's own checkpoint, made here)
    with open(ck / "reducer.pkl", "rb") as fh:
        reducer = pickle.load(fh)  # noqa: S301
    refined = refine.run(clustering.labels, fit_vectors, cfg.refine)
    before = pd.read_parquet(RUN / "assignments.parquet")
    old = before["narrative_id"].to_numpy(dtype=np.int64)
    if not (old[sample] == refined.labels).all():
        raise SystemExit(f"{RUN}: the fit rebuilt here does not give the run's labels")
    cents, raw_to_final, members = model.fitted_parts(fit_vectors, clustering, refined)
    base = assign.Placer(reducer, clustering.model, raw_to_final, np.asarray(cents, np.float32),
                         model.similarity_floor(members, len(cents), cfg.assign.member_quantile),
                         cfg.refine.reassign_noise, cfg.refine.reassign_min_similarity,
                         cfg.assign.min_probability)
    rest = sampling.rest_rows(len(posts), sample)
    probabilities = np.where(refined.reassigned, 0.0, clustering.probabilities)

    # before: the run's own method on its first placement chunk
    rows = rest[:transform_rows]
    t0 = time.perf_counter()
    got = base.place(DiskVectors(ck / "vectors.npy")[rows], with_coords=False)
    t_transform = time.perf_counter() - t0
    same_as_run = float((got.labels == old[rows]).mean())

    knn = replace(base, **sampling.knn_fields(knn_cluster, reducer, refined.labels, fit_vectors,
                                              len(rest)))
    if knn.method != "knn":
        raise SystemExit("the knn placer was not built")
    load = os.getloadavg()
    t0 = time.perf_counter()
    placed = sampling.place_rest(len(posts), sample, refined.labels, probabilities,
                                 refined.reassigned, knn, ck / "vectors.npy", LocalEngine().map)
    t_knn = time.perf_counter() - t0
    load_after = os.getloadavg()
    new = placed.labels

    truth_posts = json.loads((CORPUS / "truth.json").read_text())["posts"]
    truth = [truth_posts[p][0] for p in posts["post_id"]]
    del truth_posts
    nmi = {"transform": round(float(normalized_mutual_info_score(truth, old)), 4),
           "knn": round(float(normalized_mutual_info_score(truth, new)), 4)}
    truth_rest = [truth[i] for i in rest]
    nmi_placed = {"transform": round(float(normalized_mutual_info_score(truth_rest, old[rest])),
                                     4),
                  "knn": round(float(normalized_mutual_info_score(truth_rest, new[rest])), 4)}
    both = (old[rest] >= 0) & (new[rest] >= 0)
    whole = {}
    if WHOLE:  # agreement of each method's placed posts with a fit on the whole corpus
        w = pd.read_parquet(Path(WHOLE) / "assignments.parquet")
        if not w["post_id"].equals(before["post_id"]):
            raise SystemExit(f"{WHOLE}: not the same posts")
        wl = w["narrative_id"].to_numpy(dtype=np.int64)[rest]
        whole = {m: {"ari_placed": round(float(adjusted_rand_score(wl, lab[rest])), 4),
                     "nmi_placed": round(float(normalized_mutual_info_score(wl, lab[rest])), 4)}
                 for m, lab in (("transform", old), ("knn", new))}
    env = " ".join(f"{k}={os.environ[k]}" for k in ENV if os.environ.get(k))
    return {
        "name": NAME, "kind": "place", "machine": _machine(), "vs_whole_fit": whole,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": (env + " " if env else "") + ".venv/bin/python benchmarks/run.py place",
        "run": str(RUN.relative_to(ROOT) if RUN.is_relative_to(ROOT) else RUN),
        "n_posts": len(posts), "n_fit": int(len(sample)), "n_placed": int(len(rest)),
        "place_neighbors": knn_cluster.place_neighbors,
        "transform": {"rows": int(len(rows)), "seconds": round(t_transform, 1),
                      "posts_per_second": round(len(rows) / t_transform, 1),
                      "same_labels_as_run": round(same_as_run, 4)},
        "knn": {"rows": int(len(rest)), "seconds": round(t_knn, 1),
                "posts_per_second": round(len(rest) / t_knn, 1), "method": placed.info["method"]},
        "speedup": round((len(rest) / t_knn) / (len(rows) / t_transform), 1),
        "same_narrative_placed": round(float((old[rest] == new[rest]).mean()), 4),
        "same_narrative_where_both_in_one": round(float((old[rest] == new[rest])[both].mean()),
                                                  4),
        "noise_share_placed": {"transform": round(float((old[rest] < 0).mean()), 4),
                               "knn": round(float((new[rest] < 0).mean()), 4)},
        "noise_share_all": {"transform": round(float((old < 0).mean()), 4),
                            "knn": round(float((new < 0).mean()), 4)},
        "narratives_hit": {"transform": int(len(np.unique(old[old >= 0]))),
                           "knn": int(len(np.unique(new[new >= 0])))},
        "nmi_vs_planted_all": nmi, "nmi_vs_planted_placed": nmi_placed,
        "load_average": [round(x, 2) for x in load], "load_average_after": [
            round(x, 2) for x in load_after],
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _machine() -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    return machine()


def render(res: dict) -> list[str]:
    t, k = res["transform"], res["knn"]
    lines = [f"Placing the {res['n_placed']:,} posts past the {res['n_fit']:,}-post fit sample "
             f"of `{res['run']}` ({res['n_posts']:,} simulated posts, fast tier), in one process. "
             "transform = "
             "`cluster.place_method=transform` (UMAP transform + approximate_predict, the "
             "run's method), timed "
             f"on the first {t['rows']:,} placed posts (it gave the run's labels back for "
             f"{t['same_labels_as_run']:.1%} of them); knn = `cluster.place_method=knn` "
             f"({res['place_neighbors']} neighbours), every placed post. Noise, narratives "
             "and NMI of transform are the run's own labels (every placed post).", "",
             "| method | posts timed | seconds | posts/s | noise (placed) | noise (all) | "
             "narratives | NMI vs planted (all) | NMI vs planted (placed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in (("transform", t), ("knn", k)):
        lines.append(f"| {name} | {m['rows']:,} | {m['seconds']} | {m['posts_per_second']} | "
                     f"{res['noise_share_placed'][name]:.1%} | {res['noise_share_all'][name]:.1%}"
                     f" | {res['narratives_hit'][name]} | {res['nmi_vs_planted_all'][name]} | "
                     f"{res['nmi_vs_planted_placed'][name]} |")
    lines += ["", f"knn is {res['speedup']}x the posts per second of transform; it puts "
              f"{res['same_narrative_placed']:.1%} of the placed posts in the same narrative as "
              f"the run (noise = -1 is a label; {res['same_narrative_where_both_in_one']:.1%} "
              "of those both methods put in some narrative). Load average at the start "
              f"{res['load_average']}, at the end {res['load_average_after']}; peak RSS of the "
              f"measuring process {res['peak_rss_mb']} MB."]
    for m, v in res.get("vs_whole_fit", {}).items():
        lines += ["", f"Against a fit on the whole corpus (`LOCKSTEP_PLACE_WHOLE`), placed posts: "
                  f"{m} ARI {v['ari_placed']}, NMI {v['nmi_placed']}."]
    c = res.get("cluster_stage")
    if c:
        lines += ["", f"The whole cluster stage of the 1M run with knn (HDBSCAN on the fit sample, "
                  f"refine, placing 900,000 posts, writing the assignments; ingest, embed and "
                  f"reduce resumed from the checkpoint): {c['seconds']} s wall, "
                  f"{c['user_seconds']} s user CPU, peak RSS of the whole process "
                  f"{c['peak_rss_mb']} MB; {c['placed_in_narratives']:,} placed in narratives, "
                  f"{c['placed_as_noise']:,} noise, {c['n_narratives']} narratives. Load "
                  f"{c['uptime_start'].split('average: ')[1]} at the start, "
                  f"{c['uptime_end'].split('average: ')[1]} at the end. Before (not measured "
                  f"here): {c['before_not_measured_here']}. Command: `{c['command']}`"]
    d = res.get("reduce_stage")
    if d:
        lines += ["", f"The reduce stage of the same run, rerun ({d['note']}): "
                  f"{d['seconds']} s wall, {d['user_seconds']} s user CPU, peak RSS "
                  f"{d['peak_rss_mb']} MB; load {d['uptime_start'].split('average: ')[1]} at the "
                  f"start, {d['uptime_end'].split('average: ')[1]} at the end. Command: "
                  f"`{d['command']}`"]
    if res.get("note"):
        lines += ["", res["note"]]
    return lines


if __name__ == "__main__":
    print(json.dumps(bench(), indent=2))
