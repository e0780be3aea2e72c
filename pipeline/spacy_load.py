"""spaCy in the main process, without paying for torch.

``import spacy`` imports thinc, and thinc imports torch when it can: 1.2-1.5 s and about 300 MB
in a process that never runs torch, because the small English pipelines run their layers on
numpy and the quality tier embeds through ONNX Runtime. The summaries need little of spaCy in
the main process (Urdu and Hindi tokenisers, and the English pipeline for small batches), and
the stop-word lists and versions need none of it. So:

- ``stop_words`` reads spaCy's stop-word files without importing spaCy;
- ``versions`` reads spaCy's version and a pipeline's from package metadata;
- ``import_spacy`` imports spaCy with torch hidden, unless torch is loaded already or a
  pipeline this process was told about (``use``, or ``import_spacy``'s own) needs it (a
  transformer pipeline), and without spaCy's own command line, which its ``__init__`` imports
  for ``spacy.info`` alone (``_cli_placeholders``).

thinc decides once, at its import, whether torch is there. A transformer pipeline loaded after
spaCy was imported without torch cannot work; ``import_spacy`` says so clearly instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
import threading
import types
from functools import lru_cache
from pathlib import Path

from . import settle
from .errors import ConfigError

# packages and pipeline components that run on torch
_TORCH_REQUIREMENTS = ("spacy-transformers", "spacy-curated-transformers", "torch")
_TORCH_COMPONENTS = ("transformer", "curated_transformer")

_lock = threading.Lock()
_pipelines: set[str] = set()  # English pipelines this process will load (``use``)
_without_torch = False  # spaCy was imported here with torch hidden


def _spacy_dir() -> Path:
    spec = importlib.util.find_spec("spacy")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("spaCy is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0])


def stop_words(lang: str) -> frozenset[str]:
    """spaCy's stop words for ``lang`` (en, hi, ur), read from its file: the same set as
    ``spacy.lang.<lang>.stop_words.STOP_WORDS``. The file is a plain module with no imports."""
    path = _spacy_dir() / "lang" / lang / "stop_words.py"
    spec = importlib.util.spec_from_file_location(f"_lockstep_spacy_stop_words_{lang}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.STOP_WORDS)


def _meta(model: str) -> dict | None:
    """The meta.json of an installed pipeline package or a pipeline folder, or None."""
    folder = Path(model)
    if not folder.is_dir():
        try:
            spec = importlib.util.find_spec(model)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(spec.submodule_search_locations[0])
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=None)
def needs_torch(model: str) -> bool:
    """Whether the spaCy pipeline ``model`` runs on torch. One whose meta.json cannot be read
    counts as needing it: importing torch only costs time, missing it breaks the pipeline."""
    meta = _meta(model)
    if meta is None:
        return True
    requirements = " ".join(meta.get("requirements") or []).lower()
    components = {*meta.get("pipeline", []), *meta.get("components", [])}
    return (any(r in requirements for r in _TORCH_REQUIREMENTS)
            or any(c in components for c in _TORCH_COMPONENTS))


def versions(model: str) -> tuple[str, str | None]:
    """spaCy's version, and the pipeline's: its package's, or for a pipeline folder the name
    and version in its meta.json (None when neither can be read)."""
    try:
        version = importlib.metadata.version(model)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        meta = _meta(model) if Path(model).is_dir() else None
        version = meta_version(meta) if meta else None
    return importlib.metadata.version("spacy"), version


def meta_version(meta: dict) -> str:
    """A pipeline's version as its meta says it: name-version."""
    return f"{meta.get('name', '')}-{meta.get('version', '')}"


def use(model: str) -> None:
    """This process will load the English pipeline ``model``: when it needs torch, spaCy is
    imported with it."""
    with _lock:
        _pipelines.add(model)


def import_spacy(pipeline: str | None = None):
    """``import spacy``, with torch hidden from thinc when nothing here needs it. ``pipeline``
    is an English pipeline about to be loaded: it counts as in use (``use``), and one that runs
    on torch when spaCy came here without torch is a clear error (a pipeline that is not there
    is left to spaCy, whose error says so)."""
    if pipeline is not None:
        use(pipeline)
    spacy = _import()
    if pipeline is not None and _without_torch and _meta(pipeline) is not None \
            and needs_torch(pipeline):
        raise ConfigError(f"summarise.spacy_model ({pipeline!r}) runs on torch, but spaCy was "
                          "already imported in this process without torch. Call "
                          f"pipeline.spacy_load.use({pipeline!r}) before anything imports spaCy")
    return spacy


_CLI_PLACEHOLDERS = ("spacy.cli", "spacy.cli.info")


def _drop_cli_placeholders() -> None:
    """Take ``_cli_placeholders``'s stand-ins out of sys.modules, where they still are."""
    for name in _CLI_PLACEHOLDERS:
        if getattr(sys.modules.get(name), "_lockstep_placeholder", False):
            del sys.modules[name]


def _real_cli() -> types.ModuleType:
    """spaCy's command line itself (``spacy.cli``), imported on first use."""
    _drop_cli_placeholders()  # (asked for while spaCy is being imported here)
    import spacy.cli

    return spacy.cli


def _cli_placeholders() -> dict[str, types.ModuleType]:
    """Stand-ins for ``spacy.cli`` and ``spacy.cli.info`` while spaCy is imported.

    spaCy's ``__init__`` imports its command line only to offer ``spacy.info``, and that
    imports every command with weasel, requests and jinja2: 0.15 s of spaCy's 0.34 s here, in a
    run that never uses spaCy's command line. The stand-ins give ``spacy.info`` as a function
    that imports the real command line when called; anything else asked of them imports it
    too. They leave sys.modules once spaCy is imported, so ``import spacy.cli`` later gets the
    real package."""
    def info(*args, **kwargs):
        from spacy.cli.info import info as real_info

        return real_info(*args, **kwargs)

    def attribute(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_real_cli(), name)

    package, module = (types.ModuleType(name) for name in _CLI_PLACEHOLDERS)
    package.__path__ = [str(_spacy_dir() / "cli")]  # a submodule asked for is the real one
    package.__getattr__ = attribute
    module.info = info
    for placeholder in (package, module):
        placeholder._lockstep_placeholder = True
    return dict(zip(_CLI_PLACEHOLDERS, (package, module)))


def _import():
    global _without_torch
    if "spacy" in sys.modules:
        return sys.modules["spacy"]
    # spaCy makes some 48,000 objects that live as long as the process
    with settle.importing("spaCy"), _lock:
        hide = "torch" not in sys.modules and not any(map(needs_torch, _pipelines))
        if hide:
            sys.modules["torch"] = None  # `import torch` now raises ImportError
        if "spacy.cli" not in sys.modules:
            sys.modules.update(_cli_placeholders())
        try:
            import spacy
        finally:
            if hide and "torch" in sys.modules and sys.modules["torch"] is None:
                del sys.modules["torch"]
            _drop_cli_placeholders()
        _without_torch = hide
    return spacy
