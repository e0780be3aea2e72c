"""Where the partitioned work of a run happens: in this process, or on a Dask cluster.

An engine is one call, ``map(fn, *iterables) -> list`` (results in input order), plus the number
of partitions to cut work into. Stages hand it module-level functions that take and return
plain data, so the local engine (one task after the other, here) and the Dask engine (tasks on
the workers) run the same code and give the same result.

What is partitioned today:
- ingest: each posts file read and checked as a task; the client combines the parts in file
  order, so duplicate post_ids and the order of the rejects are decided as in a local run.
- embedding: the texts not in the cache, in the same length-sorted chunks as a local run;
  each task embeds its chunk and writes its cache shard (atomically) into the shared cache.
- the coordination join: events split by (signal, key), joined per partition in DuckDB,
  post pairs bucketed by account pair, moments counted per bucket (see coordination.py).

What stays on the client: the accounts file, the UMAP and HDBSCAN fits and the narrative
summaries (a fit on the whole corpus is what makes the labels identical to a local run), the
null model and escalation (they work on per-pair counts, which are small).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from .config import EngineConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

ENGINES = ("local", "dask")


@dataclass
class LocalEngine:
    """Every task in this process, one after the other."""

    n_partitions: int = 1
    name: str = "local"

    def map(self, fn: Callable, *iterables) -> list:
        return [fn(*args) for args in zip(*iterables)]

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"name": self.name, "n_partitions": self.n_partitions}


class DaskEngine:
    """Tasks on a Dask cluster: the one at ``scheduler``, else a LocalCluster started here
    (``n_workers`` processes, one thread each) and closed with the engine."""

    name = "dask"

    def __init__(self, scheduler: str, n_workers: int, n_partitions: int,
                 memory_limit: str = "auto"):
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - dask[distributed] is a dependency
            raise ConfigError("engine.name = \"dask\" needs dask.distributed; install "
                              "'dask[distributed]'") from None
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"engine.scheduler {scheduler!r}: no Dask scheduler answered "
                                  f"({exc}); start one (dask scheduler) or leave it empty for "
                                  "a local cluster") from None
        else:
            self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                        processes=True, memory_limit=memory_limit,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        n_workers_seen = len(self.client.scheduler_info().get("workers", {})) or n_workers
        self.n_partitions = n_partitions or n_workers_seen
        log.info("engine: dask at %s, %d workers, %d partitions",
                 self.client.scheduler.address, n_workers_seen, self.n_partitions)

    def map(self, fn: Callable, *iterables) -> list:
        items = [list(it) for it in iterables]
        if not items or not items[0]:
            return []
        futures = self.client.map(fn, *items, pure=False)
        return self.client.gather(futures)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def describe(self) -> dict:
        return {"name": self.name, "scheduler": self.client.scheduler.address,
                "n_workers": len(self.client.scheduler_info().get("workers", {})),
                "n_partitions": self.n_partitions,
                "worker_peak_rss_mb": self.worker_peak_rss_mb()}

    def worker_peak_rss_mb(self) -> list[float]:
        """Each worker process's peak resident memory so far (MB), largest first."""
        try:
            peaks = self.client.run(_peak_rss_mb)
        except Exception as exc:  # noqa: BLE001 - a figure for the manifest, never fatal
            log.debug("engine: no peak memory from the workers (%s)", exc)
            return []
        return sorted(peaks.values(), reverse=True)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def start(cfg: EngineConfig):
    """The engine the config names. Use as a context manager: ``with start(cfg) as eng``."""
    if cfg.name == "local":
        return _Closing(LocalEngine(max(1, cfg.partitions)))
    if cfg.name == "dask":
        n_workers = cfg.n_workers or max(1, os.cpu_count() or 1)
        return _Closing(DaskEngine(cfg.scheduler, n_workers, cfg.partitions, cfg.memory_limit))
    raise ConfigError(f"engine.name ({cfg.name!r}) must be one of: {', '.join(ENGINES)}")


class _Closing:
    def __init__(self, engine):
        self.engine = engine

    def __enter__(self):
        return self.engine

    def __exit__(self, *exc) -> None:
        self.engine.close()
