import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_default_toml_holds_every_parameter_with_the_code_defaults():
    data = tomllib.loads((ROOT / "configs" / "default.toml").read_text())
    assert data == asdict(config.Config()), "configs/default.toml and config.py disagree"


def test_every_key_is_listed():
    keys = config.valid_keys()
    assert "cluster.min_cluster_size" in keys
    assert "ingest.columns.text" in keys
    assert "run.seed" in keys


def test_set_overrides_are_typed():
    cfg = config.load(None, ["cluster.min_cluster_size=30", "embed.strip_urls=false",
                             "reduce.min_dist=0.1", "ingest.columns.text=message"])
    assert cfg.cluster.min_cluster_size == 30
    assert cfg.embed.strip_urls is False
    assert cfg.reduce.min_dist == pytest.approx(0.1)
    assert cfg.ingest.columns.text == "message"


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'cluster\.min_size'.*"
                                          r"cluster\.min_cluster_size"):
        config.load(None, ["cluster.min_size=3"])


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown config key 'clustr'"):
        config.load(None, ["clustr.min_cluster_size=3"])


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"cluster\.min_cluster_size: 'many' is not a whole number"):
        config.load(None, ["cluster.min_cluster_size=many"])
    with pytest.raises(ConfigError, match=r"cluster\.min_cluster_size \(1\) must be 0 \(auto\) or at least 2"):
        config.load(None, ["cluster.min_cluster_size=1"])


def test_set_without_equals_explains_the_form():
    with pytest.raises(ConfigError, match=r"has no '='; write --set section\.key=value"):
        config.load(None, ["cluster.min_cluster_size"])


def test_unknown_tier_lists_the_tiers():
    with pytest.raises(ConfigError, match=r"embed\.tier \('turbo'\) must be one of: quality"):
        config.load(None, ["embed.tier=turbo"])


def test_config_file_is_merged_and_checked(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text("[cluster]\nmin_cluster_size = 9\n")
    assert config.load(good).cluster.min_cluster_size == 9
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nmin_cluster_size = 'nine'\n")
    with pytest.raises(ConfigError, match=r"cluster\.min_cluster_size: expected int, found str"):
        config.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml")


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = config.load(None, ["cluster.min_cluster_size=21", "ingest.columns.text=message"])
    path = tmp_path / "resolved.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(path) == cfg
