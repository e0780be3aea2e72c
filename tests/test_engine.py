"""The Dask engine gives the same outputs as the local engine, byte for byte."""

import json
import shutil
import sys

import cloudpickle
import pandas as pd
import pytest

from pipeline import config, engine, ingest, runner, simulate
from pipeline.errors import ConfigError, InputError

DASK = ["engine.name=dask", "engine.n_workers=2", "engine.memory_limit=1GB"]


def _split_corpus(sim, out):
    """A simulated corpus as three posts files (CSV, JSON Lines, CSV) with bad rows: repeats of
    post_ids within a file and across files (identical and conflicting), a ragged row, an empty
    text and a bad timestamp, so the partitioned ingest has file order to get right."""
    out.mkdir(parents=True)
    shutil.copy(sim / "accounts.csv", out / "accounts.csv")
    posts = pd.read_csv(sim / "posts.csv", dtype=str, keep_default_na=False)
    third = len(posts) // 3
    a, b, c = posts.iloc[:third], posts.iloc[third:2 * third], posts.iloc[2 * third:]
    conflicting = a.iloc[[3]].assign(text="a different text for the same post_id")
    a = pd.concat([a, a.iloc[[0]]])  # a repeat within the file
    a.to_csv(out / "a-posts.csv", index=False)
    lines = [json.dumps(r, ensure_ascii=False) for r in b.to_dict("records")]
    lines.insert(5, json.dumps(a.iloc[1].to_dict()))  # a repeat of the first file's row
    lines.insert(9, "{not json")
    (out / "b-posts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    c = pd.concat([c.iloc[:10], conflicting, a.iloc[[2]], c.iloc[10:]])  # repeats across files
    c.iloc[12, c.columns.get_loc("text")] = "   "
    c.iloc[13, c.columns.get_loc("created_at")] = "31/02/2024"
    text = c.to_csv(index=False).splitlines()
    text.insert(20, "p_ragged,a0001,2024-03-01T00:00:00Z,too,many,fields,here,x,y,z,w,v,u")
    (out / "c-posts.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=5, n_posts=1500, n_accounts=80, network_size=10)), root / "sim")
    return _split_corpus(root / "sim", root / "split")


@pytest.fixture(scope="module")
def dask_engine():
    with engine.start(config.load(None, DASK).engine) as eng:
        yield eng


def test_ingest_over_dask_equals_the_local_engine(corpus, dask_engine):
    cfg = config.load(None, ["ingest.chunk_rows=100"]).ingest  # several chunks per file
    here = ingest.run(corpus, cfg)
    there = ingest.run(corpus, cfg, mapper=dask_engine.map)
    pd.testing.assert_frame_equal(here.posts, there.posts)
    pd.testing.assert_frame_equal(here.rejects, there.rejects)
    assert here.stats == there.stats
    reasons = here.rejects["reason"].str.split(":").str[0].tolist()
    for code in ("duplicate_identical", "duplicate_conflict", "ragged_row", "bad_json",
                 "empty_text"):
        assert code in reasons, code
    assert here.rejects["source_file"].tolist() == sorted(here.rejects["source_file"])
    # a repeat of an earlier file's post_id carries its own raw record (read again)
    later = here.rejects[(here.rejects["source_file"] == "c-posts.csv")
                         & here.rejects["reason"].str.startswith("duplicate_conflict")]
    assert later["raw"].str.contains("a different text for the same post_id").all()
    assert "a-posts.csv row 4" in later["reason"].iat[0]


def test_ingest_errors_are_raised_in_file_order(tmp_path, dask_engine):
    (tmp_path / "a.csv").write_text("post_id,account_id,created_at\n1,a,2024-01-01\n")
    (tmp_path / "b.csv").write_text("id,who\n1,a\n")
    cfg = config.load(None, []).ingest
    with pytest.raises(InputError, match=r"^a\.csv"):
        ingest.run(tmp_path, cfg)
    with pytest.raises(InputError, match=r"^a\.csv"):
        ingest.run(tmp_path, cfg, mapper=dask_engine.map)


def test_dask_local_cluster_outputs_equal_the_local_engine(corpus, tmp_path, hashing_embedder):
    # the test's embedder lives in conftest, which the worker processes cannot import:
    # send its class by value
    cloudpickle.register_pickle_by_value(sys.modules[type(hashing_embedder).__module__])
    # UMAP is skipped to keep the test short: the fits run on the client under either engine
    sets = ["reduce.method=none"]
    local = config.load(None, sets + [f"embed.cache_dir={tmp_path / 'cache-local'}"])
    dask = config.load(None, sets + DASK + [f"embed.cache_dir={tmp_path / 'cache-dask'}"])
    runner.cluster_corpus(corpus, tmp_path / "local", local, embedder=hashing_embedder)
    runner.cluster_corpus(corpus, tmp_path / "dask", dask, embedder=hashing_embedder)
    for name in ("assignments.parquet", "narratives.csv", "escalations.csv", "posts.parquet",
                 "rejects.csv", "coordination_pairs.parquet", "networks.csv"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name
    esc = pd.read_csv(tmp_path / "dask" / "escalations.csv")
    assert len(esc) >= 5  # the planted network is found, so the comparison means something
    manifest = pd.read_json(tmp_path / "dask" / "manifest.json", typ="series")
    assert manifest["engine"]["name"] == "dask" and manifest["engine"]["n_partitions"] == 2
    # the workers embedded and wrote the cache shards
    assert list((tmp_path / "cache-dask").rglob("shard-*.npy"))


def test_unknown_engine_and_stray_scheduler_are_config_errors():
    with pytest.raises(ConfigError, match=r"engine.name \('spark'\) must be local or dask"):
        config.load(None, ["engine.name=spark"])
    with pytest.raises(ConfigError, match=r"engine.scheduler .* only used with engine.name"):
        config.load(None, ["engine.scheduler=tcp://10.0.0.1:8786"])


def test_unreachable_scheduler_is_a_config_error():
    cfg = config.load(None, ["engine.name=dask", "engine.scheduler=tcp://127.0.0.1:9"])
    with pytest.raises(ConfigError, match=r"no Dask scheduler answered"):
        engine.start(cfg.engine)


@pytest.mark.slow
def test_dask_with_the_real_model_gives_the_local_vectors(tmp_path, built_models):
    """The quality tier (int8 ONNX) embedding on the workers gives the bytes of a local run.

    UMAP is skipped as in the test above: its fit runs on the client under either engine (and
    repeats byte for byte, tests/test_reduce.py)."""
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=11, n_posts=600, n_accounts=60, network_size=8)), tmp_path / "sim")
    corpus = _split_corpus(tmp_path / "sim", tmp_path / "split")
    sets = ["embed.tier=quality", "reduce.method=none"]
    local = config.load(None, sets + [f"embed.cache_dir={tmp_path / 'cache-local'}"])
    dask = config.load(None, sets + DASK + [f"embed.cache_dir={tmp_path / 'cache-dask'}"])
    runner.cluster_corpus(corpus, tmp_path / "local", local)
    runner.cluster_corpus(corpus, tmp_path / "dask", dask)
    for name in (".lockstep/vectors.npy", "posts.parquet", "rejects.csv", "assignments.parquet",
                 "coordination_pairs.parquet"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name
    assert list((tmp_path / "cache-dask").rglob("shard-*.npy"))  # embedded on the workers
