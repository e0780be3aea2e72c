"""Column contracts between stages. Renaming or retyping a column bumps SCHEMA_VERSION."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

REQUIRED_POST_COLUMNS = ("post_id", "account_id", "created_at", "text")
OPTIONAL_POST_COLUMNS = (
    "url",
    "account_name",
    "account_type",  # page | group | profile | instagram | ... (lower case)
    "platform",
    "lang",
    "reshare_of",  # post_id of the post this one reshares
    "hashtags",  # lower-case tags without '#', space-separated, in the order they appeared
)
PROVENANCE_COLUMNS = ("source_file", "source_row")  # where the row came from (1-based row)

POSTS = pa.schema(
    [
        ("post_id", pa.string()),
        ("account_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        *[(name, pa.string()) for name in OPTIONAL_POST_COLUMNS],
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
    ]
)

ACCOUNT_COLUMNS = ("account_id", "created_at", "name", "followers", "admin_countries",
                   "name_changes")
ACCOUNTS = pa.schema(
    [
        ("account_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("name", pa.string()),
        ("followers", pa.int64()),
        ("admin_countries", pa.string()),  # ';'-separated ISO country codes
        ("name_changes", pa.int64()),
    ]
)

REJECTS = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("column", pa.string()),  # the offending column, "" when the whole row is bad
        ("reason", pa.string()),
        ("raw", pa.string()),  # the raw record, cut to 1,000 characters
    ]
)

ASSIGNMENTS = pa.schema(
    [
        ("post_id", pa.string()),
        ("narrative_id", pa.int64()),  # -1 = noise
        ("probability", pa.float32()),
    ]
)

NARRATIVE_COLUMNS = ("narrative_id", "label", "n_posts", "n_accounts", "first_at", "last_at",
                     "top_terms", "example_post_id", "example_text", "languages", "entities")
