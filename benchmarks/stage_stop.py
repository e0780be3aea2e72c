"""`lockstep cluster` as the CLI runs it, stopped when a chosen stage starts (for measuring the
stages before it, e.g. the peak memory of ingest + embed at 1M posts without the later ones).

    python benchmarks/stage_stop.py reduce cluster CORPUS --out RUN --set ...

Everything before the stop is the CLI's own code (stages an earlier run finished are resumed from
their checkpoints as usual). When the stop stage starts, the process prints its peak resident
memory so far (``ru_maxrss``) and the seconds since it started (and when each stage it ran started), and exits with status 0 without
running that stage. With ``STAGE_STOP_RSS_LOG=FILE`` it also writes a timeline of its resident
memory (every 0.5 s) to FILE; with ``STAGE_STOP_MEMPROBE=FILE`` it appends, at each stage's start,
one JSON line of where the resident memory is (benchmarks/memprobe.py). Run it under ``/usr/bin/time -v`` for an outside view of the same peak.

It also prints one JSON line per stage that ran (not resumed from a checkpoint): its seconds from
its start to the next stage's start, and the peak RSS (MB) when the next stage started (the peak
of everything up to the end of that stage), with ``uptime``. For timing one stage of a 1M run
whose earlier stages are checkpointed (copy the run folder first; the stages it reruns are
rewritten).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import checkpoint  # noqa: E402

STARTED = time.perf_counter()


def _sample_rss(log_path: str) -> None:
    """Every half second: seconds, resident MB and the last stage point seen, to ``log_path``."""
    with open(log_path, "w", encoding="utf-8") as fh:
        while True:
            with open("/proc/self/statm") as statm:
                rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            fh.write(f"{time.perf_counter() - STARTED:.1f}\t{rss:.0f}\t{POINT[0]}\n")
            fh.flush()
            time.sleep(0.5)


POINT = ["-"]


def main() -> None:
    stop = sys.argv.pop(1)
    if os.environ.get("STAGE_STOP_RSS_LOG"):  # a timeline of resident memory, for finding peaks
        threading.Thread(target=_sample_rss, args=(os.environ["STAGE_STOP_RSS_LOG"],),
                         daemon=True).start()

    starts: dict[str, float] = {}

    def hook(name: str, where: str) -> None:
        POINT[0] = f"{name}:{where}"
        if where == "start" and os.environ.get("STAGE_STOP_MEMPROBE"):
            from memprobe import probe

            with open(os.environ["STAGE_STOP_MEMPROBE"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"stage": name, **probe()}) + "\n")
        if where == "start":
            now = round(time.perf_counter() - STARTED, 1)
            if starts:
                last = max(starts, key=starts.get)
                print(json.dumps({"stage": last, "seconds": round(now - starts[last], 1),
                                  "peak_rss_mb": round(resource.getrusage(
                                      resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                                  "uptime": subprocess.run(["uptime"], capture_output=True,
                                                           text=True).stdout.strip()}),
                      flush=True)
            starts[name] = now
        if name == stop and where == "start":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"stopped at {stop}: peak RSS {peak:,.0f} MB, "
                  f"{time.perf_counter() - STARTED:,.1f} s", flush=True)
            print("stage starts (s): " + json.dumps(starts), flush=True)
            sys.stderr.flush()
            os._exit(0)

    checkpoint.hook = hook
    from pipeline.cli import app

    app(prog_name="lockstep")


if __name__ == "__main__":
    main()
