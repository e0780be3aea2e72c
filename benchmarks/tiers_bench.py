"""Embedding tiers side by side: posts/s, peak memory and clustering NMI of each tier.

    .venv/bin/python benchmarks/run.py tiers           # writes results/tiers.json, RESULTS.md
    .venv/bin/python benchmarks/tiers_bench.py speed TIER [THREADS]   # one speed row, as JSON
    .venv/bin/python benchmarks/tiers_bench.py speeds       # all speed rows -> results/tiers.json
    .venv/bin/python benchmarks/tiers_bench.py nmi SET TIER [--reuse]  # one NMI row -> the same

The last two rerun one part and keep the rest of results/tiers.json (each row carries its own
command, time and load average); `run.py --render-only` then rewrites RESULTS.md.

Speed: the same texts (SPEED_PER_SET random posts from each shared clustering set, seed 0) go
through `pipeline.embed.run` with the cache off, so every text is embedded (cold) with the
pipeline's dedup and length-sorted batches. Each tier runs in a fresh Python process, so its
peak RSS (getrusage ru_maxrss) is its own; loading the model is timed apart from embedding.
The tiers run one after another in the same benchmark run; compare them as ratios. The
machine is shared, so wall-clock posts/s move with other load; posts per CPU second (process
time, all threads) are recorded too and are steadier. The speed rows also time `quality-s3`,
the quality tier's model run as session 3 ran it (fixed batches of 64, spinning threads; see
`fixed_batch_onnx`), and `quality-sorted`, the same model batched by token count.

NMI: every tier clusters all four shared sets with the real pipeline (`lockstep cluster`, default
config apart from `embed.tier`), as the clustering benchmark does. These runs share one
persistent vector cache (benchmarks/out/tiers-cache, one folder per model id), so vectors made
by an earlier run are reused; `embed_cached` / `embed_embedded` in each row say which it was.
Cached and fresh vectors are the same vectors, so NMI does not depend on it; the timings of
these runs are not speed figures (the speed rows are).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LOCKSTEP_SHARED_DATA", ROOT.parent / "shared" / "data"))
SETS = ("searchsnippets", "stackoverflow", "agnews_8000", "biomedical")  # NMI runs in this order
TIERS = ("quality-torch", "quality", "fast", "quality-sorted")
# speed only: the quality tier's model run as session 3 ran it (see FixedBatchOnnx)
BEFORE = "quality-s3"
SPEED_PER_SET = 500
SPEED_PASSES = 5  # cold passes per speed row; the row is their median
# sets clustered on a seeded stratified subsample (the same posts for every tier), so that the
# torch fp32 reference finishes on the shared 2-core machine: set -> posts kept
SUBSAMPLE = {"biomedical": 8000}
COMMAND = ".venv/bin/python benchmarks/run.py tiers"


def speed_texts() -> list[str]:
    texts = []
    for name in SETS:
        with open(SHARED / "clustering" / f"{name}.tsv", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        random.Random(0).shuffle(lines)
        texts += [line.partition("\t")[2] for line in lines[:SPEED_PER_SET]]
    return texts


def fixed_batch_onnx():
    """The quality tier's embedder as it was before issue 5's batching work (session 3), for the
    speed comparison only: the same int8 model and threads, batches of ``batch_size`` texts in
    the order ``run`` sends (by characters), each padded by the tokenizer to its longest text,
    and ONNX Runtime's threads spinning while they wait (its default)."""
    import numpy as np

    from pipeline import embed

    class FixedBatchOnnx(embed.OnnxEmbedder):
        def _load(self):
            if not self._sessions:
                import onnxruntime as ort

                super()._load()
                opts = ort.SessionOptions()
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.intra_op_num_threads = self.n_threads
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                self._sessions = [ort.InferenceSession(str(self.folder / "model.onnx"), opts,
                                                       providers=["CPUExecutionProvider"])]
                pad = self._tokenizer.id_to_token(self._pad_id)
                self._tokenizer.enable_padding(pad_id=self._pad_id, pad_token=pad)
            return self._sessions, self._tokenizer

        def embed(self, texts):
            (session,), tokenizer = self._load()
            out = []
            for start in range(0, len(texts), self.batch_size):
                enc = tokenizer.encode_batch(list(texts[start:start + self.batch_size]))
                ids = np.array([e.ids for e in enc], dtype=np.int64)
                mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
                hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                            "token_type_ids": np.zeros_like(ids)})[0]
                weights = mask[:, :, None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
                out.append(embed._normalise_rows(pooled))
            return np.concatenate(out)

    return FixedBatchOnnx


def speed_one(tier: str, n_threads: int | None, vectors_out: Path | None) -> dict:
    """Embed the speed texts with one tier in this process (cache off), ``SPEED_PASSES`` times,
    each pass cold: a new embedder, loaded and warmed up on one other text before the clock
    starts, so nothing of an earlier pass is reused. The row's seconds are the passes' median
    (a pass of the fast tier is about 50 ms, where one reading of the clock says little)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from pipeline import embed
    from pipeline.config import EmbedConfig

    texts = speed_texts()
    # session 3 ran batches of 64 (the quality tier's were 16 in session 10, one text since 11)
    cfg = (EmbedConfig(tier="quality", batch_size=64, cache_dir="") if tier == BEFORE else
           EmbedConfig(tier=tier, cache_dir=""))

    def new_embedder():
        embedder = embed.make_embedder(cfg)
        if tier == BEFORE:  # the same model folder and model id (the same vectors)
            embedder = fixed_batch_onnx()(embedder.folder, embedder.model_id,
                                          embedder.batch_size)
        if n_threads is not None:
            embedder.n_threads = n_threads
        embedder.embed(["warm up the model"])  # loads it: weights, session, tokenizer
        return embedder

    walls, cpus, loads = [], [], []
    for _ in range(SPEED_PASSES):
        t0 = time.perf_counter()
        embedder = new_embedder()
        loads.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        vectors, stats = embed.run(texts, cfg, embedder=embedder)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        del embedder
    seconds, cpu_seconds = float(np.median(walls)), float(np.median(cpus))
    if vectors_out is not None:
        np.save(vectors_out, vectors)
    return {"tier": tier, "threads": n_threads or os.cpu_count(), "model_id": stats.model_id,
            "posts": len(texts), "unique_texts": stats.n_unique, "dim": int(vectors.shape[1]),
            "passes": SPEED_PASSES, "load_seconds": round(loads[0], 2),
            "seconds": round(seconds, 4),
            "seconds_min_max": [round(min(walls), 4), round(max(walls), 4)],
            "posts_per_second": round(len(texts) / seconds, 1),
            "cpu_seconds": round(cpu_seconds, 4),
            "posts_per_cpu_second": round(len(texts) / cpu_seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_speed(tier: str, n_threads: int | None, vectors_out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "speed", tier,
           str(n_threads or 0), str(vectors_out)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def new_result() -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    return {"name": "tiers", "machine": machine(), "measured_at": _now(), "command": COMMAND,
            "speed_per_set": SPEED_PER_SET, "speed": [], "nmi": []}


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure_speed(res: dict, save_partial=None) -> None:
    """Every speed row, one after another in this run, then the ratios between them."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import OUT

    res["speed"] = []
    res["speed_measured_at"] = _now()
    vec_dir = OUT / "tiers-vectors"
    vec_dir.mkdir(parents=True, exist_ok=True)
    # the quality tier as session 3 ran it, now and batched by token count, then 1 thread:
    # the thread check
    runs = [("quality-torch", None), (BEFORE, None), ("quality", None), ("quality-sorted", None),
            ("fast", None), ("quality", 1), ("quality-sorted", 1)]
    for tier, threads in runs:
        load_before = _load()
        row = run_speed(tier, threads, vec_dir / f"{tier}-{threads or 0}.npy")
        row["load_before"], row["load_after"] = load_before, _load()
        res["speed"].append(row)
        print(f"speed {tier} ({row['threads']} threads): {row['posts_per_second']} posts/s, "
              f"load {load_before[0]} -> {row['load_after'][0]}", file=sys.stderr)
        if save_partial:
            save_partial(res)
    torch_v = np.load(vec_dir / "quality-torch-0.npy")
    onnx_v = np.load(vec_dir / "quality-0.npy")
    cosine = (torch_v * onnx_v).sum(axis=1)
    res["int8_vs_fp32_cosine"] = {"mean": round(float(cosine.mean()), 4),
                                  "p01": round(float(np.quantile(cosine, 0.01)), 4),
                                  "min": round(float(cosine.min()), 4)}
    sorted_v = (torch_v * np.load(vec_dir / "quality-sorted-0.npy")).sum(axis=1)
    res["int8_sorted_vs_fp32_cosine"] = {"mean": round(float(sorted_v.mean()), 4),
                                         "p01": round(float(np.quantile(sorted_v, 0.01)), 4),
                                         "min": round(float(sorted_v.min()), 4)}
    default = [r for r in res["speed"] if r["threads"] == os.cpu_count()]
    pps = {r["tier"]: r["posts_per_second"] for r in default}
    cpu = {r["tier"]: r["posts_per_cpu_second"] for r in default}
    pairs = (("quality / quality-torch", "quality", "quality-torch", 2),
             ("quality-sorted / quality-torch", "quality-sorted", "quality-torch", 2),
             ("quality-sorted / quality", "quality-sorted", "quality", 2),
             (f"quality / {BEFORE}", "quality", BEFORE, 2),
             ("fast / quality", "fast", "quality", 1))
    res["ratios"] = {k: round(pps[a] / pps[b], d) for k, a, b, d in pairs}
    res["cpu_ratios"] = {k: round(cpu[a] / cpu[b], d) for k, a, b, d in pairs}


def measure_nmi(name: str, tier: str, reuse: bool = False) -> dict:
    """One NMI row: the real pipeline on one shared set with one tier. ``reuse``: read a run
    already finished in the row's output folder by the same command (its manifest names the
    same corpus, tier and cache) instead of running it again; the row says so."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    corpus, label, labels = set_corpus(name)  # also puts benchmarks/ on the path
    from run import OUT, run_cluster

    out = OUT / "runs" / f"{label}-{tier}"
    load_before = _load()
    reused = reuse and _finished_run(out, corpus, tier, OUT / "tiers-cache")
    if reused:
        manifest = json.loads((out / "manifest.json").read_text())
        wall = manifest["seconds_total"]
        cmd = run_cluster_command(corpus, out, [f"embed.tier={tier}"], OUT / "tiers-cache")
    else:
        manifest, wall, cmd = run_cluster(corpus, out, [f"embed.tier={tier}"],
                                          cache=OUT / "tiers-cache")
    pred = pd.read_parquet(out / "assignments.parquet")["narrative_id"].to_numpy()
    emb = manifest["stages"]["embed"]
    return {
        "set": name, "tier": tier, "posts": int(len(pred)), "subsample": SUBSAMPLE.get(name),
        "narratives": int(manifest["counts"]["narratives"]),
        "noise_share": round(float((pred < 0).mean()), 3),
        "nmi": round(float(normalized_mutual_info_score(labels, pred)), 4),
        "ari": round(float(adjusted_rand_score(labels, pred)), 4),
        "embed_cached": emb.get("n_cached"), "embed_embedded": emb.get("n_embedded"),
        "wall_seconds": round(wall, 1), "peak_rss_mb": manifest["peak_rss_mb"],
        "measured_at": (_mtime(out / "manifest.json") if reused else _now()),
        **({"reused_run": True, "wall_seconds_from": "manifest seconds_total"} if reused else
           {"load_before": load_before, "load_after": _load()}),
        "command": " ".join(shlex.quote(c) for c in cmd).replace(str(ROOT) + "/", ""),
    }


# run.seed of the NMI rows above; nmi-seed rows add others, since one clustering's NMI moves by
# a few hundredths with the seed or the CPU (umap's numba code), more than issue 5's 0.01
DEFAULT_SEED = 42
# what nmi-seed runs leave out: the summaries and the saved model (NMI is decided before them)
SEED_RUN_SETS = ["summarise.max_texts_for_terms=20", "summarise.max_texts_for_entities=1"]


def measure_nmi_seed(name: str, tier: str, seed: int) -> dict:
    """NMI of one shared set and tier with ``run.seed`` = ``seed`` (vectors from the same
    persistent cache as the NMI rows)."""
    import pandas as pd
    from sklearn.metrics import normalized_mutual_info_score

    corpus, label, labels = set_corpus(name)  # also puts benchmarks/ on the path
    from run import OUT, run_cluster

    out = OUT / "runs" / f"{label}-{tier}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    manifest, wall, cmd = run_cluster(corpus, out, [f"embed.tier={tier}", f"run.seed={seed}",
                                                    *SEED_RUN_SETS],
                                      cache=OUT / "tiers-cache", flags=["--no-save-model"])
    pred = pd.read_parquet(out / "assignments.parquet")["narrative_id"].to_numpy()
    return {"set": name, "tier": tier, "seed": seed, "posts": int(len(pred)),
            "narratives": int(manifest["counts"]["narratives"]),
            "nmi": round(float(normalized_mutual_info_score(labels, pred)), 4),
            "wall_seconds": round(wall, 1), "measured_at": _now(),
            "command": " ".join(shlex.quote(c) for c in cmd).replace(str(ROOT) + "/", "")}


def seed_summary(res: dict) -> dict:
    """Per set and tier: NMI over every seed measured (the NMI row's seed included), mean and
    standard deviation; and, on the seeds it shares with quality-torch, each tier's mean
    minus quality-torch's."""
    import statistics

    runs: dict = {}
    for r in res.get("nmi", []):
        runs.setdefault((r["set"], r["tier"]), {})[DEFAULT_SEED] = r["nmi"]
    for r in res.get("nmi_seeds", []):
        runs.setdefault((r["set"], r["tier"]), {})[r["seed"]] = r["nmi"]
    out = {}
    for (name, tier), by_seed in runs.items():
        if len(by_seed) < 2:
            continue
        values = list(by_seed.values())
        out[f"{name}: {tier}"] = {"seeds": sorted(by_seed), "n": len(values),
                                  "mean": round(statistics.mean(values), 4),
                                  "sd": round(statistics.stdev(values), 4)}
    # a tier against quality-torch on the seeds both were run with, so a seed added to one
    # tier alone never moves the difference
    for key, v in out.items():
        name, tier = key.split(": ")
        ref = runs.get((name, "quality-torch"))
        if ref is None or tier == "quality-torch":
            continue
        mine = runs[(name, tier)]
        common = sorted(set(mine) & set(ref))
        if len(common) < 2:
            continue
        v["compared"] = {
            "seeds": common,
            "mean": round(statistics.mean(mine[s] for s in common), 4),
            "sd": round(statistics.stdev(mine[s] for s in common), 4),
            "quality_torch_mean": round(statistics.mean(ref[s] for s in common), 4),
            "quality_torch_sd": round(statistics.stdev(ref[s] for s in common), 4)}
        v["minus_quality_torch"] = round(v["compared"]["mean"]
                                         - v["compared"]["quality_torch_mean"], 4)
    return out


def _finished_run(out: Path, corpus: Path, tier: str, cache: Path) -> bool:
    path = out / "manifest.json"
    if not path.exists() or not (out / "assignments.parquet").exists():
        return False
    manifest = json.loads(path.read_text())
    embed = manifest["config"]["embed"]
    return (Path(manifest["corpus"]).resolve() == corpus.resolve() and embed["tier"] == tier
            and Path(embed["cache_dir"]).resolve() == cache.resolve())


def _mtime(path: Path) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
        timespec="seconds")


def run_cluster_command(corpus: Path, out: Path, sets: list[str], cache: Path) -> list[str]:
    """The command run_cluster runs (benchmarks/run.py), for a row read from a finished run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import LOCKSTEP

    return LOCKSTEP + ["-q", "cluster", str(corpus), "--out", str(out), "--set",
                       f"embed.cache_dir={cache}"] + [a for s in sets for a in ("--set", s)]


def set_corpus(name: str):
    """A shared set as a corpus folder for `lockstep cluster` (written once): its folder, its
    label (the set's name, with the subsample size where there is one) and each post's class."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import OUT, tsv_to_corpus

    tsv, label = set_tsv(name, OUT)
    corpus = OUT / "corpora" / label
    return corpus, label, tsv_to_corpus(tsv, corpus)


def set_tsv(name: str, out: Path) -> tuple[Path, str]:
    """The set's file, or for a set in SUBSAMPLE a stratified subsample of it: the same share of
    every class (largest remainders for the rounding), rows chosen with seed 0, file order kept."""
    import numpy as np

    tsv = SHARED / "clustering" / f"{name}.tsv"
    if name not in SUBSAMPLE:
        return tsv, name
    n_keep = SUBSAMPLE[name]
    label = f"{name}-{n_keep}"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    classes = np.asarray([line.partition("\t")[0] for line in lines])
    names, counts = np.unique(classes, return_counts=True)
    share = counts * n_keep / len(lines)
    quota = np.floor(share).astype(int)
    quota[np.argsort(-(share - quota), kind="stable")[: n_keep - quota.sum()]] += 1
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(classes == c), q, replace=False)
                           for c, q in zip(names, quota)])
    path = out / "subsets" / f"{label}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[i] + "\n" for i in np.sort(keep)), encoding="utf-8")
    return path, label


