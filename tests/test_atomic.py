"""Parquet written one row group at a time: the same file as writing the table whole, atomic,
and the named coordination pairs the same as when they were built whole."""

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import atomic, coordination, runner
from pipeline.privacy import pseudonymise_frame

KEY = b"k" * 32


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "signal": np.where(rng.random(n) < 0.5, "narrative", "url").astype(object),
        "n": rng.integers(0, 9, n), "x": rng.random(n), "ok": rng.random(n) < 0.3,
        "t": pd.to_datetime(rng.integers(0, 10**9, n), unit="s", utc=True),
        "s": pd.Series([f"v{i}" for i in range(n)], dtype="string"),
        # no value in the first row group: the types come from the whole frame
        "late": pd.Series([None] * 8 + ["x"] * (n - 8), dtype=object)})


def test_a_frame_longer_than_a_row_group_is_the_same_file_as_written_whole(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(atomic, "ROW_GROUP", 5)
    df = _frame(23)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "whole.parquet",
                   compression="zstd", row_group_size=5)
    atomic.write_parquet(df, tmp_path / "groups.parquet")
    assert pq.ParquetFile(tmp_path / "groups.parquet").metadata.num_row_groups == 5
    assert _sha(tmp_path / "groups.parquet") == _sha(tmp_path / "whole.parquet")
    back = pd.read_parquet(tmp_path / "groups.parquet")
    assert back["late"].isna().sum() == 8 and (back["late"][8:] == "x").all()
    assert back["s"].tolist() == df["s"].tolist()


def test_a_write_that_fails_part_way_leaves_the_old_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "ROW_GROUP", 5)
    df = _frame(23).drop(columns="late")
    target = tmp_path / "out.parquet"
    atomic.write_parquet(df.iloc[:3], target)
    before = _sha(target)

    def rows(start, stop):
        if start >= 10:
            raise RuntimeError("killed")
        return df.iloc[start:stop]

    with pytest.raises(RuntimeError):
        atomic.write_parquet_rows(len(df), rows, target)
    assert _sha(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no temporary left


@pytest.mark.parametrize("key", [None, KEY])
def test_named_pairs_are_the_frame_built_whole(tmp_path, monkeypatch, key):
    monkeypatch.setattr(atomic, "ROW_GROUP", 4)
    rng = np.random.default_rng(2)
    n = 19
    accounts = np.array([f"acct{i}" for i in range(7)], dtype=object)
    pairs = pd.DataFrame({"signal": rng.choice(["narrative", "url"], n).astype(object),
                          "acc_a": rng.integers(0, 7, n), "acc_b": rng.integers(0, 7, n),
                          "n_moments": rng.integers(1, 9, n), "p_value": rng.random(n),
                          "significant": rng.random(n) < 0.2})
    coord = coordination.Coordination(pairs, pd.DataFrame(), accounts, 300, {})
    runner._write_named_pairs(coord, tmp_path / "pairs.parquet", key)
    # as runner.coordinate built it before: a named copy of the whole frame
    whole = pairs.copy()
    whole.insert(1, "account_a", accounts[whole["acc_a"].astype(int)])
    whole.insert(2, "account_b", accounts[whole["acc_b"].astype(int)])
    whole = whole.drop(columns=["acc_a", "acc_b"])
    if key is not None:
        whole = pseudonymise_frame(whole, key, ("account_a", "account_b"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pairs.parquet"), whole)
    assert pq.ParquetFile(tmp_path / "pairs.parquet").metadata.num_row_groups == 5
