"""Compile (or load from Numba's cache) the kernels a server needs, so the first user
request does not pay JIT time: on a fresh machine that is tens of seconds.

A server runs it on a thread and, when it stops early, sets ``stop`` and joins that thread:
the interpreter must not exit while a native kernel (a parallel region's threads, LLVM)
still runs, or the process aborts ("terminate called without an active exception")."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    from vecdb.index.base import BaseIndex

log = logging.getLogger(__name__)


def warm_up(stop: threading.Event | None = None) -> float:
    """Build tiny Flat and HNSW indexes for each metric and search them every way the
    collection layer does (one query, a batch, with an allow-set); returns seconds taken.
    Once ``stop`` is set it returns after the kernel call in progress."""
    from vecdb.index.flat import FlatIndex
    from vecdb.index.hnsw import HNSW

    started = time.perf_counter()
    data = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    for metric in ("l2", "ip", "cosine"):
        for index in (FlatIndex(8, metric), HNSW(8, metric, M=4, ef_construction=8, seed=0)):
            for _ in _steps(index, data, metric):
                if stop is not None and stop.is_set():
                    log.info("warm-up stopped early", extra={"event": "warm_up_stopped"})
                    return time.perf_counter() - started
    seconds = time.perf_counter() - started
    log.info("kernels ready in %.1f s", seconds, extra={"event": "warm_up", "seconds": round(seconds, 2)})
    return seconds


def _steps(index: "BaseIndex", data: np.ndarray, metric: str) -> Iterator[None]:
    """One index's warm-up calls, yielding after each (the caller may stop there)."""
    from vecdb.index.hnsw import HNSW

    index.add(data)
    yield
    for queries in (data[:1], data[:20]):
        index.search(queries, 3)
        yield
        index.search(queries, 3, allow=np.arange(0, 64, 2))
        yield
        if isinstance(index, HNSW):   # a filtered walk (a small index would rather scan)
            index.search(queries, 3, allow=np.arange(0, 64, 2), filter_mode="graph")
            yield
    index.remove([0])
    index.add(data[:8], 10**12 + np.arange(8))   # sparse ids: the id map's hash kernels
    yield
    index.search(queries, 3, allow=10**12 + np.arange(4))
    index.remove(10**12 + np.arange(0, 8, 2))
    yield
    yield from _warm_staging(index, data, metric)


def _warm_staging(index: "BaseIndex", data: np.ndarray, metric: str) -> Iterator[None]:
    """A collection's searches while writes wait for the index: staged rows scanned exactly
    beside the index, with and without an allow-set, as one query and as a batch."""
    from vecdb.index.allow import AllowSet
    from vecdb.index.staging import Staging

    staging = Staging(data.shape[1], metric)
    staging.stage(data[:6], 100 + np.arange(6), stale=np.zeros(0, np.int64))
    staging.unstage(100 + np.arange(1))
    allow = AllowSet.from_ids(np.concatenate([np.arange(0, 64, 2), 100 + np.arange(0, 6, 2)]))
    for queries in (data[:1], data[:20]):
        staging.search_trusted(index, queries, 3, None, None, None)
        yield
        staging.search_trusted(index, queries, 3, allow, None, None)
        yield