def put_nmi(res: dict, row: dict) -> None:
    """Add an NMI row (replacing one of the same set and tier), in SETS x TIERS order."""
    rows = [r for r in res["nmi"] if (r["set"], r["tier"]) != (row["set"], row["tier"])]
    rows.append(row)
    rows.sort(key=lambda r: (SETS.index(r["set"]), TIERS.index(r["tier"])))
    res["nmi"] = rows
    by = {(r["set"], r["tier"]): r["nmi"] for r in rows}
    res["nmi_delta"] = {f"{name}: {tier} - quality-torch":
                        round(by[(name, tier)] - by[(name, "quality-torch")], 4)
                        for name in SETS for tier in ("quality", "fast")
                        if (name, tier) in by and (name, "quality-torch") in by}
    res["nmi_delta"].update({f"{name}: fast - quality":
                             round(by[(name, "fast")] - by[(name, "quality")], 4)
                             for name in SETS if (name, "fast") in by and (name, "quality") in by})


def complete(res: dict) -> bool:
    """Every speed row and every (set, tier) NMI row is there."""
    have = {(r["set"], r["tier"]) for r in res.get("nmi", [])}
    return bool(res.get("ratios")) and all((n, t) in have for n in SETS for t in TIERS)


def bench(save_partial=None) -> dict:
    res = new_result()
    measure_speed(res, save_partial)
    res["speed_command"] = COMMAND
    for name in SETS:
        for tier in TIERS:
            put_nmi(res, measure_nmi(name, tier))
            print(f"nmi {name} {tier}: {res['nmi'][-1]['nmi']}", file=sys.stderr)
            if save_partial:
                save_partial(res)
    return res


