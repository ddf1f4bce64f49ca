"""The routers of a cluster: any number of processes that called ``vecdb.cluster.connect``
on one cluster (e.g. several ``vecdb serve --cluster`` front ends), each reading the
replicas directly and sending its writes to the cluster's one writer (``writer``).

Consistency is per session: a router's own writes are visible to its next read (the
writer's acknowledgement carries the shards' new write numbers, which the router takes
before returning: ``ShardGroup.note``), and other routers' writes once its ``ReadRefresher``
asked the replicas their write numbers again (every ``READ_REFRESH_SECONDS``; it also
reads the placement record again when it changed).

Each open router also keeps a mark in the cluster root (``RouterMark``: a file it holds an
flock on): the last router to close stops the writer and the replicas, any other leaves
them serving the routers still open (a mark whose lock can be taken is a dead router's:
the kernel releases the lock when its process dies). Routers on other machines see the
marks only when the root is shared with them."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError

if TYPE_CHECKING:
    from vecdb.cluster.replicas import ShardGroup

log = logging.getLogger(__name__)

#: how often a reading router asks the replicas their write numbers and checks the placement
READ_REFRESH_SECONDS = 0.25
#: how long a probe of a reading router waits for one replica
PROBE_SECONDS = 1.0
#: the folder of the cluster root holding the open routers' marks
ROUTERS = "routers"


def replica_numbers(group: "ShardGroup", probe_seconds: float = PROBE_SECONDS) -> dict[int, int]:
    """The write number of each replica of ``group`` that answers within ``probe_seconds``.
    A replica whose actor is dead for good is looked up again by its name (the writer starts
    it again when it catches it up): answers come from the new one next time."""
    refs = {r: a.ping.remote() for r, a in enumerate(group.actors)}
    out: dict[int, int] = {}
    for r, ref in refs.items():
        try:
            out[r] = int(ray.get(ref, timeout=probe_seconds)[3])
        except ActorDiedError:
            now = time.monotonic()
            if group.revive is not None and now >= group.revive_after[r]:
                group.revive_after[r] = now + PROBE_SECONDS
                with contextlib.suppress(Exception):
                    group.actors[r] = group.revive(r)
        except (GetTimeoutError, RayActorError, RayTaskError):   # down, or closing
            continue
    return out


class ReadRefresher:
    """A daemon thread of a router: calls ``refresh`` every ``READ_REFRESH_SECONDS`` (new
    replica numbers, a changed placement record); ``wait_round`` waits for a whole round."""

    def __init__(self, refresh: Callable[[], None]) -> None:
        self._refresh = refresh
        self._stop = threading.Event()
        self._rounds = threading.Condition()
        self.started = self.finished = 0   # rounds begun, rounds ended
        self._thread = threading.Thread(target=self._run, name="vecdb-read-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._rounds:
            self._rounds.notify_all()

    def wait_round(self, timeout: float | None = None) -> bool:
        """Wait until a round that began after this call has ended: every write other
        routers had acknowledged before it is visible to this router's reads then. False
        when ``timeout`` seconds passed first, or the refresher stopped."""
        with self._rounds:
            target = self.started + 1
            return self._rounds.wait_for(lambda: self.finished >= target or self._stop.is_set(), timeout) \
                and self.finished >= target

    def _run(self) -> None:
        while not self._stop.wait(READ_REFRESH_SECONDS):
            with self._rounds:
                self.started += 1
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("refreshing a router's view of the cluster failed")
            with self._rounds:
                self.finished += 1
                self._rounds.notify_all()


class RouterMark:
    """This router's mark in the cluster root (see the module docs): ``routers/<token>``,
    locked (flock) while the router is open. Made under a hidden name and renamed once
    locked, so a router counting the others never takes a mark being made for a dead one."""

    def __init__(self, root: Path, token: str) -> None:
        self.folder = Path(root) / ROUTERS
        self.folder.mkdir(exist_ok=True)
        self.path = self.folder / token
        making = self.folder / f".{token}"
        self._fd: int | None = os.open(making, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(making, self.path)
        except BaseException:
            self.close()
            raise

    def others(self) -> int:
        """How many other routers of the cluster are open; marks of dead ones are removed."""
        alive = 0
        for entry in os.scandir(self.folder):
            if entry.name.startswith(".") or entry.path == str(self.path):
                continue
            try:
                fd = os.open(entry.path, os.O_RDWR)
            except FileNotFoundError:   # that router just closed
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive += 1
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            finally:
                os.close(fd)
        return alive

    def close(self) -> None:
        """Remove the mark (closing twice is harmless)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        for path in (self.path, self.folder / f".{self.path.name}"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
