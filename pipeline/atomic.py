"""Atomic writes: a temporary file in the target folder, fsync, then rename.

A killed run never leaves a half-written output: readers see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


# pyarrow's largest row group by default: pq.write_table splits a bigger table there too
ROW_GROUP = 1024 * 1024


def write_parquet(df: pd.DataFrame | pa.Table, path: str | os.PathLike) -> None:
    """A frame or table as zstd Parquet. A frame longer than one row group is converted to Arrow
    one row group at a time (the same file as converting it whole, without a second copy of all
    its rows in memory)."""
    if isinstance(df, pa.Table) or len(df) <= ROW_GROUP:
        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return
    write_parquet_rows(len(df), lambda start, stop: df.iloc[start:stop], path,
                       pa.Schema.from_pandas(df, preserve_index=False))


def write_parquet_rows(n_rows: int, rows: Callable[[int, int], pd.DataFrame],
                       path: str | os.PathLike, schema: pa.Schema | None = None) -> None:
    """A table of ``n_rows`` rows made one row group at a time: ``rows(start, stop)`` is the
    frame of those rows (all with the same columns). Only one row group is in memory, as a
    frame and as Arrow, at once; the file is the one write_parquet writes for the whole frame.
    Without ``schema`` the first row group's types are used for all (so a column must not be
    all-null there while holding values later)."""
    with atomic_path(path) as tmp:
        writer = None
        try:
            for start in range(0, max(n_rows, 1), ROW_GROUP):
                table = pa.Table.from_pandas(rows(start, min(start + ROW_GROUP, n_rows)),
                                             preserve_index=False, schema=schema)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                    schema = table.schema
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=False, default=str)
        fh.write("\n")


# OWASP CSV-injection guidance: a cell that starts with one of these is read as a formula by
# spreadsheet programs, so it is prefixed with a single quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _formula_like(value: str) -> bool:
    """Starts with a formula character, after any single quotes (so "'=1" stays "'=1")."""
    return value.lstrip("'").startswith(FORMULA_STARTS)


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with ``'``.

    A cell that already starts with quotes before a formula character gets one more, so
    restore_formula gives back exactly what was written."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: "'" + v if isinstance(v, str) and _formula_like(v) else v
            )
    return out


def restore_formula(value: object) -> object:
    """Undo neutralise_formulas for one cell read back from our own CSV."""
    if isinstance(value, str) and value.startswith("'") and _formula_like(value[1:]):
        return value[1:]
    return value


def write_csv(df: pd.DataFrame, path: str | os.PathLike, neutralise: bool = True) -> None:
    """Write CSV atomically; text cells are formula-neutralised unless ``neutralise=False``."""
    if neutralise:
        df = neutralise_formulas(df)
    # the csv module quotes a cell holding "\n" but not one holding a bare "\r", which readers
    # take for a line break: such a file gets every cell quoted
    quoting = csv.QUOTE_ALL if _has_carriage_return(df) else csv.QUOTE_MINIMAL
    with atomic_open(path) as fh:
        df.to_csv(fh, index=False, lineterminator="\n", quoting=quoting)


def _has_carriage_return(df: pd.DataFrame) -> bool:
    for col in df.columns:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            if df[col].map(lambda v: isinstance(v, str) and "\r" in v).any():
                return True
    return "\r" in "".join(map(str, df.columns))


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
