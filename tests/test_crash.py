"""Crash safety: `lockstep cluster` killed with SIGKILL in any stage loses nothing finished, and a
rerun resumes from the last finished stage with the same result as an uninterrupted run.

The kill happens in a child process (tests/lockstep_driver.py) in the middle of a stage: after
its work, while its outputs are being written. The rerun is in-process with the same fast
HashingEmbedder; reduce.method=none keeps each child process short (UMAP is covered by the
determinism tests)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import checkpoint, config, embed, runner, simulate
from tests.conftest import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "lockstep_driver.py"
STAGES = ["ingest", "embed", "reduce", "cluster", "summarise", "coordination", "escalate",
          "report"]
# the order stages finish in with the spaCy helper (pipeline/spacy_helper.py): the coordination
# stage runs while the helper analyses the summaries' texts, so it finishes first
HELPER_ORDER = ["ingest", "embed", "reduce", "cluster", "coordination", "summarise", "escalate",
                "report"]
OUTPUTS = {
    "ingest": ["rejects.csv", "posts.parquet", "accounts.parquet"],
    "embed": [".lockstep/vectors.npy"],
    "reduce": [".lockstep/coords.npy", "map.parquet"],
    "cluster": ["assignments.parquet"],
    "summarise": ["narratives.csv", "narratives.json"],
    "coordination": ["coordination_pairs.parquet"],
    "escalate": ["escalations.csv", "escalations.jsonl", "networks.csv", "network.graphml"],
    "report": ["manifest.json", "config.toml", "report.html"],
}
FINAL = ["assignments.parquet", "narratives.csv", "escalations.csv", "narratives.json",
         "networks.csv", "escalations.jsonl", "coordination_pairs.parquet", "map.parquet",
         "network.graphml"]


def sets(cache: Path) -> list[str]:
    return ["reduce.method=none", f"embed.cache_dir={cache}"]


def run_in_process(corpus: Path, out: Path, cache: Path, extra=()):
    cfg = config.load(None, [*sets(cache), *extra])
    return runner.cluster_corpus(corpus, out, cfg, embedder=HashingEmbedder())


def run_child(corpus: Path, out: Path, cache: Path, kill_at: str, extra=()
              ) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCKSTEP_TEST_KILL_AT": kill_at, "PYTHONPATH": str(ROOT),
           "NUMBA_CACHE_DIR": str(ROOT / ".cache" / "numba")}
    args = [sys.executable, str(DRIVER), "cluster", str(corpus), "--out", str(out),
            "--no-save-model"]
    for s in [*sets(cache), *extra]:
        args += ["--set", s]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A corpus and its uninterrupted run."""
    base = tmp_path_factory.mktemp("crash")
    corpus = base / "corpus"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=4, n_posts=300, n_accounts=30, network_size=6)), corpus)
    run_in_process(corpus, base / "ref", base / "ref-cache")
    return corpus, base / "ref"


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


# every stage with the helper (a new process on Linux with two CPUs or more), and the two whose
# order it changes without it
@pytest.mark.parametrize("stage,n_process", [*((s, 2) for s in STAGES), ("summarise", 1),
                                             ("coordination", 1)])
def test_kill_in_a_stage_keeps_finished_outputs_and_resumes(stage, n_process, reference,
                                                            tmp_path, caplog):
    corpus, ref = reference
    out, cache = tmp_path / "run", tmp_path / "cache"
    extra = [f"summarise.n_process={n_process}"]
    child = run_child(corpus, out, cache, stage, extra)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert "Traceback" not in child.stderr

    order = HELPER_ORDER if n_process > 1 and sys.platform.startswith("linux") else STAGES
    earlier = order[: order.index(stage)]
    for name in earlier:  # every finished stage: recorded, its outputs whole and as they should be
        assert (out / checkpoint.FOLDER / f"{name}.json").exists(), name
        for rel in OUTPUTS[name]:
            assert same_bytes(out / rel, ref / rel), rel
    assert not (out / checkpoint.FOLDER / f"{stage}.json").exists()
    # whatever the killed stage managed to write is whole too (atomic writes), never torn
    for rel in OUTPUTS[stage]:
        if (out / rel).exists() and rel not in ("manifest.json", "config.toml"):
            assert same_bytes(out / rel, ref / rel), rel
    if earlier:  # readable by the usual readers
        pd.read_parquet(out / "posts.parquet")
    if "cluster" in earlier:
        assert len(pd.read_parquet(out / "assignments.parquet")) == len(
            pd.read_parquet(out / "posts.parquet"))

    with caplog.at_level(logging.INFO, logger="pipeline"):
        result = run_in_process(corpus, out, cache, extra)
    resumed = [n for n, info in result.stages.items() if info.get("resumed")]
    assert sorted(resumed) == sorted(earlier)
    for name in earlier:
        assert any(r.getMessage().startswith(f"{name}: resumed") for r in caplog.records)
    for rel in FINAL:
        assert same_bytes(out / rel, ref / rel), rel
    assert (out / "report.html").exists()


