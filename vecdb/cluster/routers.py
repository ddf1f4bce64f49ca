"""Which router writes a cluster: any number of routers (processes that called
``vecdb.cluster.connect`` on one cluster) read at once, one of them writes.

The writer holds the cluster's lease: a named Ray actor owned by the writing router's
process (not detached), so Ray stops it, and frees its name, when that process dies. A
router that finds the lease taken reads only: its writes are refused with
FailedPreconditionError and its ``ReadRefresher`` keeps its view of the replicas' write
numbers (reads go to those holding their shard's latest write) and of the placement record
up to date. When it is asked to write and the lease is free (the writer closed or died) it
takes the lease and becomes the writer: it fences every replica with an epoch above any
they hold (``ShardReplica.fence``; a replica refuses writes of lower epochs, so a router
that lost the lease can never change a replica again), then catches the replicas up as a
router does on connect.

Each open router also keeps a mark in the cluster root (``RouterMark``: a file it holds an
flock on): the last router to close stops the replicas, any other leaves them serving the
routers still open (a mark whose lock can be taken is a dead router's: the kernel releases
the lock when its process dies). Routers on other machines see the marks only when the
root is shared with them."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from vecdb.errors import UnavailableError

if TYPE_CHECKING:
    from vecdb.cluster.replicas import ShardGroup

log = logging.getLogger(__name__)

#: how often a reading router asks the replicas their write numbers and checks the placement
READ_REFRESH_SECONDS = 0.25
#: how long a probe of a reading router waits for one replica
PROBE_SECONDS = 1.0
#: the folder of the cluster root holding the open routers' marks
ROUTERS = "routers"


class WriterLease:
    """The lease actor: which router (a random token, and where it runs) writes the cluster."""

    def __init__(self, token: str, where: str) -> None:
        self.token, self.where = token, where

    def holder(self) -> tuple[str, str]:
        return self.token, self.where


def describe_self() -> str:
    """Where this router runs (host and process id), for the refusal message of other routers."""
    return f"process {os.getpid()} on {socket.gethostname()}"


def take_lease(name: str, namespace: str, token: str, wait_seconds: float) -> tuple[Any | None, str]:
    """Take the lease ``name`` for ``token`` when it is free: (its actor, ``describe_self()``);
    (None, where its holder runs) when another router holds it. A lease whose holder just died
    is waited for (Ray frees its name) up to ``wait_seconds``."""
    cls = ray.remote(WriterLease)
    me = describe_self()
    deadline = time.monotonic() + wait_seconds
    while True:
        actor = cls.options(name=name, namespace=namespace, get_if_exists=True, num_cpus=0, max_restarts=0,
                            lifetime="non_detached").remote(token, me)
        try:
            held, where = ray.get(actor.holder.remote())
        except RayActorError:   # its holder died: Ray is removing it
            if time.monotonic() > deadline:
                raise UnavailableError(f"the cluster's writer lease {name} stayed held by a dead router "
                                       f"for {wait_seconds:g} s") from None
            time.sleep(0.1)
            continue
        return (actor, me) if held == token else (None, where)


def release_lease(actor: Any) -> None:
    """Give the lease up (the writing router closes): another router may take it."""
    ray.kill(actor, no_restart=True)


def replica_numbers(group: "ShardGroup", probe_seconds: float = PROBE_SECONDS) -> dict[int, int]:
    """The write number of each replica of ``group`` that answers within ``probe_seconds``."""
    refs = {r: a.ping.remote() for r, a in enumerate(group.actors)}
    out: dict[int, int] = {}
    for r, ref in refs.items():
        try:
            out[r] = int(ray.get(ref, timeout=probe_seconds)[3])
        except (GetTimeoutError, RayActorError, RayTaskError):   # down, or closed by the writer leaving
            continue
    return out


class ReadRefresher:
    """A daemon thread of a router: while it only reads, calls ``refresh`` every
    ``READ_REFRESH_SECONDS`` (new replica numbers, a changed placement record)."""

    def __init__(self, reading: Callable[[], bool], refresh: Callable[[], None]) -> None:
        self._reading, self._refresh = reading, refresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vecdb-read-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(READ_REFRESH_SECONDS):
            if not self._reading():
                continue
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("refreshing a reading router's view of the cluster failed")


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
