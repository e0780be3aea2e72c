"""The whole pipeline runs with every socket refused: nothing is fetched, ever."""

import socket

import pandas as pd
import pytest

from pipeline import config, runner, simulate


class NoNetwork(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    raise NoNetwork(f"network use attempted: {args!r}")


@pytest.mark.slow
def test_whole_pipeline_runs_with_sockets_blocked(tmp_path, monkeypatch, built_models):
    corpus = tmp_path / "corpus"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(seed=9, n_posts=300,
                                                               n_accounts=40,
                                                               network_size=6)), corpus)
    # stricter than the suite-wide guard: loopback and name lookups are refused too
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    cfg = config.load(None, [f"embed.cache_dir={tmp_path / 'cache'}"])
    result = runner.cluster_corpus(corpus, tmp_path / "run", cfg)
    assert result.stages["embed"]["n_embedded"] > 0  # the model really ran, from disk
    assignments = pd.read_parquet(tmp_path / "run" / "assignments.parquet")
    assert len(assignments) == len(result.posts)
    assert (tmp_path / "run" / "escalations.csv").exists()
    assert 'id="escalations"' in (tmp_path / "run" / "report.html").read_text()  # the report too
