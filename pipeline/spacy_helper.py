"""A spaCy process made ready while the run reads and embeds the corpus.

The summaries analyse English texts with spaCy (``narratives.analyse_english``). Importing spaCy
and loading the English pipeline takes about half a second, and a spawned worker process needs a
second or more before it analyses anything. So a run with a few hundred texts to analyse (an
update, or a small corpus whose texts are cached) did all of it in this process, after loading
spaCy here, with the other core idle.

At the start of ``lockstep cluster``, before any other thread runs and before any model is
loaded, ``start`` forks one process. It imports spaCy and loads the English pipeline on the core
that the imports, ingest and clustering leave free, then waits. The summaries give it analysis
tasks like a spawned worker's (``narratives.analysis_pool``), from the first English text: it
analyses while this process works out the other languages' terms, and this process loads spaCy's
English pipeline only if a task is left for it. On corpora of up to 100,000 posts this process
computes the coordination stage meanwhile (``runner.COORDINATE_MEANWHILE_UP_TO``). A text's
analysis depends on that text alone, so the results are the same either way
(``tests/test_spacy_helper.py``). The helper ends when the run ends, even a killed one
(``_spacy_worker.die_with``).

Linux only, where fork is the default and is safe for a process with no other threads. There is
no helper on other platforms, in a process that already runs other Python threads (a fork would
copy the locks they hold), or when the summaries analyse in one process
(``summarise.n_process=1``, or one CPU). The summaries then work as before.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor

from . import _spacy_worker
from .config import SummariseConfig

log = logging.getLogger(__name__)


class Helper:
    """The forked process (a one-worker pool) and its warm-up."""

    def __init__(self, model: str):
        self.pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork"))
        # the first task forks the process (a fork pool starts its worker there and then); its
        # result is the process id
        self.ready: Future = self.pool.submit(_spacy_worker.warm, model, os.getpid())

    def close(self) -> None:
        """Stop the process once its current task ends; no task waiting is run. Idempotent."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def start(cfg: SummariseConfig) -> Helper | None:
    """A helper for this run's summaries, or None where there is none (see above)."""
    from .narratives import analysis_processes

    if not sys.platform.startswith("linux") or analysis_processes(cfg, 1 << 40) < 2:
        return None
    if threading.active_count() > 1:
        log.debug("summarise: no spaCy helper process: %d threads run here, and a fork would "
                  "copy their locks", threading.active_count())
        return None
    try:
        return Helper(cfg.spacy_model)
    except OSError as exc:  # no process to be had (limits, memory): the summaries do without
        log.debug("summarise: no spaCy helper process: %s", exc)
        return None