def test_another_analysis_version_makes_the_summaries_again(reference, tmp_path, monkeypatch):
    # ANALYSIS_VERSION changes when the per-text analysis does: the analysis cache starts over
    # (pipeline/analysis_cache.py), and a finished run's summaries are made again, not resumed
    from pipeline import analysis_cache

    corpus, _ = reference
    out, cache = tmp_path / "run", tmp_path / "cache"
    run_in_process(corpus, out, cache)
    monkeypatch.setattr(analysis_cache, "ANALYSIS_VERSION", analysis_cache.ANALYSIS_VERSION + 1)
    again = run_in_process(corpus, out, cache)
    assert [n for n, i in again.stages.items() if i.get("resumed")] == [
        "ingest", "embed", "reduce", "cluster", "coordination"]


def test_a_changed_config_or_input_invalidates_the_later_stages(reference, tmp_path, caplog):
    corpus, _ = reference
    out, cache = tmp_path / "run", tmp_path / "cache"
    run_in_process(corpus, out, cache)
    again = run_in_process(corpus, out, cache, ["cluster.min_cluster_size=25"])
    assert [n for n, i in again.stages.items() if i.get("resumed")] == [
        "ingest", "embed", "reduce"]
    fresh = run_in_process(corpus, tmp_path / "fresh", tmp_path / "cache2",
                           ["cluster.min_cluster_size=25"])
    for rel in FINAL:
        assert same_bytes(out / rel, fresh.out_dir / rel), rel
    # a summarise-only change keeps clustering and coordination
    again = run_in_process(corpus, out, cache, ["cluster.min_cluster_size=25",
                                                "summarise.n_terms=4"])
    assert [n for n, i in again.stages.items() if i.get("resumed")] == [
        "ingest", "embed", "reduce", "cluster", "coordination"]
    # an altered output is not trusted: its stage runs again
    (out / "assignments.parquet").write_bytes(b"garbage")
    again = run_in_process(corpus, out, cache, ["cluster.min_cluster_size=25",
                                                "summarise.n_terms=4"])
    assert "cluster" not in [n for n, i in again.stages.items() if i.get("resumed")]
    assert same_bytes(out / "assignments.parquet", fresh.out_dir / "assignments.parquet")
    # a changed input redoes everything
    copy = tmp_path / "corpus2"
    shutil.copytree(corpus, copy)
    pd.read_csv(copy / "posts.csv").iloc[:-1].to_csv(copy / "posts.csv", index=False)
    again = run_in_process(copy, out, cache)
    assert not [n for n, i in again.stages.items() if i.get("resumed")]


def test_embedding_cache_survives_a_kill_in_the_middle_of_a_shard_write(reference, tmp_path,
                                                                          caplog):
    corpus, ref = reference
    out, cache = tmp_path / "run", tmp_path / "cache"
    child = run_child(corpus, out, cache, "cache-write:3")
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    folder = cache / "test__hashing-64"
    shards = sorted(folder.glob("shard-*.npy"))
    assert len(shards) == 2  # the first two chunks finished
    leftovers = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and leftovers[0].stat().st_size > 0  # the torn third write, as a temp file
    # a torn file under a shard's own name (a copy cut short) must not be read as valid either
    torn = folder / shards[0].name.replace("shard-000000", "shard-000050")
    torn.write_bytes(shards[0].read_bytes()[: shards[0].stat().st_size * 2 // 3])
    cut = folder / shards[1].name.replace("shard-000001", "shard-000051")
    rows = np.load(shards[1])
    with open(cut, "wb") as fh:  # a whole, readable file with rows missing
        np.save(fh, rows[: len(rows) // 2])
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        loaded = embed.VectorCache(cache, HashingEmbedder.model_id)
    assert len(loaded) == 2 * 64
    assert sum("skipping" in r.getMessage() and "shard-00005" in r.getMessage()
               for r in caplog.records) == 2

    result = run_in_process(corpus, out, cache)
    assert result.stages["embed"]["n_cached"] == 2 * 64
    assert not result.stages["embed"].get("resumed")
    for rel in FINAL:
        assert same_bytes(out / rel, ref / rel), rel
    # every cached vector is the one the model gives for its text
    texts = sorted({embed.normalise_text(t, config.load(None, []).embed)
                    for t in result.posts["text"]})
    found, vectors = embed.VectorCache(cache, HashingEmbedder.model_id).get(
        embed.text_keys(texts))
    assert found.all()
    direct = HashingEmbedder().embed(texts)
    np.testing.assert_allclose(vectors, direct / np.linalg.norm(direct, axis=1, keepdims=True),
                               rtol=0, atol=1e-6)
