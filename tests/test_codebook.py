"""Codebooks: strict YAML validation, matching by centroid cosine, the same names across corpora."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import codebook, config, runner, simulate
from pipeline.errors import InputError
from tests.conftest import HashingEmbedder, TopicEmbedder

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_BOOK = ROOT / "corpora" / "sample.codebook.yaml"

GOOD = """\
codebook_version: 1
entries:
  - name: cricket fandom
    description: cricket bowling batting stadium
    examples:
      - what a yorker at the stadium
      - the selectors must pick the opener
  - name: cars
    description: cars engines tyres fuel
    examples:
      - restored my old car engine
"""


def write(tmp_path, text, name="book.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_a_good_codebook_loads(tmp_path):
    book = codebook.load(write(tmp_path, GOOD))
    assert book.names == ["cricket fandom", "cars"]
    assert book.entries[0].examples == ("what a yorker at the stadium",
                                        "the selectors must pick the opener")
    assert len(book.sha256) == 64


def test_the_shipped_sample_codebook_is_valid():
    book = codebook.load(SAMPLE_BOOK)
    assert {"military fan content", "Kashmir community", "political news"} <= set(book.names)
    assert all(e.description and e.examples for e in book.entries)


@pytest.mark.parametrize("text, message", [
    ("entries: [", r"line \d+, column \d+: not valid YAML"),
    ("- a\n- b\n", r"top level: expected a mapping"),
    ("codebook_version: 1\nentries: []\n", r"entries: must be a non-empty list"),
    ("entries:\n  - name: x\n    description: d\n    examples: [e]\n",
     r"codebook_version: expected 1, found None; add codebook_version: 1"),
    ("codebook_version: 1\ntopics: []\nentries: []\n", r"unknown key 'topics'; valid keys are"),
    ("codebook_version: 1\nentries:\n  - name: x\n    description: d\n",
     r"entry 1 \('x'\): field 'examples' is missing; add examples:"),
    ("codebook_version: 1\nentries:\n  - name: x\n    description: d\n    examples: one\n",
     r"entry 1 \('x'\): field 'examples' must be a non-empty list"),
    ("codebook_version: 1\nentries:\n  - name: x\n    description: d\n    examples: [a, 3]\n",
     r"entry 1 \('x'\) example 2: field 'examples' must be non-empty text, found int 3"),
    ("codebook_version: 1\nentries:\n  - name: ''\n    description: d\n    examples: [a]\n",
     r"entry 1: field 'name' must be non-empty text, found an empty string"),
    ("codebook_version: 1\nentries:\n  - name: x\n    description: d\n    examples: [a]\n"
     "    colour: red\n", r"entry 1 \('x'\): unknown field 'colour'; valid fields are name, "
                         "description, examples"),
    ("codebook_version: 1\nentries:\n  - name: X\n    description: d\n    examples: [a]\n"
     "  - name: x\n    description: d\n    examples: [a]\n",
     r"entry 2 \('x'\): name 'x' is also entry 1"),
    ("codebook_version: 1\nentries:\n  - name: Unlabelled\n    description: d\n"
     "    examples: [a]\n", r"'unlabelled' is reserved"),
    ("codebook_version: 1\nentries:\n  - name: x\n    name: y\n    description: d\n"
     "    examples: [a]\n", r"key 'name' appears twice"),
    ("codebook_version: 1\nentries:\n  - just a string\n", r"entry 1: expected a mapping"),
])
def test_bad_codebooks_are_refused_naming_file_entry_field_and_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as info:
        codebook.load(path)
    assert str(path) in str(info.value)


def test_missing_and_non_utf8_codebooks(tmp_path):
    with pytest.raises(InputError, match=r"does not exist; pass an existing YAML file"):
        codebook.load(tmp_path / "nope.yaml")
    p = tmp_path / "latin.yaml"
    p.write_bytes("codebook_version: 1\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"is not UTF-8; save the file as UTF-8"):
        codebook.load(p)


def test_match_names_above_the_threshold_and_unlabelled_below(tmp_path):
    book = codebook.load(write(tmp_path, GOOD))
    entries = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    cents = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.59], [0.0, 0.3, 0.95]], dtype=np.float32)
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    m = codebook.match(cents, entries, book, min_similarity=0.5)
    assert m.names == ["cricket fandom", "cars", "unlabelled"]
    assert m.best == ["cricket fandom", "cars", "cars"]
    assert m.similarities[0] == pytest.approx(0.9939, abs=1e-3)
    assert m.similarities[2] < 0.5
    # many-to-one: two narratives may take the same name; a higher threshold unlabels both
    twin = np.vstack([cents[0], cents[0]])
    assert codebook.match(twin, entries, book, 0.5).names == ["cricket fandom"] * 2
    assert codebook.match(twin, entries, book, 0.999).names == ["unlabelled"] * 2


def test_entry_vectors_average_the_description_and_examples(tmp_path):
    book = codebook.load(write(tmp_path, GOOD))
    emb = HashingEmbedder(dim=256)
    vecs = codebook.entry_vectors(book, emb.embed)
    assert vecs.shape == (2, 256)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert emb.calls == [["cricket bowling batting stadium", "what a yorker at the stadium",
                          "the selectors must pick the opener", "cars engines tyres fuel",
                          "restored my old car engine"]]
    parts = emb.embed(["cars engines tyres fuel", "restored my old car engine"])
    mean = parts.mean(axis=0)
    assert np.allclose(vecs[1], mean / np.linalg.norm(mean), atol=1e-5)


# -- through the pipeline: two corpora with the same planted narratives --------------------------

# A codebook in the simulator's vocabulary, without function words, so the bag-of-words test
# embedder matches it by topic words.
SIM_BOOK = {
    "codebook_version": 1,
    "entries": [
        {"name": "military fan content",
         "description": "army soldiers jawans martyrs shahadat shaheed salute",
         "examples": ["salute brave soldiers army", "martyrs sacrifice shaheed funeral"]},
        {"name": "air force fan content",
         "description": "PAF pilots jets shaheens flypast air force",
         "examples": ["PAF pilots jets", "shaheens flypast air show"]},
        {"name": "Kashmir solidarity",
         "description": "Kashmir solidarity LoC curfew siege occupied Kashmiri",
         "examples": ["Kashmir solidarity siege curfew", "LoC shelling Kashmiri"]},
        {"name": "Kashmir community",
         "description": "valley snowfall Neelum harvest river tourists",
         "examples": ["snowfall valley pine forests", "harvest valley river road"]},
        {"name": "culture and travel",
         "description": "food culture travel trip festival qawwali",
         "examples": ["street food trip", "qawwali festival culture"]},
        {"name": "political news",
         "description": "minister election commission IMF inflation budget opposition",
         "examples": ["minister IMF budget", "election commission opposition"]},
        {"name": "cricket fandom",
         "description": "cricket stadium bowling series selectors greenshirts",
         "examples": ["cricket stadium yorker", "selectors series"]},
        {"name": "car enthusiasts",
         "description": "car cars engine fuel average suspension Mehran Corolla",
         "examples": ["car fuel average", "car suspension Mehran"]},
        {"name": "photography hobby",
         "description": "photography camera shot lens exposure",
         "examples": ["photography camera exposure", "shot lens"]},
        {"name": "disaster news",
         "description": "heatwave heatstroke earthquake floods dead hospitals",
         "examples": ["heatwave heatstroke deaths", "earthquake floods rescue"]},
    ],
}
EXPECTED = {"military_fan": "military fan content", "air_force": "air force fan content",
            "kashmir_solidarity": "Kashmir solidarity", "kashmir_life": "Kashmir community",
            "pakistan_culture": "culture and travel", "political_news": "political news",
            "cricket": "cricket fandom", "cars": "car enthusiasts",
            "photography": "photography hobby", "news_heatwave": "disaster news",
            "news_earthquake": "disaster news", "news_flood": "disaster news"}


def _named_run(base: Path, seed: int, book: Path):
    sim = simulate.simulate(simulate.SimConfig(seed=seed, n_posts=800, n_accounts=60,
                                               network_size=8))
    corpus = base / f"corpus{seed}"
    simulate.write_corpus(sim, corpus)
    cfg = config.load(None, [f"embed.cache_dir={base / 'cache'}",
                             f"codebook.path={book}", "codebook.min_similarity=0.2"])
    result = runner.cluster_corpus(corpus, base / f"run{seed}", cfg,
                                   embedder=TopicEmbedder())
    posts = result.posts
    labels = pd.read_parquet(base / f"run{seed}" / "assignments.parquet")["narrative_id"]
    truth = posts["post_id"].map(lambda p: sim.truth["posts"][p][0])
    return result.summary.table, labels.to_numpy(), truth.to_numpy(), base / f"run{seed}"


@pytest.fixture(scope="module")
def two_named_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("codebook")
    book = base / "sim.yaml"
    book.write_text(yaml.safe_dump(SIM_BOOK, sort_keys=False), encoding="utf-8")
    return [_named_run(base, seed, book) for seed in (11, 12)]


def _names_by_truth(table, labels, truth, *_):
    """For each narrative made mostly (>= 80%) of one planted narrative: planted -> names."""
    out: dict[str, set[str]] = {}
    for row in table.itertuples(index=False):
        members = truth[labels == row.narrative_id]
        values, counts = np.unique(members, return_counts=True)
        if counts.max() / counts.sum() >= 0.8:
            out.setdefault(str(values[counts.argmax()]), set()).add(row.codebook_name)
    return out


def test_same_codebook_names_the_same_narratives_in_two_corpora(two_named_runs):
    per_run = [_names_by_truth(*run) for run in two_named_runs]
    for names in per_run:
        for planted, found in names.items():
            # a planted narrative the codebook has no entry for (a train accident, a power
            # breakdown) must stay unlabelled rather than borrow a name
            assert found == {EXPECTED.get(planted, "unlabelled")}, (planted, names)
    # the main planted narratives are found in both corpora, under the same names
    common = set(per_run[0]) & set(per_run[1])
    assert common >= {"military_fan", "political_news", "kashmir_solidarity", "cars",
                      "pakistan_culture"}, common
    for planted in common:
        assert per_run[0][planted] == per_run[1][planted], planted


def test_codebook_columns_in_the_outputs(two_named_runs):
    table, _, _, run_dir = two_named_runs[0]
    written = runner.read_narratives(run_dir)
    assert written["codebook_name"].tolist() == table["codebook_name"].tolist()
    details = json.loads((run_dir / "narratives.json").read_text())["narratives"]
    assert [d["codebook_name"] for d in details] == table["codebook_name"].tolist()
    assert all(d["codebook_best_entry"] for d in details)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["codebook"]["entries"][0] == "military fan content"
    assert "codebook" in (run_dir / "report.html").read_text(encoding="utf-8")
    cols = list(table.columns)
    assert cols[cols.index("label") + 1:cols.index("label") + 3] == ["codebook_name",
                                                                      "codebook_similarity"]
    unl = table[table["codebook_name"] == "unlabelled"]
    assert (unl["codebook_similarity"] < 0.2).all()
    assert (table.loc[table["codebook_name"] != "unlabelled", "codebook_similarity"] >= 0.2).all()
    assert set(table["codebook_name"]) - {"unlabelled"} <= {e["name"] for e in SIM_BOOK["entries"]}
