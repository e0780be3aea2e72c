"""The ingest stage: corpus files -> posts table, rejects table, accounts table and counts."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import IngestConfig
from ..errors import ConfigError, InputError
from ..schema import ACCOUNT_COLUMNS, POSTS, REJECTS
from . import presets, timestamps
from .files import format_of, list_files, relative_name
from .presets import ACCOUNT_SOURCES, POST_COLUMNS, PRESETS, header_key
from .readers import RawChunk, Reader, reader_for
from .values import (
    blank_to_none,
    clean_text,
    map_present,
    normalise_countries,
    normalise_hashtags,
    parse_count,
    present,
    quote,
    text_lengths,
    truncate,
)

log = logging.getLogger(__name__)

POST_OUTPUT = [f.name for f in POSTS]
REJECT_OUTPUT = [f.name for f in REJECTS]
STRING = "str"  # pandas' string dtype; missing values are NaN


@dataclass
class IngestResult:
    posts: pd.DataFrame  # POSTS columns, in file order then row order
    rejects: pd.DataFrame  # REJECTS columns: every row that was not accepted, and why
    accounts: pd.DataFrame | None  # ACCOUNTS columns, or None without an accounts file
    stats: dict = field(default_factory=dict)


def run(corpus: Path, cfg: IngestConfig, mapper=None) -> IngestResult:
    """Read every posts file of ``corpus`` (and its accounts file) into the canonical tables.

    Every input row is accepted or rejected with a reason: n_rows_in == n_accepted + n_rejected.
    Each posts file is read and checked as one task (``read_posts_file``); ``mapper(fn,
    *iterables) -> list`` (an engine's map) runs those tasks elsewhere, without it they run
    here. The parts are combined here in file order, so which copy of a repeated post_id is
    kept, and the order of the rejects, are the same either way.
    """
    started = time.perf_counter()
    corpus = Path(corpus)
    if cfg.preset != "auto" and cfg.preset not in PRESETS:
        raise ConfigError(f"ingest.preset ({cfg.preset!r}) must be one of: auto, "
                          + ", ".join(PRESETS))
    posts_files, accounts_file = list_files(corpus)
    rules = timestamps.rules(cfg.timezone, cfg.time_unit, cfg.min_created_at,
                             cfg.max_created_at)
    mapper = mapper or _map_here
    names = [relative_name(path, corpus) for path in posts_files]
    parts = mapper(read_posts_file, [str(p) for p in posts_files], names,
                   [cfg] * len(names), [rules] * len(names))
    corpus_state, file_stats = _combine(parts, posts_files, cfg, rules, mapper)
    posts = corpus_state.table()
    post_rejects = corpus_state.rejects

    accounts = None
    account_stats = None
    account_rejects: list[tuple] = []
    if accounts_file is not None:
        accounts, account_rejects, account_stats = _ingest_accounts(
            accounts_file, relative_name(accounts_file, corpus), cfg, rules)

    rejects = _rejects_table([*post_rejects, *account_rejects])
    reasons = Counter(_code(r[3]) for r in post_rejects)
    n_rows_in = sum(f["n_rows_in"] for f in file_stats)
    stats = {
        "n_rows_in": n_rows_in,
        "n_accepted": len(posts),
        "n_rejected": len(post_rejects),
        "n_truncated": corpus_state.n_truncated,
        "n_files": len(posts_files),
        "files": file_stats,
        "reject_reasons": dict(sorted(reasons.items())),
        "accounts": account_stats,
    }
    if stats["n_rows_in"] != stats["n_accepted"] + stats["n_rejected"]:  # a bug, not bad input
        raise RuntimeError(f"ingest lost rows: {stats['n_rows_in']} in, {stats['n_accepted']} "
                           f"accepted, {stats['n_rejected']} rejected")
    log.debug("ingest: %d file(s), %s rows -> %s posts, %s rejected, %s truncated (%.1f s)",
             len(posts_files), f"{n_rows_in:,}", f"{len(posts):,}",
             f"{len(post_rejects):,}", f"{corpus_state.n_truncated:,}",
             time.perf_counter() - started)
    return IngestResult(posts, rejects, accounts, stats)


def _map_here(fn, *iterables) -> list:
    return [fn(*args) for args in zip(*iterables)]


def _code(reason: str) -> str:
    return reason.split(":", 1)[0]


# -- posts -----------------------------------------------------------------------------------


class _Posts:
    """Accepted posts across the corpus, with the first occurrence of every post_id."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []
        self.keep: list[np.ndarray] = []
        # post_id -> frame << 32 | row of its first occurrence (an int: ints are not tracked
        # by the cycle collector, a million tuples would be)
        self.seen: dict[str, int] = {}
        self.rejects: list[tuple] = []
        self.n_truncated = 0

    def add(self, valid: pd.DataFrame, name: str,
            raw: dict[int, str]) -> tuple[int, list[tuple]]:
        """Keep the rows of ``valid`` whose post_id is new; reject the repeats.

        Returns the number kept and the rejects, one per repeat. A repeat's raw record is
        ``raw[source_row]``; None when its first copy is in an earlier file (the caller reads
        those raw records afterwards)."""
        k = len(self.frames)
        keep = np.ones(len(valid), dtype=bool)
        repeats: list[int] = []
        firsts: list[tuple[int, int]] = []
        seen = self.seen
        for i, post_id in enumerate(valid["post_id"].tolist()):
            first = seen.get(post_id)
            if first is None:
                seen[post_id] = k << 32 | i
            else:
                keep[i] = False
                repeats.append(i)
                firsts.append((first >> 32, first & 0xFFFFFFFF))
        self.frames.append(valid)
        self.keep.append(keep)
        self.n_truncated += int(valid["_truncated"].to_numpy()[keep].sum())
        return int(keep.sum()), self._repeat_rejects(valid, repeats, firsts, name, raw)

    def _repeat_rejects(self, valid: pd.DataFrame, repeats: list[int],
                        firsts: list[tuple[int, int]], name: str,
                        raw: dict[int, str]) -> list[tuple]:
        if not repeats:
            return []
        later = valid.iloc[repeats].reset_index(drop=True)
        by_frame: dict[int, list[int]] = {}  # one take per earlier frame, then back in order
        for j, (f, _) in enumerate(firsts):
            by_frame.setdefault(f, []).append(j)
        parts = [self.frames[f].iloc[[firsts[j][1] for j in js]].set_axis(js)
                 for f, js in by_frame.items()]
        earlier = pd.concat(parts).sort_index()
        differs = {}
        for column in POST_COLUMNS:
            a, b = earlier[column].reset_index(drop=True), later[column]
            same = (a == b).fillna(False).to_numpy(bool) | (a.isna() & b.isna()).to_numpy()
            differs[column] = ~same
        where = [f"{f} row {int(r):,}" for f, r in zip(earlier["source_file"].tolist(),
                                                        earlier["source_row"].tolist())]
        rows = later["source_row"].tolist()
        post_ids = later["post_id"].tolist()
        rejects = []
        for j in range(len(repeats)):
            differ = [c for c in POST_COLUMNS if differs[c][j]]
            if differ:
                reason = (f"duplicate_conflict: post_id {quote(post_ids[j])} already at "
                          f"{where[j]} with different {', '.join(differ)}; the first is kept")
            else:
                reason = f"duplicate_identical: same as {where[j]}; collapsed"
            rejects.append((name, int(rows[j]), "post_id", reason, raw.get(int(rows[j]))))
        return rejects

    def table(self) -> pd.DataFrame:
        kept = [f[m] for f, m in zip(self.frames, self.keep) if m.any()]
        frame = pd.concat(kept, ignore_index=True) if kept else _empty_posts()
        return _posts_dtypes(frame[POST_OUTPUT])


def _same(a, b) -> bool:
    a_missing, b_missing = _missing(a), _missing(b)
    if a_missing or b_missing:
        return a_missing and b_missing
    return a == b


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


@dataclass
class FilePart:
    """One posts file, read and checked: what a ``read_posts_file`` task returns.

    ``chunks`` holds, per chunk in file order, the rows that passed the checks (every copy of a
    repeated post_id still in) and the chunk's rejects (rows that could not be read or failed a
    check). ``repeat_raw`` is the raw record of each row whose post_id came earlier in the same
    file, by source_row. ``error`` is an input error met in the file, raised by the caller in
    file order (so the first bad file is named, whichever task failed first).
    """

    name: str
    stats: dict
    chunks: list[tuple[pd.DataFrame, list[tuple]]] = field(default_factory=list)
    repeat_raw: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: Exception | None = None


def read_posts_file(path: str, name: str, cfg: IngestConfig,
                    rules: timestamps.TimeRules) -> FilePart:
    """A posts file as a task: read it in chunks and check every row (no state from other
    files; repeats across files are decided by the caller)."""
    path = Path(path)
    fmt = format_of(path)
    part = FilePart(name, {"file": name, "format": fmt, "encoding": None, "preset": None,
                           "n_rows_in": 0, "n_accepted": 0, "n_rejected": 0})
    if path.stat().st_size == 0:
        part.warnings.append(f"{name} is empty (0 bytes); it adds no posts")
        return part
    try:
        reader = reader_for(path, name, fmt, cfg.encoding, cfg.chunk_rows)
        plan: presets.Plan | None = None
        seen: set[str] = set()
        for chunk in reader.chunks():
            part.stats["n_rows_in"] += chunk.n_rows
            chunk_rejects = [(name, row, "", f"{code}: {message}", raw)
                             for row, code, message, raw in chunk.bad]
            if plan is None and reader.header is not None:
                plan = _plan_for(reader, name, cfg)
            valid = None
            if len(chunk.frame):
                valid, rejects = _validate_posts(chunk, plan, name, cfg, rules)
                chunk_rejects.extend(rejects)
                for post_id, row, pos in zip(valid["post_id"].tolist(),
                                             valid["source_row"].tolist(),
                                             valid["_pos"].tolist()):
                    if post_id in seen:
                        part.repeat_raw[int(row)] = chunk.raw(int(pos))
                    else:
                        seen.add(post_id)
                valid = valid.drop(columns="_pos")
            part.chunks.append((valid, chunk_rejects))
        if plan is None and reader.header is not None:  # header only: still check the columns
            plan = _plan_for(reader, name, cfg)
        if plan is not None and reader.format == "jsonl":
            presets.check_required(name, plan, list(reader.keys_seen.values()))
    except (InputError, ConfigError) as exc:
        part.error = exc
        part.chunks = []
        return part
    part.stats["encoding"] = reader.encoding
    part.stats["preset"] = plan.preset.name if plan else None
    return part


def raw_records(path: str, name: str, cfg: IngestConfig, rows: list[int]) -> dict[int, str]:
    """The raw records of some rows of a posts file (by source_row), read again: for the
    rejects of post_ids whose first copy is in an earlier file."""
    path = Path(path)
    wanted = set(rows)
    out: dict[int, str] = {}
    reader = reader_for(path, name, format_of(path), cfg.encoding, cfg.chunk_rows)
    for chunk in reader.chunks():
        for pos in np.flatnonzero(np.isin(chunk.source_rows, list(wanted))):
            out[int(chunk.source_rows[pos])] = chunk.raw(int(pos))
        if len(out) == len(wanted):
            break
    return out


def _combine(parts: list[FilePart], paths: list[Path], cfg: IngestConfig,
             rules: timestamps.TimeRules, mapper) -> tuple[_Posts, list[dict]]:
    """The files' parts in file order: the first copy of each post_id is kept, each file's
    rejects in row order."""
    for part in parts:
        for message in part.warnings:
            log.warning("%s", message)
        if part.error is not None:
            raise part.error
    state = _Posts()
    file_stats = []
    missing: dict[int, list[int]] = {}  # file -> rows of repeats whose raw record is elsewhere
    for k, part in enumerate(parts):
        stats = part.stats
        file_rejects: list[tuple] = []
        for valid, chunk_rejects in part.chunks:
            file_rejects.extend(chunk_rejects)
            if valid is not None:
                n_kept, repeats = state.add(valid, part.name, part.repeat_raw)
                stats["n_accepted"] += n_kept
                file_rejects.extend(repeats)
                missing_rows = [r[1] for r in repeats if r[4] is None]
                if missing_rows:
                    missing.setdefault(k, []).extend(missing_rows)
        part.chunks = []  # the kept rows live in state now
        file_rejects.sort(key=lambda r: r[1])  # in row order
        stats["n_rejected"] = len(file_rejects)
        if stats["n_rows_in"] != stats["n_accepted"] + stats["n_rejected"]:  # a bug
            raise RuntimeError(f"ingest lost rows in {part.name}: {stats}")
        state.rejects.extend(file_rejects)
        file_stats.append(stats)
    if missing:
        files = list(missing)
        found = mapper(raw_records, [str(paths[k]) for k in files],
                       [parts[k].name for k in files], [cfg] * len(files),
                       [missing[k] for k in files])
        raws = {parts[k].name: raw for k, raw in zip(files, found)}
        state.rejects = [r if r[4] is not None else (*r[:4], raws[r[0]][r[1]])
                         for r in state.rejects]
    return state, file_stats


def _plan_for(reader: Reader, name: str, cfg: IngestConfig) -> presets.Plan:
    keys = {header_key(h) for h in reader.header}
    preset = presets.detect(keys) if cfg.preset == "auto" else PRESETS[cfg.preset]
    return presets.plan(name, reader.header, preset, cfg.columns,
                        check_now=reader.format != "jsonl")


class _Verdicts:
    """The first reason each row fails, if any."""

    def __init__(self, n: int):
        self.code = np.full(n, None, dtype=object)
        self.column = np.full(n, "", dtype=object)
        self.message = np.full(n, None, dtype=object)

    def fail(self, mask: np.ndarray, code: str, column: str, message: str) -> None:
        """Reject the rows in ``mask`` that are not rejected yet."""
        todo = mask & (self.code == None)  # noqa: E711 - elementwise on an object array
        self.code[todo], self.column[todo], self.message[todo] = code, column, message

    def fail_at(self, i: int, code: str, column: str, message: str) -> None:
        if self.code[i] is None:
            self.code[i], self.column[i], self.message[i] = code, column, message

    @property
    def ok(self) -> np.ndarray:
        return self.code == None  # noqa: E711


def _validate_posts(chunk: RawChunk, plan: presets.Plan, name: str, cfg: IngestConfig,
                    rules: timestamps.TimeRules) -> tuple[pd.DataFrame, list[tuple]]:
    cols = presets.canonical(chunk.frame, plan)
    n = len(chunk.frame)
    verdicts = _Verdicts(n)
    label = plan.labels

    post_id = blank_to_none(cols["post_id"])
    account_id = blank_to_none(cols["account_id"])
    verdicts.fail(post_id.isna().to_numpy(), "empty_post_id", "post_id",
                  f"post_id is empty (read from {label['post_id']})")
    verdicts.fail(account_id.isna().to_numpy(), "empty_account_id", "account_id",
                  f"account_id is empty (read from {label['account_id']})")

    created_raw = cols["created_at"]
    has_time = present(created_raw).to_numpy()
    verdicts.fail(~has_time, "empty_created_at", "created_at",
                  f"created_at is empty (read from {label['created_at']})")
    created_at = _no_times(n)
    if has_time.any():
        created_at = _parse_times(created_raw, has_time, _preset_rules(rules, plan.preset),
                                  verdicts)

    text = clean_text(cols["text"].astype(object))
    has_text = present(text).to_numpy()
    verdicts.fail(~has_text, "empty_text", "text",
                  f"text is empty or only whitespace (read from {label['text']})")

    ok = verdicts.ok
    rejects = [(name, int(chunk.source_rows[i]), verdicts.column[i],
                f"{verdicts.code[i]}: {verdicts.message[i]}", chunk.raw(int(i)))
               for i in np.flatnonzero(~ok)]

    keep = np.flatnonzero(ok)
    text = text.iloc[keep].reset_index(drop=True)
    truncated = text_lengths(text) > cfg.max_text_chars
    if truncated.any():
        text = truncate(text, cfg.max_text_chars)
    valid = pd.DataFrame({
        "post_id": post_id.iloc[keep].to_numpy(),
        "account_id": account_id.iloc[keep].to_numpy(),
        "created_at": created_at.iloc[keep].reset_index(drop=True),
        "text": text,
        "url": blank_to_none(cols["url"]).iloc[keep].to_numpy(),
        "account_name": blank_to_none(cols["account_name"]).iloc[keep].to_numpy(),
        "account_type": blank_to_none(cols["account_type"], lower=True).iloc[keep].to_numpy(),
        "platform": blank_to_none(cols["platform"], lower=True).iloc[keep].to_numpy(),
        "lang": blank_to_none(cols["lang"]).iloc[keep].to_numpy(),
        "reshare_of": blank_to_none(cols["reshare_of"]).iloc[keep].to_numpy(),
        "hashtags": map_present(blank_to_none(cols["hashtags"]).iloc[keep],
                                normalise_hashtags).to_numpy(),
        "source_file": name,
        "source_row": chunk.source_rows[keep],
        "_pos": keep,
        "_truncated": truncated,
    })
    return valid, rejects


def _preset_rules(rules: timestamps.TimeRules, preset: presets.Preset) -> timestamps.TimeRules:
    """A preset may fix the zone of its naive times and, under time_unit auto, the unit."""
    unit = preset.time_unit if (rules.unit == "auto" and preset.time_unit) else rules.unit
    return replace(rules, timezone=preset.timezone or rules.timezone, unit=unit)


def _no_times(n: int) -> pd.Series:
    return pd.Series(pd.NaT, index=range(n), dtype=timestamps.UTC_DTYPE)


def _parse_times(raw: pd.Series, has_time: np.ndarray, rules: timestamps.TimeRules,
                 verdicts: _Verdicts) -> pd.Series:
    """Parse the non-empty cells; reject the rows whose timestamp is bad. NaT elsewhere."""
    rows = np.flatnonzero(has_time)
    parsed, problems = timestamps.parse(raw.iloc[rows], rules)
    for j, (code, message) in problems.items():
        verdicts.fail_at(int(rows[j]), code, "created_at", message)
    parsed.index = rows
    return parsed.reindex(range(len(raw)))


def _empty_posts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in POST_OUTPUT})


