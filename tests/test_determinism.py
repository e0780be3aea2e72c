"""Same input and config: the same outputs, byte for byte, in the same process or another one
(with a different Python hash seed), with the fast hashing embedder and with the real model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config, runner, simulate
from tests.conftest import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
FILES = ["assignments.parquet", "narratives.csv", "escalations.csv", "narratives.json",
         "networks.csv", "escalations.jsonl", "coordination_pairs.parquet", "map.parquet",
         "network.graphml", "posts.parquet", "rejects.csv", "report.html"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("determinism") / "corpus"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=11, n_posts=400, n_accounts=40, network_size=7)), path)
    return path


def cluster(corpus: Path, out: Path, embedder=None, extra=()):
    cfg = config.load(None, [f"embed.cache_dir={out}-cache", *extra])
    return runner.cluster_corpus(corpus, out, cfg, embedder=embedder)


def differing(a: Path, b: Path) -> list[str]:
    return [f for f in FILES if (a / f).read_bytes() != (b / f).read_bytes()]


def test_two_runs_give_byte_identical_outputs(corpus, tmp_path):
    first = cluster(corpus, tmp_path / "a", HashingEmbedder())
    cluster(corpus, tmp_path / "b", HashingEmbedder())
    assert first.summary.table.shape[0] > 1 and len(first.escalation.accounts) > 0
    assert not differing(tmp_path / "a", tmp_path / "b")


def test_another_process_with_another_hash_seed_gives_the_same_bytes(corpus, tmp_path):
    sets = ["reduce.method=none"]
    cluster(corpus, tmp_path / "a", HashingEmbedder(), sets)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(ROOT / "tests" / "lockstep_driver.py"), "cluster", str(corpus),
            "--out", str(tmp_path / "b"), "--set", f"embed.cache_dir={tmp_path / 'b'}-cache",
            "--no-save-model"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not differing(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
def test_two_runs_with_the_real_model_give_byte_identical_outputs(tmp_path):
    corpus = tmp_path / "corpus"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=3, n_posts=200, n_accounts=30, network_size=6)), corpus)
    first = cluster(corpus, tmp_path / "a")
    assert first.stages["embed"]["n_embedded"] > 0
    second = cluster(corpus, tmp_path / "b")
    assert second.stages["embed"]["n_embedded"] > 0  # its own cache: embedded again
    assert not differing(tmp_path / "a", tmp_path / "b")
