"""A small writer-preferring readers-writer lock (threading has none), which records how long
it is held.

Many readers may hold it together; a writer waits for current readers and blocks new ones, so
a steady stream of searches cannot starve writes; and the readers waiting when a writer
releases it enter before the next writer, so a writer taking it back to back (a background
indexer's steps) cannot starve searches either. Not reentrant: a thread must not take it
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
import weakref
from bisect import bisect_left
from collections import deque
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


#: figures of locks already garbage-collected, by (name, mode, clock): kept so the exported
#: counters never go down when a collection (and its lock) goes away.
_RETIRED: dict[tuple[str, str, str], HoldStats] = {}
#: figures of collected locks not yet merged into _RETIRED. Their finalizer runs wherever the
#: garbage collector does (any allocation, even in a thread holding _STATS_LOCK), so it only
#: appends here (atomic), taking no lock; holders of _STATS_LOCK merge them.
_PENDING: "deque[tuple[str, dict[tuple[str, str], HoldStats]]]" = deque()
_LIVE: "weakref.WeakSet[RWLock]" = weakref.WeakSet()
_STATS_LOCK = threading.Lock()
#: whether holds also read the holding thread's CPU clock (a system call, ~2 us per read on
#: some VMs, twice per hold): off in process, switched on by the server that exports it.
_CPU_CLOCK = [False]
_MODES = ("read", "write")


def record_cpu_time(on: bool = True) -> None:
    """Also time holds on the holding thread's CPU clock (the "cpu" figures of ``hold_stats``).
    The server turns this on for ``/metrics``; embedded use keeps the wall clock only, so a
    search does not pay two clock system calls."""
    _CPU_CLOCK[0] = bool(on)


def _merge(into: dict[tuple[str, str, str], HoldStats], name: str, own: dict[tuple[str, str], HoldStats]) -> None:
    for (mode, clock), st in own.items():
        total = into.setdefault((name, mode, clock), HoldStats())
        total.count += st.count
        total.total += st.total
        total.longest = max(total.longest, st.longest)
        total.per_bucket = [a + b for a, b in zip(total.per_bucket, st.per_bucket)]


def _retire(name: str, own: dict[tuple[str, str], HoldStats]) -> None:
    """Keep a collected lock's figures for the retired totals (no lock taken: see _PENDING)."""
    _PENDING.append((name, own))


def _merge_retired() -> None:
    """Merge the pending figures of collected locks into _RETIRED (_STATS_LOCK held)."""
    while _PENDING:
        name, own = _PENDING.popleft()
        _merge(_RETIRED, name, own)


def hold_stats() -> dict[tuple[str, str, str], HoldStats]:
    """The hold figures of this process by (lock name, mode, clock "wall"/"cpu"), summed
    over every lock of that name, live or gone (a snapshot: copies)."""
    with _STATS_LOCK:
        locks = list(_LIVE)  # first: held here, none of them can retire before it is counted
        _merge_retired()
        out: dict[tuple[str, str, str], HoldStats] = {}
        for key, st in _RETIRED.items():
            out[key] = HoldStats(st.count, st.total, st.longest, list(st.per_bucket))
    for lock in locks:
        with lock._mutex:
            own = {key: HoldStats(st.count, st.total, st.longest, list(st.per_bucket))
                   for key, st in lock._own.items()}
        _merge(out, lock.name, own)
    return out


