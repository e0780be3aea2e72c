"""Start-up of a spawned spaCy analysis process (``narratives.analyse_english``), and the
warm-up of the forked one (``spacy_helper``).

spaCy imports thinc, and thinc imports torch when it can: about 300 MB in every process, which
the small English pipelines never use (their layers run on numpy). This runs before the task's
module (and so spaCy) is imported in the new process, and hides torch from it. A pipeline that
does need torch (a transformer one) then fails in the worker, and the parent analyses that share
itself (``analyse_english``).
"""

import os
import sys


def without_torch() -> None:
    sys.modules.setdefault("torch", None)  # `import torch` now raises ImportError


stop_event = None  # set in an analyse-ahead process (prefetch.py): the run wants no more work


def without_torch_until(stop) -> None:
    """``without_torch``, and keep the event that tells analyse-ahead tasks to stop."""
    global stop_event
    without_torch()
    stop_event = stop


def warm(model: str, parent: int) -> int:
    """In the forked helper (spacy_helper.py): import spaCy and load the English pipeline
    ``model`` now, before the summaries need them; this process's id. A pipeline that cannot
    be loaded fails again in the helper's first task, and this process's parent analyses that
    task itself (and says what is wrong). spaCy's import hides torch itself when the pipeline
    does not need it (spacy_load.import_spacy)."""
    die_with(parent)
    from . import narratives

    try:
        narratives.english(model)
    except Exception:  # noqa: BLE001 (see above)
        pass
    return os.getpid()


def die_with(parent: int) -> None:
    """End this process when ``parent`` ends (Linux's PR_SET_PDEATHSIG). A forked worker
    holds both ends of its pool's pipes, so when a run is killed it would wait for tasks
    forever, and keep open the output pipes of whoever started the run."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux's C library: the check below still runs
        pass
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(0)
