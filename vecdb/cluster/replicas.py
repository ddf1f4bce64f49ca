"""The replicas of one shard as the writer or a router sees them: reads spread round-robin over the
replicas that hold the shard's latest write and fail over between them; writes are numbered
(the shard's write number) and go to those replicas, answered once each of them committed.

The writer knows each replica's number (``applied``): a replica that missed a write (down
longer than ``wait_seconds``, or it refused what the others committed) is behind, gets no
reads and no writes, and is brought back by the writer's catch-up (``catchup``). A write
is acknowledged once every current replica committed it, at least one; if none did, its
number is not used and the replicas' exception is the answer.

Failures a replica reports on purpose (vecdb exceptions) come back as those exceptions,
unwrapped from Ray's task error; an actor that died or is restarting is the only failure
retried. A write sent again to a restarted replica that had committed it is recognised by
its number and not applied twice.

Only the cluster's writer numbers writes (``epoch`` set, the number it fenced the replicas
with: ``vecdb.cluster.writer``); a router's groups (``epoch`` None) refuse writes and take
their replicas' numbers from the writer's acknowledgements (``note``) and from the router's
periodic ``refresh``."""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from vecdb.cluster.shard import FencedError, Outcome
from vecdb.errors import FailedPreconditionError, InternalError, UnavailableError

#: how long a replica that failed a read is tried last by later reads (it is being restarted)
DOWN_SECONDS = 2.0
#: a read not answered within this is sent to another current replica too (calls to a
#: replica Ray is restarting wait until it is back; a read has no effect, so a copy is harmless)
HEDGE_SECONDS = 5.0
#: the writer keeps each shard's latest writes, at most this many and about this many bytes,
#: to replay them to a replica that missed only those (instead of copying the shard)
LOG_WRITES = 1024
LOG_BYTES = 64 << 20


def unwrap(exc: BaseException) -> BaseException:
    """The exception a replica raised, out of Ray's task-error wrapper."""
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def _call(actor: Any, method: str, args: tuple[Any, ...]) -> Any:
    return getattr(actor, method).remote(*args)


def _backoff(pause: float) -> float:
    time.sleep(pause)
    return min(1.0, pause * 2)


class PendingRead:
    """A read sent to one replica; ``result()`` waits, failing over to the other current
    replicas when it died, and asking another one too when it has not answered within
    ``HEDGE_SECONDS`` (it may be restarting: calls to it wait until it is back)."""

    def __init__(self, group: "ShardGroup", method: str, args: tuple[Any, ...], replica: int) -> None:
        self.group, self.method, self.args = group, method, args
        self.sent: dict[int, Any] = {replica: _call(group.actors[replica], method, args)}
        self.tried: set[int] = set()

    def result(self) -> Any:
        group = self.group
        deadline = time.monotonic() + group.wait_seconds
        pause = 0.05
        while True:
            by_ref = {ref: r for r, ref in self.sent.items()}
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=HEDGE_SECONDS) if by_ref else ([], [])
            for ref in ready:
                replica = by_ref[ref]
                try:
                    return ray.get(ref)
                except RayActorError:
                    group.mark_down(replica)
                    group.failovers += 1
                    self.tried.add(replica)
                    del self.sent[replica]
                except RayTaskError as exc:
                    raise unwrap(exc) from None
            left = [r for r in group.order() if r not in self.tried and r not in self.sent]
            if left:
                self.sent[left[0]] = _call(group.actors[left[0]], self.method, self.args)
                continue
            if time.monotonic() > deadline:
                raise UnavailableError(f"no replica of shard {group.shard} answered within "
                                       f"{group.wait_seconds:g} s") from None
            if not self.sent:   # every current replica failed: wait for Ray to restart one
                if group.listed is not None and not group.listed():   # a rebalance removed the shard
                    raise UnavailableError(f"shard {group.shard} was removed from the cluster") from None
                pause = _backoff(pause)
                self.tried.clear()