def update(part: list[str]) -> dict:
    """Rerun one part (``speeds`` or ``nmi SET TIER [--reuse]``) into results/tiers.json, keeping
    the rest. The part is measured first, then merged under a lock into the file as it is then,
    so parts run side by side do not drop each other's rows. The file stays marked partial
    until every row is there."""
    import fcntl

    path = ROOT / "benchmarks" / "results" / "tiers.json"
    if part[0] == "speeds":
        measured = new_result()
        measure_speed(measured)
    elif (part[0] == "nmi" and len(part) in (3, 4) and part[1] in SETS and part[2] in TIERS
          and part[3:] in ([], ["--reuse"])):
        row = measure_nmi(part[1], part[2], reuse=part[3:] == ["--reuse"])
    elif (part[0] == "nmi-seed" and len(part) == 4 and part[1] in SETS and part[2] in TIERS
          and part[3].isdigit()):
        row = measure_nmi_seed(part[1], part[2], int(part[3]))
    else:
        raise SystemExit(f"usage: tiers_bench.py speeds | nmi SET TIER [--reuse] | nmi-seed SET "
                         f"TIER SEED (SET one of {SETS}, TIER one of {TIERS})")
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    with open(ROOT / "benchmarks" / "out" / "tiers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(path.read_text()) if path.exists() else new_result()
        if part[0] == "speeds":
            # session 10: quality's batches are 16, so no longer the same as session 3's
            res.pop("quality_vs_s3_identical", None)
            for key in ("speed", "speed_measured_at", "int8_vs_fp32_cosine",
                        "int8_sorted_vs_fp32_cosine", "ratios",
                        "cpu_ratios", "machine", "speed_per_set"):
                res[key] = measured[key]
            res["speed_command"] = ".venv/bin/python benchmarks/tiers_bench.py speeds"
        elif part[0] == "nmi-seed":
            res["nmi_seeds"] = [r for r in res.get("nmi_seeds", [])
                                if (r["set"], r["tier"], r["seed"]) != (row["set"], row["tier"],
                                                                        row["seed"])] + [row]
        else:
            put_nmi(res, row)
        res["measured_at"] = _now()
        if complete(res):
            res.pop("partial", None)
        else:
            res["partial"] = True
        path.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "speed":
        threads = int(sys.argv[3]) if len(sys.argv) > 3 and int(sys.argv[3]) > 0 else None
        out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
        print(json.dumps(speed_one(sys.argv[2], threads, out)))
    elif len(sys.argv) >= 2 and sys.argv[1] in ("speeds", "nmi", "nmi-seed"):
        update(sys.argv[1:])
    else:
        print(json.dumps(bench(), indent=2))
