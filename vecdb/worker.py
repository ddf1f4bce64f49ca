"""A background worker: a daemon thread, started on the first wake, that runs rounds of
work while there is work, and that other threads wait on. A collection's indexer (moving
staged rows into the index, training, checkpoints) and a standalone SPANN index's
maintenance (splits, purges) each run on one.

The worker knows nothing of its owner: it calls ``run_round`` (which does a bounded amount
of work and returns True when more remains) and wakes waiters after each round and whenever
``progress`` is called. An exception escaping a round is logged with its traceback and
counted (``failures``); the worker then waits for the next wake instead of spinning.

Heavy parallel work of a round can run on one of the worker's two ``Lowered`` threads
instead (``lowered``): threads at background OS priority (Linux: a higher nice value, which
each thread has of its own; the one that links rows into an HNSW graph also the SCHED_IDLE
policy, see ``BACKGROUND_SCHED_IDLE``; removals run on the other), so that when the cores are
busy, searches and writes preempt the build instead of waiting behind it, and when they are
idle the build takes them whole. Numba's OpenMP workers are started by the thread that enters
a parallel region and inherit its priority, so the build threads are lowered too, and only
they: the short exclusive steps of a round stay on the worker's own thread at normal priority.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: nice value of ``Lowered`` threads (0 is normal, 19 the lowest priority): each runnable
#: normal thread then gets about 68x the CPU share of a lowered one (CFS weights 1024 : 15).
#: With 4 searching threads on 2 cores, nice 10 (1024 : 110) still let the build preempt
#: searchers holding the GIL often enough to show in their p99 (1M, part d of
#: bench/write_path.py, two runs each: under a writer 10.5-10.7 ms at nice 10, 8.3-9.1 ms at
#: 19); the price is a slower build while searches keep every core busy.
BACKGROUND_NICE = 19
#: whether an ``idle`` ``Lowered`` thread (the one a collection links rows on) also takes
#: Linux's SCHED_IDLE policy (above it, nice no longer counts): a waking normal thread then
#: preempts it at once, where nice 19 can leave it running for a while, so a search taking
#: the GIL back after its kernel does not wait for a build thread to leave its core. 1M, 4
#: searching threads under a new-points writer (bench/write_path.py part d, session 25): p99
#: 1.84-1.97x idle against 2.9-3.6x at nice 19. Removals stay at nice 19: on SCHED_IDLE
#: (weight 3 : 1024) a removal under a full search load crawled, searches meanwhile scanned
#: the replacing batch exactly and masked the stale entries, and the replacing load's p99
#: rose to 3.6-3.8x idle. A build under a full search load slows, never stops.
BACKGROUND_SCHED_IDLE = True


class Lowered:
    """A daemon thread at background OS priority (``nice``; with ``idle`` also SCHED_IDLE)
    that runs the calls handed to ``call`` one at a time, started on first use; ``stop`` ends it."""

    def __init__(self, name: str, nice: int = BACKGROUND_NICE, idle: bool = False) -> None:
        self.name = name
        self.nice = nice
        self.idle = idle   # also SCHED_IDLE (Linux, when BACKGROUND_SCHED_IDLE)
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.lowered = False   # whether the OS took the lower priority (Linux only)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the lowered thread and return its result (its exception is raised here);
        once stopped, on the calling thread."""
        out: list[Any] = []
        done = threading.Event()
        with self._lock:   # queued before any stop's end marker, so the thread runs it first
            inline = self._stopped
            if not inline:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._thread.start()
                self._jobs.put((fn, out, done))
        if inline:
            return fn()
        done.wait()
        if len(out) == 2:
            raise out[1]
        return out[0]

    def stop(self) -> None:
        """End the thread (after its current call) and wait for it (unless called from it)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopped = True
            if thread is not None:
                self._jobs.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        self.lowered = _lower(self.name, self.nice, self.idle and BACKGROUND_SCHED_IDLE)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, out, done = job
            try:
                out.append(fn())
            except BaseException as exc:   # handed to the caller, who raises it
                out.extend((None, exc))
            done.set()


def _lower(name: str, nice: int, idle: bool) -> bool:
    """Lower the calling thread's OS priority (and so that of the threads it starts): nice
    ``nice``, then with ``idle`` SCHED_IDLE where Linux has it. True when at least the nice
    value took; a failure is logged and the thread runs at normal priority."""
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:   # this thread only: on Linux PRIO_PROCESS with a thread id sets that thread's nice value
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.warning("thread %s: cannot lower its priority (%s); it runs at normal priority", name, exc)
        return False
    if idle and hasattr(os, "SCHED_IDLE"):
        try:   # any thread may move itself to SCHED_IDLE, no privilege needed
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            log.warning("thread %s: cannot take SCHED_IDLE (%s); it runs at nice %d", name, exc, nice)
    return True


class Worker:
    """One daemon thread running ``run_round`` while there is work; ``name`` names the thread
    (``vecdb-<role>-<name>``) and the log records, ``role`` says what the work is."""

    def __init__(self, name: str, run_round: Callable[[], bool], *, role: str = "indexer") -> None:
        self.name = name
        self.role = role
        self._run_round = run_round
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wanted = False
        self._busy = False
        self._stopping = False
        self.failures = 0
        self.last_error: BaseException | None = None
        self._lowered = Lowered(f"vecdb-{role}-{name}-remove")
        self._idle = Lowered(f"vecdb-{role}-{name}-link", idle=True)

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: a round should return at its next step."""
        return self._stopping

    @property
    def idle(self) -> bool:
        """True while no round runs and none is asked for (read it in ``wait_for``'s test)."""
        return not self._wanted and not self._busy

    def wake(self) -> None:
        """Ask for a round soon (starting the thread on first use); no-op once stopping."""
        with self._cond:
            if self._stopping:
                return
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"vecdb-{self.role}-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def progress(self) -> None:
        """Wake threads waiting in ``wait_for`` (called by a round after each step)."""
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``ready()`` (checked after every step and round) or ``timeout`` seconds;
        returns its last value."""
        with self._cond:
            return bool(self._cond.wait_for(ready, timeout))

    def lowered(self, fn: Callable[[], T], idle: bool = False) -> T:
        """Run ``fn`` on this worker's lowered thread (see the module docstring), with ``idle``
        on its SCHED_IDLE one (see ``BACKGROUND_SCHED_IDLE``); returns its result."""
        return (self._idle if idle else self._lowered).call(fn)

    def stop(self) -> None:
        """Stop the thread after its current step and wait for it (unless called from it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._lowered.stop()
        self._idle.stop()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    self._cond.notify_all()
                    return
                self._wanted = False
                self._busy = True
            more = False
            try:
                more = self._run_round()
            except BaseException as exc:  # logged, counted, never lost; the thread lives on
                self.failures += 1
                self.last_error = exc
                log.error("%s %r: a background round failed (%s: %s)", self.role, self.name, type(exc).__name__, exc,
                          exc_info=True, extra={"event": f"{self.role}_failed", "worker": self.name})
            with self._cond:
                self._busy = False
                if more:
                    self._wanted = True
                self._cond.notify_all()
