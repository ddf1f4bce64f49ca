"""The cluster's writer: one named Ray actor per cluster (``ClusterWriter``) through which
every router's writes go, one call per request; reads go from each router to the replicas.

The writer holds what ordering writes needs: the epoch it fenced the replicas with (a
replica refuses writes of a lower epoch, so a writer that was replaced can never change a
replica again), each shard's write numbering and lock, the catalog of collections, the
rebalance in progress, and the catch-up of replicas left behind: ``writes.Writes``, run in
the actor.

Its acknowledgement (``Ack``) carries every shard's write numbers after the write, which the
router takes before returning (its next read goes to a replica holding the write: read your
writes) and the placement generation (the router reads the record again when it changed).

Lifetime: the actor is detached, like the replicas (a router that dies leaves it serving
the others), restarted by Ray when its process dies (it recovers as on a first start: it
fences the replicas with a higher epoch, takes their write numbers, copies replicas a crash
left behind, completes interrupted catalog changes and rebalances), started again by name
by the next router that needs it when it is gone for good, and stopped by the last router
to close (``routers.RouterMark``), with the replicas. A call in flight when it dies fails:
an upsert (idempotent) is sent again once the writer is back; any other write raises
UnavailableError (it may or may not have been applied)."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, NamedTuple

import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from vecdb.cluster.replicas import unwrap
from vecdb.errors import UnavailableError, VecdbError

#: Ray options of the writer actor: no CPU reserved, restarted for ever by Ray (it recovers
#: from the placement record and the replicas), calls never replayed by Ray itself (the
#: router decides), threaded (writes to different shards, and a rebalance step, at once),
#: detached (it outlives the router that started it; the last router stops it)
WRITER_OPTIONS = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0, "max_concurrency": 32,
                  "lifetime": "detached"}
#: the only write a router sends again after the writer died during it (applying it twice
#: leaves the same points)
IDEMPOTENT = frozenset({"upsert"})
#: how Ray words the failure of a call made while the actor restarts (it never received it)
NOT_SENT = "The actor is restarting"


class Ack(NamedTuple):
    """A write's answer and the writer's view after it: each shard's (latest write, each
    replica's last write), the placement generation, and the error when the write failed
    (a partial batch may have committed on some shards: the router takes the numbers too)."""

    answer: Any
    numbers: dict[int, tuple[int, tuple[int, ...]]]
    generation: int
    error: BaseException | None = None


class ClusterWriter:
    """The writer actor (see the module docs); ``WriterClient`` is how a router uses it."""

    def __init__(self, root: str, shards: int | None, replicas: int | None, wait_seconds: float,
                 db_options: dict[str, Any]) -> None:
        from vecdb.cluster.writes import Writes
        self.writes = Writes(root, shards, replicas, wait_seconds, db_options)
        self._holding = threading.Event()

    def ready(self) -> Ack:
        """The writer's view (called by a connecting router once the writer is up)."""
        return self._ack(None)

    def write(self, op: str, args: tuple[Any, ...]) -> Ack:
        """Run write ``op`` (``writes.OPS``) with arguments the router validated."""
        try:
            answer = self.writes.apply(op, args)
        except VecdbError as exc:
            return self._ack(None, exc)
        return self._ack(answer)

    def close(self) -> None:
        """Stop writing (the last router closes; the replicas are stopped by it)."""
        self.writes.close()

    def hold_between_replicas(self) -> None:
        """Fault injection for the crash tests: from now on the next write to a shard stops
        after its first replica committed, before the others are sent it, until the writer
        is killed (``holding()`` says when one is held there)."""
        def hold(shard: int, n: int) -> None:
            self._holding.set()
            threading.Event().wait(3600)

        for group in self.writes.shards.groups_now():
            group.after_first_commit = hold

    def holding(self) -> bool:
        return self._holding.is_set()

    def _ack(self, answer: Any, error: BaseException | None = None) -> Ack:
        state = self.writes.shards.layout
        return Ack(answer, {s: g.numbers() for s, g in state.groups.items()}, state.placement.generation, error)


class WriterClient:
    """A router's handle on its cluster's writer: started (or found) by name, called once
    per write, started again by name when it is gone for good."""

    def __init__(self, name: str, namespace: str, args: tuple[Any, ...], wait_seconds: float) -> None:
        self.name, self.namespace, self._args, self._wait = name, namespace, args, wait_seconds
        self._lock = threading.Lock()
        self._actor: Any = None
        self._suspect = False   # a call failed: the next waits until the writer answers ``ready``

    def handle(self) -> Any:
        """The writer actor (started under its name when none runs)."""
        with self._lock:
            if self._actor is None:
                cls = ray.remote(ClusterWriter).options(name=self.name, namespace=self.namespace, get_if_exists=True,
                                                        **WRITER_OPTIONS)
                self._actor = cls.remote(*self._args)
            return self._actor

    def call(self, method: str, *args: Any, retry: bool = False) -> Any:
        """``method(*args)`` on the writer; the writer's own exceptions as they are. A call
        the writer never received (it was restarting) is sent again once it is back; one it
        may have been running when it died is sent again only when ``retry`` (idempotent),
        else UnavailableError. After a failure, the next call first waits for the writer."""
        deadline = time.monotonic() + self._wait
        pause = 0.05
        while True:
            actor = self.handle()
            try:
                if self._suspect:   # it failed lately: sent only once it answers again
                    ray.get(actor.ready.remote())
                    self._suspect = False
                return ray.get(getattr(actor, method).remote(*args))
            except RayTaskError as exc:
                raise unwrap(exc) from None
            except RayActorError as exc:
                if getattr(exc, "actor_init_failed", False):
                    self._forget(actor)
                    raise UnavailableError(f"the cluster's writer {self.name} failed to start: "
                                           f"{getattr(exc, 'error_msg', exc)}") from None
                if isinstance(exc, ActorDiedError):
                    self._forget(actor)   # gone for good: started again by name
                unsent = self._suspect or NOT_SENT in str(exc)
                self._suspect = True
                if (not unsent and not retry) or time.monotonic() > deadline:
                    raise UnavailableError(f"the cluster's writer stopped during this call ({method}); it may or "
                                           f"may not have been applied; the writer is restarted for the next "
                                           f"one") from None
                time.sleep(pause)
                pause = min(1.0, pause * 2)

    def stop(self) -> None:
        """Stop the writer for good (the last router closes)."""
        try:
            actor = ray.get_actor(self.name, namespace=self.namespace)
        except ValueError:   # none runs
            return
        with contextlib.suppress(Exception):
            ray.get(actor.close.remote(), timeout=self._wait)
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
        with self._lock:
            self._actor = None

    def _forget(self, actor: Any) -> None:
        with self._lock:
            if self._actor is actor:
                self._actor = None
