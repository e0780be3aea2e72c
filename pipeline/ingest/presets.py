"""Presets: where each canonical column comes from in a known export, and how to spot the export.

A preset lists, for each canonical column, the source columns to read it from. When several are
listed they are coalesced row by row: the first non-empty value wins (a CrowdTangle post without a
Message takes its text from the Description, then the Link Text). Header names are compared
case-insensitively with surrounding spaces removed, so every name here is lower case.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ..config import ColumnsConfig
from ..errors import InputError
from ..schema import OPTIONAL_POST_COLUMNS, REQUIRED_POST_COLUMNS
from .values import first_url, map_present, present

POST_COLUMNS = (*REQUIRED_POST_COLUMNS, *OPTIONAL_POST_COLUMNS)


def header_key(name: str) -> str:
    """How header names are matched: case-insensitive, surrounding spaces and BOM removed."""
    return str(name).replace("\ufeff", "").strip().casefold()


@dataclass(frozen=True)
class Derived:
    """A source column computed from others, e.g. CrowdTangle's date and time joined."""

    name: str
    inputs: tuple[str, ...]  # it exists when all of these do
    compute: Callable[[pd.DataFrame], pd.Series]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    sources: dict[str, tuple[str, ...]]  # canonical column -> source columns, coalesced in order
    detect: Callable[[set[str]], bool] = lambda header: False
    constants: dict[str, str] = field(default_factory=dict)  # value where the sources give none
    derived: tuple[Derived, ...] = ()
    transforms: dict[str, Callable[[str], str | None]] = field(default_factory=dict)
    timezone: str | None = None  # zone of timestamps without one; None: ingest.timezone
    time_unit: str | None = None  # unit of numeric timestamps when ingest.time_unit is auto


# -- CrowdTangle and Meta Content Library --------------------------------------------------


def _ct_created(frame: pd.DataFrame) -> pd.Series:
    date = frame["post created date"].astype(object).fillna("")
    return (date + " " + frame["post created time"].astype(object).fillna("")).str.strip()


def _ct_platform(frame: pd.DataFrame) -> pd.Series:
    link = _first_present(frame, ("url", "mcl_url"))
    platform = pd.Series("facebook", index=frame.index, dtype=object)
    return platform.where(~link.fillna("").str.contains("instagram.com", regex=False),
                          "instagram")


def _ct_account_type(frame: pd.DataFrame) -> pd.Series:
    out = pd.Series(None, index=frame.index, dtype=object)
    for column, kind in (("page name", "page"), ("group name", "group")):
        if column in frame:
            out = out.where(out.notna() | ~present(frame[column]), kind)
    if "url" in frame:
        out = out.where(~frame["url"].fillna("").str.contains("instagram.com", regex=False),
                        "instagram")
    return out


