"""The fast tier before and after its static model was trained (pipeline/static_train.py), over
several seeds: NMI on the shared clustering sets.

    .venv/bin/python benchmarks/run.py fast_training     # writes results/fast_training.json
    .venv/bin/python benchmarks/fast_training.py [SET ...] [--seeds 42,1,2]

One clustering per set and tier moves with the seed by a few hundredths (UMAP's layout), so each
set is clustered with several seeds, and the tiers are compared by their mean. Tiers:

- ``quality-torch``: the reference issue 5 measures against, and ``quality``, the default;
- ``fast-distilled``: the static model as model2vec distils it, before training, built here into
  benchmarks/out/static-distilled with the same distillation parameters the fast tier starts from;
- ``fast``: the fast tier as installed (distilled, then trained).

Each run is the pipeline's own steps in this process: ``embed.run`` (vectors cached in
benchmarks/out/tiers-cache, shared with the tiers benchmark), then ``reduce``, ``cluster`` and
``refine`` with the default config and ``run.seed`` = the seed. At seed 42 this is what
``lockstep cluster`` gives: the tiers benchmark's rows (results/tiers.json) are reproduced.
biomedical is the tiers benchmark's seeded stratified 8,000-post subsample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SEEDS = (42, 1, 2, 3, 4)
TIERS = ("quality-torch", "quality", "fast-distilled", "fast")
COMMAND = ".venv/bin/python benchmarks/run.py fast_training"


def distilled_embedder(out: Path):
    """The fast tier's model before training: build_static with the tier's parameters minus
    the training, built once into ``out``."""
    from pipeline import build_models
    from pipeline.embed import StaticEmbedder

    params = {k: v for k, v in build_models.ARTEFACTS["minilm-l6-static"].params.items()
              if k != "training"}
    stamp = out / "params.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == params):
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        src, _ = build_models.source_model()
        build_models.build_static(src, out, params)
        stamp.write_text(json.dumps(params))
    return StaticEmbedder(out, "lockstep/minilm-l6-static-distilled@" +
                          build_models._digest(build_models._hash_files(out))[:16])


def set_texts(name: str, out: Path) -> tuple[np.ndarray, list[str]]:
    from tiers_bench import set_tsv

    tsv, _ = set_tsv(name, out)
    rows = [line.partition("\t") for line in tsv.read_text(encoding="utf-8").splitlines()]
    return np.asarray([r[0] for r in rows]), [r[2] for r in rows]


def cluster_nmi(vectors: np.ndarray, labels: np.ndarray, cfg, seed: int) -> dict:
    from sklearn.metrics import normalized_mutual_info_score

    from pipeline import cluster, reduce, refine

    coords = reduce.make_reducer(cfg.reduce, seed).fit_transform(vectors)
    clustering = cluster.run(coords, cfg.cluster, 1.0)
    final = refine.run(clustering.labels, vectors, cfg.refine).labels
    return {"nmi": round(float(normalized_mutual_info_score(labels, final)), 4),
            "narratives": int(final.max() + 1), "noise_share": round(float((final < 0).mean()), 3)}


def measure(sets: list[str], seeds: list[int]) -> dict:
    from run import OUT

    from pipeline import config, embed

    cfg = config.load(None)
    cache = OUT / "tiers-cache"
    rows = []
    for name in sets:
        labels, texts = set_texts(name, OUT)
        for tier in TIERS:
            ecfg = replace(cfg.embed, tier="fast" if tier == "fast-distilled" else tier,
                           cache_dir=str(cache))
            embedder = (distilled_embedder(OUT / "static-distilled")
                        if tier == "fast-distilled" else None)
            vectors, stats = embed.run(texts, ecfg, embedder=embedder)
            for seed in seeds:
                started = time.time()
                row = {"set": name, "tier": tier, "seed": seed, "posts": len(texts),
                       "model_id": stats.model_id, **cluster_nmi(vectors, labels, cfg, seed),
                       "seconds": round(time.time() - started, 1), "load": os.getloadavg()[0]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["set"] for r in rows):
        ref = [r["nmi"] for r in rows if r["set"] == name and r["tier"] == "quality-torch"]
        for tier in TIERS:
            nmis = [r["nmi"] for r in rows if r["set"] == name and r["tier"] == tier]
            if not nmis:
                continue
            out.append({"set": name, "tier": tier, "seeds": len(nmis),
                        "mean": round(float(np.mean(nmis)), 4),
                        "min": min(nmis), "max": max(nmis),
                        "mean_minus_quality_torch": (round(float(np.mean(nmis) - np.mean(ref)), 4)
                                                     if ref else None)})
    return out


def bench(sets: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    from tiers_bench import SETS

    from pipeline import build_models

    from run import machine

    started = time.time()
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    res = measure(list(sets or SETS), list(seeds or SEEDS))
    res.update({
        "name": "fast_training", "command": COMMAND, "measured_at": measured_at,
        "machine": machine(),
        "fast_model_training": json.loads(
            (build_models.ARTEFACTS["minilm-l6-static"].folder / "training.json").read_text()),
        "seconds": round(time.time() - started, 1)})
    return res


def render(res: dict) -> list[str]:
    training = res["fast_model_training"]
    lines = [
        "The fast tier's static model before (`fast-distilled`: model2vec's distillation of "
        "MiniLM) and after (`fast`) its training against the quality tier's model on WordNet's "
        "definitions (`pipeline/static_train.py`), beside `quality-torch` (issue 5's "
        "reference) and `quality`, each set clustered with the seeds "
        f"{', '.join(str(s) for s in dict.fromkeys(r['seed'] for r in res['rows']))} "
        "(`run.seed`: UMAP's layout). Same pipeline steps as `lockstep cluster` (embed, reduce, "
        "cluster, refine; default config), run in one process; at seed 42 they give the tiers "
        "section's rows. NMI counts noise as one cluster. biomedical is the tiers benchmark's "
        "stratified 8,000-post subsample.", "",
        f"Training of the installed model: {training['texts']:,} texts "
        f"({training['validation_texts']:,} held out), validation cosine to the teacher by "
        f"pass {training['validation_cosine_by_epoch']} (pass 0: the distilled vectors with a "
        f"least-squares map), pass {training['epoch_kept']} kept.", "",
        "| set | tier | seeds | mean NMI | min | max | mean - quality-torch's | within 0.05 |",
        "|---|---|---|---|---|---|---|---|"]
    for r in res["summary"]:
        delta = r["mean_minus_quality_torch"]
        ok = "" if r["tier"] in ("quality-torch", "quality") or delta is None else (
            "yes" if delta >= -0.05 else "no")
        lines.append(f"| {r['set']} | {r['tier']} | {r['seeds']} | {r['mean']:.4f} | "
                     f"{r['min']:.4f} | {r['max']:.4f} | "
                     f"{'' if delta is None else f'{delta:+.4f}'} | {ok} |")
    lines += ["", "Every run (set, tier, seed: NMI, narratives, noise):", ""]
    for name in dict.fromkeys(r["set"] for r in res["rows"]):
        for tier in TIERS:
            runs = [r for r in res["rows"] if r["set"] == name and r["tier"] == tier]
            if runs:
                lines.append(f"- {name}, {tier} (`{runs[0]['model_id']}`): " + "; ".join(
                    f"seed {r['seed']}: {r['nmi']:.4f}, {r['narratives']}, "
                    f"{r['noise_share']:.1%}" for r in runs))
    if res.get("note"):
        lines += ["", res["note"]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    res = bench(args.sets, [int(s) for s in args.seeds.split(",")])
    res["command"] = " ".join([".venv/bin/python benchmarks/fast_training.py"] + sys.argv[1:])
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    for row in res["summary"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
