"""`lockstep cluster` measured up to a stage: the CLI in this process, stopped when STOP starts.

    .venv/bin/python benchmarks/until_stage.py STOP cluster CORPUS --out RUN [--set ...]

Prints one JSON line per stage that ran (not resumed from a checkpoint): seconds from its start
to the next stage's start, and this process's peak RSS (MB) when the next stage started (so the
peak of everything up to the end of that stage). At the start of STOP it exits with status 0.
For timing one stage of a 1M run whose earlier stages are checkpointed (copy the run folder
first; the stages it reruns are rewritten).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import checkpoint, cli  # noqa: E402

STOP = sys.argv.pop(1)
_open: dict = {}


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _hook(stage: str, point: str) -> None:
    if point != "start":
        return
    now = time.perf_counter()
    if _open:
        print(json.dumps({"stage": _open["stage"], "seconds": round(now - _open["t0"], 1),
                          "peak_rss_mb": _peak_mb(),
                          "uptime": subprocess.run(["uptime"], capture_output=True,
                                                   text=True).stdout.strip()}), flush=True)
    if stage == STOP:
        sys.stdout.flush()
        os._exit(0)
    print(json.dumps({"start": stage}), flush=True)
    _open.update(stage=stage, t0=now)


checkpoint.hook = _hook
if __name__ == "__main__":
    sys.exit(cli.app())
