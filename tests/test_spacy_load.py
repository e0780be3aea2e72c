"""spaCy without torch in the main process (pipeline/spacy_load.py).

Importing spaCy imports thinc, and thinc imports torch when it can: over a second at every start
of `lockstep`. The stop words and versions are read without spaCy, and spaCy is imported with
torch hidden unless a pipeline in use needs it. Whether torch is imported is process state, so
those tests run in a fresh interpreter.
"""

import json

import pytest
import spacy
import spacy.util
from spacy.lang.en.stop_words import STOP_WORDS as EN
from spacy.lang.hi.stop_words import STOP_WORDS as HI
from spacy.lang.ur.stop_words import STOP_WORDS as UR

from fresh_python import run as _fresh
from pipeline import narratives, spacy_load
from pipeline.config import SummariseConfig

MODEL = SummariseConfig().spacy_model


def _pipeline_folder(tmp_path, name: str, **meta) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"lang": "en", "name": name, "version": "1.2.3",
                                                  **meta}))
    return str(folder)


def test_stop_words_are_spacys_own():
    assert spacy_load.stop_words("en") == EN
    assert spacy_load.stop_words("hi") == HI
    assert spacy_load.stop_words("ur") == UR
    assert EN <= narratives.STOP_BY_ANALYSER["en"]
    assert UR <= narratives.STOP_BY_ANALYSER["ur"] and HI <= narratives.STOP_BY_ANALYSER["hi"]


def test_versions_are_the_ones_spacy_reports(tmp_path):
    """The analysis cache's key is made of these: the same values keep old caches valid."""
    assert spacy_load.versions(MODEL) == (spacy.__version__, spacy.util.get_package_version(MODEL))
    folder = _pipeline_folder(tmp_path, "core_test", pipeline=["tok2vec", "ner"])
    assert spacy_load.versions(folder) == (spacy.__version__, "core_test-1.2.3")
    assert spacy_load.versions(str(tmp_path / "missing"))[1] is None


def test_which_pipelines_need_torch(tmp_path):
    assert not spacy_load.needs_torch(MODEL)
    assert not spacy_load.needs_torch(_pipeline_folder(tmp_path, "sm", pipeline=["tok2vec", "ner"]))
    assert spacy_load.needs_torch(_pipeline_folder(
        tmp_path, "trf", pipeline=["transformer", "ner"]))
    assert spacy_load.needs_torch(_pipeline_folder(
        tmp_path, "ctrf", pipeline=["ner"], components=["curated_transformer", "ner"]))
    assert spacy_load.needs_torch(_pipeline_folder(
        tmp_path, "req", pipeline=["ner"], requirements=["spacy-curated-transformers>=0.2,<1"]))
    assert spacy_load.needs_torch("no_such_pipeline_package")  # unknown: assume it does


def test_a_run_imports_neither_torch_nor_spacy_until_the_summaries_need_spacy():
    out = _fresh("""
        import sys
        from pipeline import cli, runner
        print(sorted(m for m in ("torch", "spacy", "thinc") if m in sys.modules))
        from pipeline import narratives
        print(narratives.plain_terms("یہ پاکستان کی فوج ہے", "ur"))
        import thinc.compat
        print(sorted(m for m in ("torch", "spacy") if m in sys.modules), thinc.compat.has_torch)
        import torch  # hidden only while spaCy was imported
        print(torch.tensor([1.0]).dtype)
    """).splitlines()
    here = narratives.plain_terms("یہ پاکستان کی فوج ہے", "ur")
    assert here and out == ["[]", str(here), "['spacy'] False", "torch.float32"]


def test_english_terms_are_the_same_without_torch():
    text = "Pakistani soldiers guard the Line of Control near Neelum valley, says ISPR."
    here = narratives.terms(text, "en")
    there = _fresh(f"""
        import sys
        from pipeline import narratives
        print(narratives.terms({text!r}, "en"), "torch" in sys.modules)
    """)
    assert there == f"{here} False"


def test_a_pipeline_that_needs_torch_gets_it(tmp_path):
    trf = _pipeline_folder(tmp_path, "trf", pipeline=["transformer", "ner"])
    out = _fresh(f"""
        import sys
        from pipeline import spacy_load
        spacy_load.use({trf!r})
        spacy_load.import_spacy()
        import thinc.compat
        print("torch" in sys.modules, thinc.compat.has_torch)
    """)
    assert out == "True True"


def test_torch_already_loaded_is_used(tmp_path):
    out = _fresh("""
        import torch
        from pipeline import spacy_load
        spacy_load.import_spacy()
        import thinc.compat
        print(thinc.compat.has_torch)
    """)
    assert out == "True"


def test_a_torch_pipeline_after_spacy_came_without_torch_is_a_clear_error(tmp_path):
    trf = _pipeline_folder(tmp_path, "trf", pipeline=["transformer", "ner"])
    out = _fresh(f"""
        from pipeline import narratives
        from pipeline.errors import ConfigError
        narratives.plain_terms("यह भारत है", "hi")  # imports spaCy, torch hidden
        try:
            narratives.english({trf!r})
        except ConfigError as exc:
            print(exc)
    """)
    assert "runs on torch" in out and "spacy_load.use" in out


@pytest.mark.parametrize("lang", ["en", "hi", "ur"])
def test_stop_word_files_are_read_without_importing_spacy(lang):
    out = _fresh(f"""
        import sys
        from pipeline import spacy_load
        words = spacy_load.stop_words({lang!r})
        print(len(words), "spacy" in sys.modules)
    """)
    assert out == f"{len({'en': EN, 'hi': HI, 'ur': UR}[lang])} False"


def test_spacy_comes_without_its_command_line_until_asked():
    """spaCy's __init__ imports its command line (weasel, requests, jinja2) for spacy.info
    alone; import_spacy leaves it out, and spacy.info and spacy.cli still work."""
    out = _fresh("""
        import sys
        from pipeline import spacy_load
        spacy = spacy_load.import_spacy()
        print(sorted(m for m in ("spacy.cli", "spacy.cli.info", "weasel", "requests")
                     if m in sys.modules))
        print(spacy.info(silent=True)["spacy_version"] == spacy.__version__)
        import spacy.cli
        print(callable(spacy.cli.download), spacy.cli is sys.modules["spacy.cli"],
              "weasel" in sys.modules)
    """).splitlines()
    assert out == ["[]", "True", "True True True"]


def test_the_command_line_stand_in_hands_over_to_the_real_one():
    """What spaCy might ask of the stand-in other than info imports the real command line."""
    out = _fresh("""
        import sys
        from pipeline import spacy_load
        stand_ins = spacy_load._cli_placeholders()
        sys.modules.update(stand_ins)
        from spacy.cli import download
        from spacy.cli.info import info
        real = sys.modules["spacy.cli"]
        print(download.__module__, real is not stand_ins["spacy.cli"],
              info.__module__, real.info is info)
    """)
    assert out == "spacy.cli.download True spacy.cli.info True"
