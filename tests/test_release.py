"""A run lets go of the models a stage loaded once no later stage needs them: the language
identifiers after ingest, spaCy after the summaries (on a million posts every such hundred MB
counts towards the peak of the coordination join that comes after). Saving the narrative
model copies the fitted UMAP's checkpoint pickle rather than reading it back."""

import gc

import spacy.language

from pipeline import checkpoint, config, lang, runner, simulate
from tests.conftest import TopicEmbedder


def _alive(cls) -> int:
    gc.collect()
    # type(), not isinstance(): a dead weak proxy among the objects raises on isinstance
    return sum(issubclass(type(o), cls) for o in gc.get_objects())


def test_models_are_released_after_their_stages_and_the_umap_is_not_read_back(tmp_path, monkeypatch):
    sim = simulate.simulate(simulate.SimConfig(seed=3, n_posts=300, n_accounts=30,
                                               network_size=6))
    simulate.write_corpus(sim, tmp_path / "corpus")
    lang.release_models()
    seen: dict[str, int] = {}
    real_run = lang.run

    def lang_run(posts, memo=None):
        out = real_run(posts, memo)
        seen["langid_after_detection"] = _alive(lang.Py3Langid)
        return out

    def hook(name: str, where: str) -> None:
        if (name, where) == ("summarise", "middle"):
            seen["spacy_during_summaries"] = _alive(spacy.language.Language)
        if (name, where) == ("embed", "start"):
            seen["langid_at_embed"] = _alive(lang.Py3Langid)
        if (name, where) == ("coordination", "start"):
            seen["spacy_at_coordination"] = _alive(spacy.language.Language)
            seen["langid_at_coordination"] = _alive(lang.Py3Langid)

    loaded = []
    real_load = runner._load_pickle

    def load_pickle(path):
        loaded.append(path.name)
        return real_load(path)

    monkeypatch.setattr(lang, "run", lang_run)
    monkeypatch.setattr(checkpoint, "hook", hook)
    monkeypatch.setattr(runner, "_load_pickle", load_pickle)
    cfg = config.load(None, [f"embed.cache_dir={tmp_path / 'cache'}"])
    runner.cluster_corpus(tmp_path / "corpus", tmp_path / "run", cfg, embedder=TopicEmbedder(),
                          model_dir=tmp_path / "models" / "m")
    assert "reducer.pkl" not in loaded
    assert (tmp_path / "models" / "m" / "reducer.pkl").read_bytes() == \
        (tmp_path / "run" / ".lockstep" / "reducer.pkl").read_bytes()
    assert seen.pop("spacy_during_summaries") >= 1  # the English pipeline, a blank tokenizer
    assert seen == {"langid_after_detection": 1, "langid_at_embed": 0,
                    "spacy_at_coordination": 0, "langid_at_coordination": 0}
