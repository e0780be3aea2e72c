"""Runs the `lockstep` CLI in a child process for the crash tests (not a test module itself).

The child uses the fast HashingEmbedder instead of the sentence model, and may be told to kill
itself with SIGKILL at a chosen point, which only this driver can arrange:

    LOCKSTEP_TEST_KILL_AT=<stage>[:start|middle]   at that point of a stage of `lockstep cluster`
    LOCKSTEP_TEST_KILL_AT=cache-write:<n>          half-way through writing the n-th embedding
                                                   cache shard (the cache gets one per 64 texts)

    python tests/lockstep_driver.py cluster CORPUS --out RUN ...
"""

from __future__ import annotations

import functools
import io
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from pipeline import checkpoint, embed  # noqa: E402
from tests.conftest import HashingEmbedder  # noqa: E402

CACHE_CHUNK = 64


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_stage(target: str) -> None:
    stage, _, point = target.partition(":")
    point = point or "middle"

    def hook(name: str, where: str) -> None:
        if name == stage and where == point:
            _die()

    checkpoint.hook = hook


def _kill_in_cache_write(n: int) -> None:
    real_put = embed.VectorCache.put
    real_save = np.save
    calls = {"n": 0}

    def torn_save(fh, arr, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(buffer, arr, *args, **kwargs)
        data = buffer.getvalue()
        fh.write(data[: len(data) // 2])  # half a shard on disk, then the process dies
        fh.flush()
        os.fsync(fh.fileno())
        _die()

    def put(self, keys, vectors):
        calls["n"] += 1
        if calls["n"] == n:
            np.save = torn_save
        try:
            return real_put(self, keys, vectors)
        finally:
            np.save = real_save

    embed.VectorCache.put = put


def main() -> None:
    embed.TIERS["quality"] = lambda cfg: HashingEmbedder()
    # several cache shards per run, so a kill can land between two of them
    embed.run = functools.partial(embed.run, chunk_size=CACHE_CHUNK)
    target = os.environ.get("LOCKSTEP_TEST_KILL_AT", "")
    if target.startswith("cache-write:"):
        _kill_in_cache_write(int(target.split(":", 1)[1]))
    elif target:
        _kill_at_stage(target)
    from pipeline.cli import app

    app(prog_name="lockstep")


if __name__ == "__main__":
    main()
