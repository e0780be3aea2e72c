"""Cell values: raw values to text, text cleaning, hashtag and list parsing."""

from __future__ import annotations

import ast
import functools
import json
import math
import re
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# C0 control characters except tab and newline (carriage returns go too: \r\n becomes \n)
CONTROL_RE = r"[\x00-\x08\x0b-\x1f]"
_LIST_SPLIT_RE = re.compile(r"[\s,;]+")


def to_text(value: Any) -> str | None:
    """A raw JSON / Parquet value as text: None stays None, lists as JSON, numbers as written."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer() and abs(value) < 2**53:  # ids that went through a float column
            return str(int(value))
        return repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def arrow(series: pd.Series) -> pa.Array:
    """A column of text cells (str or None) as a pyarrow string array, for vectorised work."""
    return pa.array(series.to_numpy(object), type=pa.string(), from_pandas=True)


def _series(values: pa.Array, like: pd.Series) -> pd.Series:
    return pd.Series(values.to_numpy(zero_copy_only=False), index=like.index, dtype=object)


def present(series: pd.Series) -> pd.Series:
    """True where a cell holds something other than nothing or whitespace."""
    trimmed = pc.utf8_trim_whitespace(arrow(series))
    found = pc.fill_null(pc.greater(pc.utf8_length(trimmed), 0), False)
    return pd.Series(found.to_numpy(zero_copy_only=False), index=series.index, dtype=bool)


def blank_to_none(series: pd.Series, lower: bool = False) -> pd.Series:
    """Strip (and lower-case) text; empty or whitespace-only cells become None."""
    if series.isna().all():
        return series.astype(object)
    trimmed = pc.utf8_trim_whitespace(arrow(series))
    if lower:
        trimmed = pc.utf8_lower(trimmed)
    empty = pc.fill_null(pc.equal(trimmed, ""), True)
    return _series(pc.if_else(empty, pa.scalar(None, pa.string()), trimmed), series)


def clean_text(series: pd.Series) -> pd.Series:
    """Remove NUL and other C0 control characters except tab and newline; keep all else."""
    return _series(pc.replace_substring_regex(arrow(series), CONTROL_RE, ""), series)


def text_lengths(series: pd.Series) -> np.ndarray:
    """Characters (code points) per cell, 0 for None."""
    return pc.fill_null(pc.utf8_length(arrow(series)), 0).to_numpy(zero_copy_only=False)


def truncate(series: pd.Series, limit: int) -> pd.Series:
    return _series(pc.utf8_slice_codeunits(arrow(series), 0, limit), series)


def _load_list(text: str) -> list[str] | None:
    """A JSON or Python list literal as stripped strings; None when ``text`` is neither."""
    if len(text) > 100_000:
        return None
    for loader in (json.loads, ast.literal_eval):  # literal_eval evaluates literals only
        try:
            parsed = loader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, (list, tuple)):
            return [str(item).strip() for item in parsed if item is not None]
    return None


@functools.lru_cache(maxsize=65536)
def parse_list(value: str) -> tuple[str, ...]:
    """Items of a list written as JSON (["a","b"]), Python (['a', 'b']), bracketed ([a, b]),
    or separated by commas, semicolons or spaces ("a, b", "#a #b")."""
    text = value.strip()
    if not text:
        return ()
    if text.startswith("[") and text.endswith("]"):
        parsed = _load_list(text)
        if parsed is not None:
            return tuple(item for item in parsed if item)
        text = text[1:-1]
    items = (item.strip().strip("'\"") for item in _LIST_SPLIT_RE.split(text))
    return tuple(item for item in items if item)


@functools.lru_cache(maxsize=65536)
def normalise_hashtags(value: str) -> str | None:
    """Lower-case tags without '#', space-separated, in the order given; None if there are none."""
    tags: list[str] = []
    for item in parse_list(value):
        for tag in item.split():
            tag = tag.lstrip("#＃").strip().lower()
            if tag:
                tags.append(tag)
    return " ".join(tags) or None


def first_url(value: str) -> str | None:
    """The first link of a list such as "[https://a, https://b]" or "['https://a']"."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        parsed = _load_list(text)
        if parsed is not None:
            return next((item for item in parsed if item), None)
        text = text[1:-1]
    # commas inside a link are kept; a comma followed by a space separates links
    for item in re.split(r",\s+|\s+", text):
        item = item.strip().strip("'\"").rstrip(",")
        if item:
            return item
    return None


def map_present(series: pd.Series, fn) -> pd.Series:
    """Apply ``fn`` to the non-null cells only."""
    out = series.astype(object).copy()
    mask = out.notna()
    if mask.any():
        out[mask] = [fn(v) for v in out[mask]]
    return out


def clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(value: Any, limit: int = 80) -> str:
    """A value for a message: double-quoted, cut to ``limit`` characters."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def parse_count(value: str) -> int | None:
    """A whole non-negative number written as 1234, 1,234, 1 234 or 1234.0; else ValueError."""
    text = re.sub(r"[\s,_']", "", value)
    number = float(text)  # ValueError for anything else
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(value)
    return int(number)


def normalise_countries(value: str) -> str | None:
    """';'-separated upper-case country codes from "DE;FR", "de, fr" or ["DE", "FR"]."""
    codes = [item.upper() for item in parse_list(value)]
    return ";".join(codes) or None
