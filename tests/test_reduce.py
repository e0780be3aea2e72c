"""UMAP settings reach the fit: reduce.init picks UMAP's starting layout, and the spectral layout
is the same in every fit of the same vectors and seed."""

import contextlib

import numpy as np
import pytest

from pipeline import config, reduce
from pipeline.errors import ConfigError


def _vectors(n: int = 80, d: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(loc, 0.05, (n // 2, d)) for loc in (0.0, 3.0)]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("init", ["spectral", "pca"])
def test_reduce_init_reaches_umap_and_repeats_in_one_process(init):
    cfg = config.load(overrides=[f"reduce.init={init}", "reduce.n_components=2"])
    first = reduce.make_reducer(cfg.reduce, cfg.run.seed)
    coords = first.fit_transform(_vectors())
    assert first.model_.init == init
    again = reduce.make_reducer(cfg.reduce, cfg.run.seed).fit_transform(_vectors())
    assert coords.shape == (80, 2) and np.array_equal(coords, again)


def test_an_unknown_init_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"reduce\.init \('random'\) must be one of: spectral, pca"):
        config.load(overrides=["reduce.init=random"])


def test_reduce_n_epochs_reaches_umap_and_zero_leaves_umaps_own_choice():
    x = _vectors()
    own = reduce.make_reducer(config.load(None, []).reduce, 42)
    coords = own.fit_transform(x)
    assert own.model_.n_epochs is None  # UMAP's own: 500 passes for so few posts
    cfg = config.load(overrides=["reduce.n_epochs=20"])
    few = reduce.make_reducer(cfg.reduce, 42)
    fewer = few.fit_transform(x)
    assert few.model_.n_epochs == 20
    assert not np.array_equal(coords, fewer)
    assert np.array_equal(fewer, reduce.make_reducer(cfg.reduce, 42).fit_transform(x))
    with pytest.raises(ConfigError, match=r"reduce\.n_epochs \(-1\) must be 0"):
        config.load(overrides=["reduce.n_epochs=-1"])


def _repeated_texts(n_distinct: int = 150, copies: int = 4, d: int = 32) -> np.ndarray:
    """Vectors of posts that repeat their texts (copies share a vector), as real corpora do: the
    neighbour graph's symmetries make ARPACK restart with random vectors."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, d))
    base = centres[rng.integers(0, 8, n_distinct)] + 0.3 * rng.normal(size=(n_distinct, d))
    x = np.repeat(base, copies, axis=0).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_spectral_layout_repeats_when_arpack_restarts(monkeypatch):
    cfg = config.load(None, [])
    x = _repeated_texts()
    fits = [reduce.make_reducer(cfg.reduce, cfg.run.seed).fit_transform(x) for _ in range(2)]
    assert np.array_equal(fits[0], fits[1])
    # the same fits with scipy's unseeded restarts differ: this graph does take that path
    monkeypatch.setattr(reduce, "seeded_eigsh", lambda seed: contextlib.nullcontext())
    loose = [reduce.make_reducer(cfg.reduce, cfg.run.seed).fit_transform(x) for _ in range(2)]
    assert not np.array_equal(loose[0], loose[1])


def test_seeded_eigsh_is_undone_and_keeps_a_callers_generator():
    import scipy.sparse as sp
    import scipy.sparse.linalg as splinalg
    from sklearn.manifold import _spectral_embedding

    before = (splinalg.eigsh, _spectral_embedding.eigsh)
    # a graph in 20 identical pieces: from a constant start vector, Lanczos needs random restarts
    rng = np.random.default_rng(0)
    a = rng.random((30, 30)) * (rng.random((30, 30)) < 0.3)
    a = np.maximum(a, a.T) + np.diag(np.full(29, 0.5), 1) + np.diag(np.full(29, 0.5), -1)
    np.fill_diagonal(a, 0)
    graph = sp.kron(sp.identity(20), sp.csr_matrix(a)).tocsr()
    d = sp.diags(1 / np.sqrt(np.asarray(graph.sum(axis=0)).ravel()))
    laplacian = sp.identity(graph.shape[0]) - d @ graph @ d
    kw = dict(k=6, which="SM", ncv=40, tol=1e-4, v0=np.ones(graph.shape[0]), maxiter=3000)
    with reduce.seeded_eigsh(42):
        assert splinalg.eigsh is _spectral_embedding.eigsh is not before[0]
        first = splinalg.eigsh(laplacian, **kw)[1]
        again = splinalg.eigsh(laplacian, **kw)[1]
        own = splinalg.eigsh(laplacian, rng=np.random.default_rng(7), **kw)[1]
    assert (splinalg.eigsh, _spectral_embedding.eigsh) == before
    assert np.array_equal(first, again) and not np.array_equal(first, own)
    assert np.array_equal(own, splinalg.eigsh(laplacian, rng=np.random.default_rng(7), **kw)[1])
