"""A background worker: a daemon thread, started on the first wake, that runs rounds of
work while there is work, and that other threads wait on. A collection's indexer (moving
staged rows into the index, training, checkpoints) and a standalone SPANN index's
maintenance (splits, purges) each run on one.

The worker knows nothing of its owner: it calls ``run_round`` (which does a bounded amount
of work and returns True when more remains) and wakes waiters after each round and whenever
``progress`` is called. An exception escaping a round is logged with its traceback and
counted (``failures``); the worker then waits for the next wake instead of spinning.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


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

    def stop(self) -> None:
        """Stop the thread after its current step and wait for it (unless called from it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

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
