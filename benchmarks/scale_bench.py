"""Whole-pipeline scale: posts per second and peak memory of every stage on simulated corpora.

    .venv/bin/python benchmarks/run.py scale [--sizes 10000 100000]        # quality tier
    .venv/bin/python benchmarks/run.py scale_fast [--sizes 1000000]        # fast tier

Each size is simulated (`lockstep simulate --seed 21 --n-posts N --n-accounts max(160, N/20)`)
and then clustered by `lockstep cluster` in its own process with a fresh, empty embedding cache,
so the per-stage seconds and peak RSS in the run's manifest.json belong to that size alone.
The stage's "peak RSS" is the process's peak so far (ru_maxrss) when the stage ends, so it
never falls from one stage to the next. The same run is also scored against what the
simulator planted: NMI of `narrative_id` against the planted narrative of each post, and
account-level precision and recall of the escalation list against the planted network.

A rerun with --sizes replaces only those sizes' rows; the other rows keep their own
measured_at, so compare figures as ratios only within one measured_at.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "scale"
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("ingest", "embed", "reduce", "cluster", "summarise", "coordination", "escalate")
# the quality tier embeds ~40-90 posts/s on 2 shared cores: 1M posts would take many hours
DEFAULT_SIZES = {"quality": (10_000, 100_000), "fast": (10_000, 100_000, 1_000_000)}
SIM_SEED = 21


def lockstep_cmd() -> list[str]:
    """The lockstep CLI of the interpreter running this file (the project's .venv)."""
    return [sys.executable, "-m", "pipeline.cli"]


def shown(cmd: list[str]) -> str:
    text = " ".join(shlex.quote(c) for c in cmd)
    return (text.replace(sys.executable + " -m pipeline.cli", ".venv/bin/lockstep")
            .replace(str(ROOT) + "/", ""))


def sim_args(n_posts: int) -> list[str]:
    return ["--seed", str(SIM_SEED), "--n-posts", str(n_posts),
            "--n-accounts", str(max(160, n_posts // 20))]


def simulate_corpus(n_posts: int, folder: Path) -> tuple[list[str], float]:
    """Simulate once per size; an existing corpus with the same config is reused."""
    cmd = lockstep_cmd() + ["-q", "simulate", "--out", str(folder)] + sim_args(n_posts)
    truth = folder / "truth.json"
    if truth.exists():
        cfg = json.loads(truth.read_text())["config"]
        if cfg["seed"] == SIM_SEED and cfg["n_posts"] == n_posts:
            return cmd, 0.0
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=env())
    return cmd, time.perf_counter() - t0


def env() -> dict:
    e = dict(os.environ)
    e.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    e.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
    return e


def run_measured(cmd: list[str], child_env: dict | None = None) -> dict:
    """Run ``cmd`` to the end; its own wall seconds, CPU seconds (user + system, all threads)
    and peak RSS from wait4, so several can run at once without mixing their figures.

    wait4's peak is that of the largest single process. Lockstep also starts processes of its
    own (summarise's spaCy workers), so the sum of the RSS of the command and all its
    descendants is sampled too, every ``TREE_SAMPLE_SECONDS``: ``peak_rss_mb_tree`` (a peak
    shorter than that can be missed)."""
    import threading

    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env or env(), stdout=subprocess.DEVNULL)
    tree_peak, done = [0], threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            total = 0
            for p in [root, *_children(root)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            tree_peak[0] = max(tree_peak[0], total)
            done.wait(TREE_SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return {"wall_seconds": round(wall, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb_wait4": round(usage.ru_maxrss / 1024, 1),
            "peak_rss_mb_tree": round(tree_peak[0] / 2**20, 1)}


TREE_SAMPLE_SECONDS = 0.5


def _children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def planted_labels(corpus: Path, post_ids) -> list[str]:
    """The planted narrative (or breaking-news story) of each post, in ``post_ids`` order."""
    truth = json.loads((corpus / "truth.json").read_text())
    return [truth["posts"][p][0] for p in post_ids]


def coordinated_accounts(corpus: Path) -> set[str]:
    truth = json.loads((corpus / "truth.json").read_text())
    return {a for a, v in truth["accounts"].items() if v["role"] == "coordinated"}


def cluster_measured(corpus: Path, run_dir: Path, sets: list[str],
                     flags: tuple[str, ...] = ()) -> dict:
    """`lockstep cluster` in its own process with new empty embedding and analysis caches
    (removed after), into an emptied ``run_dir`` (a finished run left there would be resumed
    from its checkpoints, not measured):
    the run's manifest and assignments, the measured wall/CPU time and the command shown."""
    import pandas as pd

    shutil.rmtree(run_dir, ignore_errors=True)

    numba_dir = Path(env()["NUMBA_CACHE_DIR"])
    numba_files = len(list(numba_dir.rglob("*.nbi"))) if numba_dir.exists() else 0
    cache = tempfile.mkdtemp(prefix="lockstep-bench-cache-")
    cmd = lockstep_cmd() + ["-q", "cluster", str(corpus), "--out", str(run_dir)]
    # both caches new and empty: the embeddings, and the summaries' per-text spaCy analysis
    # (a run before on the same corpus would otherwise serve the summaries from .cache/analysis)
    cmd += [a for s in [f"embed.cache_dir={cache}/embeddings",
                        f"summarise.cache_dir={cache}/analysis", *sets]
            for a in ("--set", s)] + list(flags)
    try:
        measured = run_measured(cmd)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"manifest": json.loads((run_dir / "manifest.json").read_text()),
            "assign": pd.read_parquet(run_dir / "assignments.parquet"), "measured": measured,
            "command": shown(cmd).replace(cache, "<a new empty folder>"),
            # 0: numba compiles everything in the run; make install fills the cache (jitwarm)
            "numba_index_files_before": numba_files}


def run_lockstep(corpus: Path, run_dir: Path, tier: str) -> dict:
    """`lockstep cluster` in its own process, fresh cache; the manifest plus wall time and NMI."""
    from sklearn.metrics import normalized_mutual_info_score

    run = cluster_measured(corpus, run_dir, [f"embed.tier={tier}"] if tier != "quality" else [])
    manifest, assign, measured = run["manifest"], run["assign"], run["measured"]
    truth = planted_labels(corpus, assign["post_id"])
    pred = assign["narrative_id"].to_numpy()
    with open(run_dir / "escalations.jsonl", encoding="utf-8") as fh:
        found = {json.loads(line)["account_id"] for line in fh if line.strip()}
    planted = coordinated_accounts(corpus)
    stages = manifest["stages"]
    return {
        "posts": int(manifest["counts"]["posts"]),
        "distinct_texts": stages["embed"].get("n_unique"),
        "narratives": int(manifest["counts"]["narratives"]),
        "noise_share": round(float((pred < 0).mean()), 3),
        "planted_narratives": len(set(truth)),
        "nmi": round(float(normalized_mutual_info_score(truth, pred)), 4),
        "escalated": len(found),
        "precision": round(len(found & planted) / len(found), 3) if found else None,
        "recall": round(len(found & planted) / len(planted), 3) if planted else None,
        "wall_seconds": measured["wall_seconds"], "cpu_seconds": measured["cpu_seconds"],
        "pipeline_seconds": manifest["seconds_total"],
        # the whole process to its exit (wait4): the manifest's figure is taken before the
        # report stage, which runs after the manifest is written
        "peak_rss_mb": max(measured["peak_rss_mb_wait4"], manifest["peak_rss_mb"]),
        "peak_rss_mb_manifest": manifest["peak_rss_mb"],
        "peak_rss_mb_tree": measured.get("peak_rss_mb_tree"),
        "stages": {k: {"seconds": v["seconds"], "posts_per_second": v["posts_per_second"],
                       "peak_rss_mb": v["peak_rss_mb"]} for k, v in stages.items()},
        "command": run["command"],
        "numba_index_files_before": run["numba_index_files_before"],
    }


def one(n_posts: int, tier: str) -> dict:
    corpus = OUT / "corpora" / f"sim-{n_posts}"
    sim_cmd, sim_seconds = simulate_corpus(n_posts, corpus)
    row = run_lockstep(corpus, OUT / "runs" / f"{tier}-{n_posts}", tier)
    return as_row(n_posts, tier, sim_cmd, sim_seconds, row)


def as_row(n_posts: int, tier: str, sim_cmd: list[str], sim_seconds: float, row: dict,
           by: str = "scale") -> dict:
    return {"size": n_posts, "tier": tier,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "measured_by": by, "simulate_command": shown(sim_cmd),
            "simulate_seconds": round(sim_seconds, 1), **row}


def record(row: dict) -> None:
    """Merge one size's row into results/scale.json (the bertopic benchmark's Lockstep run is
    the same command on the same corpus, so it fills the scale row of its size)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    name = "scale" if row["tier"] == "quality" else f"scale_{row['tier']}"
    path = RESULTS / f"{name}.json"
    res = json.loads(path.read_text()) if path.exists() else {
        "name": name, "kind": "scale", "tier": row["tier"], "machine": machine(),
        "command": f".venv/bin/python benchmarks/run.py {name} --sizes N [N ...]", "rows": []}
    rows = {r["size"]: r for r in res["rows"]}
    rows[row["size"]] = row
    res["rows"] = [rows[k] for k in sorted(rows)]
    res["measured_at"] = row["measured_at"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")


def bench(tier: str = "quality", sizes: list[int] | None = None) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    name = "scale" if tier == "quality" else f"scale_{tier}"
    old = RESULTS / f"{name}.json"
    rows = {r["size"]: r for r in json.loads(old.read_text())["rows"]} if old.exists() else {}
    for n in sizes or DEFAULT_SIZES.get(tier, DEFAULT_SIZES["quality"]):
        print(f"{name}: {n:,} posts, tier {tier} ...", file=sys.stderr, flush=True)
        rows[n] = one(n, tier)
        r = rows[n]
        print(f"{name}: {n:,} posts in {r['wall_seconds']} s, peak {r['peak_rss_mb']} MB, "
              f"NMI {r['nmi']}, P {r['precision']} R {r['recall']}", file=sys.stderr, flush=True)
    return {"name": name, "kind": "scale", "tier": tier, "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": f".venv/bin/python benchmarks/run.py {name} --sizes N [N ...]",
            "rows": [rows[k] for k in sorted(rows)]}


def render(res: dict) -> list[str]:
    lines = [f"The whole pipeline (`lockstep cluster`, tier `{res['tier']}`, default config, cold "
             "embedding cache) on simulated corpora, each size in its own process. NMI is "
             "`narrative_id` (noise = -1) against each post's planted narrative or news story; "
             "precision and recall are the escalated accounts against the planted network. "
             "Peak RSS of a stage is the process's peak when that stage ends. Rows measured at "
             "different times are not comparable as ratios. Since 2026-11-29 05:00 UTC the "
             "analysis cache is new and empty too, and the numba cache is the one `make install` "
             "fills (each row's JSON has `numba_index_files_before`; 0 or absent: compiled in "
             "the run); each row's note says what else ran beside it.", "",
             "All processes MB is the sum over `lockstep` and the processes it starts (summarise's "
             "spaCy workers), sampled every 0.5 s; empty for rows measured before it was.", "",
             "| posts | distinct texts | narratives | planted | noise | NMI | escalated | "
             "precision | recall | wall s | CPU s | peak RSS MB | all processes MB | "
             "measured at |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['posts']:,} | {r['distinct_texts'] or 0:,} | {r['narratives']} | "
                     f"{r['planted_narratives']} | {r['noise_share']:.1%} | {r['nmi']:.3f} | "
                     f"{r['escalated']} | {r['precision']} | {r['recall']} | "
                     f"{r['wall_seconds']} | {r.get('cpu_seconds', '')} | "
                     f"{r['peak_rss_mb']:,.0f} | "
                     + (f"{r['peak_rss_mb_tree']:,.0f}" if r.get("peak_rss_mb_tree") else "")
                     + f" | {r['measured_at']} |")
    lines += ["", "Seconds, posts per second and peak RSS by stage:", "",
              "| posts | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for r in res["rows"]:
        cells = []
        for s in STAGES:
            st = r["stages"].get(s)
            cells.append("" if st is None else
                         f"{st['seconds']:,.1f} s, "
                         + (f"{st['posts_per_second']:,.0f}/s, " if st["posts_per_second"] else "")
                         + f"{st['peak_rss_mb']:,.0f} MB")
        lines.append(f"| {r['posts']:,} | " + " | ".join(cells) + " |")
    lines += ["", "Commands (simulate, then cluster):", ""]
    for r in res["rows"]:
        by = r.get("measured_by", "scale")
        lines += [f"- {r['size']:,}: `{r['simulate_command']}` then `{r['command']}`"
                  + (f" (run by the `{by}` benchmark; its section says whether BERTopic ran at the "
                     "same time)" if by != "scale" else "")]
    notes = [r for r in res["rows"] if r.get("note") or r.get("load_average")]
    if notes:
        lines += ["", "Notes:", ""]
        for r in notes:
            load = r.get("load_average")
            lines += [f"- {r['size']:,}: " + (f"load average (1, 5, 15 min) at start "
                                              f"{load['start']}, at end {load['end']}. "
                                              if load else "") + r.get("note", "")]
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="quality")
    parser.add_argument("--sizes", nargs="+", type=int)
    args = parser.parse_args()
    print(json.dumps(bench(args.tier, args.sizes), indent=2))
