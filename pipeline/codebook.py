"""A codebook: the narrative names analysts use, matched to narratives in embedding space.

A codebook is a YAML file of entries, each a name, a description and example posts::

    codebook_version: 1
    entries:
      - name: military fan content
        description: Praise for the army, its soldiers and martyrs; parades and ISPR news.
        examples:
          - Salute to our jawans standing guard at Siachen in freezing cold.

Each entry becomes one vector: the normalised mean of the embeddings of its description and of
each example (embedded one by one with the run's embedder, so nothing is truncated and no single
long example dominates). Each narrative's centroid (the normalised mean of its posts' vectors) is
compared with every entry by cosine; the best entry names the narrative when the similarity
reaches ``codebook.min_similarity``, else the narrative is ``unlabelled``.

The match is many-to-one: several narratives may carry the same name. HDBSCAN's granularity
follows the corpus (its minimum cluster size grows with the number of posts), so one analyst-level
theme is often split in two (English and Urdu posts, or two events of one campaign); a one-to-one
match would force the second part onto a wrong name or leave it unlabelled, and the same codebook
would then name the same theme differently in two corpora.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import yaml

from .errors import InputError

CODEBOOK_VERSION = 1
UNLABELLED = "unlabelled"
TOP_KEYS = ("codebook_version", "name", "description", "entries")
ENTRY_KEYS = ("name", "description", "examples")


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Codebook:
    path: str
    sha256: str
    entries: tuple[Entry, ...]
    name: str = ""

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _fail(path: Path, where: str, problem: str, fix: str) -> InputError:
    return InputError(f"codebook {path}: {where}: {problem}; {fix}")


def _text(path: Path, where: str, field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        found = "an empty string" if isinstance(value, str) else \
            f"{type(value).__name__} {value!r}"[:80]
        raise _fail(path, where, f"field '{field}' must be non-empty text, found {found}",
                    f"write {field}: followed by text")
    return " ".join(value.split())


def load(path: str | Path) -> Codebook:
    """Read and validate a codebook; any problem is an InputError naming file, entry and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"codebook {path} does not exist; pass an existing YAML file with "
                         "--codebook or set codebook.path (see corpora/sample.codebook.yaml)") \
            from None
    except OSError as exc:
        raise InputError(f"codebook {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_StrictLoader)  # noqa: S506 (safe loader)
    except UnicodeDecodeError as exc:
        raise InputError(f"codebook {path}: byte {exc.start} is not UTF-8; save the file as "
                         "UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or str(exc)
        raise _fail(path, where, f"not valid YAML ({problem})",
                    "fix the YAML syntax (indentation, quotes, colons)") from None
    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected a mapping with an 'entries' list, found "
                    f"{type(data).__name__}", "start the file with codebook_version: 1 and "
                    "entries:")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise _fail(path, "top level", f"unknown key {unknown[0]!r}",
                    f"valid keys are {', '.join(TOP_KEYS)}")
    version = data.get("codebook_version")
    if version != CODEBOOK_VERSION:
        raise _fail(path, "codebook_version", f"expected {CODEBOOK_VERSION}, found {version!r}",
                    f"add codebook_version: {CODEBOOK_VERSION} at the top")
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise _fail(path, "entries", "must be a non-empty list of entries",
                    "write entries: then one '- name: ...' item per narrative")
    out: list[Entry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(entries, start=1):
        where = f"entry {i}"
        if not isinstance(item, dict):
            raise _fail(path, where, f"expected a mapping with name, description and examples, "
                        f"found {type(item).__name__}", "write '- name: ...' and indent the "
                        "other fields under it")
        if isinstance(item.get("name"), str) and item["name"].strip():
            where = f"entry {i} ({item['name'].strip()!r})"
        unknown = [k for k in item if k not in ENTRY_KEYS]
        if unknown:
            raise _fail(path, where, f"unknown field {unknown[0]!r}",
                        f"valid fields are {', '.join(ENTRY_KEYS)}")
        for field in ENTRY_KEYS:
            if field not in item:
                raise _fail(path, where, f"field '{field}' is missing",
                            f"add {field}: to the entry")
        name = _text(path, where, "name", item["name"])
        if name.casefold() == UNLABELLED:
            raise _fail(path, where, f"the name {UNLABELLED!r} is reserved for narratives that "
                        "match no entry", "choose another name")
        if name.casefold() in seen:
            raise _fail(path, where, f"name {name!r} is also entry {seen[name.casefold()]}",
                        "give every entry its own name (merge the two if they are one narrative)")
        seen[name.casefold()] = i
        description = _text(path, where, "description", item["description"])
        examples = item["examples"]
        if not isinstance(examples, list) or not examples:
            raise _fail(path, where, "field 'examples' must be a non-empty list of example posts, "
                        f"found {type(examples).__name__}",
                        "write examples: then one '- text' line per example post")
        texts = tuple(_text(path, f"{where} example {j}", "examples", x)
                      for j, x in enumerate(examples, start=1))
        out.append(Entry(name, description, texts))
    title = data.get("name", "")
    if not isinstance(title, str):
        raise _fail(path, "name", f"must be text, found {type(title).__name__}", "quote it")
    return Codebook(str(path), hashlib.sha256(raw).hexdigest(), tuple(out), title)


def entry_vectors(book: Codebook, embed: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
    """One L2-normalised vector per entry: the mean of its description's and examples' vectors."""
    texts: list[str] = []
    owner: list[int] = []
    for i, e in enumerate(book.entries):
        for t in (e.description, *e.examples):
            texts.append(t)
            owner.append(i)
    vectors = np.asarray(embed(texts), dtype=np.float64)
    owner_arr = np.asarray(owner)
    out = np.stack([vectors[owner_arr == i].mean(axis=0) for i in range(len(book.entries))])
    return _unit(out).astype(np.float32)


def centroids(labels: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, L2-normalised mean vector per narrative id >= 0), ids ascending."""
    ids = np.array(sorted(int(c) for c in np.unique(labels) if c >= 0), dtype=np.int64)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    if not len(ids):
        return ids, np.zeros((0, dim), dtype=np.float32)
    # summed in float64 one narrative at a time: a float64 copy of every vector would be 2 GB
    # at a million posts
    out = np.stack([np.asarray(vectors[labels == c]).mean(axis=0, dtype=np.float64)
                    for c in ids])
    return ids, _unit(out).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


@dataclass
class Match:
    names: list[str]  # per narrative, the entry name or UNLABELLED
    similarities: np.ndarray  # per narrative, cosine to the best entry (even when unlabelled)
    best: list[str]  # per narrative, the best entry's name whatever its similarity


def match(narrative_centroids: np.ndarray, entry_vecs: np.ndarray, book: Codebook,
          min_similarity: float) -> Match:
    """Best entry per narrative (many-to-one); ties go to the entry listed first."""
    if len(narrative_centroids) == 0:
        return Match([], np.zeros(0, dtype=np.float32), [])
    sims = np.asarray(narrative_centroids, np.float64) @ np.asarray(entry_vecs, np.float64).T
    best = np.argmax(sims, axis=1)  # argmax returns the first of equal maxima
    best_sim = sims[np.arange(len(sims)), best]
    names = [book.entries[b].name if s >= min_similarity else UNLABELLED
             for b, s in zip(best, best_sim)]
    return Match(names, np.round(best_sim, 4).astype(np.float32),
                 [book.entries[b].name for b in best])


def annotate(table, details: list[dict], m: Match) -> None:
    """Add codebook_name and codebook_similarity (after label) to a table and its details."""
    at = list(table.columns).index("label") + 1 if "label" in table.columns else len(table.columns)
    table.insert(at, "codebook_name", m.names)
    table.insert(at + 1, "codebook_similarity", [float(s) for s in m.similarities])
    for d, name, sim, best in zip(details, m.names, m.similarities, m.best):
        d["codebook_name"] = name
        d["codebook_similarity"] = float(sim)
        d["codebook_best_entry"] = best


def label(summary, labels: np.ndarray, vectors: np.ndarray, book: Codebook, cfg,
          embedder) -> Match:
    """Name a run's narratives from the codebook, embedding it with the run's embedder."""
    from . import embed

    ids, cents = centroids(labels, vectors)
    table_ids = [int(x) for x in summary.table["narrative_id"]]
    if table_ids != [int(x) for x in ids]:
        raise AssertionError("narratives table and narrative ids disagree")
    entry_vecs = entry_vectors(book, lambda texts: embed.run(list(texts), cfg.embed,
                                                             embedder=embedder)[0])
    m = match(cents, entry_vecs, book, cfg.codebook.min_similarity)
    annotate(summary.table, summary.details, m)
    return m


def describe(table) -> str:
    named = int((table["codebook_name"] != UNLABELLED).sum()) if len(table) else 0
    return f"{named} named from the codebook, {len(table) - named} unlabelled"
