"""The replicas of one shard as the router sees them: reads spread round-robin over them and
fail over to another replica when one is down; writes go to every replica and are answered
once each of them committed (a replica that died is waited for while Ray restarts it).

Failures a replica reports on purpose (vecdb exceptions) come back as those exceptions,
unwrapped from Ray's task error; an actor that died or is restarting is the only failure
retried. A write retried on a restarted replica may find itself already applied (the
replica committed it before dying): every write the router sends is idempotent in its
effect, and the "already done" answers it may then get (``done_if``) count as success."""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ray
from ray.exceptions import RayActorError, RayTaskError

from vecdb.errors import InternalError, UnavailableError, VecdbError

#: how long a replica that failed a read is skipped by later reads (it is being restarted)
DOWN_SECONDS = 2.0


def unwrap(exc: BaseException) -> BaseException:
    """The exception a replica raised, out of Ray's task-error wrapper."""
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def _call(actor: Any, method: str, args: tuple[Any, ...]) -> Any:
    return getattr(actor, method).remote(*args)


@dataclass
class PendingRead:
    """A read sent to one replica; ``result()`` waits, failing over to the others."""

    group: "ShardGroup"
    method: str
    args: tuple[Any, ...]
    replica: int
    ref: Any
    tried: set[int] = field(default_factory=set)

    def result(self) -> Any:
        group = self.group
        deadline = time.monotonic() + group.wait_seconds
        pause = 0.05
        while True:
            try:
                return ray.get(self.ref)
            except RayActorError:
                group.mark_down(self.replica)
                group.failovers += 1
                self.tried.add(self.replica)
            except RayTaskError as exc:
                raise unwrap(exc) from None
            left = [r for r in group.order() if r not in self.tried]
            if not left:   # every replica failed: wait for Ray to restart one
                if time.monotonic() > deadline:
                    raise UnavailableError(f"no replica of shard {group.shard} answered within "
                                           f"{group.wait_seconds:g} s") from None
                time.sleep(pause)
                pause = min(1.0, pause * 2)
                self.tried.clear()
                left = group.order()
            self.replica = left[0]
            self.ref = _call(group.actors[self.replica], self.method, self.args)


@dataclass
class PendingWrite:
    """A write sent to every replica of a shard; ``result()`` waits for all of them."""

    group: "ShardGroup"
    method: str
    args: tuple[Any, ...]
    refs: list[Any]
    done_if: tuple[type[VecdbError], ...]

    def result(self) -> Any:
        """The first replica's answer once every replica committed; the replicas' exception
        when they all refused (same state, same answer: nothing was written)."""
        outcomes = [self._one(r, ref) for r, ref in enumerate(self.refs)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return next((o[1] for o in outcomes if not o[0]), outcomes[0][1])
        if len(errors) == len(outcomes):
            raise errors[0]
        raise InternalError(f"replicas of shard {self.group.shard} disagree on {self.method}: "
                            f"{type(errors[0]).__name__}: {errors[0]}")

    def all_results(self) -> list[Any]:
        """Every replica's answer, in replica order (the first exception raised)."""
        outcomes = [self._one(r, ref) for r, ref in enumerate(self.refs)]
        for o in outcomes:
            if isinstance(o, BaseException):
                raise o
        return [o[1] for o in outcomes]

    def _one(self, replica: int, ref: Any) -> Any:
        """(retried, answer) of one replica, or the exception it raised."""
        deadline = time.monotonic() + self.group.wait_seconds
        retried = False
        pause = 0.05
        while True:
            try:
                return retried, ray.get(ref)
            except RayActorError:
                if time.monotonic() > deadline:
                    return UnavailableError(f"replica {replica} of shard {self.group.shard} did not come back "
                                            f"within {self.group.wait_seconds:g} s")
                time.sleep(pause)
                pause = min(1.0, pause * 2)
                retried = True
                ref = _call(self.group.actors[replica], self.method, self.args)
            except RayTaskError as exc:
                cause = unwrap(exc)
                if retried and isinstance(cause, self.done_if):
                    return retried, None
                return cause


class ShardGroup:
    """The replicas of shard ``shard`` (actor handles), with the lock that orders its writes."""

    def __init__(self, shard: int, actors: Sequence[Any], wait_seconds: float = 120.0) -> None:
        self.shard = shard
        self.actors = list(actors)
        self.wait_seconds = wait_seconds
        self.lock = threading.Lock()   # one write at a time: every replica applies writes in one order
        self._turn = itertools.count()
        self._down_until = [0.0] * len(self.actors)
        self.failovers = 0   # reads sent again to another replica because one was down

    def order(self) -> list[int]:
        """Replicas to try for the next read: round-robin, replicas lately down last."""
        n = len(self.actors)
        start = next(self._turn) % n
        ring = [(start + i) % n for i in range(n)]
        now = time.monotonic()
        return [r for r in ring if self._down_until[r] <= now] + [r for r in ring if self._down_until[r] > now]

    def mark_down(self, replica: int) -> None:
        self._down_until[replica] = time.monotonic() + DOWN_SECONDS

    def read(self, method: str, *args: Any) -> PendingRead:
        """Send a read to one replica (answer with ``.result()``)."""
        replica = self.order()[0]
        return PendingRead(self, method, args, replica, _call(self.actors[replica], method, args))

    def write(self, method: str, *args: Any, done_if: tuple[type[VecdbError], ...] = ()) -> PendingWrite:
        """Send a write to every replica (answer with ``.result()``); callers hold ``lock``."""
        return PendingWrite(self, method, args, [_call(a, method, args) for a in self.actors], done_if)

    def everyone(self, method: str, *args: Any) -> PendingWrite:
        """A call every replica answers (e.g. wait_indexed; ``.all_results()``), no lock needed."""
        return PendingWrite(self, method, args, [_call(a, method, args) for a in self.actors], ())

