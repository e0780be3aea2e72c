"""Start-up of a spawned spaCy analysis process (``narratives.analyse_english``).

spaCy imports thinc, and thinc imports torch when it can: about 300 MB in every process, which
the small English pipelines never use (their layers run on numpy). This runs before the task's
module (and so spaCy) is imported in the new process, and hides torch from it. A pipeline that
does need torch (a transformer one) then fails in the worker, and the parent analyses that share
itself (``analyse_english``).
"""

import sys


def without_torch() -> None:
    sys.modules.setdefault("torch", None)  # `import torch` now raises ImportError


stop_event = None  # set in an analyse-ahead process (prefetch.py): the run wants no more work


def without_torch_until(stop) -> None:
    """``without_torch``, and keep the event that tells analyse-ahead tasks to stop."""
    global stop_event
    without_torch()
    stop_event = stop
