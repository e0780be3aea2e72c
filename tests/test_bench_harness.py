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


def test_run_measured_adds_up_the_processes_a_command_starts():
    # two processes of about 70 MB each at once: one alone is under 120 MB, the sampled sum of
    # the tree is not (wait4's figure is no test: Linux keeps the forking process's peak in it)
    code = ("import subprocess, sys, time; x = bytearray(60_000_000); "
            "c = subprocess.Popen([sys.executable, '-c', "
            "'import time; x = bytearray(60_000_000); time.sleep(2.5)']); time.sleep(2.5); "
            "c.wait()")
    out = scale_bench.run_measured([sys.executable, "-c", code])
    assert out["peak_rss_mb_tree"] >= 120


def _nmi_row(name: str, tier: str, nmi: float) -> dict:
    return {"set": name, "tier": tier, "posts": 100, "narratives": 4, "noise_share": 0.1,
            "nmi": nmi, "ari": 0.5, "embed_cached": 0, "embed_embedded": 100,
            "wall_seconds": 1.0, "peak_rss_mb": 10.0, "command": "lockstep cluster x"}


def test_tiers_rows_merge_and_the_goal_table_says_what_is_met():
    import tiers_bench

    res = {"name": "tiers", "nmi": [], "ratios": {"quality / quality-torch": 2.0,
                                                   "fast / quality": 49.9},
           "cpu_ratios": {"quality / quality-torch": 1.5, "fast / quality": 80.0}}
    tiers_bench.put_nmi(res, _nmi_row("stackoverflow", "fast", 0.60))
    tiers_bench.put_nmi(res, _nmi_row("stackoverflow", "quality-torch", 0.70))
    tiers_bench.put_nmi(res, _nmi_row("stackoverflow", "quality", 0.689))
    tiers_bench.put_nmi(res, _nmi_row("stackoverflow", "fast", 0.66))  # replaces the 0.60 row
    assert [(r["tier"], r["nmi"]) for r in res["nmi"]] == [
        ("quality-torch", 0.70), ("quality", 0.689), ("fast", 0.66)]
    assert res["nmi_delta"]["stackoverflow: quality - quality-torch"] == -0.011
    assert not tiers_bench.complete(res)
    table = "\n".join(run.tiers_goal_table(res))
    assert "| fast tier posts/s >= 50x quality's (same run) | 49.9x wall (80.0x per CPU " \
           "second) | not met |" in table
    assert "quality NMI at most 0.01 below quality-torch's: stackoverflow | 0.6890 vs 0.7000 " \
           "(-0.0110) | not met |" in table
    assert "fast NMI at most 0.05 below quality-torch's: stackoverflow | 0.6600 vs 0.7000 " \
           "(-0.0400) | met |" in table
    assert "quality NMI at most 0.01 below quality-torch's: biomedical | not measured | " \
           "not met |" in table
    tiers_bench.put_nmi(res, _nmi_row("agnews_8000", "quality-torch", 0.35))
    tiers_bench.put_nmi(res, _nmi_row("agnews_8000", "quality", 0.40))
    assert "agnews_8000 | 0.4000 vs 0.3500 (+0.0500; above by more than 0.01) | met |" in \
        "\n".join(run.tiers_goal_table(res))


def test_seed_means_compare_a_tier_with_quality_torch_on_the_seeds_both_have():
    import tiers_bench

    res = {"nmi": [_nmi_row("searchsnippets", "quality-torch", 0.50),
                   _nmi_row("searchsnippets", "quality", 0.49)],
           "nmi_seeds": [{"set": "searchsnippets", "tier": tier, "seed": seed, "nmi": nmi}
                         for tier, seed, nmi in (("quality-torch", 1, 0.52),
                                                 ("quality-torch", 2, 0.60),  # torch alone
                                                 ("quality", 1, 0.50),
                                                 ("fast", 1, 0.40))]}
    got = tiers_bench.seed_summary(res)
    assert got["searchsnippets: quality-torch"] == {"seeds": [1, 2, 42], "n": 3, "mean": 0.54,
                                                    "sd": 0.0529}
    quality = got["searchsnippets: quality"]
    assert quality["compared"] == {"seeds": [1, 42], "mean": 0.495, "sd": 0.0071,
                                   "quality_torch_mean": 0.51, "quality_torch_sd": 0.0141}
    assert quality["minus_quality_torch"] == -0.015  # not 0.495 - 0.54
    assert "searchsnippets: fast" not in got  # one seed: no mean
    table = "\n".join(run.tiers_goal_table(res))
    assert "| quality NMI at most 0.01 below quality-torch's: searchsnippets, mean over seeds " \
           "1, 42 | 0.4950 (sd 0.0071) vs 0.5100 (sd 0.0141) (-0.0150) | not met |" in table


def test_tiers_subsample_is_stratified_seeded_and_in_file_order(tmp_path, monkeypatch):
    import tiers_bench

    (tmp_path / "clustering").mkdir()
    lines = [f"{'abc'[i % 3] if i < 90 else 'd'}\tpost {i}" for i in range(100)]
    (tmp_path / "clustering" / "toy.tsv").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(tiers_bench, "SHARED", tmp_path)
    monkeypatch.setattr(tiers_bench, "SUBSAMPLE", {"toy": 21})
    path, label = tiers_bench.set_tsv("toy", tmp_path / "out")
    kept = path.read_text().splitlines()
    assert label == "toy-21" and len(kept) == 21
    # 30/30/30/10 of 100 -> 6.3/6.3/6.3/2.1 -> 6/6/6/2 plus the one left to the largest remainder
    counts = sorted(sum(k.startswith(c) for k in kept) for c in "abcd")
    assert counts == [2, 6, 6, 7]
    assert kept == sorted(kept, key=lines.index)  # file order kept
    again, _ = tiers_bench.set_tsv("toy", tmp_path / "again")
    assert again.read_text() == path.read_text()  # seeded
    assert tiers_bench.set_tsv("other", tmp_path)[1] == "other"  # not subsampled


