"""A fitted narrative model on disk: save it with its card, verify it, load it.

``models/<name>/`` holds

- ``card.json``: what the model is and how it was made: the training data's hash, the resolved
  config, package versions, the embedding tier and model id, the codebook, the narratives with
  their labels, sizes and codebook names, the merges, and the sha256 of every other file;
- ``reducer.pkl``: the fitted UMAP (absent when the run clustered the vectors directly);
- ``clusterer.pkl``: the fitted HDBSCAN, fit with ``prediction_data=True`` so
  ``hdbscan.approximate_predict`` labels new points without refitting (absent when the training
  corpus was too small to cluster);
- ``centroids.npy``: one L2-normalised centroid per narrative in embedding space (read with
  ``allow_pickle=False``);
- ``member_similarities.npy``: (narrative id, cosine to its centroid) for every training member,
  so `assign` can ask how typical a new post is of the narrative it lands in;
- ``codebook.yaml``: a copy of the codebook, when the run had one.

Pickles run code when loaded, so :func:`load` reads every file's bytes, checks them against the
card's sha256 and only then unpickles those same bytes; a mismatch, a missing file or a card of
another version is an InputError naming the file and the fix (refit), and nothing is unpickled.

The folder is built in a temporary folder beside it and renamed into place, so a killed run
leaves the previous model (or none), never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

from . import jitcache
from .atomic import file_sha256, fsync_dir
from .cluster import PickledModel, raw_labels
from .errors import ConfigError, InputError
from .schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

CARD_VERSION = 1
CARD = "card.json"
REDUCER = "reducer.pkl"
CLUSTERER = "clusterer.pkl"
CENTROIDS = "centroids.npy"
CODEBOOK = "codebook.yaml"
MEMBERS = "member_similarities.npy"
KNOWN_FILES = (REDUCER, CLUSTERER, CENTROIDS, MEMBERS, CODEBOOK)
_NAME = regex.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(f"model name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit; pass --model-name NAME")
    return name


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class NarrativeModel:
    """What `lockstep assign` needs: the fitted objects plus the card that describes them."""

    card: dict
    reducer: object | None  # fitted umap.UMAP, or None: coordinates are the vectors themselves
    clusterer: object | None  # fitted hdbscan.HDBSCAN with prediction data, or None
    centroids: np.ndarray  # float32 (n_narratives, d), row i = narrative i
    member_similarities: np.ndarray  # float32 (n_members, 2): narrative id, cosine to centroid
    path: Path | None = None

    def similarity_floor(self, quantile: float) -> np.ndarray:
        """Per narrative, the ``quantile`` of its training members' cosines to its centroid."""
        return similarity_floor(self.member_similarities, len(self.centroids), quantile)

    @property
    def raw_to_final(self) -> dict[int, int]:
        """HDBSCAN's own cluster ids -> the run's narrative ids (after relabelling and merges)."""
        return {int(k): int(v) for k, v in self.card["clusterer"]["raw_to_narrative"].items()}


def similarity_floor(member_similarities: np.ndarray, n_narratives: int,
                     quantile: float) -> np.ndarray:
    """Per narrative, the ``quantile`` of its members' cosines to its centroid (-1: no member)."""
    ids = member_similarities[:, 0].astype(np.int64)
    sims = member_similarities[:, 1]
    out = np.full(n_narratives, -1.0, dtype=np.float64)
    for c in range(n_narratives):
        mine = sims[ids == c]
        if len(mine):
            out[c] = float(np.quantile(mine, quantile, method="lower"))
    return out


def fitted_parts(vectors: np.ndarray, clustering, refined
                 ) -> tuple[np.ndarray, dict[int, int], np.ndarray]:
    """What a fit leaves for placing new posts: the narrative centroids (row i = narrative i),
    HDBSCAN's own ids -> the fit's narrative ids, and (narrative id, cosine to its centroid) of
    every member."""
    from .codebook import centroids as narrative_centroids

    labels = refined.labels
    ids, cents = narrative_centroids(labels, vectors)
    n_narratives = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    if list(ids) != list(range(n_narratives)):
        raise AssertionError("narrative ids must be 0..k-1 to save a model")
    raw_to_final: dict[int, int] = {}
    if clustering.model is not None:
        raw = raw_labels(clustering)
        for r in sorted(int(x) for x in np.unique(raw) if x >= 0):
            raw_to_final[r] = refined.id_map[int(clustering.labels[np.argmax(raw == r)])]
    members = np.flatnonzero(labels >= 0)
    member_sims = np.einsum("ij,ij->i", np.asarray(vectors[members], np.float64),
                            np.asarray(cents[labels[members]], np.float64))
    member_table = np.column_stack([labels[members], member_sims]).astype(np.float32)
    return cents, raw_to_final, member_table


