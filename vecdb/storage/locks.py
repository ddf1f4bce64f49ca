"""A small writer-preferring readers-writer lock (threading has none), which records how long
it is held.

Many readers may hold it together; a writer waits for current readers and blocks new ones, so
a steady stream of searches cannot starve writes. Not reentrant: a thread must not take it
twice, nor take the write side while holding the read side.

Every hold is timed and counted per lock name and mode ("read"/"write") in a process-wide
table (``hold_stats()``), which the server exports on ``/metrics``: a hold blocks writers
(read) or everyone (write), so its length is the latency it can add to other requests.
Two clocks are kept: "wall" (what other threads wait) and, once ``record_cpu_time()`` is on
(the server turns it on), "cpu" (CPU time of the holding thread: the work done under the lock,
which does not grow when the machine is overloaded).
"""
from __future__ import annotations

import threading
from bisect import bisect_left
from itertools import accumulate
import time
from dataclasses import dataclass, field

#: upper bounds (seconds) of the hold-time histogram buckets; the last bucket is +inf.
HOLD_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class HoldStats:
    """Holds of one (lock name, mode): how many, their total and longest seconds, and
    how many fell in each bucket of ``HOLD_BUCKETS`` (``buckets`` gives them cumulative,
    like Prometheus). Recording is O(1): it runs on every search."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    per_bucket: list[int] = field(default_factory=lambda: [0] * (len(HOLD_BUCKETS) + 1))

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.longest:
            self.longest = seconds
        self.per_bucket[bisect_left(HOLD_BUCKETS, seconds)] += 1

    @property
    def buckets(self) -> list[int]:
        """Holds of at most each bound of ``HOLD_BUCKETS`` (cumulative counts)."""
        return list(accumulate(self.per_bucket[: len(HOLD_BUCKETS)]))


_STATS: dict[tuple[str, str, str], HoldStats] = {}
_STATS_LOCK = threading.Lock()
#: whether holds also read the holding thread's CPU clock (a system call, ~2 us per read on
#: some VMs, twice per hold): off in process, switched on by the server that exports it.
_CPU_CLOCK = [False]


def record_cpu_time(on: bool = True) -> None:
    """Also time holds on the holding thread's CPU clock (the "cpu" figures of ``hold_stats``).
    The server turns this on for ``/metrics``; embedded use keeps the wall clock only, so a
    search does not pay two clock system calls."""
    _CPU_CLOCK[0] = bool(on)


def _stats(name: str, mode: str, clock: str) -> HoldStats:
    with _STATS_LOCK:
        stats = _STATS.get((name, mode, clock))
        if stats is None:
            stats = _STATS[(name, mode, clock)] = HoldStats()
        return stats


def hold_stats() -> dict[tuple[str, str, str], HoldStats]:
    """A copy of the hold figures of this process by (lock name, mode, clock "wall"/"cpu")."""
    with _STATS_LOCK:
        return {key: HoldStats(s.count, s.total, s.longest, list(s.per_bucket)) for key, s in _STATS.items()}


class RWLock:
    """Readers-writer lock with ``read()`` / ``write()`` context managers. ``name`` groups
    its hold times in ``hold_stats()`` (e.g. every collection's lock is "collection");
    ``longest_read`` / ``longest_write`` are this lock's own longest holds in seconds."""

    def __init__(self, name: str = "lock") -> None:
        self.name = name
        self.longest_read = 0.0
        self.longest_write = 0.0
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._stats = {(mode, clock): _stats(name, mode, clock) for mode in ("read", "write") for clock in ("wall", "cpu")}

    def read(self) -> "_Hold":
        """Hold the lock shared for the duration of the ``with`` block."""
        return _Hold(self, False)

    def write(self) -> "_Hold":
        """Hold the lock exclusively for the duration of the ``with`` block."""
        return _Hold(self, True)

    def _acquire(self, exclusive: bool) -> None:
        with self._mutex:
            if exclusive:
                self._waiting_writers += 1
                try:
                    while self._writer or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
                self._writer = True
            else:
                while self._writer or self._waiting_writers:
                    self._cond.wait()
                self._readers += 1

    def _release(self, exclusive: bool, held: float, cpu: float | None) -> None:
        with self._mutex:
            if exclusive:
                self._writer = False
                self._cond.notify_all()
                if held > self.longest_write:
                    self.longest_write = held
            else:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()
                if held > self.longest_read:
                    self.longest_read = held
        mode = "write" if exclusive else "read"
        stats = self._stats
        with _STATS_LOCK:
            stats[(mode, "wall")].add(held)
            if cpu is not None:
                stats[(mode, "cpu")].add(cpu)


class _Hold:
    """One hold of an RWLock (a plain context manager: a search takes one per call)."""

    __slots__ = ("_lock", "_exclusive", "_start", "_cpu")

    def __init__(self, lock: RWLock, exclusive: bool) -> None:
        self._lock = lock
        self._exclusive = exclusive

    def __enter__(self) -> None:
        self._lock._acquire(self._exclusive)
        self._cpu = time.thread_time() if _CPU_CLOCK[0] else None
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        held = time.perf_counter() - self._start
        cpu = None if self._cpu is None else time.thread_time() - self._cpu
        self._lock._release(self._exclusive, held, cpu)