def test_tiers_update_merges_one_row_into_the_file_as_it_is_then(tmp_path, monkeypatch):
    import tiers_bench

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    path = tmp_path / "benchmarks" / "results" / "tiers.json"
    monkeypatch.setattr(tiers_bench, "ROOT", tmp_path)
    monkeypatch.setattr(tiers_bench, "measure_nmi",
                        lambda name, tier, reuse=False: _nmi_row(name, tier, 0.5))
    tiers_bench.update(["nmi", "agnews_8000", "fast"])
    res = json.loads(path.read_text())
    # a row another process merged in the meantime is kept
    tiers_bench.put_nmi(res, _nmi_row("biomedical", "quality", 0.4))
    path.write_text(json.dumps(res))
    tiers_bench.update(["nmi", "agnews_8000", "quality", "--reuse"])
    res = json.loads(path.read_text())
    assert {(r["set"], r["tier"]) for r in res["nmi"]} == {
        ("agnews_8000", "fast"), ("agnews_8000", "quality"), ("biomedical", "quality")}
    assert res["partial"] is True
    with pytest.raises(SystemExit, match="usage"):
        tiers_bench.update(["nmi", "agnews_8000", "slow"])


def test_summarise_caps_sections_are_kept_one_per_base_file(tmp_path, monkeypatch):
    import summarise_scale

    def details(labels):
        return {"details": [{"narrative_id": i, "label": label, "top_terms": label.split(),
                             "entities": [{"text": label.split()[0]}]}
                            for i, label in enumerate(labels)]}

    files = {}
    for name, labels in (("all.json", ["army day", "kashmir valley"]),
                         ("small.json", ["army day", "kashmir people"]),
                         ("old-base.json", ["army", "kashmir"])):
        files[name] = tmp_path / name
        files[name].write_text(json.dumps(details(labels)))
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    result = tmp_path / "benchmarks" / "results" / "summarise_scale.json"
    old_section = {"note": "session 5", "rows": [{"file": "x.json", "base": "old-base.json",
                                                  **summarise_scale.compare(
                                                      details(["army"]), details(["army"]))}]}
    result.write_text(json.dumps({"rows": [], "caps": old_section}))  # the old single section
    monkeypatch.setattr(summarise_scale, "ROOT", tmp_path)
    for note in ("first try", "100k"):  # the second replaces the first: the same base file
        monkeypatch.setattr(sys, "argv", ["summarise_scale.py", "--caps", note,
                                          str(files["all.json"]), str(files["small.json"])])
        summarise_scale.main()
    res = json.loads(result.read_text())
    assert [c["note"] for c in res["caps"]] == ["session 5", "100k"]
    row = res["caps"][1]["rows"][0]
    assert (row["file"], row["base"], row["labels_same"], row["n_narratives"]) == \
        ("small.json", "all.json", 1, 2)
    assert row["mean_top_terms_overlap"] == 0.75 and row["mean_entities_overlap"] == 1.0
    text = "\n".join(summarise_scale.render(res))
    assert text.index("session 5") < text.index("100k")
    assert "| small.json | all.json | 0.75 / 0.5 | 0.75 | 1/2 | 1.0 |" in text


def test_incremental_renders_each_corpus_size_with_its_own_ratio(results):
    def result(n_posts: int, cold: float, update: float) -> dict:
        row = {"posts": n_posts, "embedded": n_posts, "cached": 0, "startup_seconds": 3.0,
               "stage_seconds": {"embed": 1.0}, "peak_rss_mb": 100.0,
               "load_average_before": [1.0], "load_average_after": [1.0]}
        rows = [{**row, "run": name, "wall_seconds": wall}
                for name, wall in (("cold", cold), ("update", update), ("update, no cache", 9),
                                   ("full refit", 9))]
        return {"name": "incremental", "corpus": f"sim n_posts={n_posts}", "rows": rows,
                "measured_at": "2026-11-29", "command": "run.py incremental",
                "machine": {"cpus": 2, "python": "3.11"}, "ratio_wall": round(update / cold, 3),
                "ratio_pipeline": 0.1, "ratio_full_refit_wall": 0.2,
                "earlier_posts_keeping_their_narrative": 1.0}

    one = "\n".join(run.incremental_lines(result(5500, 30.0, 12.0)))
    assert "sim n_posts=5500" in one and "update / cold: 0.4 (goal <= 0.2)" in one
    res = {**result(5500, 30.0, 12.0), "other_sizes": [result(55000, 200.0, 30.0)]}
    (results / "incremental.json").write_text(json.dumps(res))
    text = run.render()
    assert text.index("update / cold: 0.4 (goal <= 0.2)") < text.index(
        "The same at a larger corpus") < text.index("update / cold: 0.15 (goal <= 0.2)")
    assert text.count("| cold | 55,000 |") == 1 and text.count("| cold | 5,500 |") == 1