def _posts_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in POST_OUTPUT:
        if column == "created_at":
            out[column] = out[column].astype(timestamps.UTC_DTYPE)
        elif column == "source_row":
            out[column] = out[column].astype("int64")
        else:
            out[column] = out[column].astype(STRING)
    return out.reset_index(drop=True)


def _rejects_table(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=REJECT_OUTPUT, dtype=object)
    frame["source_row"] = frame["source_row"].astype("int64")
    for column in ("source_file", "column", "reason", "raw"):
        frame[column] = frame[column].astype(STRING)
    return frame


# -- accounts --------------------------------------------------------------------------------


def _ingest_accounts(path: Path, name: str, cfg: IngestConfig, rules: timestamps.TimeRules
                     ) -> tuple[pd.DataFrame, list[tuple], dict]:
    fmt = format_of(path)
    stats = {"file": name, "format": fmt, "encoding": None, "n_rows_in": 0, "n_accepted": 0,
             "n_rejected": 0, "reject_reasons": {}}
    frames: list[pd.DataFrame] = []
    rejects: list[tuple] = []
    if path.stat().st_size == 0:
        log.warning("%s is empty (0 bytes); no accounts", name)
        return _accounts_dtypes(None), rejects, stats
    reader = reader_for(path, name, fmt, cfg.encoding, cfg.chunk_rows)
    sources: dict[str, str | None] | None = None
    seen: dict[str, tuple] = {}
    for chunk in reader.chunks():
        stats["n_rows_in"] += chunk.n_rows
        rejects.extend((name, row, "", f"{code}: {message}", raw)
                       for row, code, message, raw in chunk.bad)
        if sources is None and reader.header is not None:
            sources = _account_sources(reader.header, name)
        if len(chunk.frame):
            valid, bad = _validate_accounts(chunk, sources, name, rules)
            rejects.extend(bad)
            frames.append(_dedupe_accounts(valid, chunk, name, seen, rejects))
    if sources is None and reader.header is not None:  # header only: still check it
        _account_sources(reader.header, name)
    stats["encoding"] = reader.encoding
    rejects.sort(key=lambda r: r[1])  # in row order
    accounts = _accounts_dtypes(pd.concat(frames, ignore_index=True) if frames else None)
    stats["n_accepted"] = len(accounts)
    stats["n_rejected"] = len(rejects)
    stats["reject_reasons"] = dict(sorted(Counter(_code(r[3]) for r in rejects).items()))
    if stats["n_rows_in"] != stats["n_accepted"] + stats["n_rejected"]:  # a bug
        raise RuntimeError(f"ingest lost account rows in {name}")
    return accounts, rejects, stats