class RWLock:
    """Readers-writer lock with ``read()`` / ``write()`` context managers. ``name`` groups
    its hold times in ``hold_stats()`` (e.g. every collection's lock is "collection");
    ``longest_read`` / ``longest_write`` are this lock's own longest holds in seconds.
    Each lock records its own holds under its own mutex (taken anyway), so a hold costs one
    mutex round trip on each side and no process-wide lock. ``time_reads=False`` leaves the
    shared holds untimed and uncounted (a store's map gate: every read transaction takes it,
    ~1 us of clocks and counting on a 40 us search, and only its write side, the map's
    growth, blocks anyone)."""

    def __init__(self, name: str = "lock", *, time_reads: bool = True) -> None:
        self.name = name
        self._time_reads = time_reads
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        # phase fairness: readers waiting when a writer releases enter before the next writer
        # (else a writer taking it back to back, e.g. an index builder's steps, starves them)
        self._waiting_readers = 0
        self._admit = 0
        modes = _MODES if time_reads else ("write",)         # untimed reads: nothing to export
        self._own = {(mode, clock): HoldStats() for mode in modes for clock in ("wall", "cpu")}
        self._read_wall, self._read_cpu = ((self._own[("read", "wall")], self._own[("read", "cpu")]) if time_reads
                                           else (HoldStats(), HoldStats()))
        self._write_wall, self._write_cpu = self._own[("write", "wall")], self._own[("write", "cpu")]
        with _STATS_LOCK:
            _merge_retired()  # keeps _PENDING short where hold_stats is never called
            _LIVE.add(self)
        weakref.finalize(self, _retire, name, self._own)

    @property
    def longest_read(self) -> float:
        return self._read_wall.longest

    @property
    def longest_write(self) -> float:
        return self._write_wall.longest

    def read(self) -> "_Hold":
        """Hold the lock shared for the duration of the ``with`` block."""
        return _Hold(self, False)

    def write(self) -> "_Hold":
        """Hold the lock exclusively for the duration of the ``with`` block."""
        return _Hold(self, True)

    def _acquire_exclusive(self) -> None:
        with self._mutex:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers or self._admit:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True

    def enter_shared(self) -> tuple[float, float | None]:
        """Take the shared side (what ``read()`` holds, without a context manager object: a
        search's read transaction takes one per call). Returns what ``exit_shared`` takes."""
        mutex = self._mutex
        mutex.acquire()                      # not ``with``: half the cost (~0.2 us a side)
        try:
            if self._writer or (self._waiting_writers and not self._admit):
                _enter_shared(self)
            else:
                self._readers += 1
        finally:
            mutex.release()
        return _clocks() if self._time_reads else _UNTIMED

    def exit_shared(self, since: tuple[float, float | None]) -> None:
        """Release a hold taken by ``enter_shared`` (``since``: what it returned)."""
        self._release(False, since)

    def _release(self, exclusive: bool, since: tuple[float, float | None]) -> None:
        held: float | None
        cpu: float | None
        if since is _UNTIMED:
            held, cpu = None, None
        else:
            held = time.perf_counter() - since[0]
            cpu = None if since[1] is None else time.thread_time() - since[1]
        mutex = self._mutex
        mutex.acquire()
        try:
            if exclusive:
                self._writer = False
                self._admit = self._waiting_readers
                self._cond.notify_all()
                if held is not None:                 # always: exclusive holds are timed
                    self._write_wall.add(held)
                if cpu is not None:
                    self._write_cpu.add(cpu)
            else:
                self._readers -= 1
                if not self._readers and self._waiting_writers:
                    self._cond.notify_all()
                if held is not None:
                    self._read_wall.add(held)
                if cpu is not None:
                    self._read_cpu.add(cpu)
        finally:
            mutex.release()


#: what ``enter_shared`` returns for a hold it does not time
_UNTIMED: tuple[float, float | None] = (0.0, None)


def _clocks() -> tuple[float, float | None]:
    """When a hold starts: the wall clock, and the thread's CPU clock once ``record_cpu_time``."""
    return time.perf_counter(), time.thread_time() if _CPU_CLOCK[0] else None


def _enter_shared(lock: RWLock) -> None:
    """Wait for the shared side (caller holds the mutex): while a writer holds the lock, or
    waits for it, unless readers are being admitted after a writer's release."""
    lock._waiting_readers += 1
    try:
        while lock._writer or (lock._waiting_writers and not lock._admit):
            lock._cond.wait()
    finally:
        lock._waiting_readers -= 1
    if lock._admit:
        lock._admit -= 1
        if not lock._admit and lock._waiting_writers:
            lock._cond.notify_all()
    lock._readers += 1


class _Hold:
    """One hold of an RWLock (a plain context manager)."""

    __slots__ = ("_lock", "_exclusive", "_since")

    def __init__(self, lock: RWLock, exclusive: bool) -> None:
        self._lock = lock
        self._exclusive = exclusive

    def __enter__(self) -> None:
        if self._exclusive:
            self._lock._acquire_exclusive()
            self._since = _clocks()
        else:
            self._since = self._lock.enter_shared()

    def __exit__(self, *exc: object) -> None:
        self._lock._release(self._exclusive, self._since)