def build_card(*, name: str, corpus: str, input_hash: str, cfg_dict: dict, packages: dict,
               model_id: str, dim: int, narratives: list[dict], n_posts: int, n_noise: int,
               merges: list[dict], n_reassigned: int, raw_to_final: dict[int, int],
               reducer_kind: str, clusterer_kind: str, codebook: dict | None,
               tier: str | None = None, update: dict | None = None) -> dict:
    from . import __version__

    return {
        "card_version": CARD_VERSION,
        "schema_version": SCHEMA_VERSION,
        "lockstep_version": __version__,
        "name": name,
        "training_corpus": corpus,
        "input_hash": input_hash,
        # a model saved by `cluster --update`: the fit is the earlier run's (fit_input_hash is
        # the corpus of the full run that fitted it); this corpus only added placed posts
        "update": update,
        "config": cfg_dict,
        "packages": packages,
        # the tier that ran (embed.tier = "auto" resolves per corpus; a model keeps one)
        "embedding": {"tier": tier or cfg_dict["embed"]["tier"], "model_id": model_id, "dim": int(dim)},
        "reducer": {"kind": reducer_kind},
        "clusterer": {"kind": clusterer_kind,
                      "raw_to_narrative": {str(k): int(v) for k, v in sorted(raw_to_final.items())}},
        "codebook": codebook,
        "n_posts": int(n_posts),
        "n_noise": int(n_noise),
        "n_reassigned_noise": int(n_reassigned),
        "merges": merges,
        "narratives": narratives,
        "files": {},
    }


def save(folder: Path, card: dict, reducer: object | None, clusterer: object | None,
         centroids: np.ndarray, member_similarities: np.ndarray,
         codebook_bytes: bytes | None = None, reducer_file: Path | None = None) -> Path:
    """Write the model to ``folder`` atomically (temporary folder, then rename).

    ``reducer_file``, in place of ``reducer``, is a file already holding the reducer's pickle
    (the run's checkpoint): it is copied as it is, never unpickled here (at a million posts the
    fitted UMAP is hundreds of MB, and unpickling it to pickle it again doubled that)."""
    folder = Path(folder)
    check_name(folder.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    blobs: dict[str, bytes | Path] = {}
    if reducer_file is not None:
        blobs[REDUCER] = Path(reducer_file)
    elif reducer is not None:
        blobs[REDUCER] = pickle.dumps(reducer, protocol=5)
    if isinstance(clusterer, PickledModel):  # a checkpoint's bytes, as they are
        blobs[CLUSTERER] = clusterer.data
    elif clusterer is not None:
        blobs[CLUSTERER] = pickle.dumps(clusterer, protocol=5)
    blobs[CENTROIDS] = _npy(centroids)
    blobs[MEMBERS] = _npy(member_similarities)
    if codebook_bytes is not None:
        blobs[CODEBOOK] = codebook_bytes

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        files = {}
        for fname, data in sorted(blobs.items()):
            if isinstance(data, Path):  # copied, then hashed as written
                shutil.copyfile(data, tmp / fname)
                files[fname] = {"sha256": file_sha256(tmp / fname),
                                "bytes": (tmp / fname).stat().st_size}
            else:
                (tmp / fname).write_bytes(data)
                files[fname] = {"sha256": sha256_bytes(data), "bytes": len(data)}
        card = dict(card, files=files)
        (tmp / CARD).write_bytes(
            (json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n").encode())
        for fname in [*blobs, CARD]:
            with open(tmp / fname, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                        dir=folder.parent))
            os.rmdir(old)
            os.rename(folder, old)
        os.rename(tmp, folder)
        fsync_dir(folder.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def read_card(folder: Path) -> dict:
    """The card, checked for its version; it is plain JSON, so reading it runs no code."""
    folder = Path(folder)
    path = folder / CARD
    if not folder.is_dir():
        raise InputError(f"model {folder} does not exist; fit one with `lockstep cluster CORPUS` "
                         "(it saves models/<corpus>/) and pass --model models/<name>")
    if not path.exists():
        raise InputError(f"model {folder} has no {CARD}; it is not a saved narrative model. "
                         "Refit it with `lockstep cluster CORPUS --model-name NAME`")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"model {folder}: {CARD} is not valid JSON ({exc}); refit the model "
                         "with `lockstep cluster`") from None
    if not isinstance(card, dict):
        raise InputError(f"model {folder}: {CARD} is not a model card; refit the model")
    if card.get("card_version") != CARD_VERSION:
        raise InputError(f"model {folder}: card version {card.get('card_version')!r}, this "
                         f"Lockstep reads version {CARD_VERSION}; refit the model with "
                         "`lockstep cluster`")
    if card.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"model {folder}: made for schema version {card.get('schema_version')!r}"
                         f", this Lockstep uses {SCHEMA_VERSION}; refit the model with "
                         "`lockstep cluster`")
    files = card.get("files")
    if not isinstance(files, dict) or CENTROIDS not in files or MEMBERS not in files:
        raise InputError(f"model {folder}: {CARD} lists no {CENTROIDS} or {MEMBERS}; refit the "
                         "model")
    for fname in files:
        if fname not in KNOWN_FILES:
            raise InputError(f"model {folder}: {CARD} lists an unexpected file {fname!r}; "
                             f"a model holds only {', '.join(KNOWN_FILES)}. Refit the model")
    return card


def verified_bytes(folder: Path, card: dict) -> dict[str, bytes]:
    """Every file the card lists, read once and checked against its sha256 (nothing is loaded)."""
    out: dict[str, bytes] = {}
    for fname, meta in card["files"].items():
        path = Path(folder) / fname
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"model {folder}: {fname} is missing (the card lists it); refit the "
                             "model with `lockstep cluster`") from None
        expected = meta.get("sha256") if isinstance(meta, dict) else None
        if sha256_bytes(data) != expected:
            raise InputError(
                f"model {folder}: {fname} does not match its sha256 in {CARD} (expected "
                f"{str(expected)[:12]}..., found {sha256_bytes(data)[:12]}...); the file was "
                "changed or corrupted after the model was saved, so it is not loaded. Refit the "
                "model with `lockstep cluster CORPUS --model-name NAME`")
        out[fname] = data
    return out


