"""Readers: CSV/TSV, JSON Lines and Parquet files as chunks of raw text cells.

Each reader streams its file in chunks of ``chunk_rows`` rows, so memory stays bounded. A chunk
holds the rows that could be read as cells (``frame``) and the rows that could not (``bad``: a
ragged CSV row, a line that is not a JSON object), each with its 1-based data-row number.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .files import choose_encoding, decode_error
from .presets import header_key
from .values import clip, to_text

CSV_FIELD_LIMIT = 1 << 28  # characters per field; posts of several MB are fine


@dataclass
class RawChunk:
    frame: pd.DataFrame  # one column per distinct header key; cells are str or None
    source_rows: np.ndarray  # int64, the 1-based data-row number of each frame row
    raw: Callable[[int], str]  # the raw record of frame row i, for rejects
    bad: list[tuple[int, str, str, str]]  # (source_row, reason code, message, raw record)

    @property
    def n_rows(self) -> int:
        return len(self.frame) + len(self.bad)


class Reader:
    """Base: ``header`` (original names) is known once the first chunk has been produced."""

    format = ""

    def __init__(self, path: Path, name: str, encoding: str, chunk_rows: int):
        self.path, self.name, self.chunk_rows = path, name, chunk_rows
        self.encoding_setting = encoding
        self.encoding: str | None = None
        self.header: list[str] | None = None

    def chunks(self) -> Iterator[RawChunk]:  # pragma: no cover - abstract
        raise NotImplementedError


class _Unreadable(list):
    """Stands in for a CSV record the csv module refused (bad quoting, a huge field)."""

    def __init__(self, line: int, error: str, text: str):
        super().__init__()
        self.line, self.error, self.text = line, error, text  # text: the line it failed on

    def __bool__(self) -> bool:  # not a blank line
        return True


class _LastLine:
    """An iterator over lines that remembers the last one, for the raw text of a bad record."""

    def __init__(self, lines: Iterator[str]):
        self._lines, self.last = lines, ""

    def __iter__(self) -> "_LastLine":
        return self

    def __next__(self) -> str:
        self.last = next(self._lines)
        return self.last


def _records(reader, lines: _LastLine) -> Iterator[list[str]]:
    """The reader's records; a record it cannot parse becomes an _Unreadable, and reading goes on
    with the next line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _Unreadable(reader.line_num, str(exc), lines.last.rstrip("\r\n"))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while a chunk's rows are built.

    Parsing allocates one list per row, and the collector would scan those lists again and again
    (reading took about twice as long). Pausing only defers collection: the collector is back on
    as soon as the chunk is built, and finds any cycle then.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _unique_columns(header: list[str]) -> tuple[list[int], list[str]]:
    """Positions and keys of the first column with each header key."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        seen.setdefault(header_key(name), i)
    return list(seen.values()), list(seen)


class CsvReader(Reader):
    def __init__(self, path: Path, name: str, encoding: str, chunk_rows: int, fmt: str):
        super().__init__(path, name, encoding, chunk_rows)
        self.format = fmt
        self.delimiter = "\t" if fmt == "tsv" else ","

    def chunks(self) -> Iterator[RawChunk]:
        self.encoding = choose_encoding(self.path, self.name, self.encoding_setting)
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        record = 0
        reader = None
        try:
            with open(self.path, encoding=self.encoding, errors="strict", newline="") as fh:
                first = fh.readline()
                while first and not first.strip():
                    first = fh.readline()
                if not first:
                    return
                if self.format == "csv" and "," not in first:  # ';' from European Excel, etc.
                    counts = {d: first.count(d) for d in ";\t|"}
                    best = max(counts, key=counts.get)
                    if counts[best]:
                        self.delimiter = best
                # strict: a badly quoted row is an error (rejected below), not silently merged
                lines = _LastLine(itertools.chain([first], fh))
                reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
                self.header = next(reader)
                width = len(self.header)
                positions, keys = _unique_columns(self.header)
                records = _records(reader, lines)
                while True:
                    with _gc_paused():
                        block = list(itertools.islice(records, self.chunk_rows))
                    if not block:
                        break
                    if not all(block):  # a blank line is not a row
                        block = [row for row in block if row]
                    numbers = np.arange(record + 1, record + 1 + len(block), dtype=np.int64)
                    record += len(block)
                    wrong = [i for i, row in enumerate(block)
                             if len(row) != width or type(row) is _Unreadable]
                    bad = [self._bad(block[i], int(numbers[i]), width) for i in wrong]
                    if wrong:
                        skip = set(wrong)
                        good = [i for i in range(len(block)) if i not in skip]
                        block = [block[i] for i in good]
                        numbers = numbers[good]
                    yield self._chunk(block, numbers, bad, positions, keys)
        except UnicodeDecodeError:
            raise decode_error(self.path, self.name, self.encoding,
                               self.encoding_setting) from None
        except csv.Error as exc:  # in the header row
            raise InputError(f"{self.name}: the header row cannot be read as "
                             f"{self.format.upper()} ({exc}); check its quoting") from None

    def _bad(self, row: list[str], number: int, width: int) -> tuple[int, str, str, str]:
        if type(row) is _Unreadable:
            problem = ("a quoted field is still open at the end of the file"
                       if "unexpected end of data" in row.error else row.error)
            return (number, "unreadable_row",
                    f"the row near line {row.line:,} cannot be read as {self.format.upper()} "
                    f"({problem}); check the quoting of this row", clip(row.text))
        return (number, "ragged_row",
                f"row has {len(row)} fields but the header has {width}; check the delimiter "
                "and the quoting around this row", self._raw(row))

    def _raw(self, row: list[str]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.delimiter, lineterminator="").writerow(row)
        return clip(buffer.getvalue())

    def _chunk(self, rows: list[list[str]], numbers: np.ndarray, bad: list,
               positions: list[int], keys: list[str]) -> RawChunk:
        with _gc_paused():
            columns = list(zip(*rows)) if rows else [() for _ in self.header]
            frame = pd.DataFrame({key: np.array(columns[p], dtype=object)
                                  for key, p in zip(keys, positions)}, columns=keys, dtype=object)
        return RawChunk(frame, numbers, lambda i: self._raw(rows[i]), bad)


class JsonlReader(Reader):
    """One JSON object per line; nested objects are flattened to dotted names (post_owner.id).

    The header is the keys of the first object; every key seen is in ``keys_seen``. The data-row
    number is the line number; blank lines are not rows.
    """

    format = "jsonl"

    def __init__(self, path: Path, name: str, encoding: str, chunk_rows: int):
        super().__init__(path, name, encoding, chunk_rows)
        self.keys_seen: dict[str, str] = {}  # key -> original name, in first-seen order
        self._keys: dict[str, str] = {}  # original name -> key

    def chunks(self) -> Iterator[RawChunk]:
        self.encoding = choose_encoding(self.path, self.name, self.encoding_setting)
        number = 0  # line number
        try:
            with open(self.path, encoding=self.encoding, errors="strict", newline="\n") as fh:
                while block := list(itertools.islice(fh, self.chunk_rows)):
                    if number == 0:
                        block[0] = block[0].lstrip("\ufeff")
                    with _gc_paused():
                        chunk = self._parse(block, number)
                    number += len(block)
                    if chunk.n_rows:
                        yield chunk
        except UnicodeDecodeError:
            raise decode_error(self.path, self.name, self.encoding,
                               self.encoding_setting) from None

    def _parse(self, block: list[str], before: int) -> RawChunk:
        records: list[dict] = []
        lines: list[str] = []
        numbers: list[int] = []
        bad: list[tuple[int, str, str, str]] = []
        for number, line in enumerate(block, start=before + 1):
            if not line.strip():  # a blank line is not a row
                continue
            line = line.rstrip("\r\n")
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                detail = (f"{exc.msg} at column {exc.colno}"
                          if isinstance(exc, json.JSONDecodeError) else "nested too deep")
                bad.append((number, "bad_json", f"line is not valid JSON ({detail})", clip(line)))
                continue
            if not isinstance(obj, dict):
                kind = {list: "an array", str: "a string", bool: "true/false",
                        type(None): "null"}.get(type(obj), "a number")
                bad.append((number, "not_an_object",
                            f"line holds {kind}, expected a JSON object {{...}}", clip(line)))
                continue
            record = self._flatten(obj)
            if self.header is None:
                self.header = [self.keys_seen[k] for k in record]
            records.append(record)
            lines.append(line)
            numbers.append(number)
        return self._chunk(records, lines, numbers, bad)

    def _flatten(self, obj: dict, prefix: str = "") -> dict:
        out: dict = {}
        keys = self._keys
        for name, value in obj.items():
            if isinstance(value, dict) and value:
                out.update(self._flatten(value, f"{prefix}{name}."))
                continue
            full = f"{prefix}{name}" if prefix else name
            key = keys.get(full)
            if key is None:
                key = keys[full] = header_key(full)
                self.keys_seen.setdefault(key, full)
            out[key] = value
        return out

    def _chunk(self, records: list[dict], lines: list[str], numbers: list[int],
               bad: list) -> RawChunk:
        names = list(dict.fromkeys(key for record in records for key in record))
        columns = {}
        for name in names:
            values = [record.get(name) for record in records]
            if not all(value is None or type(value) is str for value in values):
                values = [to_text(value) for value in values]  # big ints stay exact
            columns[name] = np.array(values, dtype=object)
        frame = pd.DataFrame(columns, columns=names, dtype=object)
        return RawChunk(frame, np.asarray(numbers, dtype=np.int64), lambda i: clip(lines[i]), bad)


class ParquetReader(Reader):
    """Row groups streamed in batches; struct columns are flattened to dotted names."""

    format = "parquet"

    def chunks(self) -> Iterator[RawChunk]:
        self.encoding = None
        try:
            parquet = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputError(f"{self.name} is not a readable Parquet file ({_one_line(exc)}); "
                             "re-export it, "
                             "or check that the download finished") from None
        self.header = _flat_names(parquet.schema_arrow)
        positions, keys = _unique_columns(self.header)
        start = 0
        try:
            for batch in parquet.iter_batches(batch_size=self.chunk_rows):
                table = pa.Table.from_batches([batch])
                while any(pa.types.is_struct(f.type) for f in table.schema):
                    table = table.flatten()
                frame = pd.DataFrame({keys[n]: _texts(table.column(p))
                                      for n, p in enumerate(positions)}, dtype=object)
                numbers = np.arange(start + 1, start + len(frame) + 1, dtype=np.int64)
                start += len(frame)
                yield RawChunk(frame, numbers, _row_json(frame), [])
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.name}: Parquet data after row {start:,} cannot be read "
                             f"({_one_line(exc)}); re-export the file") from None


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (Arrow's messages span several)."""
    return " ".join(str(exc).split())


def _flat_names(schema: pa.Schema) -> list[str]:
    names: list[str] = []

    def walk(field: pa.Field, prefix: str) -> None:
        if pa.types.is_struct(field.type):
            for child in field.type:
                walk(child, f"{prefix}{field.name}.")
        else:
            names.append(f"{prefix}{field.name}")

    for field in schema:
        walk(field, "")
    return names


def _texts(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_numpy(zero_copy_only=False).astype(object)
    return np.array([to_text(v) for v in column.to_pylist()], dtype=object)


def _row_json(frame: pd.DataFrame) -> Callable[[int], str]:
    def raw(i: int) -> str:
        row = {k: v for k, v in frame.iloc[i].items() if v is not None}
        return clip(json.dumps(row, ensure_ascii=False))

    return raw


READERS = {"csv": CsvReader, "tsv": CsvReader, "jsonl": JsonlReader, "parquet": ParquetReader}


def reader_for(path: Path, name: str, fmt: str, encoding: str, chunk_rows: int) -> Reader:
    if fmt in ("csv", "tsv"):
        return CsvReader(path, name, encoding, chunk_rows, fmt)
    return READERS[fmt](path, name, encoding, chunk_rows)