class PendingWrite:
    """Write number ``n`` sent to the current replicas of a shard; ``result()`` waits for
    them and records who holds it (the caller holds the shard's write lock throughout)."""

    def __init__(self, group: "ShardGroup", n: int, method: str, args: tuple[Any, ...], epoch: int) -> None:
        self.group, self.n, self.method, self.args, self.epoch = group, n, method, args, epoch
        self.targets = group.current()
        if not self.targets:
            raise UnavailableError(f"no replica of shard {group.shard} holds its latest write (all are being "
                                   f"caught up)")
        self.refs: dict[int, Any] = {}
        self.done: list[int] = []   # the replicas that committed it (once ``result()`` returned)
        self.crashed: list[BaseException] = []   # errors other than a vecdb refusal (state not known)
        hold = group.after_first_commit
        if hold is not None and len(self.targets) > 1:   # first one replica, then the others
            first = self.targets[0]
            self.refs[first] = self._send(first)
            self.early = {first: self._one(first, self.refs[first])}
            if self.early[first].applied == n:
                hold(group.shard, n)
        else:
            self.early = {}
        for r in self.targets:
            if r not in self.refs:
                self.refs[r] = self._send(r)

    def _send(self, replica: int) -> Any:
        return self.group.actors[replica].apply.remote(self.n, self.method, self.args, self.epoch)

    def result(self) -> Any:
        """The write's answer once every current replica committed it (replicas that did not
        are behind from now on); the replicas' exception when none committed it."""
        group, n = self.group, self.n
        outcomes = {r: self.early.get(r) or self._one(r, ref) for r, ref in self.refs.items()}
        fenced = [o.error for o in outcomes.values() if isinstance(o.error, FencedError)]
        if fenced:   # another writer writes now: never acknowledged (what it finds, it keeps or copies)
            group.epoch = None
            raise fenced[0]
        done = [r for r, o in outcomes.items() if o.applied == n]
        if not done:
            refused = [o.error for o in outcomes.values() if o.error is not None and o.applied == n - 1]
            for r, o in outcomes.items():   # a replica that did not refuse (down, or behind) is behind
                if o.error is None or o.applied != n - 1:
                    group.behind(r)
            if refused:
                raise refused[0]
            if self.crashed:
                raise self.crashed[0]
            raise UnavailableError(f"no replica of shard {group.shard} committed {self.method} "
                                   f"within {group.wait_seconds:g} s")
        self.done = done
        group.committed(n, done, self.method, self.args)
        for r in outcomes:
            if r not in done:
                group.behind(r)
        answers = [outcomes[r] for r in done]
        fresh = [o for o in answers if not o.repeated]
        if not fresh and self.method == "call" and self.args[1] == "delete":
            return 0   # every replica had committed it before a restart: its count is lost
        return (fresh or answers)[0].answer

    def _one(self, replica: int, ref: Any) -> Outcome:
        """Replica ``replica``'s outcome; ``Outcome(-1)`` when it stayed down past the wait."""
        deadline = time.monotonic() + self.group.wait_seconds
        pause = 0.05
        while True:
            try:
                outcome: Outcome = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
                return outcome
            except GetTimeoutError:   # restarting all this time (calls to it wait): it is behind
                return Outcome(-1)
            except RayActorError:
                if time.monotonic() > deadline:
                    return Outcome(-1)
                pause = _backoff(pause)
                ref = self._send(replica)
            except RayTaskError as exc:   # not a refusal (those are outcomes): its state is not known
                self.crashed.append(unwrap(exc))
                return Outcome(-1)


@dataclass
class PendingAll:
    """A call every current replica answers (e.g. wait_indexed, train), not numbered."""

    group: "ShardGroup"
    refs: list[Any]

    def all_results(self) -> list[Any]:
        """Every replica's answer (the first exception raised)."""
        out = []
        for ref in self.refs:
            try:
                out.append(ray.get(ref))
            except RayTaskError as exc:
                raise unwrap(exc) from None
            except RayActorError:
                raise UnavailableError(f"a replica of shard {self.group.shard} went down during the call") from None
        return out

    def result(self) -> Any:
        return self.all_results()[0]


