"""Ingest: raw exports (generic CSV/TSV, JSON Lines, Parquet and the presets) -> posts + rejects.

    result = ingest.run(Path("corpora/my-corpus"), cfg.ingest)
    result.posts      # the POSTS table (schema.POSTS), in file order then row order
    result.rejects    # the REJECTS table: every row not accepted, with a reason code
    result.accounts   # the ACCOUNTS table, or None without an accounts file
    result.stats      # counts: n_rows_in == n_accepted + n_rejected

The corpus contract for analysts is corpora/README.md. Modules, one job each:
files (which files, hash, decoding), readers (chunks of raw cells), presets (where each column
comes from), timestamps, values (cell cleaning), core (the stage itself).
"""

from .core import IngestResult, run
from .files import input_hash, list_files
from .presets import PRESETS

__all__ = ["IngestResult", "PRESETS", "input_hash", "list_files", "run"]
