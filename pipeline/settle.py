"""What imports make, left out of the cycle collector's passes in a process that runs one job.

The ``lockstep`` command runs one job and exits. What its imports make (modules, functions,
classes, numba's dispatchers: some 300,000 objects for pandas, umap with numba and
scikit-learn, spaCy ...) lives until the exit, yet every full collection walks it: the runner's
one per stage (``runner.release_memory``) and Python's own. ``gc.freeze()`` moves every object
alive to a generation the collector never walks.

``now()`` collects, then freezes, and only once ``one_job()`` has said the process is such a
job (``cli.entry``); called from Python (tests, notebooks, engine workers) it does nothing.
``importing()`` wraps the imports at start (``cli``) and each heavy import a run makes later
(``jitcache.import_umap``, ``spacy_load.import_spacy``, in the middle of a run): the collector
is off while they run, then ``now()``.

A frozen object is still freed when its last reference goes; only a cycle among frozen objects
is never collected. So whatever else is alive at that moment (the run's tables, built from Arrow
and numpy, which hold no cycles) is freed as before when it is dropped.
"""

from __future__ import annotations

import gc
import logging
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

_one_job = False


def one_job() -> None:
    """This process runs one job and exits: ``now()`` freezes from here on."""
    global _one_job
    _one_job = True


@contextmanager
def importing(what: str, collect: bool = True) -> Iterator[None]:
    """Around heavy imports: in a one-job process, the collector is off during them, then
    ``now(what, collect)``. What they make lives as long as the process, and the collector's
    passes over it freed nothing (about 0.1 s of a small update). Elsewhere this does
    nothing."""
    if not _one_job:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        now(what, collect)


def now(after: str, collect: bool = True) -> None:
    """Collect, then leave every object alive out of later collections (in a one-job process;
    the collector is on after). ``after``: what was just imported, for the debug log. Without
    ``collect``, the cycles already dead are frozen with the rest and never freed: only for a
    process that has done nothing but import (a few hundred objects, where the pass that would
    find them walks some 300,000 and takes 60 ms)."""
    if not _one_job:
        return
    if collect:
        gc.collect()
    gc.freeze()
    gc.enable()
    if log.isEnabledFor(logging.DEBUG):  # counting walks every frozen object
        log.debug("gc: %d objects left out of cycle collection after %s",
                  gc.get_freeze_count(), after)