class Logged(NamedTuple):
    n: int
    method: str
    args: tuple[Any, ...]
    size: int


class WriteLog:
    """The latest committed writes of one shard, bounded by ``LOG_WRITES`` and ``LOG_BYTES``."""

    def __init__(self) -> None:
        self._items: deque[Logged] = deque()
        self._bytes = 0

    def add(self, n: int, method: str, args: tuple[Any, ...]) -> None:
        if self._items and self._items[-1].n != n - 1:
            self._items.clear()   # a gap (the shard's number was taken from a replica): start again
            self._bytes = 0
        item = Logged(n, method, args, _size(args))
        self._items.append(item)
        self._bytes += item.size
        while len(self._items) > LOG_WRITES or (self._bytes > LOG_BYTES and len(self._items) > 1):
            self._bytes -= self._items.popleft().size

    def between(self, after: int, last: int) -> list[Logged] | None:
        """Writes ``after + 1 .. last`` in order, or None when the log does not hold them all."""
        items = self._items
        if not items or items[0].n > after + 1 or items[-1].n != last:
            return None
        return [w for w in items if w.n > after]


def _size(obj: Any) -> int:
    """About how many bytes ``obj`` (a write's arguments) holds."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (tuple, list)):   # long lists (ids, payloads) estimated from their first 64
        head = obj[:64]
        return 8 * len(obj) + (sum(_size(o) for o in head) * len(obj)) // max(1, len(head))
    vectors = getattr(obj, "vectors", None)   # a PointBatch
    if isinstance(vectors, np.ndarray):
        return int(vectors.nbytes) + 64 * len(obj)
    return 64


class ShardGroup:
    """The replicas of shard ``shard`` (actor handles), the number of its latest write and
    of each replica's, and the lock that orders its writes."""

    def __init__(self, shard: int, actors: Sequence[Any], applied: Sequence[int], wait_seconds: float = 120.0,
                 on_behind: Callable[[], None] | None = None, revive: Callable[[int], Any] | None = None,
                 epoch: int | None = None, listed: Callable[[], bool] | None = None) -> None:
        self.shard = shard
        #: whether the placement still lists this shard, asked once every replica
        #: failed a read (a rebalance that removed the shard stops its replicas: stop waiting)
        self.listed = listed
        self.epoch = epoch   # the writer's epoch; None: a router's view (reads only)
        self.actors = list(actors)
        self.wait_seconds = wait_seconds
        self.lock = threading.Lock()   # one write at a time: every replica applies writes in one order
        #: (the shard's latest write, each replica's last write; -1: not known, behind), replaced
        #: whole so that a read never sees one updated without the other
        self._numbers: tuple[int, tuple[int, ...]] = (max(applied), tuple(applied))
        self.on_behind = on_behind
        self.log = WriteLog()
        self.revive = revive   # starts replica r's actor again (Ray gave up on it, or it was killed for good)
        self.revive_after = [0.0] * len(self.actors)   # (monotonic) not started again before
        #: called with (shard, write number) once the first replica committed a write, before
        #: the others are sent it (then writes go to one replica first); None: all at once
        self.after_first_commit: Callable[[int, int], None] | None = None
        self._turn = itertools.count()
        self._down_until = [0.0] * len(self.actors)
        self.failovers = 0   # reads sent again to another replica because one was down
        self._view_lock = threading.Lock()   # a router's view: acknowledgements against refreshes
        self.noted = 0   # acknowledgements taken (``note``): a refresh begun before one is stale

    @property
    def seq(self) -> int:
        """The shard's latest write."""
        return self._numbers[0]

    @seq.setter
    def seq(self, n: int) -> None:
        self._numbers = (n, self._numbers[1])

    @property
    def applied(self) -> tuple[int, ...]:
        """Each replica's last write (-1: not known, behind)."""
        return self._numbers[1]

    @applied.setter
    def applied(self, values: Sequence[int]) -> None:
        self._numbers = (self._numbers[0], tuple(values))

    def set_numbers(self, seq: int, applied: Sequence[int]) -> None:
        self._numbers = (seq, tuple(applied))

    def set_applied(self, replica: int, n: int) -> None:
        applied = list(self._numbers[1])
        applied[replica] = n
        self.applied = applied

    def current(self) -> list[int]:
        """The replicas holding the shard's latest write."""
        seq, applied = self._numbers
        return [r for r, a in enumerate(applied) if a == seq]

    def lagging(self) -> list[int]:
        seq, applied = self._numbers
        return [r for r, a in enumerate(applied) if a != seq]

    def committed(self, n: int, replicas: list[int], method: str, args: tuple[Any, ...]) -> None:
        applied = list(self._numbers[1])
        for r in replicas:
            applied[r] = n
        self._numbers = (n, tuple(applied))
        self.log.add(n, method, args)

    def behind(self, replica: int) -> None:
        """``replica`` missed a write or its state is not known: no reads, no writes until caught up."""
        self.set_applied(replica, -1)
        if self.on_behind is not None:
            self.on_behind()

    def refresh(self, numbers: dict[int, int], since: int) -> None:
        """A router's view of the replicas' write numbers (``numbers``: those that answered;
        the others keep their last known): reads go to those holding the highest. Dropped
        when an acknowledgement was noted since the probes were sent (``since``: ``noted``
        then): their numbers may predate a write the router returned."""
        with self._view_lock:
            if self.noted != since:
                return
            applied = list(self._numbers[1])
            for r, n in numbers.items():
                applied[r] = n
            self._numbers = (max(applied), tuple(applied))

    def note(self, seq: int, applied: Sequence[int]) -> None:
        """A router takes the writer's numbers of this shard from a write's acknowledgement
        (its latest write ``seq``, each replica's): its next read goes to a replica holding
        that write. Older news than its view (a refresh saw a later write) is ignored."""
        with self._view_lock:
            if seq < self.seq:
                return
            self._numbers = (seq, tuple(applied))
            self.noted += 1

    def numbers(self) -> tuple[int, tuple[int, ...]]:
        """(the shard's latest write, each replica's last write; -1: behind), as the writer knows them."""
        return self._numbers

    def caught_up(self, replica: int, n: int) -> None:
        if n != self.seq:
            raise InternalError(f"replica {replica} of shard {self.shard} caught up to write {n}, not {self.seq}")
        self.set_applied(replica, n)

    def order(self) -> list[int]:
        """Current replicas to try for the next read: round-robin, replicas lately down last."""
        live = self.current()
        n = len(live)
        if not n:
            return []
        start = next(self._turn) % n
        ring = [live[(start + i) % n] for i in range(n)]
        now = time.monotonic()
        return [r for r in ring if self._down_until[r] <= now] + [r for r in ring if self._down_until[r] > now]

    def mark_down(self, replica: int) -> None:
        self._down_until[replica] = time.monotonic() + DOWN_SECONDS

    def read(self, method: str, *args: Any) -> PendingRead:
        """Send a read to one current replica (answer with ``.result()``)."""
        order = self.order()
        if not order:
            raise UnavailableError(f"no replica of shard {self.shard} holds its latest write")
        return PendingRead(self, method, args, order[0])

    def write(self, method: str, *args: Any) -> PendingWrite:
        """Send the shard's next write to its current replicas (answer with ``.result()``,
        before the next write); callers hold ``lock``. FailedPreconditionError on a reading
        router's group."""
        epoch = self.epoch
        if epoch is None:
            raise FailedPreconditionError(f"shard {self.shard}: only the cluster's writer writes its replicas (this "
                                          f"one was fenced, or is a router's view)")
        return PendingWrite(self, self.seq + 1, method, args, epoch)

    def everyone(self, method: str, *args: Any) -> PendingAll:
        """A call every current replica answers (``.all_results()``), not a numbered write."""
        return PendingAll(self, [_call(self.actors[r], method, args) for r in self.current()])
