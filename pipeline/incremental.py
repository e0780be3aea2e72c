"""Incremental runs: `lockstep cluster CORPUS --out RUN --update` adds new posts to a finished run.

RUN holds a finished run of an earlier version of the corpus. When the corpus keeps every post
of that run unchanged (same post_id, same values in every column but where the row sits in the
files, ``source_file`` / ``source_row``) and the config is the same in
everything that decides the fit (``FIT_SECTIONS``; ``SAFE_KEYS`` may differ), the update

- keeps the earlier run's fit: UMAP and HDBSCAN are not refitted, and every earlier post keeps
  its narrative id, membership strength and noise-rule flag;
- reuses the earlier run's vectors and embeds only the new posts (through the embedding cache);
- places the new posts with that fit as a run fitted on a sample places the posts outside its
  sample, with the same ``cluster.place_method`` (assign.Placer: a vote of the nearest fit posts
  for knn, UMAP ``transform`` -> ``hdbscan.approximate_predict`` for transform, then the
  per-narrative similarity floor -> the fit's noise rule; pipeline/sampling.py), in fixed
  chunks of ``sampling.CHUNK`` new posts in corpus order, so the same corpus, config and
  earlier run give the same labels;
- runs summaries, coordination, escalation, exports and the report on the whole corpus.

Otherwise (no finished run in RUN, a changed fit config, a post of the earlier run missing or
changed, another embedding model) it says why and runs the whole pipeline: it never labels a
corpus with a fit it cannot vouch for. The manifest's ``update`` section records which of the
two happened, how many posts were new, and how many of them were placed in a narrative or left
as noise. A reused fit describes the corpus it was fitted on; when the new posts are more than
``cluster.update_max_new_share`` of the corpus, or are left as noise at a rate more than
``cluster.update_max_extra_noise`` above the earlier run's, the update warns (terminal and
manifest) and recommends a full refit (the same command without ``--update``).

The earlier run's manifest.json is removed when the update starts, so an interrupted update
leaves a folder that is not a finished run (a later ``--update`` then runs the whole pipeline,
resuming its finished stages) rather than one whose manifest describes other outputs.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import checkpoint, cluster, jitcache, refine, sampling
from .atomic import atomic_path, file_sha256, write_parquet
from .schema import ASSIGNMENTS, POSTS, PROVENANCE_COLUMNS, SCHEMA_VERSION

log = logging.getLogger(__name__)

# config sections that decide the fit and the placement of posts: an update needs them unchanged
FIT_SECTIONS = ("run", "ingest", "embed", "reduce", "cluster", "refine", "assign")
# keys of those sections that may change (where caches live; the update's own thresholds);
# summarise, codebook, coordination and engine may change freely: they run on the whole corpus
SAFE_KEYS = {"embed": ("cache_dir",), "cluster": ("update_max_new_share", "update_max_extra_noise")}
FIT_ROWS = "fit_rows.npy"
VECTOR_BLOCK = 65536  # rows of the earlier run's vectors copied at a time (64 MB at 256 dims)


@dataclass
class Base:
    """What an update takes from the finished run in RUN (read before anything is overwritten)."""

    posts: pd.DataFrame
    labels: np.ndarray
    probabilities: np.ndarray
    reassigned: np.ndarray
    vectors: np.ndarray
    fit_rows: np.ndarray  # rows of ``posts`` the fit was made on
    reducer_file: Path  # the fitted UMAP's pickle: read only when the placement needs it
    clustering: object
    merges: list
    id_map: dict[int, int]
    model_id: str
    input_hash: str
    fit_input_hash: str  # the corpus of the full run whose fit this is (updates keep it)
    noise_share: float
    fingerprint: str


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(then: dict, now: dict) -> list[str]:
    """The fit-deciding settings that differ: 'section.key: earlier -> now'."""
    changes = []
    for section in FIT_SECTIONS:
        a, b = _flat(then.get(section, {})), _flat(now.get(section, {}))
        for k in sorted(set(a) | set(b)):
            if k in SAFE_KEYS.get(section, ()) or a.get(k) == b.get(k):
                continue
            changes.append(f"{section}.{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}")
    return changes


def _intact(ckpt: checkpoint.Checkpoints, stage: str) -> dict | None:
    """The stage record of the earlier run, if every output it lists has the recorded bytes."""
    try:
        record = json.loads((ckpt.folder / f"{stage}.json").read_text(encoding="utf-8"))
        for name, digest in record["outputs"].items():
            if file_sha256(ckpt.out_dir / name) != digest:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


class Updater:
    """One `--update` request: load the earlier run, check the new corpus against it, and (when
    both hold) run the embed, reduce and cluster stages as an update. ``active`` says whether the
    update is used; ``reason`` why not."""

    def __init__(self, out_dir: Path, cfg) -> None:
        self.out_dir = Path(out_dir)
        self.cfg = cfg
        self.ckpt = checkpoint.Checkpoints(self.out_dir)
        self.base: Base | None = None
        self.active = False
        self.reason = ""
        self.note: dict = {}
        self.warnings: list[str] = []
        self.fit_rows: np.ndarray | None = None
        self.fingerprint = ""

    # -- before ingest -----------------------------------------------------------------------
    def load(self) -> None:
        """Read the earlier run into memory (before this run overwrites any of it)."""
        try:
            self.base = self._load()
        except _NoBase as exc:
            self._fall_back(str(exc))
        # from here on the folder's outputs are rewritten: it stops being the earlier run
        (self.out_dir / "manifest.json").unlink(missing_ok=True)

    def _load(self) -> Base:
        out_dir = self.out_dir
        manifest_path = out_dir / "manifest.json"
        if not manifest_path.exists():
            raise _NoBase(f"{out_dir} holds no finished run (no manifest.json)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _NoBase(f"{manifest_path} is not readable ({exc})") from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise _NoBase(f"the earlier run has schema version {manifest.get('schema_version')!r}"
                          f", this Lockstep {SCHEMA_VERSION}")
        changes = config_changes(manifest.get("config", {}), self.cfg.to_dict())
        if changes:
            more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
            raise _NoBase("the config changed in settings that decide the fit: "
                          + "; ".join(changes[:3]) + more)
        records = {s: _intact(self.ckpt, s) for s in ("ingest", "embed", "reduce", "cluster")}
        broken = [s for s, r in records.items() if r is None]
        if broken:
            raise _NoBase(f"the earlier run's {', '.join(broken)} outputs in {out_dir} are missing "
                          "or were changed after it finished")
        posts = pd.read_parquet(out_dir / "posts.parquet")
        assigned = pd.read_parquet(out_dir / "assignments.parquet")
        # memory-mapped: the update replaces vectors.npy by a rename, this mapping stays valid
        vectors = np.load(self.ckpt.path("vectors.npy"), mmap_mode="r")
        if not assigned["post_id"].equals(posts["post_id"]) or len(vectors) != len(posts):
            raise _NoBase(f"the posts, assignments and vectors in {out_dir} do not match row for "
                          "row (an interrupted run?)")
        cluster_data = records["cluster"].get("data", {})
        if cluster_data.get("fit_rows"):  # the earlier run was an update: its fit's rows
            fit_rows = np.load(self.ckpt.path(FIT_ROWS))
        else:  # a full run: every post, or the seeded sample (pipeline/sampling.py)
            sample = sampling.sample_rows(posts["post_id"], self.cfg.cluster.fit_sample,
                                          self.cfg.run.seed)
            fit_rows = np.arange(len(posts)) if sample is None else sample
        labels = assigned["narrative_id"].to_numpy(dtype=np.int64)
        # this run's own pickle: its sha256 was checked against the stage records above
        clustering = pickle.loads(self.ckpt.path("clustering.pkl").read_bytes())  # noqa: S301
        fingerprint = checkpoint.key("update base", manifest.get("input_hash"),
                                     *(records[s]["outputs"] for s in records))
        return Base(posts=posts, labels=labels,
                    probabilities=assigned["probability"].to_numpy(dtype=np.float32),
                    reassigned=np.load(self.ckpt.path("reassigned.npy")).astype(bool),
                    vectors=vectors, fit_rows=np.asarray(fit_rows, dtype=np.int64),
                    reducer_file=self.ckpt.path("reducer.pkl"), clustering=clustering,
                    merges=cluster_data.get("merges", []),
                    id_map={int(k): int(v) for k, v in cluster_data.get("id_map", {}).items()},
                    model_id=str(manifest.get("embed", {}).get("model_id", "")),
                    input_hash=str(manifest.get("input_hash", "")),
                    fit_input_hash=str((manifest.get("update") or {}).get("fit_input_hash")
                                       or manifest.get("input_hash", "")),
                    noise_share=float((labels < 0).mean()) if len(labels) else 0.0,
                    fingerprint=fingerprint)

    def _fall_back(self, reason: str) -> None:
        self.base, self.active, self.reason = None, False, reason
        self.note = {"requested": True, "used": False, "reason": reason}
        log.warning("update: %s; running the whole pipeline (UMAP and HDBSCAN refitted on every "
                    "post)", reason)

    # -- after ingest ------------------------------------------------------------------------
    def prepare(self, posts: pd.DataFrame, model_id: str, embed_cfg, embedder, eng,
                progress=None) -> None:
        """Match the new corpus against the earlier run; ``active`` when the update holds."""
        if self.base is None:
            return
        base = self.base
        if model_id != base.model_id:
            return self._fall_back(f"the earlier run embedded with {base.model_id}, this run "
                                   f"would embed with {model_id}")
        pos = pd.Index(posts["post_id"]).get_indexer(base.posts["post_id"])
        missing = np.flatnonzero(pos < 0)
        if len(missing):
            return self._fall_back(
                f"{_posts(len(missing))} of the earlier run not in this corpus (first: "
                f"post_id {_shown(base.posts['post_id'].iloc[missing[0]])})")
        # where a row sits in the files may change (rows re-sorted, files added): the values not
        cols = [c for c in POSTS.names if c not in PROVENANCE_COLUMNS]
        then = pd.util.hash_pandas_object(base.posts[cols].reset_index(drop=True), index=False)
        now = pd.util.hash_pandas_object(posts[cols].iloc[pos].reset_index(drop=True),
                                         index=False)
        changed = np.flatnonzero(then.to_numpy() != now.to_numpy())
        if len(changed):
            i = changed[0]
            cols_changed = [c for c in cols if not _same(base.posts[c].iloc[i],
                                                         posts[c].iloc[pos[i]])]
            return self._fall_back(
                f"{_posts(len(changed))} of the earlier run changed (first: post_id "
                f"{_shown(base.posts['post_id'].iloc[i])}, column "
                f"{', '.join(cols_changed) or '?'})")
        is_new = np.ones(len(posts), dtype=bool)
        is_new[pos] = False
        self.pos, self.new_rows = pos, np.flatnonzero(is_new)
        self.posts, self.embed_cfg, self.embedder, self.eng = posts, embed_cfg, embedder, eng
        self.progress = progress
        self.fit_rows = np.sort(pos[base.fit_rows]).astype(np.int64)
        self.fingerprint = base.fingerprint
        self.active = True
        log.info("update: %s posts of the earlier run kept, %s new", f"{len(pos):,}",
                 f"{len(self.new_rows):,}")

    def stage(self, name: str, stage_key: str) -> dict:
        """Run stage ``name`` as an update, write its outputs and checkpoint record (``key``);
        the record, marked fresh, for runner._Stages (the runner then reads the outputs back)."""
        t0 = time.perf_counter()
        info = getattr(self, f"_{name}")()
        info["seconds"] = round(time.perf_counter() - t0, 3)
        from .runner import peak_rss_mb

        info["peak_rss_mb"] = peak_rss_mb()
        info.setdefault("update", True)
        outputs = info.pop("_outputs")
        data = info.pop("_data", {})
        self.ckpt.done(name, stage_key, outputs, info, data=data)
        return {"info": info, "data": data, "fresh": True}

    def _embed(self) -> dict:
        from . import embed

        base, n = self.base, len(self.posts)
        texts = self.posts["text"].to_numpy(dtype=object)[self.new_rows].tolist()
        d = base.vectors.shape[1]
        if texts:
            report = self.progress("embedding new posts") if self.progress else None
            new, estats = embed.run(texts, self.embed_cfg, embedder=self.embedder,
                                    progress=report,
                                    mapper=self.eng.map if self.eng.name != "local" else None)
            if new.shape[1] != d:
                raise AssertionError(f"new vectors have {new.shape[1]} dimensions, the earlier "
                                     f"run's {d}")
            stats = asdict(estats)
        else:
            new = np.empty((0, d), dtype=np.float32)
            stats = {"n_texts": 0, "n_unique": 0, "n_cached": 0, "n_embedded": 0,
                     "model_id": base.model_id}
        self._write_vectors(n, new)
        what = (f"{len(self.pos):,} vectors of the earlier run kept; {len(texts):,} new posts -> "
                f"{stats['n_unique']:,} distinct texts, {stats['n_cached']:,} cached, "
                f"{stats['n_embedded']:,} embedded")
        return {"n_in": n, **stats, "n_new_posts": len(texts), "n_kept": len(self.pos),
                "what": what, "_outputs": [f"{checkpoint.FOLDER}/vectors.npy"]}

    def _write_vectors(self, n: int, new: np.ndarray) -> None:
        """vectors.npy for the whole corpus: the earlier run's rows where they are now, the new
        posts' in their rows, through the embed stage's own file sink (short-lived maps, the
        same bytes np.save writes, renamed into place when complete), so the update never holds
        the corpus's vectors in memory; the earlier file stays readable through base.vectors'
        mapping after the rename."""
        from .embed import _Sink

        sink = _Sink(n, self.ckpt.path("vectors.npy"))
        for start in range(0, len(self.pos), VECTOR_BLOCK):
            stop = start + VECTOR_BLOCK
            sink.put(self.pos[start:stop], np.asarray(self.base.vectors[start:stop]))
        sink.put(self.new_rows, new)
        sink.finish()

    def _reduce(self) -> dict:
        outputs = [f"{checkpoint.FOLDER}/coords.npy", "map.parquet",
                   f"{checkpoint.FOLDER}/reducer.pkl"]
        return {"n_in": len(self.fit_rows), "what": f"the earlier run's fit kept (fitted on "
                f"{len(self.fit_rows):,} posts; not refitted)", "_outputs": outputs}

    def _cluster(self) -> dict:
        from . import assign, model

        base, cfg, n = self.base, self.cfg, len(self.posts)
        fit = refine.Refined(base.labels[base.fit_rows], base.reassigned[base.fit_rows],
                             base.merges, base.id_map)
        fit_vectors = np.asarray(base.vectors[base.fit_rows])
        cents, raw_to_final, members = model.fitted_parts(fit_vectors, base.clustering, fit)
        n_new = len(self.new_rows)
        # the same place_method as the earlier run (it is a fit setting, so the configs agree),
        # and for knn the same choice of neighbours as a run that places as many posts
        reducer = (_read_reducer(base.reducer_file)
                   if sampling.needs_reducer(cfg.cluster, len(base.fit_rows), n_new) else None)
        # (knn only asks whether there is one: HDBSCAN is not unpickled, nor imported)
        clusterer = (base.clustering.model if cfg.cluster.place_method == "knn"
                     else cluster.fitted_model(base.clustering))
        placer = assign.Placer(
            reducer, clusterer, raw_to_final,
            np.asarray(cents, np.float32),
            model.similarity_floor(members, len(cents), cfg.assign.member_quantile),
            cfg.refine.reassign_noise, cfg.refine.reassign_min_similarity,
            cfg.assign.min_probability,
            **sampling.knn_fields(cfg.cluster, reducer, fit.labels, fit_vectors, n_new))
        del fit_vectors
        labels = np.full(n, -1, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float32)
        reassigned = np.zeros(n, dtype=bool)
        labels[self.pos], probs[self.pos], reassigned[self.pos] = (base.labels,
                                                                   base.probabilities,
                                                                   base.reassigned)
        parts = sampling.chunks(self.new_rows)
        if parts:
            ref = (placer if self.eng.name == "local"
                   else sampling.save_placer(placer, self.ckpt.path("placer.pkl")))
            results = self.eng.map(sampling.place_chunk, [ref] * len(parts),
                                   [str(self.ckpt.path("vectors.npy"))] * len(parts), parts)
            for rows, (lab, pr, via) in zip(parts, results):
                labels[rows], probs[rows], reassigned[rows] = lab, pr, via
            self.ckpt.path("placer.pkl").unlink(missing_ok=True)
        assignments = pd.DataFrame({"post_id": self.posts["post_id"].to_numpy(),
                                    "narrative_id": labels,
                                    "probability": np.round(probs, 6).astype(np.float32)})
        write_parquet(pa.Table.from_pandas(assignments, schema=ASSIGNMENTS, preserve_index=False),
                      self.out_dir / "assignments.parquet")
        _save_array(reassigned, self.ckpt.path("reassigned.npy"))
        _save_array(self.fit_rows, self.ckpt.path(FIT_ROWS))

        new = labels[self.new_rows]
        new_noise = int((new < 0).sum())
        new_noise_share = new_noise / n_new if n_new else 0.0
        new_share = n_new / n if n else 0.0
        ccfg = cfg.cluster
        if new_share > ccfg.update_max_new_share:
            self.warnings.append(
                f"{n_new:,} of {n:,} posts are new ({new_share:.0%}), more than "
                f"cluster.update_max_new_share ({ccfg.update_max_new_share:.0%}): the earlier fit "
                "may not describe the corpus any more; run without --update for a full refit")
        if n_new and new_noise_share > base.noise_share + ccfg.update_max_extra_noise:
            self.warnings.append(
                f"{new_noise:,} of the {n_new:,} new posts ({new_noise_share:.0%}) fit no "
                f"narrative of the earlier fit, against {base.noise_share:.0%} noise in the "
                f"earlier run (more than cluster.update_max_extra_noise = "
                f"{ccfg.update_max_extra_noise:.0%} above it): they may be a narrative the fit "
                "never saw; run without --update for a full refit")
        for w in self.warnings:
            log.warning("update: %s", w)
        n_narratives = int(labels.max()) + 1 if n and labels.max() >= 0 else 0
        self.note = {
            "requested": True, "used": True,
            "earlier_input_hash": base.input_hash, "fit_input_hash": base.fit_input_hash,
            "n_posts_earlier": len(self.pos),
            "n_posts": n, "n_new": n_new, "new_share": round(new_share, 4),
            "new_placed_in_narratives": int((new >= 0).sum()),
            "new_placed_by_noise_rule": int(reassigned[self.new_rows].sum()),
            "new_left_as_noise": new_noise, "new_noise_share": round(new_noise_share, 4),
            "earlier_noise_share": round(base.noise_share, 4),
            "n_fit": len(self.fit_rows), "n_placed_chunks": len(parts),
            "thresholds": {"update_max_new_share": ccfg.update_max_new_share,
                           "update_max_extra_noise": ccfg.update_max_extra_noise},
            "warnings": list(self.warnings), "refit_recommended": bool(self.warnings),
            "method": sampling.method_text(placer),
        }
        n_noise = int((labels < 0).sum())
        return {
            "n_in": n, "n_narratives": n_narratives, "n_noise": n_noise,
            "merges": base.merges, "n_reassigned_noise": int(reassigned.sum()),
            "fit_sample": {"n_fit": len(self.fit_rows), "n_placed": n - len(self.fit_rows),
                           "method": sampling.method_text(placer), "n_chunks": len(parts),
                           "chunk": sampling.CHUNK,
                           "placed_in_narratives": int((labels >= 0).sum()
                                                       - (labels[self.fit_rows] >= 0).sum()),
                           "placed_as_noise": n_noise - int((labels[self.fit_rows] < 0).sum())},
            "update": self.note,
            "what": (f"{n_new:,} new posts placed with the earlier fit: "
                     f"{self.note['new_placed_in_narratives']:,} in narratives, {new_noise:,} "
                     f"noise; {len(self.pos):,} earlier posts keep their narratives "
                     f"({n_narratives} narratives, {n_noise / n:.0%} noise)"),
            "_outputs": ["assignments.parquet", f"{checkpoint.FOLDER}/reassigned.npy",
                         f"{checkpoint.FOLDER}/clustering.pkl", f"{checkpoint.FOLDER}/{FIT_ROWS}"],
            "_data": {"merges": base.merges,
                      "id_map": {str(k): v for k, v in base.id_map.items()},
                      "fit_rows": FIT_ROWS, "update": True},
        }

    def manifest(self) -> dict:
        return self.note or {"requested": True, "used": False, "reason": self.reason}

    def card(self) -> dict:
        """For the saved model's card: its fit is an earlier run's, this run placed new posts."""
        note = self.note
        return {"fit_input_hash": note["fit_input_hash"],
                "earlier_input_hash": note["earlier_input_hash"], "n_new": note["n_new"],
                "n_fit": note["n_fit"], "refit_recommended": note["refit_recommended"]}


class _NoBase(Exception):
    """The earlier run cannot be the base of an update (the message says why)."""


def _same(a, b) -> bool:
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    return bool(a == b)


def _posts(n: int) -> str:
    return f"{n:,} post" + ("" if n == 1 else "s")


def _shown(value: object) -> str:
    from .display import safe

    return repr(safe(value, 60))


def _read_reducer(path: Path) -> object | None:
    """The earlier run's fitted UMAP (None when it fitted none). Its sha256 was checked when
    the update began, and the update keeps the file as it is. umap is imported first, so that
    its numba functions (transform's too) get the on-disk cache."""
    jitcache.import_umap()
    return pickle.loads(path.read_bytes())  # noqa: S301 (this run's own pickle)


def _save_array(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