def load(folder: Path) -> NarrativeModel:
    """Verify every file against the card, then (and only then) unpickle."""
    folder = Path(folder)
    card = read_card(folder)
    data = verified_bytes(folder, card)
    _warn_on_version_drift(card)
    import io

    centroids = np.load(io.BytesIO(data[CENTROIDS]), allow_pickle=False)
    members = np.load(io.BytesIO(data[MEMBERS]), allow_pickle=False)
    jitcache.install()  # unpickling imports umap: its numba functions get the on-disk cache
    reducer = pickle.loads(data[REDUCER]) if REDUCER in data else None  # noqa: S301 (verified)
    clusterer = pickle.loads(data[CLUSTERER]) if CLUSTERER in data else None  # noqa: S301
    n = len(card.get("narratives", []))
    if centroids.shape[0] != n:
        raise InputError(f"model {folder}: {CENTROIDS} has {centroids.shape[0]} rows for {n} "
                         "narratives in the card; refit the model")
    return NarrativeModel(card, reducer, clusterer, centroids.astype(np.float32),
                          members.astype(np.float32).reshape(-1, 2), folder)


def _warn_on_version_drift(card: dict) -> None:
    from .runner import package_versions

    now = package_versions()
    for pkg in ("umap-learn", "hdbscan", "scikit-learn", "numpy", "numba", "pynndescent"):
        then = card.get("packages", {}).get(pkg)
        if then is not None and now.get(pkg) not in (None, then):
            log.warning("model: fitted with %s %s, this environment has %s; refit if assignments "
                        "look wrong", pkg, then, now.get(pkg))


def save_fitted(folder: Path, *, corpus: str, input_hash: str, cfg, model_id: str,
                vectors: np.ndarray, reducer_model: object | None, clustering, refined,
                table, codebook_path: str = "", tier: str | None = None,
                reducer_file: Path | None = None, update: dict | None = None) -> Path:
    """Save what a `cluster` run fitted: the glue between runner.cluster_corpus and save().
    ``reducer_file``: the reducer's pickle already on disk, in place of ``reducer_model``."""
    from .runner import package_versions

    labels = refined.labels
    cents, raw_to_final, member_table = fitted_parts(vectors, clustering, refined)
    keep = [c for c in ("narrative_id", "label", "n_posts", "n_accounts", "top_terms",
                        "codebook_name", "codebook_similarity") if c in table.columns]
    narratives = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                  for row in table[keep].to_dict(orient="records")]
    codebook = None
    codebook_bytes = None
    if codebook_path:
        codebook_bytes = Path(codebook_path).read_bytes()
        codebook = {"path": str(codebook_path), "sha256": sha256_bytes(codebook_bytes),
                    "min_similarity": cfg.codebook.min_similarity, "copy": CODEBOOK}
    card = build_card(
        name=Path(folder).name, corpus=corpus, input_hash=input_hash, cfg_dict=cfg.to_dict(),
        packages=package_versions(), model_id=model_id, dim=int(vectors.shape[1]),
        narratives=narratives, n_posts=len(labels), n_noise=int((labels < 0).sum()),
        merges=refined.merges, n_reassigned=refined.n_reassigned, raw_to_final=raw_to_final,
        reducer_kind="umap" if reducer_model is not None or reducer_file is not None
        else "none (vectors as they are)",
        clusterer_kind="hdbscan" if clustering.model is not None else
        "none (too few or identical posts; nearest centroid)",
        codebook=codebook, tier=tier, update=update)
    return save(Path(folder), card, reducer_model, clustering.model, cents, member_table,
                codebook_bytes, reducer_file=reducer_file)
