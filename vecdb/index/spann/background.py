"""The background thread of a standalone SPANN index: it runs the index's ``maintain`` step
(a queued split with its reassignment, or a chunk of the tombstone purge, each in one write
transaction) while steps report more work, and sleeps until woken. It holds the index only
weakly, so an index nobody references is still collected (its finalizer stops the thread)."""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Callable

log = logging.getLogger(__name__)


class Background:
    """A daemon thread calling ``owner.maintain()`` (True: more is due) while woken."""

    def __init__(self, owner: Any, name: str) -> None:
        self._ref = weakref.ref(owner)
        self._name = name
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wanted = False
        self._busy = False
        self._stopping = False
        self.failures = 0
        self.last_error: BaseException | None = None

    def wake(self) -> None:
        """Ask for steps soon (starting the thread on first use); a no-op once stopped."""
        with self._cond:
            if self._stopping:
                return
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"vecdb-spann-{self._name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop after the current step and wait for the thread (unless called from it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def wait_idle(self, idle: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until no step runs or is wanted (or the thread stopped, or ``timeout`` seconds
        passed); returns ``idle()`` then (False also when steps stopped making progress)."""
        def done() -> bool:
            return self._stopping or (not self._wanted and not self._busy)

        with self._cond:
            quiet = bool(self._cond.wait_for(done, timeout))
            return quiet and not self._stopping and idle()

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
            owner = self._ref()
            try:
                if owner is not None:
                    more = bool(owner.maintain())
            except BaseException as exc:  # logged and counted; the next wake tries again
                self.failures += 1
                self.last_error = exc
                log.error("SPANN %s: a background step failed (%s: %s)", self._name, type(exc).__name__, exc,
                          exc_info=True, extra={"event": "spann_background_failed"})
            finally:
                owner = None
            with self._cond:
                self._busy = False
                if more:
                    self._wanted = True
                if self._ref() is None:
                    self._stopping = True
                self._cond.notify_all()
