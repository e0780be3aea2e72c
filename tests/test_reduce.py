"""UMAP settings reach the fit: reduce.init picks UMAP's starting layout."""

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
