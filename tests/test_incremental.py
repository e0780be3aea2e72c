"""`lockstep cluster --update`: a finished run plus new posts (pipeline/incremental.py).

One earlier run (90% of a simulated corpus, fake topic embedder) is fitted once per module; each
test updates its own copy of that run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import config, lang, model, reduce, runner, simulate
from pipeline.errors import ConfigError
from tests.conftest import TopicEmbedder

N_POSTS = 900
OUTPUTS = ("assignments.parquet", "narratives.csv", "narratives.json", "escalations.csv",
           "networks.csv")


def _write(sim, posts: pd.DataFrame, folder: Path) -> Path:
    simulate.write_corpus(simulate.Corpus(posts=posts.reset_index(drop=True),
                                          accounts=sim.accounts, truth=sim.truth), folder)
    return folder


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    base = tmp_path_factory.mktemp("incremental")
    sim = simulate.simulate(simulate.SimConfig(seed=5, n_posts=N_POSTS, n_accounts=60,
                                               network_size=8))
    posts = sim.posts
    held = np.random.default_rng(3).random(len(posts)) < 0.1
    old, full = _write(sim, posts[~held], base / "old"), _write(sim, posts, base / "full")
    sets = [f"embed.cache_dir={base}/cache", f"summarise.cache_dir={base}/analysis"]
    runner.cluster_corpus(old, base / "run", config.load(None, sets), embedder=TopicEmbedder())
    return {"base": base, "sim": sim, "old": old, "full": full, "sets": sets,
            "new_ids": set(posts["post_id"][held]), "posts": posts, "held": held}


def _update(earlier, tmp_path: Path, corpus: Path, extra: list[str] = (), embedder=None,
            name: str = "run") -> tuple[dict, Path]:
    out = tmp_path / name
    shutil.copytree(earlier["base"] / "run", out)
    cfg = config.load(None, [*earlier["sets"], *extra])
    runner.cluster_corpus(corpus, out, cfg, embedder=embedder or TopicEmbedder(), update=True)
    return json.loads((out / "manifest.json").read_text()), out


def _no_refit(monkeypatch):
    def refit(*_a, **_k):
        raise AssertionError("an update must not refit UMAP")

    monkeypatch.setattr(reduce, "make_reducer", refit)


def test_new_posts_are_embedded_and_placed_and_earlier_posts_keep_their_narratives(
        earlier, tmp_path, monkeypatch):
    _no_refit(monkeypatch)
    embedder = TopicEmbedder()
    # no embedding cache: what is embedded is exactly what the update asks the model for
    manifest, out = _update(earlier, tmp_path, earlier["full"], ["embed.cache_dir="], embedder)
    note = manifest["update"]
    n_new = len(earlier["new_ids"])
    assert note["used"] and note["n_new"] == n_new and note["n_posts"] == N_POSTS
    assert note["new_placed_in_narratives"] + note["new_left_as_noise"] == n_new
    assert note["new_placed_in_narratives"] >= 0.7 * n_new
    new_texts = set(earlier["posts"]["text"][earlier["held"]])
    embedded = [t for call in embedder.calls for t in call]
    assert 0 < len(embedded) <= n_new and len(embedded) <= len(new_texts)
    assert manifest["stages"]["reduce"].get("update") and not manifest["resumed_stages"]

    before = pd.read_parquet(earlier["base"] / "run" / "assignments.parquet")
    after = pd.read_parquet(out / "assignments.parquet")
    posts = pd.read_parquet(out / "posts.parquet")
    assert after["post_id"].equals(posts["post_id"]) and len(after) == N_POSTS
    kept = after.set_index("post_id").loc[before["post_id"]]
    assert np.array_equal(kept["narrative_id"].to_numpy(), before["narrative_id"].to_numpy())
    assert np.array_equal(kept["probability"].to_numpy(), before["probability"].to_numpy())
    # the new posts mostly join the narrative their planted story has among the earlier posts
    truth = {p: v[0] for p, v in earlier["sim"].truth["posts"].items()}
    old = before[before["narrative_id"] >= 0]
    majority = old.groupby("narrative_id")["post_id"].agg(
        lambda s: s.map(truth).mode().iloc[0])
    new = after[after["post_id"].isin(earlier["new_ids"]) & (after["narrative_id"] >= 0)]
    agree = (new["narrative_id"].map(majority) == new["post_id"].map(truth)).mean()
    assert agree >= 0.75, agree
    # downstream covers the whole corpus
    table = pd.read_csv(out / "narratives.csv")
    assert table["n_posts"].sum() == int((after["narrative_id"] >= 0).sum())
    assert manifest["counts"]["posts"] == N_POSTS
    assert manifest["counts"]["noise"] == int((after["narrative_id"] < 0).sum())


def test_an_update_classifies_the_languages_of_its_new_texts_only(earlier, tmp_path,
                                                                   monkeypatch):
    seen, real = [], lang._detect_distinct

    def spy(block):
        seen.extend(block)
        return real(block)

    monkeypatch.setattr(lang, "_detect_distinct", spy)
    manifest, out = _update(earlier, tmp_path, earlier["full"])
    before = pd.read_parquet(earlier["base"] / "run" / "posts.parquet")
    after = pd.read_parquet(out / "posts.parquet")
    new_texts = set(after["text"][after["post_id"].isin(earlier["new_ids"])]) - set(before["text"])
    assert manifest["update"]["used"] and seen and set(seen) <= new_texts
    kept = after.set_index("post_id").loc[before["post_id"], "lang"]
    assert kept.tolist() == before["lang"].tolist()


def test_the_update_places_with_the_earlier_runs_place_method(earlier, tmp_path, monkeypatch):
    # cluster.place_method is a fit setting: the update places its new posts the way the
    # earlier run (fitted with the same config) places posts past a fit sample
    from pipeline import assign

    methods, place = [], assign.Placer.place

    def spy(self, vectors, with_coords=True):
        methods.append(self.method)
        return place(self, vectors, with_coords)

    monkeypatch.setattr(assign.Placer, "place", spy)
    manifest, _ = _update(earlier, tmp_path, earlier["full"])
    assert manifest["update"]["used"]
    assert methods and set(methods) == {config.load(None, earlier["sets"]).cluster.place_method}


def test_an_update_with_few_neighbour_pairs_never_reads_the_fitted_models(earlier, tmp_path,
                                                                         monkeypatch):
    # knn placement of a few new posts finds exact neighbours (sampling.KNN_EXACT_PAIRS): the
    # update unpickles neither UMAP (reducer.pkl) nor HDBSCAN (packed in clustering.pkl), and
    # so imports neither umap nor hdbscan for them
    from pipeline import cluster, incremental, sampling

    def read(*_a):
        raise AssertionError("a fitted model was read")

    with monkeypatch.context() as mp:
        mp.setattr(incremental, "_read_reducer", read)
        mp.setattr(cluster.PickledModel, "load", read)
        manifest, out = _update(earlier, tmp_path, earlier["full"])
    assert manifest["update"]["used"]
    assert "(exact neighbours;" in manifest["update"]["method"]
    assert "(exact neighbours;" in manifest["stages"]["cluster"]["fit_sample"]["method"]
    # above the budget the update reads it (this small fit has no index to search, so the
    # neighbours, and every output, are the same)
    calls, real = [], incremental._read_reducer
    monkeypatch.setattr(incremental, "_read_reducer", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(sampling, "KNN_EXACT_PAIRS", 0)
    again, out2 = _update(earlier, tmp_path, earlier["full"], name="run2")
    assert calls and again["update"]["used"]
    for f in OUTPUTS:
        assert (out / f).read_bytes() == (out2 / f).read_bytes(), f


def test_the_updated_vectors_file_is_what_a_cold_run_saves(earlier, tmp_path, monkeypatch):
    # the update writes vectors.npy through a memory map a few rows at a time (here 7, so the
    # blocks do not divide the rows): every kept and new row in its place, np.save's bytes
    import tracemalloc

    from pipeline import embed, incremental

    monkeypatch.setattr(incremental, "VECTOR_BLOCK", 7)
    peaks, stage = [], incremental.Updater._embed

    def traced(self):
        tracemalloc.start()
        try:
            return stage(self)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(incremental.Updater, "_embed", traced)
    manifest, out = _update(earlier, tmp_path, earlier["full"], ["embed.cache_dir="])
    assert manifest["update"]["used"]
    # numpy reports its buffers to tracemalloc: the corpus's vectors were never one array (the
    # stage's peak is the new posts' embedding, 1.6 MB here; the code before held 5.3 MB)
    whole = N_POSTS * 1024 * 4
    assert len(peaks) == 1 and peaks[0] < 0.75 * whole, (peaks, whole)
    posts = pd.read_parquet(out / "posts.parquet")
    cold, _ = embed.run(posts["text"], config.load(None, ["embed.cache_dir="]).embed,
                        embedder=TopicEmbedder())
    expected = tmp_path / "expected.npy"
    np.save(expected, cold.astype(np.float32), allow_pickle=False)
    assert (out / ".lockstep" / "vectors.npy").read_bytes() == expected.read_bytes()


def test_the_same_corpus_and_earlier_run_give_the_same_bytes(earlier, tmp_path):
    _, a = _update(earlier, tmp_path, earlier["full"], name="a")
    # the second without the analysis cache: same bytes either way
    _, b = _update(earlier, tmp_path, earlier["full"], ["summarise.cache_dir="], name="b")
    for f in OUTPUTS:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


@pytest.mark.parametrize("change, reason", [
    ("reduce.n_neighbors=10", "reduce.n_neighbors: 15 -> 10"),
    ("run.seed=7", "run.seed: 42 -> 7"),
])
def test_a_changed_fit_config_falls_back_to_a_full_run(earlier, tmp_path, change, reason):
    manifest, out = _update(earlier, tmp_path, earlier["full"], [change])
    note = manifest["update"]
    assert note["used"] is False and reason in note["reason"]
    assert "update" not in manifest["stages"]["reduce"]  # UMAP was refitted on every post
    assert manifest["stages"]["reduce"]["n_in"] == N_POSTS


def test_a_safe_config_change_keeps_the_update_and_thresholds_warn(earlier, tmp_path, caplog):
    manifest, _ = _update(earlier, tmp_path, earlier["full"],
                          ["cluster.update_max_new_share=0.05", "coordination.window_seconds=600"])
    note = manifest["update"]
    assert note["used"] and note["refit_recommended"]
    assert any("update_max_new_share" in w for w in note["warnings"])
    assert "full refit" in caplog.text


def test_removed_or_changed_earlier_posts_fall_back_to_a_full_run(earlier, tmp_path):
    posts = earlier["posts"]
    old_rows = np.flatnonzero(~earlier["held"])
    dropped = _write(earlier["sim"], posts.drop(index=posts.index[old_rows[0]]),
                     tmp_path / "dropped")
    manifest, _ = _update(earlier, tmp_path, dropped, name="a")
    assert not manifest["update"]["used"]
    assert "1 post of the earlier run not in this corpus" in manifest["update"]["reason"]
    assert manifest["counts"]["posts"] == N_POSTS - 1

    edited = posts.copy()
    i = int(old_rows[5])
    edited.loc[edited.index[i], "text"] = "an entirely different text about tariffs"
    manifest, _ = _update(earlier, tmp_path, _write(earlier["sim"], edited, tmp_path / "ed"),
                          name="b")
    assert not manifest["update"]["used"]
    assert "1 post of the earlier run changed" in manifest["update"]["reason"]
    assert "column text" in manifest["update"]["reason"]


def test_no_finished_run_falls_back_and_an_update_of_an_update_keeps_the_first_fit(
        earlier, tmp_path, monkeypatch):
    cfg = config.load(None, earlier["sets"])
    runner.cluster_corpus(earlier["full"], tmp_path / "fresh", cfg, embedder=TopicEmbedder(),
                          update=True, model_dir=tmp_path / "models" / "fresh")
    note = json.loads((tmp_path / "fresh" / "manifest.json").read_text())["update"]
    assert not note["used"] and "no finished run" in note["reason"]
    assert model.read_card(tmp_path / "models" / "fresh")["update"] is None  # its own fit

    _no_refit(monkeypatch)
    _, out = _update(earlier, tmp_path, earlier["full"])
    first = pd.read_parquet(out / "assignments.parquet")
    # the same corpus again: nothing new, nothing changes (the fit rows come from the update)
    runner.cluster_corpus(earlier["full"], out, cfg, embedder=TopicEmbedder(), update=True,
                          model_dir=tmp_path / "models" / "again")
    manifest = json.loads((out / "manifest.json").read_text())
    note = manifest["update"]
    assert note["used"] and note["n_new"] == 0
    assert note["n_fit"] == N_POSTS - len(earlier["new_ids"])
    assert pd.read_parquet(out / "assignments.parquet").equals(first)
    # the saved model's card says whose fit it is: the first, full run's corpus (old), not the
    # corpus this run or the update before it read (full)
    fitted_on = json.loads((earlier["base"] / "run" / "manifest.json").read_text())["input_hash"]
    card = model.read_card(tmp_path / "models" / "again")
    assert card["input_hash"] == manifest["input_hash"] != fitted_on
    assert card["update"] == {"fit_input_hash": fitted_on,
                              "earlier_input_hash": manifest["input_hash"], "n_new": 0,
                              "n_fit": note["n_fit"], "refit_recommended": False}


def test_an_interrupted_update_leaves_no_finished_run(earlier, tmp_path):
    from pipeline.incremental import Updater

    out = tmp_path / "run"
    shutil.copytree(earlier["base"] / "run", out)
    up = Updater(out, config.load(None, earlier["sets"]))
    up.load()
    assert up.base is not None and not (out / "manifest.json").exists()
    again = Updater(out, config.load(None, earlier["sets"]))
    again.load()
    assert again.base is None and "no finished run" in again.reason


def test_update_thresholds_are_validated():
    with pytest.raises(ConfigError, match="update_max_new_share"):
        config.load(None, ["cluster.update_max_new_share=1.5"])
    with pytest.raises(ConfigError, match="update_max_extra_noise"):
        config.load(None, ["cluster.update_max_extra_noise=-0.1"])


def test_the_cli_update_flag_prints_what_the_update_did(earlier, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline import cli, embed

    monkeypatch.setattr(embed, "make_embedder", lambda *_a, **_k: TopicEmbedder())
    out = tmp_path / "run"
    shutil.copytree(earlier["base"] / "run", out)
    sets = [a for s in earlier["sets"] for a in ("--set", s)]
    res = CliRunner().invoke(cli.app, ["cluster", str(earlier["full"]), "--out", str(out),
                                       *sets, "--update", "--no-save-model"])
    assert res.exit_code == 0, res.output
    n_new = len(earlier["new_ids"])
    assert f"update: {n_new} new posts placed with the earlier run's fit" in res.output
    assert json.loads((out / "manifest.json").read_text())["update"]["used"]
    assert "--update" in CliRunner().invoke(cli.app, ["cluster", "--help"]).output
