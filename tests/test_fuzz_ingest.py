"""Fuzzed ingest: hostile corpora end in a clear error or in quarantined rows, never a traceback.

FAMILIES is the registry of case families, each a hypothesis strategy that builds a whole corpus
(files as bytes, plus ingest settings). Every case must either raise an InputError/ConfigError
whose message names the file and says what to do, or give posts and rejects whose counts
reconcile (rows in = accepted + rejected) with every reject naming its file, row, column and
reason. The same cases also go through `lockstep cluster` (CliRunner, fast hashing embedder):
exit code 0 or 1, never a traceback.

Hypothesis is derandomised (the same examples on every run and machine), so CI is stable.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline import config, embed
from pipeline.cli import app
from pipeline.errors import ConfigError, InputError
from pipeline.ingest import run as ingest_run
from tests.conftest import HashingEmbedder

HEADER = ["post_id", "account_id", "created_at", "text"]
EXAMPLES = 20  # per family, for the ingest property
CLI_EXAMPLES = 1  # per family, for the end-to-end property (each is a whole pipeline run)
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=False)
GENERATED: Counter = Counter()  # family -> rows (posts) generated, for the report


@dataclass
class Case:
    files: dict[str, bytes]  # path in the corpus folder -> content
    n_rows: int  # data rows written (posts generated)
    settings: list[str] = field(default_factory=list)  # --set overrides
    expect: str | None = None  # "error" (with a message matching `match`), "ok", or None
    match: str = ""
    single: str | None = None  # the corpus is this one file, not the folder


# -- building blocks ---------------------------------------------------------------------------

ids = st.integers(0, 40).map(str)
accounts = st.sampled_from(["a1", "a2", "page_3", "grp-4", "5"])
good_times = st.datetimes(min_value=pd.Timestamp("2001-01-01").to_pydatetime(),
                          max_value=pd.Timestamp("2099-01-01").to_pydatetime()).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
words = st.sampled_from(["army", "kashmir", "news", "flood", "vote", "cricket", "#tag",
                         "http://x.test/a", "pakistan", "india", "peace", "fake", "rally"])
plain_text = st.lists(words, min_size=1, max_size=8).map(" ".join)
any_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=60)


def rows_of(post_id=ids, account=accounts, created=good_times, text=plain_text,
            min_size=1, max_size=12):
    return st.lists(st.tuples(post_id, account, created, text), min_size=min_size,
                    max_size=max_size)


def csv_bytes(rows, header=HEADER, delimiter=",", encoding="utf-8", newline="\n") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode(encoding)


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=3)
    return sink.getvalue()


def csv_case(rows, **kw) -> Case:
    sets = kw.pop("settings", [])
    expect, match = kw.pop("expect", None), kw.pop("match", "")
    return Case({"posts.csv": csv_bytes(rows, **kw)}, len(rows), sets, expect, match)


# -- the families --------------------------------------------------------------------------------

FAMILIES: dict[str, st.SearchStrategy[Case]] = {}


def family(name: str):
    def register(fn):
        FAMILIES[name] = st.composite(fn)()
        return fn
    return register


# malformed CSV

@family("csv_unbalanced_quote")
def _(draw):
    rows = draw(rows_of(min_size=2))
    at = draw(st.integers(0, len(rows) - 1))
    lines = csv_bytes(rows).decode().splitlines(keepends=True)
    lines[at + 1] = lines[at + 1].replace(",", ',"', 1)  # a quote opened, never closed
    return Case({"posts.csv": "".join(lines).encode()}, len(rows))


@family("csv_stray_quote_inside_field")
def _(draw):
    rows = draw(rows_of())
    body = csv_bytes(rows).decode().rstrip("\n") + '\n99,a1,2020-01-01,he said "hi" twice\n'
    return Case({"posts.csv": body.encode()}, len(rows) + 1)


@family("csv_ragged_rows")
def _(draw):
    rows = [list(r) for r in draw(rows_of(min_size=2))]
    for r in rows:
        change = draw(st.sampled_from(["keep", "drop", "extra"]))
        if change == "drop":
            r.pop()
        elif change == "extra":
            r.append(draw(plain_text))
    return csv_case(rows)


@family("csv_embedded_newlines")
def _(draw):
    rows = draw(rows_of(text=st.lists(plain_text, min_size=1, max_size=3).flatmap(
        lambda parts: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda nl: nl.join(parts)))))
    return csv_case(rows, newline=draw(st.sampled_from(["\n", "\r\n"])))


@family("csv_blank_lines")
def _(draw):
    rows = draw(rows_of())
    lines = csv_bytes(rows).decode().splitlines(keepends=True)
    out = []
    for line in lines:
        out.append(line)
        out.extend(["\n", "   \n", ""][draw(st.integers(0, 2))] for _ in range(
            draw(st.integers(0, 2))))
    return Case({"posts.csv": "".join(out).encode()}, len(rows))


@family("csv_other_delimiters")
def _(draw):
    delimiter = draw(st.sampled_from([";", "\t", "|"]))
    return csv_case(draw(rows_of()), delimiter=delimiter)


@family("tsv_file")
def _(draw):
    rows = draw(rows_of())
    return Case({"posts.tsv": csv_bytes(rows, delimiter="\t")}, len(rows))


@family("csv_duplicate_and_odd_headers")
def _(draw):
    header = HEADER + draw(st.lists(st.sampled_from(["text", "Post ID", "", " url ", "ünï"]),
                                    max_size=3))
    rows = [list(r) + [draw(plain_text) for _ in header[4:]] for r in draw(rows_of())]
    return csv_case(rows, header=header)


@family("csv_missing_required_column")
def _(draw):
    drop = draw(st.sampled_from(HEADER))
    keep = [h for h in HEADER if h != drop]
    rows = [[v for h, v in zip(HEADER, r) if h != drop] for r in draw(rows_of())]
    return csv_case(rows, header=keep, expect="error", match=r"posts\.csv")


@family("csv_header_only_or_garbage_header")
def _(draw):
    content = draw(st.sampled_from([b"post_id,account_id,created_at,text\n",
                                    b"\n\n\n", b'"unclosed,header\n1,2,3\n',
                                    b"just one line with no delimiter"]))
    return Case({"posts.csv": content}, 0)


@family("csv_nul_and_control_bytes")
def _(draw):
    rows = draw(rows_of(text=st.tuples(plain_text, st.sampled_from(
        ["\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\x0b", "\x0c"])).map("".join)))
    return csv_case(rows)


@family("csv_huge_field_count")
def _(draw):
    n = draw(st.integers(50, 400))
    header = HEADER + [f"c{i}" for i in range(n)]
    rows = [list(r) + ["x"] * n for r in draw(rows_of(max_size=4))]
    return csv_case(rows, header=header)


# encodings

@family("utf8_with_bom")
def _(draw):
    rows = draw(rows_of(text=any_text.filter(str.strip)))
    return Case({"posts.csv": codecs.BOM_UTF8 + csv_bytes(rows)}, len(rows), expect="ok")


@family("utf16_with_bom")
def _(draw):
    rows = draw(rows_of(text=any_text.filter(str.strip)))
    encoding = draw(st.sampled_from(["utf-16", "utf-32"]))
    return Case({"posts.csv": csv_bytes(rows, encoding=encoding)}, len(rows), expect="ok")


@family("utf16_without_bom")
def _(draw):
    rows = draw(rows_of())
    encoding = draw(st.sampled_from(["utf-16-le", "utf-16-be"]))
    return Case({"posts.csv": csv_bytes(rows, encoding=encoding)}, len(rows), expect="error",
                match=r"posts\.csv looks like UTF-16 .*ingest\.encoding=utf-16-")


@family("latin1_without_setting")
def _(draw):
    rows = draw(rows_of(text=st.tuples(plain_text, st.sampled_from(["é", "ñ", "ü", "£"])).map(
        "".join)))
    return Case({"posts.csv": csv_bytes(rows, encoding="latin-1")}, len(rows), expect="error",
                match=r"posts\.csv is not valid UTF-8: byte .* \(line \d+\).*Fix: --set "
                      r"ingest\.encoding=")


@family("latin1_with_setting")
def _(draw):
    rows = draw(rows_of(text=st.tuples(plain_text, st.sampled_from(["é", "ñ", "ü", "£"])).map(
        "".join)))
    codec = draw(st.sampled_from(["latin-1", "cp1252"]))
    return Case({"posts.csv": csv_bytes(rows, encoding=codec)}, len(rows),
                [f"ingest.encoding={codec}"], expect="ok")


@family("invalid_utf8_bytes")
def _(draw):
    rows = draw(rows_of(min_size=1))
    raw = bytearray(csv_bytes(rows))
    at = draw(st.integers(len(",".join(HEADER)) + 1, len(raw) - 1))
    raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x9f"]))
    return Case({"posts.csv": bytes(raw)}, len(rows), expect="error",
                match=r"posts\.csv is not valid UTF-8.*Fix:")


@family("unknown_encoding_setting")
def _(draw):
    rows = draw(rows_of())
    return Case({"posts.csv": csv_bytes(rows)}, len(rows), ["ingest.encoding=klingon-8"],
                expect="error", match=r"ingest\.encoding .*not a codec")


# timestamps

@family("ts_mixed_zones")
def _(draw):
    zones = st.sampled_from(["Z", "+05:30", "-0800", " CEST", " PKT", "", "+14:00", " XYZT"])
    created = st.tuples(good_times.map(lambda t: t[:-1]), zones).map("".join)
    return csv_case(draw(rows_of(created=created)))


@family("ts_unix_seconds_and_millis")
def _(draw):
    seconds = st.integers(978307200, 4070908800)
    created = st.one_of(seconds.map(str), seconds.map(lambda s: str(s * 1000)),
                        seconds.map(lambda s: f"{s}.{s % 1000:03d}"))
    return csv_case(draw(rows_of(created=created)),
                    settings=draw(st.sampled_from([[], ["ingest.time_unit=s"],
                                                   ["ingest.time_unit=ms"]])))


@family("ts_impossible_dates")
def _(draw):
    created = st.sampled_from(["2021-02-30", "2021-13-01", "2021-00-10", "2021-04-31T10:00",
                               "2021-01-01T25:00:00", "2021-01-01T10:61", "0000-01-01",
                               "2021-02-29T00:00:00Z"])
    return csv_case(draw(rows_of(created=created)))


@family("ts_far_future_and_past")
def _(draw):
    created = st.sampled_from(["9999-12-31T23:59:59Z", "3000-01-01", "2100-01-01T00:00:00Z",
                               "1970-01-01T00:00:00Z", "0001-01-01", "1999-12-31T23:59:59Z",
                               "99999999999999", "-1", "0", "1e300", "253402300800"])
    return csv_case(draw(rows_of(created=created)))


@family("ts_garbage")
def _(draw):
    return csv_case(draw(rows_of(created=any_text)))


@family("ts_numeric_oddities")
def _(draw):
    created = st.sampled_from(["nan", "inf", "-inf", "1e5", ".5", "+1632663902", "1_632_663_902",
                               "0x61", "1632663902000000", "-1632663902"])
    return csv_case(draw(rows_of(created=created)))


@family("ts_other_formats")
def _(draw):
    created = st.sampled_from(["Sat Feb 08 16:50:17 +0000 2020",
                               "Sat, 08 Feb 2020 16:50:17 +0000", "20200208T165017Z",
                               "2020-02-08 16:50", "08/02/2020", "2020-W06-6",
                               "2020-02-08T16:50:17.123456789Z"])
    return csv_case(draw(rows_of(created=created)))


@family("ts_bad_timezone_setting")
def _(draw):
    return csv_case(draw(rows_of()), settings=[draw(st.sampled_from(
        ["ingest.timezone=Mars/Olympus", "ingest.min_created_at=yesterday",
         "ingest.max_created_at=1999-01-01"]))], expect="error", match=r"ingest\.")


@family("ts_dst_gaps_with_local_zone")
def _(draw):
    created = st.sampled_from(["2021-03-28 02:30:00", "2021-10-31 02:30:00",
                               "2021-03-14 02:30:00", "2021-06-01 12:00:00"])
    zone = draw(st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Karachi"]))
    return csv_case(draw(rows_of(created=created)), settings=[f"ingest.timezone={zone}"],
                    expect="ok")


# ids

@family("ids_empty")
def _(draw):
    return csv_case(draw(rows_of(post_id=st.sampled_from(["", " ", "\t", "1", "2"]),
                                 account=st.sampled_from(["", "  ", "a1"]))))


@family("ids_duplicates")
def _(draw):
    rows = draw(rows_of(post_id=st.sampled_from(["1", "2", "3"]), min_size=3))
    rows += [rows[0]] * draw(st.integers(1, 3))  # identical repeats too
    return csv_case(rows)


@family("ids_numeric_vs_string_jsonl")
def _(draw):
    values = st.sampled_from([1, "1", "01", 1.0, "1.0", 2**70, -3, True, None, [1], {"a": 1},
                              1e20, "x"])
    records = [{"post_id": draw(values), "account_id": draw(values),
                "created_at": draw(good_times), "text": draw(plain_text)}
               for _ in range(draw(st.integers(1, 10)))]
    return Case({"posts.jsonl": jsonl_bytes(records)}, len(records))


@family("ids_long_and_odd")
def _(draw):
    odd = st.one_of(st.text(min_size=1, max_size=300).filter(str.strip),
                    st.sampled_from(["=1+1", "@SUM(A1)", "-1", "1e3", "NaN", "None", "null"]))
    return csv_case(draw(rows_of(post_id=odd, account=odd)))


# text

@family("text_empty_or_whitespace")
def _(draw):
    return csv_case(draw(rows_of(text=st.sampled_from(["", " ", "\t", "\n\n", " \r\n ",
                                                       "\u00a0", "\u3000", "ok text"]))))


@family("text_one_megabyte_post")
def _(draw):
    big = draw(st.sampled_from(["a", "é", "🙂", "word "])) * draw(st.sampled_from(
        [1_000_000, 250_000]))
    rows = draw(rows_of(max_size=3)) + [("big", "a1", "2021-01-01T00:00:00Z", big)]
    return csv_case(rows, expect="ok")


@family("text_control_and_escape_sequences")
def _(draw):
    control = st.sampled_from(["\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\x00", "\x08" * 5,
                               "\x1b[1A\x1b[K", "\u0085"])
    return csv_case(draw(rows_of(text=st.tuples(plain_text, control, plain_text).map(
        "".join))))


@family("text_zero_width_and_bidi")
def _(draw):
    marks = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202e",
                             "\u2066", "\ufeff", "\u061c"])
    return csv_case(draw(rows_of(text=st.lists(st.one_of(words, marks), min_size=1,
                                               max_size=10).map("".join))))


@family("text_emoji_and_scripts")
def _(draw):
    bits = st.sampled_from(["🇵🇰", "👨‍👩‍👧", "🙂", "پاکستان", "भारत", "中文", "𝔘𝔫𝔦", "e\u0301",
                            "ﷺ", "Ꙁ"])
    return csv_case(draw(rows_of(text=st.lists(bits, min_size=1, max_size=8).map(" ".join))),
                    expect="ok")


@family("text_arbitrary_unicode")
def _(draw):
    return csv_case(draw(rows_of(text=any_text, account=any_text, post_id=any_text)))


@family("text_formula_and_markup")
def _(draw):
    payload = st.sampled_from(["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1)", "\t=1",
                               "\r=1", "<script>alert(1)</script>", "'=already quoted"])
    return csv_case(draw(rows_of(text=payload, account=payload)))


# corpus shape

@family("corpus_empty_folder")
def _(draw):
    files = draw(st.sampled_from([{}, {"README.md": b"hi"}, {".hidden.csv": b"x"}]))
    return Case(files, 0, expect="error", match=r"has no posts file")


@family("corpus_empty_file")
def _(draw):
    name = draw(st.sampled_from(["posts.csv", "posts.jsonl", "posts.tsv"]))
    return Case({name: b""}, 0)


@family("corpus_single_post")
def _(draw):
    rows = draw(rows_of(min_size=1, max_size=1))
    return Case({"posts.csv": csv_bytes(rows)}, 1, single="posts.csv", expect="ok")


@family("corpus_all_identical_posts")
def _(draw):
    row = draw(rows_of(min_size=1, max_size=1))[0]
    n = draw(st.integers(2, 40))
    rows = [(str(i), row[1], row[2], row[3]) for i in range(n)]
    return csv_case(rows, expect="ok")


@family("corpus_single_account")
def _(draw):
    return csv_case(draw(rows_of(account=st.just("only"), post_id=st.integers(0, 10**6).map(
        str), min_size=2, max_size=30)))


@family("corpus_unsupported_file")
def _(draw):
    name = draw(st.sampled_from(["posts.xlsx", "posts.txt", "posts"]))
    return Case({name: b"post_id,account_id\n"}, 0, single=name, expect="error",
                match="not a supported posts file")


@family("corpus_mixed_formats_and_accounts")
def _(draw):
    rows = draw(rows_of())
    records = [dict(zip(HEADER, r)) for r in draw(rows_of())]
    accounts_csv = csv_bytes(draw(st.lists(st.tuples(
        accounts, st.sampled_from(["10", "1,234", "x", "", "-1", "1e3"]),
        st.sampled_from(["DE;FR", "['PK']", "", "in"])), max_size=6)),
        header=["account_id", "followers", "admin_countries"])
    return Case({"a/posts.csv": csv_bytes(rows), "b.jsonl": jsonl_bytes(records),
                 "accounts.csv": accounts_csv}, len(rows) + len(records))


@family("corpus_two_accounts_files")
def _(draw):
    return Case({"posts.csv": csv_bytes(draw(rows_of())), "accounts.csv": b"account_id\na\n",
                 "x/accounts.jsonl": b'{"account_id": "a"}\n'}, 0, expect="error",
                match="accounts files")


# JSON Lines and Parquet

@family("jsonl_broken_lines")
def _(draw):
    good = [json.dumps(dict(zip(HEADER, r))) for r in draw(rows_of())]
    bad = draw(st.lists(st.sampled_from(["{broken", '{"a": }', "[1, 2]", '"text"', "null",
                                         "42", "true", "{}", '{"post_id": "1"'] ), max_size=4))
    lines = good + bad
    order = draw(st.permutations(range(len(lines))))
    body = "\n".join(lines[i] for i in order) + "\n"
    return Case({"posts.jsonl": body.encode()}, len(lines))


@family("jsonl_nested_and_typed")
def _(draw):
    records = [{"post_id": r[0], "account": {"id": r[1], "name": {"first": "x"}},
                "created_at": draw(st.one_of(st.just(r[2]), st.integers(10**9, 4 * 10**9))),
                "text": r[3], "extra": draw(st.one_of(st.none(), st.booleans(), st.floats(),
                                                      st.lists(st.integers(), max_size=3)))}
               for r in draw(rows_of())]
    return Case({"posts.jsonl": jsonl_bytes(records)}, len(records),
                ["ingest.columns.account_id=account.id"])


@family("jsonl_deep_nesting")
def _(draw):
    depth = draw(st.sampled_from([50, 2000, 100_000]))
    line = '{"post_id": "1", "text": ' + "[" * depth + "]" * depth + "}"
    good = jsonl_bytes([dict(zip(HEADER, r)) for r in draw(rows_of())])
    return Case({"posts.jsonl": good + line.encode() + b"\n"}, draw(st.just(0)) + len(
        good.splitlines()) + 1)


@family("parquet_typed_columns")
def _(draw):
    rows = draw(rows_of())
    table = pa.table({
        "post_id": pa.array([draw(st.one_of(st.none(), st.integers(-5, 10**12))) for _ in rows],
                            type=pa.int64()),
        "account_id": pa.array([r[1] for r in rows]).dictionary_encode(),
        "created_at": pa.array([pd.Timestamp(r[2]).to_pydatetime() for r in rows],
                               type=pa.timestamp("ms", tz="UTC")),
        "text": pa.array([draw(st.one_of(st.none(), plain_text)) for _ in rows]),
        "meta": pa.array([{"k": 1, "v": "x"}] * len(rows)),
    })
    return Case({"posts.parquet": parquet_bytes(table)}, len(rows))


@family("parquet_corrupt")
def _(draw):
    good = parquet_bytes(pa.table({"post_id": ["1", "2"], "account_id": ["a", "b"],
                                   "created_at": ["2021-01-01"] * 2, "text": ["x", "y"]}))
    cut = draw(st.sampled_from([b"PAR1garbagePAR1", good[: len(good) // 2], good[:-9],
                                good[:4] + b"\x00" * 40 + good[44:]]))
    return Case({"posts.parquet": cut}, 2)


@family("preset_columns_setting")
def _(draw):
    header = ["id", "user", "when", "message"]
    rows = draw(rows_of())
    settings_ = ["ingest.columns.post_id=id", "ingest.columns.account_id=user",
                 "ingest.columns.created_at=when", "ingest.columns.text=message"]
    drop = draw(st.integers(0, 4))  # sometimes one mapping is wrong: a clear error
    if drop < 4:
        settings_[drop] = settings_[drop].split("=")[0] + "=nope"
    return csv_case(rows, header=header, settings=settings_)


# -- the properties --------------------------------------------------------------------------

ROW_LEVEL = {"ragged_row", "unreadable_row", "bad_json", "not_an_object"}


def materialise(case: Case, folder: Path) -> Path:
    corpus = folder / "corpus"
    corpus.mkdir()
    for name, content in case.files.items():
        path = corpus / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return corpus / case.single if case.single else corpus


def check_ingest(case: Case, corpus: Path) -> str:
    try:
        cfg = config.load(None, case.settings)
        result = ingest_run(corpus, cfg.ingest)
    except (InputError, ConfigError) as exc:
        message = str(exc)
        assert "Traceback" not in message and "\n" not in message.strip(), message
        if isinstance(exc, InputError):  # names the file (or the corpus) it is about
            assert any(Path(n).name in message for n in case.files) or corpus.name in message, \
                message
        assert case.expect != "ok", message
        assert re.search(case.match, message), (case.match, message)
        return "error"
    assert case.expect != "error", f"expected an error matching {case.match!r}"
    stats = result.stats
    assert stats["n_rows_in"] == stats["n_accepted"] + stats["n_rejected"]
    assert stats["n_accepted"] == len(result.posts)
    n_account_rejects = stats["accounts"]["n_rejected"] if stats["accounts"] else 0
    assert len(result.rejects) == stats["n_rejected"] + n_account_rejects
    for f in stats["files"]:
        assert f["n_rows_in"] == f["n_accepted"] + f["n_rejected"], f
    posts = result.posts
    assert posts["post_id"].is_unique
    assert posts["post_id"].str.strip().str.len().gt(0).all()
    assert posts["account_id"].str.strip().str.len().gt(0).all()
    assert posts["text"].str.strip().str.len().gt(0).all()
    assert posts["created_at"].notna().all()
    assert (posts["created_at"] >= pd.Timestamp(cfg.ingest.min_created_at)).all()
    assert (posts["created_at"] < pd.Timestamp(cfg.ingest.max_created_at)).all()
    assert not posts["text"].str.contains("\x00", regex=False).any()
    names = {Path(n).as_posix() for n in case.files} | {Path(n).name for n in case.files}
    for r in result.rejects.itertuples(index=False):
        code, _, message = r.reason.partition(": ")
        assert r.source_file in names and r.source_row >= 1 and message, r
        assert code in ROW_LEVEL or r.column, r  # a cell problem names its column
    return "ok"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fuzzed_ingest_errors_clearly_or_reconciles(name):
    @FUZZ
    @given(FAMILIES[name])
    def prop(case: Case):
        GENERATED[name] += case.n_rows
        with tempfile.TemporaryDirectory() as tmp:
            check_ingest(case, materialise(case, Path(tmp)))

    prop()


@pytest.fixture(scope="module")
def fast_embedder():
    mp = pytest.MonkeyPatch()
    mp.setitem(embed.TIERS, "quality", lambda cfg: HashingEmbedder())
    yield
    mp.undo()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fuzzed_cluster_cli_exits_0_or_1_without_traceback(name, fast_embedder):
    @settings(FUZZ, max_examples=CLI_EXAMPLES)
    @given(FAMILIES[name])
    def prop(case: Case):
        GENERATED[name] += case.n_rows
        with tempfile.TemporaryDirectory() as tmp:
            corpus = materialise(case, Path(tmp))
            args = ["cluster", str(corpus), "--out", str(Path(tmp) / "run"),
                    "--set", f"embed.cache_dir={Path(tmp) / 'cache'}"]
            for s in case.settings:
                args += ["--set", s]
            result = CliRunner().invoke(app, args)
            output = result.output
            assert result.exception is None or isinstance(result.exception, SystemExit), \
                (type(result.exception), output[-2000:])
            assert "Traceback" not in output
            assert result.exit_code in (0, 1, 2), output[-2000:]
            if result.exit_code:
                assert "error: " in output, output[-2000:]
                assert case.expect != "ok", output[-2000:]
            else:
                assert case.expect != "error", output[-2000:]
                manifest = json.loads((Path(tmp) / "run" / "manifest.json").read_text())
                c = manifest["counts"]
                assert c["rows_in"] == c["accepted"] + c["rejected"]
                assert len(pd.read_parquet(Path(tmp) / "run" / "assignments.parquet")) == \
                    c["accepted"]

    prop()


def test_fuzz_registry_size_and_volume():
    """At least 40 distinct families; the runs above generated posts in every one of them."""
    assert len(FAMILIES) >= 40
    if len(GENERATED) == len(FAMILIES):  # the whole module ran
        print(f"\nfuzz: {len(FAMILIES)} families, {sum(GENERATED.values()):,} posts generated")
        assert sum(GENERATED.values()) > 1000
