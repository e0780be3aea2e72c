"""The benchmark harness: registry, --sizes, merging rows and rendering. No timings are checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402
import scale_bench  # noqa: E402


def _scale_row(size: int, when: str) -> dict:
    stages = {s: {"seconds": 1.5, "posts_per_second": size / 1.5, "peak_rss_mb": 300.0}
              for s in scale_bench.STAGES}
    return {"size": size, "tier": "quality", "measured_at": when, "measured_by": "scale",
            "simulate_command": f"lockstep simulate --n-posts {size}", "simulate_seconds": 1.0,
            "posts": size, "distinct_texts": size // 2, "narratives": 9, "noise_share": 0.1,
            "planted_narratives": 12, "nmi": 0.71, "escalated": 14, "precision": 1.0,
            "recall": 0.93, "wall_seconds": 12.0, "cpu_seconds": 20.0, "pipeline_seconds": 11.0,
            "peak_rss_mb": 321.0, "stages": stages, "command": f"lockstep cluster sim-{size}"}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(scale_bench, "RESULTS", tmp_path)
    return tmp_path


def test_record_merges_one_size_and_keeps_the_others(results):
    scale_bench.record(_scale_row(10_000, "2026-01-01T00:00:00+00:00"))
    scale_bench.record(_scale_row(100_000, "2026-01-02T00:00:00+00:00"))
    scale_bench.record({**_scale_row(10_000, "2026-01-03T00:00:00+00:00"), "nmi": 0.5})
    res = json.loads((results / "scale.json").read_text())
    assert [r["size"] for r in res["rows"]] == [10_000, 100_000]
    assert res["rows"][0]["nmi"] == 0.5 and res["rows"][1]["nmi"] == 0.71
    assert res["kind"] == "scale" and res["tier"] == "quality"


def test_render_shows_every_stage_and_the_commands(results):
    scale_bench.record(_scale_row(10_000, "2026-01-01T00:00:00+00:00"))
    text = run.render()
    assert "## scale" in text
    for stage in scale_bench.STAGES:
        assert stage in text
    assert "`lockstep simulate --n-posts 10000` then `lockstep cluster sim-10000`" in text
    assert "| 10,000 | 5,000 | 9 | 12 | 10.0% | 0.710 |" in text


def test_sizes_go_only_to_benchmarks_that_take_them(results, monkeypatch):
    seen = {}

    def sized(sizes=None):
        seen["sized"] = sizes
        return {"name": "sized", "kind": "scale", "tier": "quality", "machine": run.machine(),
                "measured_at": "x", "command": "c", "rows": []}

    def plain():
        seen["plain"] = True
        return {"name": "plain", "machine": run.machine(), "measured_at": "x", "command": "c",
                "rows": []}

    monkeypatch.setattr(run, "BENCHES", {"sized": sized, "plain": plain})
    monkeypatch.setattr(run, "ROOT", results)
    (results / "benchmarks").mkdir()
    monkeypatch.setattr(sys, "argv", ["run.py", "sized", "plain", "--sizes", "10", "20"])
    run.main()
    assert seen == {"sized": [10, 20], "plain": True}
    assert (results / "sized.json").exists() and (results / "plain.json").exists()
    assert "## sized" in (results / "benchmarks" / "RESULTS.md").read_text()


def test_an_unknown_benchmark_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run.py", "nope"])
    with pytest.raises(SystemExit) as exc:
        run.main()
    assert exc.value.code == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_run_measured_reports_a_failed_command(tmp_path):
    with pytest.raises(Exception, match="returned non-zero exit status 3"):
        scale_bench.run_measured([sys.executable, "-c", "raise SystemExit(3)"])
    out = scale_bench.run_measured([sys.executable, "-c", "x = bytearray(50_000_000)"])
    assert out["peak_rss_mb_wait4"] >= 50  # the child's own peak, not this process's
