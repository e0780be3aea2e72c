"""umap-learn's and pynndescent's numba functions get numba's on-disk cache (pipeline.jitcache):
a fit in a fresh process leaves index files for umap's functions, and a second process loads
them (writes nothing new) and lays out the same coordinates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest
from numba.core.caching import NullCache

from pipeline import jitcache

ROOT = Path(__file__).resolve().parent.parent

FIT = """
import hashlib, json, numpy as np
from pipeline import reduce
from pipeline.config import ReduceConfig
rng = np.random.default_rng(0)
x = rng.normal(size=(60, 8)).astype(np.float32)
coords = reduce.run(x, ReduceConfig(), seed=3)
print(json.dumps(hashlib.sha256(coords.tobytes()).hexdigest()))
"""


def fit_in_child(cache: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True,
                          timeout=1200, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Cannot cache" not in done.stderr  # never shown to the user
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_umaps_functions_from_the_cache(tmp_path):
    cache = tmp_path / "numba"
    first = fit_in_child(cache)
    index = {p.name for p in cache.rglob("*.nbi")}
    # umap's own functions (not cache=True upstream), among them the layout step umap jits
    # while it fits, and smooth_knn_dist from the fuzzy simplicial set
    assert any(n.startswith("layouts._optimize_layout_euclidean_single_epoch") for n in index)
    assert any(n.startswith("umap_.smooth_knn_dist") for n in index)
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    second = fit_in_child(cache)
    assert second == first
    # every function came from the cache: no file added, none rewritten
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == files


def _module_function(module: str):
    def f(x):
        return x + 1

    f.__module__ = module
    return f


def test_only_umap_and_pynndescent_functions_get_the_cache_and_an_explicit_choice_stays():
    jitcache.install()
    umap_f = numba.njit(_module_function("umap.fake"))
    nnd_f = numba.njit(fastmath=True)(_module_function("pynndescent.fake"))
    other = numba.njit(_module_function("somebody.else"))
    refused = numba.njit(cache=False)(_module_function("pynndescent.fake"))
    keyed = jitcache._cache_class()
    assert isinstance(umap_f._cache, keyed) and isinstance(nnd_f._cache, keyed)
    assert isinstance(other._cache, NullCache)
    assert isinstance(refused._cache, NullCache)
    assert umap_f(1) == 2  # still a working function


def test_the_key_holds_the_jit_options():
    jitcache.install()
    f = _module_function("umap.fake")
    plain, fast = numba.njit(f), numba.njit(fastmath=True)(f)
    codegen = plain.targetctx.codegen()
    sig = (numba.int64,)
    assert plain._cache._index_key(sig, codegen) != fast._cache._index_key(sig, codegen)
    assert plain._cache._index_key(sig, codegen) == numba.njit(f)._cache._index_key(sig, codegen)


CLOSURE_KEY = """
import numba
from pipeline import jitcache
jitcache.install()
def make(inner):
    def outer(x):
        return inner(x) * 2
    outer.__module__ = "umap.fake"
    return numba.njit(outer)
def g(x):
    return x + 1
g.__module__ = "umap.fake"
disp = make(numba.njit(g))
key = disp._cache._index_key((numba.int64,), disp.targetctx.codegen())
print(repr(key[2:]))
"""


def test_a_closure_over_a_jitted_function_has_the_same_key_in_every_process(tmp_path):
    # numba's own key pickles the captured dispatcher, whose pickle holds a per-process random
    # id: such a closure would miss the cache in every new process and add a file each time
    script = tmp_path / "closure_key.py"  # numba caches only functions that live in a file
    script.write_text(CLOSURE_KEY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    keys = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                           text=True, timeout=300, cwd=ROOT, check=True).stdout for _ in range(2)]
    assert keys[0] == keys[1] and "jitted" in keys[0]


def test_a_function_calling_get_num_threads_can_be_cached(tmp_path, monkeypatch):
    # numba's jitted get_num_threads goes through a ctypes pointer ("dynamic globals"), which
    # kept pynndescent's NN-descent out of the cache; jitcache routes it through a symbol
    jitcache.install()
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))

    def threads(x):
        return numba.get_num_threads() + x

    threads.__module__ = "pynndescent.fake"
    disp = numba.njit(threads)
    assert disp(0) == numba.get_num_threads()
    assert str(tmp_path) in disp._cache._cache_file._index_path
    assert os.path.exists(disp._cache._cache_file._index_path)  # saved: it could be cached
    assert numba.typeof(numba.get_num_threads()) == numba.int64  # Python ints, as before


def test_a_function_with_no_file_still_compiles():
    # numba can cache only functions that live in a file; one made by exec is compiled as before
    jitcache.install()
    space = {}
    exec("def f(x):\n    return x * 3\n", space)
    f = space["f"]
    f.__module__ = "umap.fake"
    assert numba.njit(f)(2) == 6
    assert numba.njit("int64(int64)")(f)(2) == 6
