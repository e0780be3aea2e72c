"""Numba's on-disk cache for umap-learn's and pynndescent's jitted functions.

Most of umap-learn's and many of pynndescent's ``numba.njit`` functions are not declared with
``cache=True``, and umap builds some of its jitted functions while it fits (``numba.njit(...)``
inside ``optimize_layout_euclidean``), so every new process compiled them again: tens of
seconds to minutes of JIT before any work. ``install()`` wraps ``numba.njit`` and ``numba.jit``
so that a function *defined in those packages* gets an on-disk cache unless its author chose
``cache=...`` explicitly (pynndescent marks a few ``cache=False``; that choice is kept). Functions
from anywhere else pass through untouched. hdbscan is Cython, not numba: nothing to do there.

The cache is numba's own (files under ``NUMBA_CACHE_DIR``, written atomically by numba), with an
index key that is stricter than numba's default in three ways, because numba's key is the
function's bytecode, its source file's timestamp and the signature only:

- the jit options (``fastmath``, ``parallel``, ...): umap jits the same Python function with
  different options, and numba's key would hand one variant's machine code to the other;
- the installed versions of umap-learn, pynndescent, numba and llvmlite: a cached function holds
  the code of the jitted functions it calls, which may live in another package's files;
- a closure is keyed by what it captures described by value (a captured jitted function by its
  module, name, bytecode and options), not by numba's pickle of the captured objects, which
  carries a per-process random id for jitted functions: a closure over a jitted function would
  never hit the cache and would add a new file to it in every process (numba issue #6264);
- likewise a jitted function passed as an argument (pynndescent passes its distance function
  to nn_descent): numba's signature holds the dispatcher itself (numba issue #6972).

A function whose key cannot be described (an unknown captured object) or whose compiled code
numba cannot cache is simply compiled as before; a cache file that cannot be read is a miss.
Caching never changes results: the machine code loaded is the code the same options compiled.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import logging
import sys
import types
import warnings

from . import settle

log = logging.getLogger(__name__)

PACKAGES = ("umap", "pynndescent")
VERSIONED = ("umap-learn", "pynndescent", "numba", "llvmlite")

_installed = False


class _Unkeyable(Exception):
    """A captured value with no stable description: the function is not cached."""


def _wanted(func: object) -> bool:
    module = getattr(func, "__module__", None) or ""
    return module.split(".")[0] in PACKAGES


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for name in VERSIONED:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return tuple(out)


def _options_key(targetoptions: dict) -> str:
    return repr(sorted((str(k), repr(v)) for k, v in dict(targetoptions).items()))


def _code_key(code: types.CodeType) -> str:
    h = hashlib.sha256(code.co_code)
    for const in code.co_consts:  # nested functions' code and literal constants
        h.update(_code_key(const).encode() if isinstance(const, types.CodeType)
                 else repr(const).encode())
    return h.hexdigest()


def _describe(obj: object, depth: int = 0) -> object:
    """A value-based, process-independent description of a captured object."""
    if depth > 20:
        raise _Unkeyable("captured values nest too deeply")
    from numba.core.dispatcher import Dispatcher

    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return (type(obj).__name__, repr(obj))
    if isinstance(obj, Dispatcher):
        return ("jitted", _function_key(obj.py_func, depth + 1), _options_key(obj.targetoptions))
    if isinstance(obj, types.FunctionType):
        return ("function", _function_key(obj, depth + 1))
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(_describe(x, depth + 1) for x in obj))
    import numpy as np

    if isinstance(obj, np.ndarray):
        data = np.ascontiguousarray(obj)
        return ("ndarray", data.dtype.str, data.shape, hashlib.sha256(data.tobytes()).hexdigest())
    if isinstance(obj, np.generic):
        return (type(obj).__name__, repr(obj))
    raise _Unkeyable(f"captured value of type {type(obj).__name__}")


def _function_key(func: types.FunctionType, depth: int = 0) -> tuple:
    cells = ()
    if func.__closure__:
        try:
            cells = tuple(_describe(c.cell_contents, depth + 1) for c in func.__closure__)
        except ValueError:  # an empty cell
            raise _Unkeyable("an empty closure cell") from None
    return (func.__module__, func.__qualname__, _code_key(func.__code__), cells)


def _signature_key(sig) -> tuple:
    """The argument types, a jitted function passed as an argument described by value: numba's
    type for it pickles the dispatcher with its per-process random id (numba issue #6972)."""
    from numba.core import types

    out = []
    for t in sig:
        if isinstance(t, types.Dispatcher):
            d = t.dispatcher
            out.append(("jitted", _function_key(d.py_func), _options_key(d.targetoptions)))
        elif "Dispatcher(" in repr(t) or "Dispatcher(" in str(t):
            raise _Unkeyable(f"a jitted function inside an argument type ({t})")
        else:
            out.append(t)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _cache_class():
    """The cache class, made on first use (so importing this module does not import numba)."""
    from numba.core.caching import FunctionCache

    class KeyedFunctionCache(FunctionCache):
        """numba's FunctionCache, keyed also by the jit options, the library versions and the
        closure's captured values described by value (see the module docstring)."""

        def __init__(self, py_func, targetoptions: dict):
            super().__init__(py_func)
            self._extra = (_options_key(targetoptions), _versions())

        def _index_key(self, sig, codegen):
            return (_signature_key(sig), codegen.magic_tuple(), _function_key(self._py_func),
                    self._extra)

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except _Unkeyable as e:
                log.debug("numba cache: not caching %s (%s)", self._name, e)
            except Exception as e:  # an unreadable cache file is a miss, never a failure
                log.debug("numba cache: could not load %s (%s: %s)", self._name,
                          type(e).__name__, e)
            return None

        def save_overload(self, sig, data):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    # "Cannot cache compiled function ...": we chose to cache, not the library's
                    # author, so the user gets no warning; the function just compiles each run
                    warnings.simplefilter("always")
                    super().save_overload(sig, data)
                for w in caught:
                    log.debug("numba cache: %s", w.message)
            except _Unkeyable as e:
                log.debug("numba cache: not caching %s (%s)", self._name, e)
            except Exception as e:
                log.debug("numba cache: could not save %s (%s: %s)", self._name,
                          type(e).__name__, e)

    return KeyedFunctionCache


def _attach(disp: object) -> object:
    """Give a freshly made dispatcher the keyed on-disk cache (a no-op for anything else)."""
    from numba.core.dispatcher import Dispatcher

    if not isinstance(disp, Dispatcher):  # NUMBA_DISABLE_JIT returns the Python function
        return disp
    try:
        disp._cache = _cache_class()(disp.py_func, disp.targetoptions)
    except Exception as e:  # e.g. no writable cache location for this function's file
        log.debug("numba cache: not caching %s (%s: %s)", disp.py_func.__qualname__,
                  type(e).__name__, e)
    return disp


def _wrap(original):
    @functools.wraps(original)
    def jit(*args, **kwargs):
        first = args[0] if args else kwargs.get("signature_or_function")
        if inspect.isfunction(first):  # @numba.njit / numba.njit(func, **options)
            if "cache" in kwargs or not _wanted(first):
                return original(*args, **kwargs)
            return _attach(original(*args, **kwargs))
        if "cache" in kwargs:
            return original(*args, **kwargs)
        eager = first is not None  # a signature (or a list of them): compiled right away

        def decorate(func):
            if not _wanted(func):
                return original(*args, **kwargs)(func)
            if eager:
                # numba compiles these inside the decorator; its own cache is the only one in
                # place by then (one signature, one set of options: its key is enough)
                try:
                    return original(*args, cache=True, **kwargs)(func)
                except RuntimeError as e:  # "cannot cache function ...: no locator available"
                    log.debug("numba cache: not caching %s (%s)", func.__qualname__, e)
                    return original(*args, **kwargs)(func)
            return _attach(original(*args, **kwargs)(func))

        return decorate

    jit.__lockstep_caching__ = True
    return jit


def install() -> None:
    """Wrap numba.njit / numba.jit (once per process). Call before importing umap."""
    global _installed
    if _installed:
        return
    import sys

    import numba

    early = [m for m in PACKAGES if m in sys.modules]
    if early:
        log.warning("numba cache: %s imported before the cache was set up; their functions "
                    "defined at import compile in every process", ", ".join(early))
    for name in ("njit", "jit"):
        current = getattr(numba, name)
        if not getattr(current, "__lockstep_caching__", False):
            setattr(numba, name, _wrap(current))
    _cacheable_get_num_threads()
    _installed = True


def _cacheable_get_num_threads() -> None:
    """Point jitted numba.get_num_threads() at a symbol call (see pipeline._numba_threads), so
    pynndescent's NN-descent, which calls it, can be cached. Left alone if numba changed."""
    import ctypes

    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()  # loads the threading layer and registers its symbols
        current = parallel._get_num_threads
        from . import _numba_threads
    except (ImportError, AttributeError) as e:
        log.debug("numba cache: get_num_threads left as it is (%s)", e)
        return
    if current is _numba_threads.get_num_threads:
        return
    if not isinstance(current, ctypes._CFuncPtr):
        log.debug("numba cache: get_num_threads left as it is (a %s)", type(current).__name__)
        return
    parallel._get_num_threads = _numba_threads.get_num_threads


def import_umap():
    """``import umap`` with its and pynndescent's numba functions cached on disk. The first
    import is settled (pipeline/settle.py): umap, numba, pynndescent and scikit-learn make over
    100,000 objects that live as long as the process (216,000 in a process that had imported
    nothing else, 139,000 after the runner's imports)."""
    install()
    if "umap" in sys.modules:
        return sys.modules["umap"]
    with settle.importing("umap"):
        import umap
    return umap
