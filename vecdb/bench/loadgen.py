"""Closed-loop search load for the gRPC benchmarks: client threads that each send one query per
call until told to stop, keeping every call's latency and every error (a run must show none).

It imports nothing of vecdb: ``bench/grpc_small.py`` loads this file by path, because with
``--src`` it measures another source tree, which may not have this module.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

#: query picks each thread draws up front, so its loop spends no RNG call between searches
PICKS = 1 << 16

#: a worker run beside the searchers: called with the stop event and the shared error list
Background = Callable[[threading.Event, list[BaseException]], Any]


class Load(NamedTuple):
    """What one closed-loop run did: wall seconds, every call's latency in ms, the errors."""

    seconds: float
    latencies_ms: np.ndarray
    errors: list[BaseException]

    @property
    def calls(self) -> int:
        return int(self.latencies_ms.size)

    @property
    def qps(self) -> float:
        return self.calls / self.seconds

    def percentile_ms(self, p: float) -> float:
        """The ``p``-th latency percentile in ms, rounded to the microsecond (NaN without calls)."""
        return round(float(np.percentile(self.latencies_ms, p)), 3) if self.calls else float("nan")


def search_loop(search: Callable[[np.ndarray], Any], queries: np.ndarray, stop: threading.Event,
                latencies: list[float], errors: list[BaseException], seed: int,
                check: Callable[[Any], Any] | None = None) -> None:
    """Search one seeded-random row of ``queries`` per call until ``stop``; keep each latency (s).
    ``check``, when given, is called on each call's return value after its latency is taken
    (a correctness check that must not count as search time)."""
    pick = np.random.default_rng(seed).integers(len(queries), size=PICKS)
    i = 0
    while not stop.is_set():
        q = queries[pick[i % PICKS]]
        i += 1
        start = time.perf_counter()
        try:
            got = search(q)
            latencies.append(time.perf_counter() - start)
            if check is not None:
                check(got)
        except Exception as exc:  # counted and reported: a run must show none
            errors.append(exc)


def run_load(search: Callable[[np.ndarray], Any], queries: np.ndarray, threads: int, seconds: float,
             background: Sequence[Background] = (), check: Callable[[Any], Any] | None = None) -> Load:
    """``threads`` threads running ``search_loop`` (thread i seeded with i, ``check`` untimed after
    each call) for ``seconds``, with the ``background`` workers beside them; returns once every
    thread has stopped."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    workers = [threading.Thread(target=search_loop, args=(search, queries, stop, latencies[i], errors, i, check))
               for i in range(threads)]
    workers += [threading.Thread(target=work, args=(stop, errors)) for work in background]
    start = time.perf_counter()
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return Load(elapsed, np.array([x for row in latencies for x in row]) * 1e3, errors)
