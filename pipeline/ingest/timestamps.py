"""Timestamps: ISO 8601 (with or without a zone), zone abbreviations, Unix seconds or milliseconds.

Parsing is vectorised per chunk with pandas; only the values pandas cannot read are looked at one
by one, to recover the rarer forms and to say exactly what is wrong with the rest.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from .values import quote

UTC_DTYPE = "datetime64[us, UTC]"
MS_THRESHOLD = 1e11  # |value| at or above this is milliseconds (1e11 s is the year 5138)
EXPECTED = "expected ISO 8601 (e.g. 2021-09-26T13:45:02+02:00) or Unix seconds"

# Zone abbreviations found in exports (CrowdTangle writes "2021-09-26 13:45:02 CEST"), in hours.
# Some abbreviations mean several zones; the reading used here is given in corpora/README.md.
ZONE_OFFSETS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "UT": 0, "WET": 0, "WEST": 1, "BST": 1,
    "CET": 1, "CEST": 2, "MET": 1, "MEST": 2, "WAT": 1,
    "EET": 2, "EEST": 3, "CAT": 2, "SAST": 2, "IDT": 3, "MSK": 3, "EAT": 3, "TRT": 3,
    "AST": -4, "ADT": -3, "GST": 4, "PKT": 5, "IST": 5.5, "NPT": 5.75,
    "ICT": 7, "WIB": 7, "WITA": 8, "WIT": 9, "SGT": 8, "HKT": 8, "PHT": 8, "AWST": 8,
    "JST": 9, "KST": 9, "ACST": 9.5, "ACDT": 10.5, "AEST": 10, "AEDT": 11,
    "NZST": 12, "NZDT": 13,
    "NST": -3.5, "NDT": -2.5, "BRT": -3, "ART": -3, "CLT": -4, "CLST": -3, "COT": -5,
    "PET": -5, "VET": -4,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6,
    "PST": -8, "PDT": -7, "AKST": -9, "AKDT": -8, "HST": -10,
}

_NUMERIC_RE = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# an explicit offset after a time: Z, +02, +0200, +02:00 (spaces before it are allowed)
_AWARE_RE = r"[^:T]*[:T].*\d\s*(?:[zZ]|[+-]\d\d(?::?\d\d)?)"
_ABBREV_RE = (r"(?P<body>\d{4}-\d{1,2}-\d{1,2}[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*"
              r"(?P<zone>[A-Za-z]{2,5})(?P<offset>[+-]\d{1,2}(?::?\d{2})?)?")
_ZONE_TAIL_RE = r"[A-Za-z]{2}(?:[+-]\d{1,2}(?::?\d\d)?)?$"
_ISO_SHAPE_RE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")


@dataclass(frozen=True)
class TimeRules:
    timezone: str  # zone for timestamps written without one
    unit: str  # auto | s | ms
    min_at: pd.Timestamp
    max_at: pd.Timestamp
    min_text: str
    max_text: str


def rules(timezone_name: str, unit: str, min_text: str, max_text: str) -> TimeRules:
    try:
        ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"ingest.timezone ({timezone_name!r}) is not a time zone; use an IANA "
                          "name such as UTC, Europe/Berlin or America/New_York") from None
    bounds = []
    for key, text in (("ingest.min_created_at", min_text), ("ingest.max_created_at", max_text)):
        try:
            value = pd.Timestamp(text)
        except (ValueError, TypeError):
            raise ConfigError(f"{key} ({text!r}) is not a date; use ISO 8601 such as "
                              "2000-01-01T00:00:00Z") from None
        value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
        bounds.append(value.as_unit("us"))
    if bounds[0] >= bounds[1]:
        raise ConfigError(f"ingest.min_created_at ({min_text}) must be before "
                          f"ingest.max_created_at ({max_text})")
    return TimeRules(timezone_name, unit, bounds[0], bounds[1], min_text, max_text)


def parse(values: pd.Series, rules: TimeRules, column: str = "created_at"
          ) -> tuple[pd.Series, dict[int, tuple[str, str]]]:
    """Parse non-empty timestamp strings to UTC.

    Returns the timestamps (NaT where bad) and, for each bad position, (reason code, message).
    ``values`` must not hold empty cells; the caller rejects those first.
    """
    n = len(values)
    out = pd.Series(pd.NaT, index=range(n), dtype=UTC_DTYPE)
    problems: dict[int, tuple[str, str]] = {}
    if n == 0:
        return out, problems

    # classify with pyarrow's vectorised regular expressions, then parse each class in one call
    arrow = pc.utf8_trim_whitespace(
        pa.array(values.to_numpy(object), type=pa.string(), from_pandas=True))
    text = pd.Series(arrow.to_numpy(zero_copy_only=False), dtype=object)
    numeric = _matches(arrow, f"^{_NUMERIC_RE}$")
    if numeric.any():
        _parse_numeric(text[numeric], rules, out, problems, column)
    abbreviated = ~numeric & _matches(arrow, _ZONE_TAIL_RE)
    if abbreviated.any():
        _parse_abbreviated(text[abbreviated], out)
    aware = ~numeric & ~abbreviated & _matches(arrow, f"^{_AWARE_RE}$")
    if aware.any():
        parsed = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
        out[aware] = parsed.astype(UTC_DTYPE)
    naive = ~numeric & ~abbreviated & ~aware
    if naive.any():
        try:
            parsed = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        except ValueError:  # zones pandas sees and the pattern above missed: go one by one
            parsed = None
        if parsed is not None and isinstance(parsed.dtype, pd.DatetimeTZDtype):
            out[naive] = parsed.dt.tz_convert("UTC").astype(UTC_DTYPE)
        elif parsed is not None and pd.api.types.is_datetime64_dtype(parsed.dtype):
            out[naive] = _localise(parsed, rules.timezone)

    # one by one: what pandas could not read
    failed = np.flatnonzero(out.isna().to_numpy() & ~np.isin(np.arange(n), list(problems)))
    for i in failed:
        value, problem = _parse_one(text.iat[i], rules.timezone, column)
        if problem:
            problems[int(i)] = problem
        else:
            out.iat[i] = value

    _check_range(text, out, rules, problems, column)
    return out, problems


def _matches(arrow: pa.Array, pattern: str) -> np.ndarray:
    found = pc.match_substring_regex(arrow, pattern).fill_null(False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _localise(parsed: pd.Series, zone: str) -> pd.Series:
    """Naive wall-clock times in ``zone`` to UTC. In the repeated hour when clocks go back the
    first (summer-time) reading is used; times skipped when clocks go forward move forward."""
    parsed = parsed.astype("datetime64[us]")
    if zone == "UTC":
        return parsed.dt.tz_localize("UTC")
    local = parsed.dt.tz_localize(zone, ambiguous=np.ones(len(parsed), bool),
                                  nonexistent="shift_forward")
    return local.dt.tz_convert("UTC")


def _parse_numeric(text: pd.Series, rules: TimeRules, out: pd.Series,
                   problems: dict[int, tuple[str, str]], column: str) -> None:
    numbers = pc.cast(pa.array(text.to_numpy(object), type=pa.string()), pa.float64())
    numbers = pd.Series(np.asarray(numbers), index=text.index)
    as_ms = (numbers.abs() >= MS_THRESHOLD) if rules.unit == "auto" else (
        pd.Series(rules.unit == "ms", index=text.index))
    seconds = numbers.where(~as_ms, numbers / 1000.0)
    lo, hi = rules.min_at.timestamp(), rules.max_at.timestamp()
    inside = ((seconds >= lo) & (seconds < hi)).to_numpy()
    for pos in np.flatnonzero(~inside):
        bound = (f"before ingest.min_created_at ({rules.min_text})" if seconds.iat[pos] < lo
                 else f"not before ingest.max_created_at ({rules.max_text})")
        unit = "Unix milliseconds" if as_ms.iat[pos] else "Unix seconds"
        problems[int(text.index[pos])] = (
            "timestamp_out_of_range",
            f"{column} {quote(text.iat[pos])} read as {unit} is {bound}; check "
            "ingest.time_unit or the value")
    if inside.any():
        micros = np.round(seconds.to_numpy()[inside] * 1e6).astype("int64")
        out[text.index[inside]] = pd.to_datetime(micros, unit="us", utc=True).astype(UTC_DTYPE)


def _parse_abbreviated(text: pd.Series, out: pd.Series) -> None:
    arrow = pa.array(text.to_numpy(object), type=pa.string())
    parts = pc.extract_regex(arrow, f"^{_ABBREV_RE}$")  # null where the pattern does not match
    hours = _lookup(pc.utf8_upper(parts.field("zone")), ZONE_OFFSETS.get)
    offsets = parts.field("offset")
    hours += np.where(pc.is_null(offsets).to_numpy(zero_copy_only=False), 0.0,
                      _lookup(offsets, _offset_hours))
    body = pd.Series(parts.field("body").to_numpy(zero_copy_only=False), index=text.index)
    known = (body.notna() & ~np.isnan(hours)).to_numpy()
    if not known.any():
        return  # left NaT: the slow path says what is wrong
    local = pd.to_datetime(body[known].str.replace(",", ".", regex=False),
                           format="ISO8601", errors="coerce").astype("datetime64[us]")
    shift = pd.to_timedelta(np.round(hours[known] * 3600), unit="s")
    out[text.index[known]] = (local - shift).dt.tz_localize("UTC")


def _lookup(values: pa.Array, fn) -> np.ndarray:
    """``fn`` of each distinct value (None -> NaN), spread back over ``values`` as floats."""
    encoded = pc.dictionary_encode(values.combine_chunks() if hasattr(values, "combine_chunks")
                                   else values)
    table = np.array([np.nan if (v := fn(key)) is None else float(v)
                      for key in encoded.dictionary.to_pylist()] + [np.nan])
    indices = encoded.indices.fill_null(len(table) - 1).to_numpy(zero_copy_only=False)
    return table[indices]


def _offset_hours(text: str | None) -> float:
    """"+2", "-05:30", "+0530" in hours; NaN beyond 14 hours or 59 minutes."""
    if not text:
        return 0.0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = (digits, "0") if len(digits) <= 2 else (digits[:-2], digits[-2:])
    if int(hours) > 14 or int(minutes) > 59:
        return float("nan")
    return sign * (int(hours) + int(minutes) / 60)


def _parse_one(value: str, zone: str, column: str
               ) -> tuple[pd.Timestamp | None, tuple[str, str] | None]:
    """The slow path for one value pandas could not read: other unambiguous forms, or why not."""
    # ISO 8601 forms pandas refuses but Python reads (e.g. 20190601T123456Z), beyond-range years
    try:
        parsed = datetime.fromisoformat(value.replace(" Z", "Z"))
    except ValueError as exc:
        iso_error = str(exc)
    else:
        return _to_utc(parsed, zone, value, column)
    # Twitter API (Sat Feb 08 16:50:17 +0000 2020) and RFC 2822 (Sat, 08 Feb 2020 16:50:17 +0000)
    for reader in (lambda v: datetime.strptime(v, "%a %b %d %H:%M:%S %z %Y"),
                   email.utils.parsedate_to_datetime):
        try:
            parsed = reader(value)
        except (ValueError, TypeError, IndexError):
            continue
        if parsed is not None:
            return _to_utc(parsed, zone, value, column)
    abbreviated = re.fullmatch(_ABBREV_RE, value)
    if abbreviated and abbreviated["zone"].upper() not in ZONE_OFFSETS:
        return None, ("bad_timestamp",
                      f"{column} {quote(value)} has an unknown time zone "
                      f"{quote(abbreviated['zone'])}; write the offset instead "
                      "(e.g. +02:00) or convert the times to UTC")
    if _ISO_SHAPE_RE.match(value) and ("out of range" in iso_error or "must be in" in iso_error):
        return None, ("impossible_date",
                      f"{column} {quote(value)} is not a real date or time ({iso_error}); "
                      f"{EXPECTED}")
    return None, ("bad_timestamp", f"{column} {quote(value)} is not a date; {EXPECTED}")


def _to_utc(parsed: datetime, zone: str, value: str, column: str
            ) -> tuple[pd.Timestamp | None, tuple[str, str] | None]:
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    try:
        return pd.Timestamp(parsed.astimezone(timezone.utc)).as_unit("us"), None
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
        return None, ("timestamp_out_of_range",
                      f"{column} {quote(value)} is outside the dates the pipeline can hold")


def _check_range(text: pd.Series, out: pd.Series, rules: TimeRules,
                 problems: dict[int, tuple[str, str]], column: str) -> None:
    valid = out.notna()
    early = valid & (out < rules.min_at)
    late = valid & (out >= rules.max_at)
    for i in np.flatnonzero((early | late).to_numpy()):
        bound = (f"before ingest.min_created_at ({rules.min_text})" if early.iat[i]
                 else f"not before ingest.max_created_at ({rules.max_text})")
        problems[int(i)] = ("timestamp_out_of_range",
                            f"{column} {quote(text.iat[i])} is {bound}; fix the value or "
                            "widen the range")
        out.iat[i] = pd.NaT


def format_utc(value: pd.Timestamp) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")

