"""The Dask engine gives the same outputs as the local engine, byte for byte."""

import sys

import cloudpickle
import pandas as pd
import pytest

from pipeline import config, engine, runner, simulate
from pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "sim"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=5, n_posts=1500, n_accounts=80, network_size=10)), out)
    return out


def test_dask_local_cluster_outputs_equal_the_local_engine(corpus, tmp_path, hashing_embedder):
    # the test's embedder lives in conftest, which the worker processes cannot import:
    # send its class by value
    cloudpickle.register_pickle_by_value(sys.modules[type(hashing_embedder).__module__])
    # UMAP is skipped to keep the test short: the fits run on the client under either engine
    sets = ["reduce.method=none", "engine.memory_limit=1GB"]
    local = config.load(None, sets + [f"embed.cache_dir={tmp_path / 'cache-local'}"])
    dask = config.load(None, sets + [f"embed.cache_dir={tmp_path / 'cache-dask'}",
                                     "engine.name=dask", "engine.n_workers=2"])
    runner.cluster_corpus(corpus, tmp_path / "local", local, embedder=hashing_embedder)
    runner.cluster_corpus(corpus, tmp_path / "dask", dask, embedder=hashing_embedder)
    for name in ("assignments.parquet", "narratives.csv", "escalations.csv", "posts.parquet",
                 "coordination_pairs.parquet", "networks.csv"):
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
