"""Compile (or load from Numba's cache) the kernels a server needs, so the first user
request does not pay JIT time: on a fresh machine that is tens of seconds (a SPANN
collection's first search alone compiled for ~20 s, its first batch ~11 s more).

A server warms the default kinds (``DEFAULT_KINDS``) at start, and another kind (``WORKLOADS``)
once a collection of it is opened or made (``Warmer``). It runs them on a thread and, when it
stops early, sets ``stop`` and joins that thread: the interpreter must not exit while a
native kernel (a parallel region's threads, LLVM) still runs, or the process aborts
("terminate called without an active exception")."""
from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from vecdb.index.spann.routing import CODED_ROUTE_DIM

if TYPE_CHECKING:
    from vecdb.index.base import BaseIndex

log = logging.getLogger(__name__)


#: the kinds a server warms at start: the collection default (HNSW) and the exact index
#: (also what staged rows are scanned with)
DEFAULT_KINDS = ("flat", "hnsw")


def warm_up(stop: threading.Event | None = None, kinds: Iterable[str] = DEFAULT_KINDS) -> float:
    """Run each of ``kinds``' workloads (``WORKLOADS``: small indexes searched every way the
    collection layer does: one query, a batch, with an allow-set; written to, deleted from);
    returns seconds taken. Once ``stop`` is set it returns after the kernel call in progress."""
    kinds = tuple(kinds)
    unknown = [kind for kind in kinds if kind not in WORKLOADS]
    if unknown:
        raise ValueError(f"no warm-up workload for index kinds {unknown}; known: {sorted(WORKLOADS)}")
    log.info("warming the kernels of %s", ", ".join(kinds), extra={"event": "warm_up_start", "kinds": list(kinds)})
    started = time.perf_counter()
    for kind in kinds:
        for _ in WORKLOADS[kind]():
            if stop is not None and stop.is_set():
                log.info("warm-up stopped early", extra={"event": "warm_up_stopped"})
                return time.perf_counter() - started
    seconds = time.perf_counter() - started
    log.info("kernels ready in %.1f s", seconds,
             extra={"event": "warm_up", "seconds": round(seconds, 2), "kinds": list(kinds)})
    return seconds


def _flat_and_hnsw(kind: str) -> Callable[[], Iterator[None]]:
    """The workload of the in-memory kind ``kind`` ("flat" or "hnsw"), for every metric."""
    def workload() -> Iterator[None]:
        from vecdb.index.flat import FlatIndex
        from vecdb.index.hnsw import HNSW

        data = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        for metric in ("l2", "ip", "cosine"):
            index = FlatIndex(8, metric) if kind == "flat" else HNSW(8, metric, M=4, ef_construction=8, seed=0)
            yield from _steps(index, data, metric)
    return workload


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


#: SPANN forms a workload compiles: (dimension, constructor params): float32 and SQ8
#: postings routed exactly over short head rows, over long ones (``CODED_ROUTE_DIM`` and up:
#: by the heads' 7-bit copies first) and by groups of heads (a larger collection)
_SPANN_FORMS = ((32, {"codes": None}), (32, {"codes": "sq8"}), (CODED_ROUTE_DIM, {"codes": None}),
                (CODED_ROUTE_DIM, {"codes": "sq8"}), (32, {"codes": None, "exact_heads": 0}),
                (32, {"codes": "sq8", "exact_heads": 0}))


def _spann() -> Iterator[None]:
    """SPANN as a collection drives it: trained, written, split, searched (one query, a few,
    a batch, with an allow-set, beside staged rows), deleted from and purged, for every metric
    and form. Standalone indexes in a temporary directory (the same storage kernels as a
    collection's environment)."""
    from vecdb.index.spann import SPANN

    for metric in ("l2", "ip", "cosine"):
        for dim, form in _SPANN_FORMS:
            data = np.random.default_rng(0).standard_normal((400, dim)).astype(np.float32)
            with tempfile.TemporaryDirectory(prefix="vecdb-warm-up-") as tmp:
                index = SPANN(dim, metric, tmp, posting_limit=16, head_size=8, min_train=64, background=False, **form)
                try:
                    index.train(data[:256])
                    index.add(data[:300])
                    yield
                    while index.maintain():         # splits of the postings past their limit
                        yield
                    for queries in (data[:1], data[:3], data[:20]):   # one, a few (per query), a batch
                        index.search(queries, 3)
                        yield
                        index.search(queries, 3, allow=np.arange(0, 300, 2))
                        yield
                    index.add(data[300:], np.arange(300, 400))
                    index.remove(np.arange(0, 40))
                    yield
                    while index.maintain():         # the tombstones' purge
                        yield
                    yield from _warm_staging(index, data[:64], metric)
                finally:
                    index.close()


#: each warmable index kind's workload: a generator that yields after each step (where a
#: stopping server may end it)
WORKLOADS: dict[str, Callable[[], Iterator[None]]] = {
    "flat": _flat_and_hnsw("flat"),
    "hnsw": _flat_and_hnsw("hnsw"),
    "spann": _spann,
}


class Warmer:
    """Warms index kinds on one background thread, each kind once per process, in the order
    asked (``want``); kinds without a workload are skipped, and a warm-up that fails is
    logged (either way their kernels compile on first use). ``stop`` ends it after the
    kernel call in progress and joins the thread."""

    def __init__(self) -> None:
        self._asked: set[str] = set()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def want(self, kinds: Iterable[str]) -> None:
        """Warm those of ``kinds`` not asked for before (on the thread, started on first use)."""
        with self._lock:
            if self._stop.is_set():
                return
            for kind in kinds:
                if kind in WORKLOADS and kind not in self._asked:
                    self._asked.add(kind)
                    self._queue.put(kind)
            if self._thread is None and not self._queue.empty():
                self._thread = threading.Thread(target=self._run, name="vecdb-warm-up", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            got = [self._queue.get()]            # blocks until asked (None: stopped)
            while not self._queue.empty():       # those asked for together, in one warm-up
                got.append(self._queue.get())
            kinds = [kind for kind in got if kind is not None]
            if len(kinds) < len(got) or self._stop.is_set():
                return
            try:
                warm_up(self._stop, kinds)
            except Exception:                    # a failed warm-up only leaves compiles to first use
                log.warning("warm-up of %s failed", ", ".join(kinds), exc_info=True,
                            extra={"event": "warm_up_failed", "kinds": kinds})

    def stop(self, timeout: float | None = None) -> None:
        """End the warm-up after the kernel call in progress and wait for the thread (at most
        ``timeout`` s)."""
        with self._lock:
            self._stop.set()
            self._queue.put(None)                # wakes the thread if it waits for a kind
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
