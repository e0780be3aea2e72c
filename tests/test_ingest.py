"""Ingest: formats, presets, column mapping, bad input, duplicates, encodings, timestamps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ColumnsConfig, IngestConfig
from pipeline.errors import ConfigError, InputError
from pipeline.ingest import PRESETS, input_hash, list_files, run
from pipeline.ingest import timestamps
from pipeline.ingest.values import first_url, normalise_hashtags
from pipeline.schema import ACCOUNTS, POSTS, REJECTS

HEADER = "post_id,account_id,created_at,text\n"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def ingest(corpus: Path, **settings):
    return run(corpus, IngestConfig(**settings))


def reasons(result) -> dict[int, str]:
    """source_row -> reason code, for the rejects of one file."""
    return {int(r.source_row): r.reason.split(":", 1)[0] for r in result.rejects.itertuples()}


def check_invariant(result) -> None:
    stats = result.stats
    assert stats["n_rows_in"] == stats["n_accepted"] + stats["n_rejected"]
    assert stats["n_accepted"] == len(result.posts)
    n_account_rejects = stats["accounts"]["n_rejected"] if stats["accounts"] else 0
    assert len(result.rejects) == stats["n_rejected"] + n_account_rejects
    assert sum(stats["reject_reasons"].values()) == stats["n_rejected"]
    for f in stats["files"]:
        assert f["n_rows_in"] == f["n_accepted"] + f["n_rejected"]


# -- formats -----------------------------------------------------------------------------------


def test_csv_gives_the_posts_schema_in_row_order(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER
                 + "p1,a1,2021-09-26T13:45:02+02:00,first post\n"
                 + 'p2,a2,2021-09-26 12:00:00Z,"second, with comma\nand newline"\n')
    result = ingest(path)
    posts = result.posts
    assert list(posts.columns) == [f.name for f in POSTS]
    assert str(posts["created_at"].dtype) == "datetime64[us, UTC]"
    assert posts["source_row"].dtype == "int64"
    assert posts["post_id"].tolist() == ["p1", "p2"]
    assert posts["created_at"].tolist() == [pd.Timestamp("2021-09-26 11:45:02", tz="UTC"),
                                            pd.Timestamp("2021-09-26 12:00:00", tz="UTC")]
    assert posts["text"].tolist() == ["first post", "second, with comma\nand newline"]
    assert posts["source_file"].tolist() == ["posts.csv", "posts.csv"]
    assert posts["source_row"].tolist() == [1, 2]
    assert posts["url"].isna().all()
    assert list(result.rejects.columns) == [f.name for f in REJECTS]
    assert result.accounts is None
    assert result.stats["files"][0] == {"file": "posts.csv", "format": "csv", "encoding": "utf-8",
                                        "preset": "generic", "n_rows_in": 2, "n_accepted": 2,
                                        "n_rejected": 0}


def test_tsv_and_semicolon_csv(tmp_path):
    tsv = write(tmp_path / "t", "posts.tsv", "post_id\taccount_id\tcreated_at\ttext\n"
                "1\ta\t2021-01-01\thello, world\n")
    semi = write(tmp_path / "s", "posts.csv", "post_id;account_id;created_at;text\n"
                 "1;a;2021-01-01;hello, world\n")
    for path, fmt in ((tsv, "tsv"), (semi, "csv")):
        result = ingest(path)
        assert result.posts["text"].tolist() == ["hello, world"]
        assert result.stats["files"][0]["format"] == fmt


def test_jsonl_values_and_nested_objects(tmp_path):
    lines = [
        {"post_id": 123456789012345678901, "account_id": "a", "created_at": 1632656702,
         "text": "numbers become text", "hashtags": ["One", "#Two"], "lang": None},
        {"post_id": "x2", "account_id": "b", "created_at": "2021-09-26T13:45:02Z",
         "text": "second", "extra": {"nested": True}},
    ]
    path = write(tmp_path, "posts.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    posts = ingest(path).posts
    assert posts["post_id"].tolist() == ["123456789012345678901", "x2"]  # no float rounding
    assert posts["hashtags"].tolist()[0] == "one two"
    assert posts["created_at"].iat[0] == pd.Timestamp("2021-09-26 11:45:02", tz="UTC")
    assert posts["source_row"].tolist() == [1, 2]


def test_jsonl_rows_without_a_required_key_are_rejected_not_fatal(tmp_path):
    # the first object has no "text"; a later one has: the key exists, the row is rejected
    path = write(tmp_path, "posts.jsonl",
                 '{"post_id": "1", "account_id": "a", "created_at": "2021-01-01"}\n'
                 '{"post_id": "2", "account_id": "a", "created_at": "2021-01-01", "text": "t"}\n')
    result = ingest(path)
    assert result.posts["post_id"].tolist() == ["2"]
    assert reasons(result) == {1: "empty_text"}


def test_jsonl_without_a_required_key_anywhere_is_an_input_error(tmp_path):
    path = write(tmp_path, "posts.jsonl",
                 '{"post_id": "1", "account_id": "a", "created_at": "2021-01-01", "body": "x"}\n')
    with pytest.raises(InputError, match=r'posts.jsonl: required column "text" not found; '
                                         r"found: post_id, account_id, created_at, body"):
        ingest(path)


def test_parquet_typed_columns(tmp_path):
    table = pa.table({
        "post_id": pa.array([10, 11, None], pa.int64()),
        "account_id": ["a", "b", "c"],
        "created_at": pa.array([pd.Timestamp("2021-06-01 12:00", tz="Europe/Berlin")] * 3,
                               pa.timestamp("us", tz="Europe/Berlin")),
        "text": pa.array(["x", "y", "z"]).dictionary_encode(),
        "hashtags": pa.array([["A", "b"], [], None], pa.list_(pa.string())),
    })
    pq.write_table(table, tmp_path / "posts.parquet", row_group_size=2)
    result = ingest(tmp_path / "posts.parquet", chunk_rows=2)
    posts = result.posts
    assert posts["post_id"].tolist() == ["10", "11"]
    assert posts["text"].tolist() == ["x", "y"]
    assert (posts["created_at"] == pd.Timestamp("2021-06-01 10:00", tz="UTC")).all()
    assert posts["hashtags"].tolist()[0] == "a b"
    assert pd.isna(posts["hashtags"].iat[1])
    assert reasons(result) == {3: "empty_post_id"}
    assert "account_id" in result.rejects["raw"].iat[0]  # the raw record, as JSON
    assert result.stats["files"][0]["format"] == "parquet"


def test_parquet_float_ids_and_struct_columns(tmp_path):
    # ids with a gap become floats in pandas; Meta Content Library nests the owner in a struct
    table = pa.table({
        "id": pa.array([1234567.0, 99.0], pa.float64()),
        "creation_time": ["2024-03-01T12:00:00", "2024-03-01T12:05:00"],
        "text": ["a", "b"],
        "post_owner": pa.array([{"id": "987", "name": "P", "type": "PAGE"},
                                {"id": "988", "name": "Q", "type": "group"}]),
    })
    pq.write_table(table, tmp_path / "mcl.parquet")
    result = ingest(tmp_path / "mcl.parquet")
    assert result.stats["files"][0]["preset"] == "crowdtangle"
    posts = result.posts
    assert posts["post_id"].tolist() == ["1234567", "99"]
    assert posts["account_id"].tolist() == ["987", "988"]
    assert posts["account_type"].tolist() == ["page", "group"]


def test_folder_of_mixed_files_in_name_order(tmp_path):
    write(tmp_path, "b.csv", HEADER + "b1,a,2021-01-01,from csv\n")
    write(tmp_path, "a.jsonl", json.dumps({"post_id": "a1", "account_id": "a",
                                           "created_at": "2021-01-01", "text": "jsonl"}) + "\n")
    write(tmp_path, "sub/c.tsv", "post_id\taccount_id\tcreated_at\ttext\nc1\ta\t2021-01-01\tx\n")
    pq.write_table(pa.table({"post_id": ["d1"], "account_id": ["a"],
                             "created_at": ["2021-01-01"], "text": ["pq"]}),
                   tmp_path / "d.parquet")
    write(tmp_path, "README.md", "not a posts file\n")
    write(tmp_path, "truth.json", "{}")
    write(tmp_path, ".hidden.csv", "garbage")
    posts_files, accounts = list_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in posts_files] == [
        "a.jsonl", "b.csv", "d.parquet", "sub/c.tsv"]
    assert accounts is None
    result = ingest(tmp_path)
    assert result.posts["post_id"].tolist() == ["a1", "b1", "d1", "c1"]
    assert result.posts["source_file"].tolist() == ["a.jsonl", "b.csv", "d.parquet", "sub/c.tsv"]
    assert [f["format"] for f in result.stats["files"]] == ["jsonl", "csv", "parquet", "tsv"]
    check_invariant(result)


def test_folder_without_posts_file(tmp_path):
    write(tmp_path, "README.md", "hello")
    write(tmp_path, "accounts.csv", "account_id\na\n")
    with pytest.raises(InputError, match=r"has no posts file; expected .csv, .tsv, .jsonl, "
                                         r".ndjson, .parquet files \(found: README.md\)"):
        ingest(tmp_path)


def test_missing_corpus_and_unsupported_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ingest(tmp_path / "nope")
    with pytest.raises(InputError, match="is not a supported posts file"):
        ingest(write(tmp_path, "posts.xlsx", b"PK"))


def test_two_accounts_files_are_refused(tmp_path):
    write(tmp_path, "posts.csv", HEADER)
    write(tmp_path, "accounts.csv", "account_id\na\n")
    write(tmp_path, "more/accounts.jsonl", '{"account_id": "b"}\n')
    with pytest.raises(InputError, match="has 2 accounts files"):
        ingest(tmp_path)


def test_accounts_file(tmp_path):
    write(tmp_path, "posts.csv", HEADER + "p1,a,2021-01-01,x\n")
    write(tmp_path, "accounts.csv",
          "account_id,created_at,name,followers,admin_countries,name_changes\n"
          'a,2015-01-01T00:00:00Z,Alpha,"1,200","de, fr",2\n'
          "b,,Beta,,,\n"
          ",2015-01-01,No id,1,,\n"
          "c,31/02/2015,Bad date,1,,\n"
          "d,2015-01-01,Bad count,12k,,\n"
          'a,2015-01-01T00:00:00Z,Alpha,"1,200","de, fr",2\n'
          "a,2015-01-01T00:00:00Z,Renamed,1200,DE;FR,2\n")
    result = ingest(tmp_path)
    accounts = result.accounts
    assert list(accounts.columns) == [f.name for f in ACCOUNTS]
    assert str(accounts["created_at"].dtype) == "datetime64[us, UTC]"
    assert str(accounts["followers"].dtype) == "Int64"
    assert accounts["account_id"].tolist() == ["a", "b"]
    first = accounts.iloc[0]
    assert (first["followers"], first["admin_countries"], first["name_changes"]) == (1200,
                                                                                     "DE;FR", 2)
    assert pd.isna(accounts.iloc[1]["created_at"]) and pd.isna(accounts.iloc[1]["followers"])
    account_rejects = result.rejects[result.rejects["source_file"] == "accounts.csv"]
    assert dict(zip(account_rejects["source_row"], account_rejects["reason"].str.split(":").str[0])
                ) == {3: "empty_account_id", 4: "bad_timestamp", 5: "bad_number",
                      6: "duplicate_identical", 7: "duplicate_conflict"}
    assert "different name" in account_rejects["reason"].iat[-1]
    # accounts rows stay out of the posts count
    assert result.stats["n_rows_in"] == 1
    assert result.stats["accounts"]["n_rows_in"] == 7
    assert result.stats["accounts"]["n_accepted"] == 2
    assert result.stats["accounts"]["n_rejected"] == 5
    check_invariant(result)


def test_accounts_file_without_account_id(tmp_path):
    write(tmp_path, "posts.csv", HEADER)
    write(tmp_path, "accounts.csv", "handle,followers\nx,1\n")
    with pytest.raises(InputError, match=r'accounts.csv: the accounts file needs an "account_id" '
                                         r"column; found: handle, followers"):
        ingest(tmp_path)


# -- presets -----------------------------------------------------------------------------------

CROWDTANGLE_HEADER = (
    '"Page Name","User Name","Facebook Id","Page Category","Page Admin Top Country",'
    '"Page Description","Page Created","Likes at Posting","Followers at Posting","Post Created",'
    '"Post Created Date","Post Created Time","Type","Total Interactions","Likes","Comments",'
    '"Shares","Love","Wow","Haha","Sad","Angry","Care","Video Share Status","Is Video Owner?",'
    '"Post Views","Total Views","Total Views For All Crossposts","Video Length","URL","Message",'
    '"Link","Final Link","Image Text","Link Text","Description","Sponsor Id","Sponsor Name",'
    '"Sponsor Category","Overperforming Score"\n'
)


def _ct_row(created: str, url: str, message: str, link: str, link_text: str,
            description: str) -> str:
    cells = ["Wahl Info", "wahlinfo", "100064", "News Site", "DE", "", "2012-01-01 10:00:00",
             "1000", "1200", created, created[:10], created[11:19], "Link", "10", "5", "2", "3",
             "0", "0", "0", "0", "0", "0", "", "", "0", "0", "0", "", url, message, link, "",
             "", link_text, description, "", "", "", "1.5"]
    return ",".join(json.dumps(c, ensure_ascii=False) for c in cells) + "\n"


def test_crowdtangle_preset(tmp_path):
    path = write(tmp_path, "ct.csv", CROWDTANGLE_HEADER
                 + _ct_row("2021-09-26 13:45:02 CEST", "https://www.facebook.com/100064/posts/1",
                           "Geht wählen!", "https://example.org/a", "Link title", "About")
                 + _ct_row("2021-01-26 08:00:00 EST", "https://www.facebook.com/100064/posts/2",
                           "", "https://example.org/b", "Link title only", ""))
    result = ingest(path)
    assert result.stats["files"][0]["preset"] == "crowdtangle"
    posts = result.posts
    assert posts["post_id"].tolist() == ["https://www.facebook.com/100064/posts/1",
                                         "https://www.facebook.com/100064/posts/2"]
    assert posts["account_id"].tolist() == ["100064", "100064"]
    assert posts["created_at"].tolist() == [pd.Timestamp("2021-09-26 11:45:02", tz="UTC"),
                                            pd.Timestamp("2021-01-26 13:00:00", tz="UTC")]
    assert posts["text"].tolist() == ["Geht wählen!", "Link title only"]  # Message, else ...
    assert posts["url"].tolist() == ["https://example.org/a", "https://example.org/b"]
    assert posts["account_name"].tolist() == ["Wahl Info", "Wahl Info"]
    assert posts["account_type"].tolist() == ["page", "page"]
    assert posts["platform"].tolist() == ["facebook", "facebook"]


def test_crowdtangle_date_and_time_columns_without_post_created(tmp_path):
    path = write(tmp_path, "ct.csv",
                 "Page Name,Facebook Id,Post Created Date,Post Created Time,URL,Message\n"
                 "P,1,2021-09-26,13:45:02,https://www.facebook.com/1/posts/9,hi\n")
    posts = ingest(path, timezone="Europe/Berlin").posts
    assert posts["created_at"].iat[0] == pd.Timestamp("2021-09-26 11:45:02", tz="UTC")


def test_meta_content_library_csv(tmp_path):
    path = write(tmp_path, "mcl.csv",
                 "id,creation_time,text,lang,post_owner.id,post_owner.name,post_owner.type,"
                 "surface.id,link_attachment.link,mcl_url,shared_post_id\n"
                 "111,2024-03-01T12:00:00,Hello,en,987,Some Page,PAGE,987,https://n.example/x,"
                 "https://www.facebook.com/111,\n"
                 "112,2024-03-01T12:05:00,Reshared,de,988,Someone,profile,988,,"
                 "https://www.facebook.com/112,111\n")
    result = ingest(path)
    posts = result.posts
    assert result.stats["files"][0]["preset"] == "crowdtangle"
    assert posts["post_id"].tolist() == ["111", "112"]
    assert posts["account_id"].tolist() == ["987", "988"]
    assert posts["account_type"].tolist() == ["page", "profile"]
    assert posts["url"].iat[0] == "https://n.example/x" and pd.isna(posts["url"].iat[1])
    assert posts["reshare_of"].iat[1] == "111"
    assert posts["lang"].tolist() == ["en", "de"]


def test_twitter_io_preset(tmp_path):
    path = write(tmp_path, "tweets.csv",
                 "tweetid,userid,user_display_name,user_screen_name,account_creation_date,"
                 "tweet_language,tweet_text,tweet_time,is_retweet,retweet_userid,retweet_tweetid,"
                 "hashtags,urls\n"
                 '901,u1,Name One,one,2016-04-01,en,Original #Tag,2019-06-01 12:34,false,,,'
                 '"[Tag, Other]","[https://t.co/x, https://t.co/y]"\n'
                 "902,u2,,two,2016-04-01,es,RT @one: Original,2019-06-01 12:40,true,u1,901,[],"
                 "['https://t.co/x']\n")
    # tweet_time is UTC whatever ingest.timezone says
    result = ingest(path, timezone="Europe/Berlin")
    posts = result.posts
    assert result.stats["files"][0]["preset"] == "twitter_io"
    assert posts["created_at"].tolist() == [pd.Timestamp("2019-06-01 12:34", tz="UTC"),
                                            pd.Timestamp("2019-06-01 12:40", tz="UTC")]
    assert posts["platform"].tolist() == ["twitter", "twitter"]
    assert posts["account_type"].tolist() == ["profile", "profile"]
    assert posts["url"].tolist() == ["https://t.co/x", "https://t.co/x"]
    assert posts["hashtags"].iat[0] == "tag other" and pd.isna(posts["hashtags"].iat[1])
    assert posts["account_name"].tolist() == ["Name One", "two"]
    assert pd.isna(posts["reshare_of"].iat[0]) and posts["reshare_of"].iat[1] == "901"
    assert posts["lang"].tolist() == ["en", "es"]


def test_coortweet_preset(tmp_path):
    path = write(tmp_path, "coor.csv", "object_id,account_id,content_id,timestamp_share\n"
                 "https://link.example/1,acc1,c1,1629589836\n"
                 "https://link.example/1,acc2,c2,1629589900.0\n")
    result = ingest(path)
    posts = result.posts
    assert result.stats["files"][0]["preset"] == "coortweet"
    assert posts["post_id"].tolist() == ["c1", "c2"]
    assert posts["text"].tolist() == ["https://link.example/1"] * 2
    assert posts["created_at"].tolist() == [pd.Timestamp(1629589836, unit="s", tz="UTC"),
                                            pd.Timestamp(1629589900, unit="s", tz="UTC")]


def test_explicit_preset_that_does_not_fit(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER + "1,a,2021-01-01,x\n")
    with pytest.raises(InputError, match=r'posts.csv: required columns "post_id", "account_id", '
                                         r'"created_at", "text" not found \(the twitter_io preset '
                                         r'reads post_id from "tweetid"'):
        ingest(path, preset="twitter_io")


def test_unknown_preset_is_a_config_error(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER)
    with pytest.raises(ConfigError, match="ingest.preset \\('tiktok'\\) must be one of: auto, "
                                          "generic"):
        ingest(path, preset="tiktok")
    assert set(PRESETS) == {"generic", "crowdtangle", "twitter_io", "coortweet"}


# -- column mapping ----------------------------------------------------------------------------


def test_column_mapping_from_config(tmp_path):
    path = write(tmp_path, "posts.csv", "ID,User, Message ,Date,Link\n"
                 "1,a,hello,2021-01-01,https://x.example\n")
    columns = ColumnsConfig(post_id="id", account_id="user", text="message",
                            created_at="DATE", url="link")
    posts = ingest(path, columns=columns).posts
    assert posts[["post_id", "account_id", "text", "url"]].iloc[0].tolist() == [
        "1", "a", "hello", "https://x.example"]


def test_headers_match_case_and_space_insensitively(tmp_path):
    path = write(tmp_path, "posts.csv", " Post_ID ,ACCOUNT_ID,Created_At,Text\n1,a,2021-01-01,x\n")
    assert ingest(path).posts["post_id"].tolist() == ["1"]


def test_missing_required_column_names_file_columns_and_fix(tmp_path):
    path = write(tmp_path, "posts.csv", "post_id,account_id,created_at,message\n1,a,2021-01-01,x\n")
    with pytest.raises(InputError, match=r'^posts.csv: required column "text" not found; found: '
                                         r"post_id, account_id, created_at, message; rename it or "
                                         r'set ingest.columns.text = "message" \(or --set '
                                         r"ingest.columns.text=message\)$"):
        ingest(path)


def test_mapping_to_a_column_that_is_not_there(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER + "1,a,2021-01-01,x\n")
    with pytest.raises(InputError, match=r"posts.csv: ingest.columns.text = 'body' but the file "
                                         r"has no column 'body'; found: post_id"):
        ingest(path, columns=ColumnsConfig(text="body"))


def test_ambiguous_headers(tmp_path):
    path = write(tmp_path, "posts.csv", "post_id,account_id,created_at,text,TEXT\n1,a,2021,x,y\n")
    with pytest.raises(InputError, match="columns 'text', 'TEXT' have the same name"):
        ingest(path)


# -- bad rows ----------------------------------------------------------------------------------


def test_bad_csv_rows_are_rejected_with_reasons(tmp_path):
    long_text = "z" * 5000
    path = write(tmp_path, "posts.csv", HEADER
                 + "1,a,2021-01-01,ok\n"            # 1 accepted
                 + "2,a,2021-01-01\n"               # 2 ragged
                 + "  ,a,2021-01-01,x\n"            # 3 empty post_id
                 + "4, ,2021-01-01,x\n"             # 4 empty account_id
                 + "5,a,2021-01-01,   \n"          # 5 whitespace text
                 + "6,a,31/02/2019,x\n"             # 6 not a date
                 + "7,a,2019-02-31,x\n"             # 7 impossible date
                 + "8,a,1999-12-31T23:00:00Z,x\n"   # 8 before min_created_at
                 + "9,a,2100-01-01T00:00:00Z,x\n"   # 9 not before max_created_at
                 + "\n"                             # blank line: not a row
                 + f"10,a,,{long_text}\n"           # 10 empty created_at, long raw
                 + "11,a,2021-01-01,\x00\x01\n"     # 11 only control characters
                 + "12,a,2021-01-01,x,extra\n")     # 12 ragged: too many fields
    result = ingest(path)
    assert result.posts["post_id"].tolist() == ["1"]
    assert reasons(result) == {2: "ragged_row", 3: "empty_post_id", 4: "empty_account_id",
                               5: "empty_text", 6: "bad_timestamp", 7: "impossible_date",
                               8: "timestamp_out_of_range", 9: "timestamp_out_of_range",
                               10: "empty_created_at", 11: "empty_text", 12: "ragged_row"}
    rejects = result.rejects.set_index("source_row")
    assert rejects.loc[2, "column"] == "" and rejects.loc[6, "column"] == "created_at"
    assert rejects.loc[2, "reason"] == ("ragged_row: row has 3 fields but the header has 4; check "
                                        "the delimiter and the quoting around this row")
    assert rejects.loc[6, "reason"] == ('bad_timestamp: created_at "31/02/2019" is not a date; '
                                        "expected ISO 8601 (e.g. 2021-09-26T13:45:02+02:00) or "
                                        "Unix seconds")
    assert "day is out of range for month" in rejects.loc[7, "reason"]
    assert "before ingest.min_created_at (2000-01-01T00:00:00Z)" in rejects.loc[8, "reason"]
    assert "not before ingest.max_created_at" in rejects.loc[9, "reason"]
    assert rejects.loc[2, "raw"] == "2,a,2021-01-01"
    assert len(rejects.loc[10, "raw"]) == 1000 and rejects.loc[10, "raw"].startswith("10,a,,zzz")
    assert result.stats["reject_reasons"]["timestamp_out_of_range"] == 2
    check_invariant(result)


def test_badly_quoted_csv_rows_are_rejected_not_merged(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER
                 + '1,a,2021-01-01,"closed" then more\n'   # 1 text after a closing quote
                 + "2,a,2021-01-01,He said \"hi\" inside\n"  # 2 fine: quote mid-field
                 + '3,a,2021-01-01,"never closed\n'        # 3 swallows the rest of the file
                 + "4,a,2021-01-01,lost\n")
    result = ingest(path)
    assert result.posts["text"].tolist() == ['He said "hi" inside']
    assert reasons(result) == {1: "unreadable_row", 3: "unreadable_row"}
    last = result.rejects["reason"].iat[1]
    assert "a quoted field is still open at the end of the file" in last
    assert result.rejects["raw"].iat[0] == '1,a,2021-01-01,"closed" then more'
    check_invariant(result)


def test_bad_json_lines_are_rejected(tmp_path):
    path = write(tmp_path, "posts.jsonl",
                 '{"post_id": "1", "account_id": "a", "created_at": "2021-01-01", "text": "x"}\n'
                 "{not json\n"
                 "[1, 2]\n"
                 '"just a string"\n'
                 "\n"
                 '{"post_id": "6", "account_id": "a", "created_at": "2021-01-01", "text": "y"}\n')
    result = ingest(path)
    assert result.posts["source_row"].tolist() == [1, 6]  # line numbers
    assert reasons(result) == {2: "bad_json", 3: "not_an_object", 4: "not_an_object"}
    rejects = result.rejects.set_index("source_row")
    assert rejects.loc[3, "reason"] == ("not_an_object: line holds an array, expected a JSON "
                                        "object {...}")
    assert rejects.loc[2, "raw"] == "{not json"
    check_invariant(result)


def test_text_cleaning_and_truncation(tmp_path):
    text = "tab\there\nnew line, NUL\x00 bell\x07 cr\r emoji 🎉 rtl \u202eabc zero\u200bwidth"
    path = write(tmp_path, "posts.jsonl", "\n".join(json.dumps(x) for x in [
        {"post_id": "1", "account_id": "a", "created_at": "2021-01-01", "text": text},
        {"post_id": "2", "account_id": "a", "created_at": "2021-01-01", "text": "é" * 30},
    ]) + "\n")
    result = ingest(path, max_text_chars=20)
    assert result.posts["text"].iat[1] == "é" * 20
    assert result.stats["n_truncated"] == 2
    full = ingest(path).posts["text"].iat[0]
    assert full == ("tab\there\nnew line, NUL bell cr emoji 🎉 rtl \u202eabc zero\u200bwidth")
    assert ingest(path).stats["n_truncated"] == 0


def test_a_one_megabyte_post(tmp_path):
    big = "word " * 220_000
    path = write(tmp_path, "posts.csv", HEADER + f'1,a,2021-01-01,"{big}"\n')
    assert len(ingest(path, max_text_chars=2_000_000).posts["text"].iat[0]) == len(big)


@pytest.mark.parametrize("value, expected", [
    ("#A #b", "a b"),
    ("a,b", "a b"),
    ('["a", "#B"]', "a b"),
    ("[tag1, tag2]", "tag1 tag2"),
    ("['x', 'y']", "x y"),
    ("#Straße #b #a", "straße b a"),  # order kept
    ("[]", None),
])
def test_hashtags_normalised(value, expected):
    assert normalise_hashtags(value) == expected


def test_first_url():
    assert first_url("[https://a.example/x,y, https://b.example]") == "https://a.example/x,y"
    assert first_url("['https://a.example']") == "https://a.example"
    assert first_url("[]") is None


def test_account_type_and_platform_lower_cased(tmp_path):
    path = write(tmp_path, "posts.csv", "post_id,account_id,created_at,text,account_type,platform\n"
                 "1,a,2021-01-01,x, Page ,Facebook\n")
    posts = ingest(path).posts
    assert (posts["account_type"].iat[0], posts["platform"].iat[0]) == ("page", "facebook")


# -- duplicates --------------------------------------------------------------------------------


def test_duplicates_across_files(tmp_path):
    write(tmp_path, "a.csv", HEADER + "1,a,2021-01-01,same\n2,b,2021-01-01,first\n")
    write(tmp_path, "b.csv", HEADER + "1,a,2021-01-01T00:00:00Z,same\n"
          "2,c,2021-01-01,second\n3,c,2021-01-01,new\n3,c,2021-01-01,new\n")
    result = ingest(tmp_path)
    assert result.posts["post_id"].tolist() == ["1", "2", "3"]
    assert result.posts["account_id"].tolist() == ["a", "b", "c"]  # the first is kept
    rejects = result.rejects
    assert rejects["reason"].tolist() == [
        "duplicate_identical: same as a.csv row 1; collapsed",
        'duplicate_conflict: post_id "2" already at a.csv row 2 with different account_id, '
        "text; the first is kept",
        "duplicate_identical: same as b.csv row 3; collapsed",
    ]
    assert rejects["source_file"].tolist() == ["b.csv"] * 3
    assert rejects["source_row"].tolist() == [1, 2, 4]
    assert rejects["column"].tolist() == ["post_id"] * 3
    check_invariant(result)


# -- encodings ---------------------------------------------------------------------------------

TEXT_CSV = HEADER + "1,a,2021-01-01,café ünïcode ✓\n"


@pytest.mark.parametrize("data, codec", [
    (b"\xef\xbb\xbf" + TEXT_CSV.encode("utf-8"), "utf-8-sig"),
    (TEXT_CSV.encode("utf-16"), "utf-16"),
    (b"\xfe\xff" + TEXT_CSV.encode("utf-16-be"), "utf-16"),
    (TEXT_CSV.encode("utf-32"), "utf-32"),
    (TEXT_CSV.encode("utf-8"), "utf-8"),
])
def test_encodings_by_byte_order_mark(tmp_path, data, codec):
    result = ingest(write(tmp_path, "posts.csv", data))
    assert result.posts["text"].tolist() == ["café ünïcode ✓"]
    assert result.posts["post_id"].tolist() == ["1"]  # no BOM left in the first header name
    assert result.stats["files"][0]["encoding"] == codec


def test_latin1_file_gives_a_helpful_error(tmp_path):
    data = (HEADER + "1,a,2021-01-01,plain\n2,a,2021-01-01,café\n").encode("latin-1")
    path = write(tmp_path, "posts.csv", data)
    offset = data.index(b"\xe9")
    with pytest.raises(InputError, match=rf"^posts.csv is not valid UTF-8: byte E9 at byte offset "
                                         rf"{offset} \(line 3\) cannot be decoded; "
                                         r"charset-normalizer guesses \S+\. Fix: --set "
                                         r"ingest.encoding=\S+.*re-save the file as UTF-8$"):
        ingest(path)
    # as the message says: name the encoding
    assert ingest(path, encoding="latin-1").posts["text"].tolist() == ["plain", "café"]
    assert ingest(path, encoding="cp1252").stats["files"][0]["encoding"] == "cp1252"


def test_latin1_jsonl_gives_the_same_error(tmp_path):
    path = write(tmp_path, "posts.jsonl", '{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"posts.jsonl is not valid UTF-8: byte E9 .* \(line 1\)"):
        ingest(path)


def test_explicit_encoding_that_does_not_fit(tmp_path):
    path = write(tmp_path, "posts.csv", TEXT_CSV.encode("utf-8"))
    with pytest.raises(InputError, match=r"posts.csv is not valid ascii: byte C3 at byte offset "):
        ingest(path, encoding="ascii")


def test_unknown_codec_and_utf16_without_bom(tmp_path):
    path = write(tmp_path, "posts.csv", TEXT_CSV.encode("utf-16-le"))
    with pytest.raises(InputError, match="looks like UTF-16 without a byte-order mark.*"
                                         "ingest.encoding=utf-16-le"):
        ingest(path)
    assert ingest(path, encoding="utf-16-le").posts["text"].tolist() == ["café ünïcode ✓"]
    with pytest.raises(ConfigError, match="ingest.encoding \\('klingon'\\) is not a codec"):
        ingest(path, encoding="klingon")


# -- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize("value, settings, expected", [
    ("2021-09-26T13:45:02Z", {}, "2021-09-26 13:45:02"),
    ("2021-09-26T13:45:02+02:00", {}, "2021-09-26 11:45:02"),
    ("2021-09-26 13:45:02 +0530", {}, "2021-09-26 08:15:02"),
    ("2021-09-26T13:45:02.250-04:00", {}, "2021-09-26 17:45:02.250"),
    ("2021-09-26 13:45:02", {}, "2021-09-26 13:45:02"),  # naive: ingest.timezone (UTC)
    ("2021-09-26 13:45:02", {"timezone": "Europe/Berlin"}, "2021-09-26 11:45:02"),
    ("2021-01-26 13:45:02", {"timezone": "Europe/Berlin"}, "2021-01-26 12:45:02"),
    ("2021-09-26", {"timezone": "America/New_York"}, "2021-09-26 04:00:00"),
    # clocks going back: the repeated hour is read as its first (summer-time) occurrence;
    # clocks going forward: a skipped time moves forward to the first real one
    ("2021-10-31 02:30:00", {"timezone": "Europe/Berlin"}, "2021-10-31 00:30:00"),
    ("2021-03-28 02:30:00", {"timezone": "Europe/Berlin"}, "2021-03-28 01:00:00"),
    ("2021-09-26 13:45:02 CEST", {}, "2021-09-26 11:45:02"),
    ("2021-01-26 13:45:02 CET", {}, "2021-01-26 12:45:02"),
    ("2021-09-26 13:45:02 EDT", {}, "2021-09-26 17:45:02"),
    ("2021-09-26 13:45:02 PDT", {}, "2021-09-26 20:45:02"),
    ("2021-09-26 13:45:02 PKT", {}, "2021-09-26 08:45:02"),
    ("2021-09-26 13:45:02 IST", {}, "2021-09-26 08:15:02"),
    ("2021-09-26 13:45:02 GMT", {"timezone": "Asia/Tokyo"}, "2021-09-26 13:45:02"),
    ("2021-09-26 13:45:02 UTC+2", {}, "2021-09-26 11:45:02"),
    ("1632663902", {}, "2021-09-26 13:45:02"),  # Unix seconds
    ("1632663902.5", {}, "2021-09-26 13:45:02.500"),
    ("1632663902000", {}, "2021-09-26 13:45:02"),  # milliseconds, by magnitude
    ("1632663902000", {"time_unit": "ms"}, "2021-09-26 13:45:02"),
    ("Sun Sep 26 13:45:02 +0000 2021", {}, "2021-09-26 13:45:02"),  # Twitter API
    ("Sun, 26 Sep 2021 13:45:02 +0200", {}, "2021-09-26 11:45:02"),  # RFC 2822
])
def test_timestamp_forms(tmp_path, value, settings, expected):
    path = write(tmp_path, "posts.csv", HEADER + f'1,a,"{value}",x\n')
    result = ingest(path, **settings)
    assert result.rejects.empty, result.rejects["reason"].tolist()
    assert result.posts["created_at"].iat[0] == pd.Timestamp(expected, tz="UTC")


@pytest.mark.parametrize("value, settings, code, words", [
    ("yesterday", {}, "bad_timestamp", '"yesterday" is not a date'),
    ("26/09/2021", {}, "bad_timestamp", "expected ISO 8601"),
    ("2021-09-26 13:45:02 XYZ", {}, "bad_timestamp", 'unknown time zone "XYZ"'),
    ("2021-02-29", {}, "impossible_date", "day is out of range for month"),
    ("2021-13-01T00:00:00", {}, "impossible_date", "month must be in 1..12"),
    ("2021-09-26T25:00:00", {}, "impossible_date", "hour must be in 0..23"),
    ("86400", {}, "timestamp_out_of_range", "read as Unix seconds is before"),
    ("1632663902000", {"time_unit": "s"}, "timestamp_out_of_range", "not before ingest.max"),
    ("1632663902", {"time_unit": "ms"}, "timestamp_out_of_range", "read as Unix milliseconds"),
    ("2021-09-26", {"min_created_at": "2022-01-01"}, "timestamp_out_of_range",
     "before ingest.min_created_at (2022-01-01)"),
    ("9999-12-31T00:00:00", {}, "timestamp_out_of_range", "not before ingest.max_created_at"),
])
def test_bad_timestamps(tmp_path, value, settings, code, words):
    path = write(tmp_path, "posts.csv", HEADER + f'1,a,"{value}",x\n')
    result = ingest(path, **settings)
    assert result.posts.empty
    reason = result.rejects["reason"].iat[0]
    assert reason.startswith(f"{code}: created_at ")
    assert words in reason


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789-:TZ+., /ACDEGMSTU\u00e9", min_size=1, max_size=32),
                min_size=1, max_size=40))
def test_any_timestamp_text_is_parsed_or_explained(values):
    rules = timestamps.rules("Europe/Berlin", "auto", "2000-01-01T00:00:00Z",
                             "2100-01-01T00:00:00Z")
    parsed, problems = timestamps.parse(pd.Series(values, dtype=object), rules)
    assert str(parsed.dtype) == "datetime64[us, UTC]"
    for i in range(len(values)):  # exactly one of: a time in range, or a reason
        assert pd.isna(parsed.iat[i]) == (i in problems)
        if i in problems:
            assert problems[i][0] in ("bad_timestamp", "impossible_date",
                                      "timestamp_out_of_range")
        else:
            assert rules.min_at <= parsed.iat[i] < rules.max_at


def test_time_settings_are_checked(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER)
    with pytest.raises(ConfigError, match=r"ingest.timezone \('Mars/Olympus'\) is not a time"):
        ingest(path, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="ingest.min_created_at \\('soon'\\) is not a date"):
        ingest(path, min_created_at="soon")
    with pytest.raises(ConfigError, match="must be before ingest.max_created_at"):
        ingest(path, min_created_at="2030-01-01", max_created_at="2020-01-01")


# -- empty and broken files --------------------------------------------------------------------


def test_empty_and_header_only_files_give_zero_rows(tmp_path):
    write(tmp_path, "empty.csv", b"")
    write(tmp_path, "empty.jsonl", b"")
    write(tmp_path, "empty.parquet", b"")
    write(tmp_path, "blank.jsonl", "\n\n")
    write(tmp_path, "header.csv", HEADER)
    result = ingest(tmp_path)
    assert result.posts.empty and result.rejects.empty
    assert list(result.posts.columns) == [f.name for f in POSTS]
    assert str(result.posts["created_at"].dtype) == "datetime64[us, UTC]"
    assert result.stats["n_rows_in"] == 0
    check_invariant(result)


def test_header_only_file_with_wrong_columns_is_still_checked(tmp_path):
    with pytest.raises(InputError, match='required column "text" not found'):
        ingest(write(tmp_path, "posts.csv", "post_id,account_id,created_at,body\n"))


def test_corrupt_parquet(tmp_path):
    path = write(tmp_path, "posts.parquet", b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(InputError, match="posts.parquet is not a readable Parquet file"):
        ingest(path)


# -- chunking and counts -----------------------------------------------------------------------


def _messy_corpus(folder: Path) -> Path:
    rows = [HEADER.strip()]
    for i in range(40):
        post_id = str(i % 31)  # repeats: identical and conflicting
        text = "same text" if i % 7 else f"text {i}"
        created = ["2021-01-01T00:00:00Z", "2021-02-30", "2021-01-02 10:00 CEST", "1632663902",
                   "", "1999-01-01"][i % 6]
        account = "" if i % 11 == 5 else f"acc{i % 4}"
        rows.append(f'{post_id},{account},{created},"{text}"')
        if i % 13 == 4:
            rows.append("ragged,row")
    write(folder, "a.csv", "\n".join(rows) + "\n")
    lines = []
    for i in range(25):
        if i % 9 == 3:
            lines.append("{broken")
        else:
            lines.append(json.dumps({"post_id": str(i % 20 + 25), "account_id": f"acc{i % 3}",
                                     "created_at": f"2021-03-{1 + i % 28:02d}",
                                     "text": f"j{i % 5}", "hashtags": "#A #b"}))
    write(folder, "b.jsonl", "\n".join(lines) + "\n")
    pq.write_table(pa.table({"post_id": [str(i % 9 + 40) for i in range(17)],
                             "account_id": ["acc0"] * 17,
                             "created_at": ["2021-04-01"] * 17,
                             "text": [f"p{i % 3}" for i in range(17)]}),
                   folder / "c.parquet", row_group_size=4)
    write(folder, "accounts.csv", "account_id,followers\nacc0,1\nacc1,x\nacc0,1\n")
    return folder


def test_result_does_not_depend_on_chunk_size(tmp_path):
    corpus = _messy_corpus(tmp_path)
    small = ingest(corpus, chunk_rows=3)
    one = ingest(corpus, chunk_rows=1)
    default = ingest(corpus)
    for other in (one, default):
        pd.testing.assert_frame_equal(small.posts, other.posts)
        pd.testing.assert_frame_equal(small.rejects, other.rejects)
        pd.testing.assert_frame_equal(small.accounts, other.accounts)
        assert small.stats == other.stats
    assert 0 < len(small.posts) < small.stats["n_rows_in"]
    assert {"duplicate_identical", "duplicate_conflict", "impossible_date", "ragged_row",
            "bad_json", "empty_created_at", "timestamp_out_of_range", "empty_account_id"
            } <= set(small.stats["reject_reasons"])
    check_invariant(small)


def test_an_empty_result_is_fine(tmp_path):
    path = write(tmp_path, "posts.csv", HEADER + "1,a,not a date,x\n")
    result = ingest(path)
    assert result.posts.empty and len(result.rejects) == 1
    check_invariant(result)


# -- input hash --------------------------------------------------------------------------------


def test_input_hash(tmp_path):
    write(tmp_path, "posts.csv", HEADER + "1,a,2021-01-01,x\n")
    write(tmp_path, "README.md", "about")
    first = input_hash(tmp_path)
    assert len(first) == 64 and first == input_hash(tmp_path)
    write(tmp_path, "README.md", "changed: not an input")
    assert input_hash(tmp_path) == first
    write(tmp_path, "posts.csv", HEADER + "1,a,2021-01-01,y\n")
    changed = input_hash(tmp_path)
    assert changed != first
    (tmp_path / "posts.csv").rename(tmp_path / "renamed.csv")
    assert input_hash(tmp_path) != changed
    write(tmp_path, "accounts.csv", "account_id\na\n")
    assert input_hash(tmp_path) != changed
