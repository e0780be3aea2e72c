"""On-disk cache of the per-text spaCy analysis the summaries use (terms and entities).

The summarise stage runs every distinct English text through spaCy (lemmas, part-of-speech noun
phrases, named entities): on a rerun, or a corpus that grew by 10%, that is most of its time spent
on texts it has seen before. This cache keeps what ``narratives.analyse`` made of each text, so a
later run analyses only the texts that are new.

Layout, the same as the embedding cache's (``embed.VectorCache``): append-only shards under
``<cache_dir>/<spaCy pipeline>-<its version>/<settings digest>/``, one Parquet file each, written
atomically (``atomic.atomic_path``). A shard's name carries a digest of its bytes, so a torn or
altered shard is refused (a warning) and its texts are analysed again; a temporary file left by
a killed run is ignored. The settings digest covers everything besides the text that decides the
result: the analyser (its stop words), the entity types kept, and ``ANALYSIS_VERSION``, which
changes whenever the code that turns a spaCy Doc into terms and entities changes.

A record's key is a 16-byte hash of (analyser, text). Its value is the terms and, when the text
went through the entity recogniser, the entities; a text analysed without entities and later
needed with them is analysed again (the terms do not depend on the recogniser, which runs last
and only writes ``doc.ents``; a test keeps that true).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path

log = logging.getLogger(__name__)

# Bump when english_terms, _entity_key, _clean or anything else between the spaCy Doc and the
# Analysis changes what a text yields, or how the Doc is made. 2: the pipeline's matrix
# products go through numpy's BLAS, not blis (narratives.english); the same results on the
# texts tested, but floating-point sums in another order may tip a rare tag.
ANALYSIS_VERSION = 2

SCHEMA = pa.schema([
    ("key", pa.binary(16)),
    ("terms", pa.list_(pa.string())),
    ("entities", pa.list_(pa.list_(pa.string()))),  # null: the text did not go through NER
])


def text_hash(analyser: str, text: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(analyser.encode("utf-8"))
    h.update(b"\0")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


def settings_digest(settings: object) -> str:
    return hashlib.blake2b(repr(settings).encode("utf-8"), digest_size=8).hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()


class AnalysisCache:
    """Shards of (key, terms, entities) under ``root/<model>-<version>/<settings digest>/``."""

    def __init__(self, root: str | Path, model_name: str, model_version: str, settings: object):
        model = re.sub(r"[^A-Za-z0-9._-]+", "__", f"{model_name}-{model_version}")
        self.folder = Path(root) / model / settings_digest((ANALYSIS_VERSION, settings))

    def _shards(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        good = []
        for path in sorted(self.folder.glob("shard-*.parquet")):
            if _file_digest(path) != path.stem.rpartition("-")[2]:
                log.warning("analysis cache: skipping %s (its content does not match its name; "
                            "a damaged file)", path.name)
                continue
            good.append(path)
        return good

    def get(self, keys: list[bytes], with_entities: set[bytes]
            ) -> dict[bytes, tuple[list[str], list[tuple[str, str, str]] | None]]:
        """The cached (terms, entities) of the keys found. A key in ``with_entities`` is found
        only in a record that has its entities; for any other key the entities are None."""
        wanted = set(keys)
        out: dict[bytes, tuple[list[str], list[tuple[str, str, str]] | None]] = {}
        if not wanted:
            return out
        for path in self._shards():
            try:
                table = pq.read_table(path, schema=SCHEMA)
            except (OSError, ValueError, pa.ArrowException) as exc:
                log.warning("analysis cache: skipping unreadable %s (%s)", path.name, exc)
                continue
            shard_keys = table.column("key").to_pylist()
            rows = [i for i, k in enumerate(shard_keys) if k in wanted]
            if not rows:
                continue
            sub = table.take(pa.array(rows, type=pa.int64())).to_pydict()
            for key, terms, ents in zip(sub["key"], sub["terms"], sub["entities"]):
                need = key in with_entities
                if need and ents is None:
                    continue
                if key in out and (not need or out[key][1] is not None):
                    continue
                out[key] = (terms, [tuple(e) for e in ents] if need else None)
        return out

    def put(self, records: dict[bytes, tuple[list[str], list[tuple[str, str, str]] | None]]
            ) -> None:
        """Write one shard of records (key -> (terms, entities or None)), atomically."""
        if not records:
            return
        keys = sorted(records)
        table = pa.Table.from_pydict({
            "key": keys,
            "terms": [list(records[k][0]) for k in keys],
            "entities": [None if records[k][1] is None else [list(e) for e in records[k][1]]
                         for k in keys],
        }, schema=SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        digest = hashlib.blake2b(data, digest_size=8).hexdigest()
        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(list(self.folder.glob("shard-*.parquet")))
        # the name carries the digest of the bytes: a reader takes a whole shard or none
        with atomic_path(self.folder / f"shard-{n:06d}-{digest}.parquet") as tmp:
            tmp.write_bytes(data)