def _first_present(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    out = pd.Series(None, index=frame.index, dtype=object)
    for column in columns:
        if column in frame:
            out = out.where(present(out), frame[column])
    return out


CROWDTANGLE = Preset(
    name="crowdtangle",
    description="CrowdTangle post exports (Facebook pages and groups, Instagram) and Meta "
                "Content Library post CSVs",
    sources={
        # MCL has a post "id"; CrowdTangle has none, but its "URL" is the post's own address
        "post_id": ("id", "url"),
        # CrowdTangle's "Facebook Id" is the page or group that posted
        "account_id": ("post_owner.id", "facebook id", "surface.id"),
        "created_at": ("creation_time", "post created", "post created date+time", "created"),
        "text": ("text", "message", "description", "link text", "link_attachment.name",
                 "image text"),
        "url": ("link_attachment.link", "link", "final link"),
        "account_name": ("post_owner.name", "page name", "group name", "user name",
                         "post_owner.username"),
        "account_type": ("post_owner.type", "ct account type"),
        "platform": ("ct platform",),
        "lang": ("lang",),
        "reshare_of": ("shared_post_id",),
        "hashtags": ("hashtags",),
    },
    detect=lambda h: ("facebook id" in h and bool(
        h & {"post created", "post created date", "created"}))
    or ("creation_time" in h and bool(h & {"post_owner.id", "surface.id"})),
    derived=(
        Derived("post created date+time", ("post created date", "post created time"),
                _ct_created),
        Derived("ct platform", (), _ct_platform),
        Derived("ct account type", (), _ct_account_type),
    ),
)

# -- X/Twitter information-operations archive -----------------------------------------------

TWITTER_IO = Preset(
    name="twitter_io",
    description="X/Twitter information-operations archive (tweets_csv_hashed and the like)",
    sources={
        "post_id": ("tweetid",),
        "account_id": ("userid",),
        "created_at": ("tweet_time",),
        "text": ("tweet_text",),
        "url": ("urls",),
        "account_name": ("user_display_name", "user_screen_name"),
        "lang": ("tweet_language",),
        "reshare_of": ("retweet_tweetid",),
        "hashtags": ("hashtags",),
    },
    detect=lambda h: {"tweetid", "userid", "tweet_time"} <= h,
    constants={"platform": "twitter", "account_type": "profile"},
    transforms={"url": first_url},
    timezone="UTC",  # tweet_time is UTC without a zone ("2019-06-01 12:34")
)

# -- CooRTweet's prepared table --------------------------------------------------------------

COORTWEET = Preset(
    name="coortweet",
    description="CooRTweet's prepared table: object_id shared by account_id in content_id at "
                "timestamp_share",
    sources={
        "post_id": ("content_id",),
        "account_id": ("account_id",),
        "created_at": ("timestamp_share",),
        "text": ("object_id",),
    },
    detect=lambda h: {"object_id", "account_id", "content_id", "timestamp_share"} <= h,
    time_unit="s",
)

GENERIC = Preset(
    name="generic",
    description="canonical column names",
    sources={column: (column,) for column in POST_COLUMNS},
    detect=lambda h: True,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (GENERIC, CROWDTANGLE, TWITTER_IO, COORTWEET)}
DETECTION_ORDER = (COORTWEET, TWITTER_IO, CROWDTANGLE, GENERIC)


def detect(header: set[str]) -> Preset:
    return next(p for p in DETECTION_ORDER if p.detect(header))


# -- accounts --------------------------------------------------------------------------------

ACCOUNT_SOURCES: dict[str, tuple[str, ...]] = {
    "account_id": ("account_id", "userid", "user_id", "facebook id", "id"),
    "created_at": ("created_at", "account_creation_date", "page created", "creation_date"),
    "name": ("name", "account_name", "user_display_name", "page name", "user_screen_name"),
    "followers": ("followers", "follower_count", "followers_count", "subscriber_count"),
    "admin_countries": ("admin_countries", "page admin top country"),
    "name_changes": ("name_changes",),
}

# -- plans -----------------------------------------------------------------------------------

# names a column is often given; used to suggest a mapping when a required column is missing
_LIKELY = {
    "post_id": ("id", "tweet_id", "tweetid", "status_id", "content_id", "postid", "message_id",
                "post id", "uuid"),
    "account_id": ("user_id", "userid", "author_id", "author", "account", "user", "username",
                   "screen_name", "user_screen_name", "page_id", "channel_id", "from_id",
                   "sender_id", "owner_id"),
    "created_at": ("timestamp", "date", "time", "datetime", "created", "created_time",
                   "creation_time", "published_at", "published", "tweet_time", "post_created",
                   "posted_at", "date_time", "timestamp_share"),
    "text": ("message", "body", "content", "full_text", "tweet_text", "caption", "post_text",
             "message_text", "description", "title", "object_id"),
}


@dataclass(frozen=True)
class Plan:
    """How one file becomes canonical columns."""

    preset: Preset
    sources: dict[str, tuple[str, ...]]  # canonical -> source columns to coalesce
    labels: dict[str, str]  # canonical -> how its sources are named in messages
    derived: tuple[Derived, ...]
    mapped: dict[str, str]  # canonical -> source column named in ingest.columns


def plan(name: str, header: list[str], preset: Preset, columns: ColumnsConfig,
         check_now: bool = True) -> Plan:
    """Resolve ``preset`` and ``ingest.columns`` against a file's header.

    With ``check_now`` (CSV, Parquet) a missing required column is an error at once; JSON Lines
    files are checked at their end with :func:`check_required`, against every key seen.
    """
    keys = [header_key(h) for h in header]
    original = dict(zip(keys, header))
    sources: dict[str, tuple[str, ...]] = {}
    labels: dict[str, str] = {}
    for column in POST_COLUMNS:
        mapped = getattr(columns, column, "")
        if mapped:
            key = header_key(mapped)
            if check_now and key not in original:
                raise InputError(
                    f"{name}: ingest.columns.{column} = {mapped!r} but the file has no column "
                    f"{mapped!r}; found: {_listing(header)}; set ingest.columns.{column} to one "
                    "of these"
                )
            sources[column] = (key,)
        else:
            sources[column] = preset.sources.get(column, ())
    derived = tuple(d for d in preset.derived if set(d.inputs) <= set(keys))
    for column in POST_COLUMNS:  # for messages: the sources this file has, as it names them
        labels[column] = " or ".join(
            f'"{original[s]}"' if s in original else _source_label(preset, s)
            for s in sources[column] if s in original or s in {d.name for d in derived}
        ) or " or ".join(_source_label(preset, s) for s in sources[column]) or "no column"
    mapped_columns = {c: getattr(columns, c) for c in POST_COLUMNS if getattr(columns, c, "")}
    result = Plan(preset, sources, labels, derived, mapped_columns)
    if check_now:
        check_required(name, result, header)
    for column in REQUIRED_POST_COLUMNS:  # ambiguous headers: two columns read as the same name
        for source in result.sources[column]:
            if keys.count(source) > 1:
                twins = [h for h in header if header_key(h) == source]
                raise InputError(f"{name}: columns {', '.join(map(repr, twins))} have the same "
                                 "name once case and spaces are ignored; rename one")
    return result


def check_required(name: str, plan_: Plan, header: list[str]) -> None:
    """Every required column must have a source in ``header``; one error lists all missing."""
    available = {header_key(h) for h in header} | {d.name for d in plan_.derived}
    missing = [c for c in REQUIRED_POST_COLUMNS if not set(plan_.sources[c]) & available]
    if not missing:
        return
    found = _listing(header)
    for column in missing:
        if column in plan_.mapped:
            raise InputError(f"{name}: ingest.columns.{column} = {plan_.mapped[column]!r} but "
                             f"the file has no column {plan_.mapped[column]!r}; found: {found}; "
                             f"set ingest.columns.{column} to one of these")
    guesses = {c: _suggest(c, header) or "<column>" for c in missing}
    names = ", ".join(f'"{c}"' for c in missing)
    what = (f"required column {names} not found" if len(missing) == 1
            else f"required columns {names} not found")
    if plan_.preset.name != "generic":
        what += f" (the {plan_.preset.name} preset reads " + "; ".join(
            f"{c} from " + ", ".join(_source_label(plan_.preset, s) for s in plan_.sources[c])
            for c in missing) + ")"
    settings = ", ".join(f'ingest.columns.{c} = "{g}"' for c, g in guesses.items())
    flags = " ".join(f"--set ingest.columns.{c}={g}" for c, g in guesses.items())
    them = "it" if len(missing) == 1 else "them"
    raise InputError(f"{name}: {what}; found: {found}; rename {them} or set {settings} "
                     f"(or {flags})")


def _source_label(preset: Preset, source: str) -> str:
    derived = next((d for d in preset.derived if d.name == source), None)
    if derived is not None and derived.inputs:
        return " + ".join(f'"{i}"' for i in derived.inputs)
    return f'"{source}"'


def _suggest(column: str, header: list[str]) -> str | None:
    keys = {header_key(h): h for h in header}
    for likely in _LIKELY.get(column, ()):
        if likely in keys:
            return keys[likely]
    close = difflib.get_close_matches(column, list(keys), n=1, cutoff=0.75)
    return keys[close[0]] if close else None


def _listing(header: list[str], limit: int = 30) -> str:
    names = [h for h in header if str(h).strip()]
    if not names:
        return "no columns"
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def canonical(frame: pd.DataFrame, plan_: Plan) -> dict[str, pd.Series]:
    """The canonical columns of a chunk of raw text cells (values not yet cleaned)."""
    frame = frame.copy(deep=False)
    for d in plan_.derived:
        frame[d.name] = d.compute(frame)
    out: dict[str, pd.Series] = {}
    for column in POST_COLUMNS:
        sources = [s for s in plan_.sources[column] if s in frame]
        if not sources:
            series = pd.Series(None, index=frame.index, dtype=object)
        else:
            series = frame[sources[0]].astype(object)
            for source in sources[1:]:
                series = series.where(present(series), frame[source].astype(object))
        if column in plan_.preset.transforms:
            series = map_present(series.where(present(series), None),
                                 plan_.preset.transforms[column])
        if column in plan_.preset.constants:
            series = series.where(present(series), plan_.preset.constants[column])
        out[column] = series
    return out
