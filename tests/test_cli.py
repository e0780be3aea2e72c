"""The `lockstep` command end to end: exit codes, outputs, the cache, determinism.

These run the real embedding model (loaded from its installed package, offline) on a small
simulated corpus."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def lockstep(*args, cwd=None):
    """Run the CLI in a fresh process, as a user would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               NUMBA_CACHE_DIR=str(ROOT / ".cache" / "numba"))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=900)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "small"
    proc = lockstep("simulate", "--seed", 3, "--n-posts", 700, "--n-accounts", 60,
                    "--network-size", 8, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def two_runs(small_corpus, tmp_path_factory, built_models):
    base = tmp_path_factory.mktemp("runs")
    cache = base / "cache"
    first = lockstep("cluster", small_corpus, "--out", base / "one",
                     "--set", f"embed.cache_dir={cache}")
    second = lockstep("-v", "cluster", small_corpus, "--out", base / "two",
                      "--set", f"embed.cache_dir={cache}")
    return base, first, second


@pytest.mark.slow
def test_cluster_writes_every_output(two_runs):
    base, first, _ = two_runs
    assert first.returncode == 0, first.stderr[-3000:]
    run = base / "one"
    for name in ("posts.parquet", "assignments.parquet", "narratives.csv", "narratives.json",
                 "rejects.csv", "manifest.json", "config.toml", "escalations.csv",
                 "escalations.jsonl", "networks.csv", "network.graphml"):
        assert (run / name).exists(), name
    posts = pd.read_parquet(run / "posts.parquet")
    assign = pd.read_parquet(run / "assignments.parquet")
    assert list(assign.columns) == ["post_id", "narrative_id", "probability"]
    assert assign["post_id"].tolist() == posts["post_id"].tolist()
    narr = pd.read_csv(run / "narratives.csv")
    assert {"narrative_id", "n_posts", "n_accounts", "first_at", "last_at", "top_terms",
            "example_text"} <= set(narr.columns)
    assert narr["n_posts"].sum() + (assign["narrative_id"] == -1).sum() == len(assign)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["rows_in"] == manifest["counts"]["accepted"] + \
        manifest["counts"]["rejected"]
    assert set(manifest["stages"]) >= {"ingest", "embed", "reduce", "cluster", "summarise",
                                       "coordination", "escalate"}
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert "rows in" in first.stdout and "accepted" in first.stdout
    assert "Narratives in" in first.stdout


@pytest.mark.slow
def test_second_run_embeds_nothing_and_is_identical(two_runs):
    base, first, second = two_runs
    assert second.returncode == 0, second.stderr[-3000:]
    m1 = json.loads((base / "one" / "manifest.json").read_text())
    m2 = json.loads((base / "two" / "manifest.json").read_text())
    assert m1["stages"]["embed"]["n_embedded"] > 0
    assert m2["stages"]["embed"]["n_embedded"] == 0
    assert m2["stages"]["embed"]["n_cached"] == m1["stages"]["embed"]["n_unique"]
    for name in ("assignments.parquet", "narratives.csv", "escalations.csv", "networks.csv"):
        assert (base / "one" / name).read_bytes() == (base / "two" / name).read_bytes(), name


@pytest.mark.slow
def test_only_the_lockstep_program_freezes_what_its_imports_made(two_runs, tmp_path):
    _, _, second = two_runs  # its own process, with -v
    assert "objects left out of cycle collection after the imports" in second.stderr
    before = gc.get_freeze_count()
    result = runner.invoke(app, ["cluster", str(tmp_path / "nope")])  # in this process
    assert result.exit_code == 1 and gc.get_freeze_count() == before


@pytest.mark.slow
def test_cold_cache_run_is_identical(two_runs, small_corpus, tmp_path):
    base, _, _ = two_runs
    proc = lockstep("cluster", small_corpus, "--out", tmp_path / "cold",
                    "--set", f"embed.cache_dir={tmp_path / 'fresh-cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("assignments.parquet", "narratives.csv", "escalations.csv"):
        assert (base / "one" / name).read_bytes() == (tmp_path / "cold" / name).read_bytes(), name


@pytest.mark.slow
def test_escalate_and_export_rerun_on_a_finished_run(two_runs, tmp_path):
    base, _, _ = two_runs
    run = base / "two"
    before = (run / "escalations.csv").read_bytes()
    proc = lockstep("escalate", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "escalations.csv").read_bytes() == before
    for fmt in ("csv", "jsonl", "graphml"):
        proc = lockstep("export", run, "--format", fmt, "--out", tmp_path / "x")
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in (tmp_path / "x").iterdir()} >= {
        "escalations.csv", "escalations.jsonl", "network.graphml", "networks.csv"}
    proc = lockstep("narratives", run)
    assert proc.returncode == 0 and "Narratives in" in proc.stdout
    proc = lockstep("narrative", run, 0)
    assert proc.returncode == 0 and "Representative posts" in proc.stdout, proc.stderr
    proc = lockstep("narrative", run, 999)
    assert proc.returncode == 1 and "has no narrative 999" in proc.stderr
    (run / "report.html").unlink()
    proc = lockstep("report", run)
    assert proc.returncode == 0 and (run / "report.html").stat().st_size > 1000


def test_missing_required_column_exits_1_naming_file_and_fix(tmp_path):
    bad = tmp_path / "posts.csv"
    bad.write_text("post_id,account_id,created_at,message\np1,a1,2024-01-01T00:00:00Z,hi\n")
    result = runner.invoke(app, ["cluster", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "posts.csv" in result.output and '"text"' in result.output
    assert "ingest.columns.text" in result.output
    assert "Traceback" not in result.output


def test_no_post_accepted_exits_1_and_keeps_rejects(tmp_path):
    bad = tmp_path / "posts.csv"
    bad.write_text("post_id,account_id,created_at,text\np1,a1,not-a-date,hi\n,a2,2024-01-01,x\n")
    result = runner.invoke(app, ["cluster", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "no post was accepted" in result.output
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert len(rejects) == 2


def test_corpus_that_does_not_exist_exits_1(tmp_path):
    result = runner.invoke(app, ["cluster", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_unknown_config_key_exits_2_listing_keys(tmp_path):
    result = runner.invoke(app, ["cluster", str(tmp_path), "--set", "cluster.size=3"])
    assert result.exit_code == 2
    assert "unknown config key 'cluster.size'" in result.output
    assert "cluster.min_cluster_size" in result.output


def test_usage_errors_exit_2():
    assert runner.invoke(app, []).exit_code == 2  # no command: help, as a usage error
    assert runner.invoke(app, ["cluster"]).exit_code == 2  # missing argument
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2


def test_help_exits_0():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "cluster" in result.output