def _account_sources(header: list[str], name: str) -> dict[str, str | None]:
    """The source column of each accounts column: the first of its known names in the header."""
    keys = {header_key(h) for h in header}
    sources = {c: next((s for s in ACCOUNT_SOURCES[c] if s in keys), None)
               for c in ACCOUNT_COLUMNS}
    if sources["account_id"] is None:
        found = ", ".join(str(h) for h in header if str(h).strip()) or "no columns"
        raise InputError(f'{name}: the accounts file needs an "account_id" column; found: '
                         f"{found}; rename the column holding account ids to account_id")
    return sources


def _validate_accounts(chunk: RawChunk, sources: dict[str, str | None], name: str,
                       rules: timestamps.TimeRules) -> tuple[pd.DataFrame, list[tuple]]:
    frame = chunk.frame
    n = len(frame)

    def column(canonical: str) -> pd.Series:
        source = sources[canonical]
        if source is None or source not in frame:
            return pd.Series(None, index=frame.index, dtype=object)
        return frame[source].astype(object)

    verdicts = _Verdicts(n)
    account_id = blank_to_none(column("account_id"))
    verdicts.fail(account_id.isna().to_numpy(), "empty_account_id", "account_id",
                  "account_id is empty")

    created_raw = column("created_at")
    has_time = present(created_raw).to_numpy()
    created_at = _no_times(n)
    if has_time.any():
        created_at = _parse_times(created_raw, has_time, rules, verdicts)

    counts = {}
    for canonical in ("followers", "name_changes"):
        raw = blank_to_none(column(canonical))
        values = np.full(n, None, dtype=object)
        for i in np.flatnonzero(raw.notna().to_numpy()):
            try:
                values[i] = parse_count(raw.iat[i])
            except ValueError:
                verdicts.fail_at(int(i), "bad_number", canonical,
                                 f"{canonical} {quote(raw.iat[i])} is not a whole number >= 0")
        counts[canonical] = values

    ok = verdicts.ok
    rejects = [(name, int(chunk.source_rows[i]), verdicts.column[i],
                f"{verdicts.code[i]}: {verdicts.message[i]}", chunk.raw(int(i)))
               for i in np.flatnonzero(~ok)]
    keep = np.flatnonzero(ok)
    valid = pd.DataFrame({
        "account_id": account_id.iloc[keep].to_numpy(),
        "created_at": created_at.iloc[keep].reset_index(drop=True),
        "name": blank_to_none(column("name")).iloc[keep].to_numpy(),
        "followers": counts["followers"][keep],
        "admin_countries": map_present(blank_to_none(column("admin_countries")).iloc[keep],
                                       normalise_countries).to_numpy(),
        "name_changes": counts["name_changes"][keep],
        "_row": chunk.source_rows[keep],
        "_pos": keep,
    })
    return valid, rejects


