"""Per-stage checkpoints: a killed `lockstep cluster` resumes from its last finished stage.

After a stage has written its outputs (atomically), a record ``RUN_DIR/.lockstep/<stage>.json``
notes the stage's key (a hash of the input hash, the config sections it reads and the keys of
the stages it depends on) and the sha256 of every output file. A rerun skips a stage whose
record has the same key and whose outputs are all present with the recorded bytes; a changed
input or config changes the key, and a missing or altered output fails the byte check, so the
stage runs again. Records hold hashes and counts only: no post text, no account id, no key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from .atomic import file_sha256, write_json

log = logging.getLogger(__name__)

FOLDER = ".lockstep"
VERSION = 1


def hook(stage: str, point: str) -> None:
    """Called at the start ("start") and in the middle ("middle") of every stage.

    Does nothing; the crash tests replace it (in their own driver process) with one that
    kills the process at a chosen stage, to prove a rerun resumes correctly."""


def key(*parts: object) -> str:
    """A stable hash of JSON-able parts (dict keys sorted)."""
    text = json.dumps([VERSION, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Checkpoints:
    """The stage records of one run folder."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / FOLDER

    def path(self, name: str) -> Path:
        """Where a stage keeps an intermediate result that is not a user-facing output."""
        return self.folder / name

    def finished(self, stage: str, stage_key: str) -> dict | None:
        """The record of ``stage`` ({"info": ..., "data": ...}) if it finished with this key and
        its outputs are intact; else None (the stage must run)."""
        record_path = self.folder / f"{stage}.json"
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != stage_key:
            return None
        for name, digest in record.get("outputs", {}).items():
            path = self.out_dir / name
            try:
                if file_sha256(path) != digest:
                    log.info("%s: %s changed since the stage finished; running it again",
                             stage, name)
                    return None
            except OSError:
                return None
        for name in record.get("absent", []):
            if (self.out_dir / name).exists():
                return None
        return record

    def done(self, stage: str, stage_key: str, outputs: list[str], info: dict,
             data: dict | None = None, absent: list[str] = ()) -> None:
        """Record that ``stage`` finished: call only after every output is written."""
        record = {"stage": stage, "key": stage_key,
                  "outputs": {n: file_sha256(self.out_dir / n) for n in outputs},
                  "absent": list(absent), "info": info, "data": data or {}}
        write_json(record, self.folder / f"{stage}.json")
