"""Analyse ahead: the summaries' spaCy work, started while UMAP holds one core.

A seeded UMAP runs on one core (reduce.py), and so does HDBSCAN, so on a machine with two cores
or more the others wait through reduce and cluster. The summaries then analyse each narrative's
sample of distinct texts: its texts of lowest seeded rank (``narratives._ranks``). Which
narrative a text falls in is not known before clustering, but its rank is, and the texts of
lowest rank in the whole corpus are the likeliest to be in some narrative's sample and in its
entity sample. So while reduce and cluster run, one spawned process analyses the corpus's
English texts in order of rank, with NER, and the summaries take what it finished and analyse
the rest as before.

The results are the same as without it: a text's analysis depends on that text alone, whatever
batch it is in (``tests/test_prefetch.py``), which the analysis cache relies on too. The texts
the cache already has are skipped.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _spacy_worker
from .config import Config, SummariseConfig

log = logging.getLogger(__name__)

# Below this many posts in the fit, UMAP takes a few seconds: less than a new process needs to
# start Python and spaCy, so nothing would be analysed ahead.
MIN_POSTS = 20_000
TEXTS_PER_TASK = 256  # texts per task (one nlp.pipe batch by default: ~1 s with NER)
# texts planned at most: more than one core analyses with NER (~4 ms a text) in the reduce and
# cluster stages of any fit sample (cluster.fit_sample, about 100,000 posts)
MAX_TEXTS = 40_000


def wanted(cfg: Config, n_fit: int) -> bool:
    """Whether a run that fits UMAP on ``n_fit`` posts analyses ahead: summarise.prefetch is on,
    UMAP runs, the fit is large enough, and the analysis may use more than one process."""
    from .narratives import analysis_processes

    return (cfg.summarise.prefetch and cfg.reduce.method == "umap" and n_fit >= MIN_POSTS
            and analysis_processes(cfg.summarise, 1 << 40) >= 2)


@dataclass(frozen=True)
class Plan:
    """What an analyse-ahead process reads, and how much of it it analyses."""

    posts_path: str  # a run's posts.parquet (text and lang)
    seed: int  # run.seed: the ranks the summaries' samples use
    cfg: SummariseConfig
    max_texts: int = MAX_TEXTS
    per_task: int = TEXTS_PER_TASK


class Prefetch:
    """One spawned process analysing, in order of rank, the English texts of ``posts_path``
    (a run's posts.parquet) until ``collect`` or ``close``."""

    def __init__(self, posts_path: str | Path, cfg: SummariseConfig, seed: int,
                 max_texts: int = MAX_TEXTS, per_task: int = TEXTS_PER_TASK) -> None:
        self._started = time.perf_counter()
        plan = Plan(str(posts_path), seed, cfg, max_texts, per_task)
        self._stop = self._pool = None
        self.futures = []
        try:  # (no semaphores, no processes left: the run goes on without it)
            ctx = multiprocessing.get_context("spawn")
            self._stop = ctx.Event()
            self._pool = ProcessPoolExecutor(1, mp_context=ctx,
                                             initializer=_spacy_worker.without_torch_until,
                                             initargs=(self._stop,))
            self.futures = [self._pool.submit(analyse_part, plan, i)
                            for i in range(math.ceil(max_texts / per_task))]
        except Exception as exc:  # noqa: BLE001 (a speed-up only: the summaries do the work)
            log.info("summarise: cannot analyse ahead (%s: %s)", type(exc).__name__, exc)
            self.close()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def collect(self) -> dict[bytes, tuple[list[str], list[tuple[str, str, str]]]]:
        """Stop, and return what was analysed: analysis-cache key -> (terms, entities). A task
        that failed is left out (the summaries analyse its texts themselves)."""
        self.close()
        out: dict[bytes, tuple[list[str], list[tuple[str, str, str]]]] = {}
        failed = None
        for future in self.futures:
            if not future.done() or future.cancelled():
                continue
            exc = future.exception()
            if exc is not None:
                failed = failed or exc
                continue
            out.update((key, (terms, ents)) for key, terms, ents in future.result())
        if failed is not None:  # the summaries analyse what it did not
            log.info("summarise: analysing ahead stopped (%s: %s)", type(failed).__name__, failed)
        log.info("summarise: %d texts analysed ahead in %.1f s, while the fit ran", len(out),
                 time.perf_counter() - self._started)
        return out

    def close(self) -> None:
        """Stop without waiting: a task already running finishes its batch, the rest return."""
        if self._stop is not None:
            self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


# -- in the worker process ---------------------------------------------------------------------

BATCH_ROWS = 65_536  # posts read from posts.parquet at a time
_plan: tuple[Plan, list[tuple[bytes, str, str]]] | None = None
_failed = False


def plan_texts(plan: Plan) -> list[tuple[bytes, str, str]]:
    """(analysis-cache key, text, analyser) of the corpus's distinct English texts, at most
    ``plan.max_texts``, in order of rank; each as its first post in the corpus has it (the
    summaries analyse a text as its first post in a narrative has it, almost always the same),
    with the language the summaries give it (``narratives.post_languages``). Texts the analysis
    cache has with entities are left out. posts.parquet is read a batch at a time: the whole
    corpus is held only as one 8-byte rank per post (a million posts: ~250 MB here in all)."""
    import pyarrow.parquet as pq

    from . import analysis_cache
    from .lang import text_digest
    from .narratives import (SPACY_ANALYSERS, _analysis_cache, _ranks, script_lang,
                             text_analyser, text_key)

    posts = pq.ParquetFile(plan.posts_path)
    rank = np.concatenate([np.zeros(0, np.uint64)] + [
        _ranks([text_digest(text_key(t or "")) for t in batch.column("text").to_pylist()],
               plan.seed) for batch in posts.iter_batches(BATCH_ROWS, columns=["text"])])
    order = np.argsort(rank, kind="stable")  # a key's posts in corpus order
    ranked = rank[order]
    first = np.ones(len(order), bool)
    first[1:] = ranked[1:] != ranked[:-1]
    # one post per key, its first; not the empty key (no sample holds it)
    order = order[first & (ranked != _ranks([text_digest("")], plan.seed)[0])]
    out: list[tuple[bytes, str, str]] = []
    window = 2 * plan.max_texts
    for start in range(0, len(order), window):
        part = order[start:start + window]
        rows = _rows(posts, np.sort(part))
        for i in part.tolist():
            text, given = rows[i]  # an empty lang is guessed from the script, as there
            analyser = text_analyser(given or script_lang(text), not given)
            if analyser not in SPACY_ANALYSERS:
                continue  # other languages are split into words in the summaries, no spaCy
            out.append((analysis_cache.text_hash(analyser, text), text, analyser))
            if len(out) == plan.max_texts:
                break
        if len(out) == plan.max_texts:
            break
    cache = _analysis_cache(plan.cfg)
    if cache is not None:
        hashes = [h for h, _, _ in out]
        have = cache.get(hashes, set(hashes))
        out = [item for item in out if item[0] not in have]
    return out


def _rows(posts, rows: np.ndarray) -> dict[int, tuple[str, str]]:
    """(text, stripped lang) of the posts at positions ``rows`` (sorted) of a
    ``pyarrow.parquet.ParquetFile``, read a batch at a time."""
    import pyarrow as pa

    out: dict[int, tuple[str, str]] = {}
    offset = 0
    for batch in posts.iter_batches(BATCH_ROWS, columns=["text", "lang"]):
        lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
        if hi > lo:
            sub = batch.take(pa.array(rows[lo:hi] - offset))
            for row, text, lang in zip(rows[lo:hi].tolist(), sub.column("text").to_pylist(),
                                       sub.column("lang").to_pylist()):
                out[row] = (text or "", (lang or "").strip())
        offset += batch.num_rows
    return out


def analyse_part(plan: Plan, part: int) -> list[tuple[bytes, list[str], list]]:
    """The ``part``-th ``plan.per_task`` texts of the plan, analysed with NER; nothing once the
    run has stopped this, or after a failure (which is raised once)."""
    global _plan, _failed
    stop = _spacy_worker.stop_event
    if _failed or (stop is not None and stop.is_set()):
        return []
    from .narratives import _analyse_part

    try:
        if _plan is None or _plan[0] != plan:
            _plan = (plan, plan_texts(plan))
        items = _plan[1][part * plan.per_task:(part + 1) * plan.per_task]
        if not items:
            return []
        # (beside the fit, which holds the other CPU)
        found = _analyse_part([(text, analyser) for _, text, analyser in items], True,
                              plan.cfg.spacy_model, plan.cfg.batch_size, shared=True)
    except Exception:
        _failed = True
        raise
    return [(key, terms, ents) for (key, _, _), (terms, ents) in zip(items, found)]