def _dedupe_accounts(valid: pd.DataFrame, chunk: RawChunk, name: str,
                     seen: dict[str, tuple], rejects: list[tuple]) -> pd.DataFrame:
    keep = np.ones(len(valid), dtype=bool)
    for i, row in enumerate(valid[list(ACCOUNT_COLUMNS) + ["_row"]].itertuples(index=False)):
        values, source_row = tuple(row[:-1]), int(row[-1])
        first = seen.get(values[0])
        if first is None:
            seen[values[0]] = (values, source_row)
            continue
        keep[i] = False
        differ = [c for c, a, b in zip(ACCOUNT_COLUMNS, first[0], values) if not _same(a, b)]
        where = f"{name} row {first[1]:,}"
        reason = (f"duplicate_conflict: account_id {quote(values[0])} already at {where} with "
                  f"different {', '.join(differ)}; the first is kept" if differ
                  else f"duplicate_identical: same as {where}; collapsed")
        rejects.append((name, source_row, "account_id", reason,
                        chunk.raw(int(valid["_pos"].iat[i]))))
    return valid[keep]


def _accounts_dtypes(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None:
        frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in ACCOUNT_COLUMNS})
    out = pd.DataFrame({
        "account_id": frame["account_id"].astype(STRING),
        "created_at": frame["created_at"].astype(timestamps.UTC_DTYPE),
        "name": frame["name"].astype(STRING),
        "followers": pd.array(frame["followers"].tolist(), dtype="Int64"),
        "admin_countries": frame["admin_countries"].astype(STRING),
        "name_changes": pd.array(frame["name_changes"].tolist(), dtype="Int64"),
    })
    return out.reset_index(drop=True)
