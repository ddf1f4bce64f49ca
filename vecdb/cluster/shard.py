"""One replica of one shard: a Ray actor owning an embedded vecdb database in its own
directory, which holds this shard's part of every collection of the cluster.

The actor is threaded (several calls at once; the embedded database is thread-safe) and
restartable: Ray restarts a dead replica (``max_restarts``), and ``__init__`` reopens the
same directory, so everything the replica committed is there again (recovery replays the
op log). Calls go through ``ShardReplica`` methods only; exceptions travel back as the
vecdb exception classes the embedded database raised.

Every write the writer sends carries the shard's write number; the replica applies write
n only on top of write n - 1 and records n (the database mark ``applied``) in the same LMDB
transaction as the write, so after a crash its number says exactly which state it holds.
A replica that fell behind is made equal to a current one by ``copy_from``.

Writes also carry the writer's epoch (``fence``): a replica records the highest epoch it
was given and refuses writes of a lower one, so a writer that was replaced
(``vecdb.cluster.writer``) can never again change a replica the new one uses."""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import ray

from vecdb.api import CollectionInfo, GetResult, QueryResult, SearchRequest
from vecdb.cluster.placement import HashRing
from vecdb.cluster.points import PointBatch
from vecdb.cluster.transfer import export_points, import_points, present_keys
from vecdb.database import Database
from vecdb.errors import FailedPreconditionError, IdNotFoundError, InvalidArgumentError, VecdbError
from vecdb.storage import keys as K

#: collection methods a router may call on a replica by name (everything else is explicit)
COLLECTION_CALLS = frozenset({"upsert", "delete", "count", "create_tenant", "drop_tenant", "list_tenants", "grant",
                              "revoke", "stats", "train", "wait_indexed"})
#: the replica methods that are numbered writes (``apply``); import_points takes several
#: transactions, so its number is recorded after the last of them
WRITES = frozenset({"create_collection", "drop_collection", "call", "import_points"})
APPLIED = "cluster.applied"
EPOCH = "cluster.epoch"
#: points per batch when a replica copies another
COPY_BATCH = 2048
#: how long a starting replica waits for the process it replaces to let go of its database
OPEN_WAIT_SECONDS = 30.0


class FencedError(FailedPreconditionError):
    """A write from a router whose epoch is below the replica's: another router writes now."""


class Outcome(NamedTuple):
    """A replica's answer to write ``n``: the number it has applied since, the write's answer
    or the vecdb error it raised (nothing written), and whether it had applied it already
    (a write sent again after a restart: its answer is lost)."""

    applied: int
    answer: Any = None
    error: VecdbError | None = None
    repeated: bool = False


def _open(directory: Path, options: dict[str, Any]) -> Database:
    """The replica's database, once the process it replaces (dying, or restarted by Ray while
    the old one exits) has let go of it; FailedPreconditionError after ``OPEN_WAIT_SECONDS``."""
    deadline = time.monotonic() + OPEN_WAIT_SECONDS
    while True:
        try:
            return Database(directory, **options)
        except FailedPreconditionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class ShardReplica:
    """Replica ``replica`` of shard ``shard``, its database in ``directory``."""

    def __init__(self, directory: str, shard: int, replica: int, options: dict[str, Any] | None = None) -> None:
        self.shard, self.replica = shard, replica
        self.directory = Path(directory)
        self.db = _open(self.directory, options or {})
        self._writing = threading.Lock()   # one numbered write at a time (a retry may race its original)
        raw = self.db.mark(EPOCH)
        self._epoch = 0 if raw is None else K.read_u64(raw)

    def ping(self) -> tuple[int, int, int, int, int]:
        """(shard, replica, process id, number of the last write applied, writer epoch):
        the replica is up."""
        return self.shard, self.replica, os.getpid(), self.applied(), self._epoch

    def fence(self, epoch: int) -> int:
        """Refuse writes of routers with an epoch below ``epoch`` from now on (recorded
        durably); the replica's epoch afterwards (higher when a newer router fenced it)."""
        with self._writing:
            self._raise_epoch(epoch)
            return self._epoch

    def _raise_epoch(self, epoch: int) -> None:
        if epoch > self._epoch:
            with self.db.marking(EPOCH, K.u64(epoch)):
                pass
            self._epoch = epoch

    def _fenced(self, epoch: int) -> FencedError | None:
        """The refusal of a write of ``epoch`` (None: it may go on, the epoch recorded)."""
        if epoch < self._epoch:
            return FencedError(f"replica {self.replica} of shard {self.shard} refused a write: another router "
                               f"(epoch {self._epoch}) writes this cluster now, not this one (epoch {epoch})")
        self._raise_epoch(epoch)
        return None

    def applied(self) -> int:
        """The number of the last write this replica applied (0: none)."""
        raw = self.db.mark(APPLIED)
        return 0 if raw is None else K.read_u64(raw)

    def apply(self, n: int, method: str, args: tuple[Any, ...], epoch: int) -> Outcome:
        """Write number ``n`` of the shard from a router of epoch ``epoch``: ``method(*args)``
        (one of ``WRITES``) when this replica holds write ``n - 1``; answers without writing
        when it holds ``n`` already or is behind (the router then copies it), and refuses
        (``FencedError``) when a router of a higher epoch fenced it."""
        if method not in WRITES:
            raise InvalidArgumentError(f"no replica write {method!r}")
        with self._writing:
            have = self.applied()
            fenced = self._fenced(epoch)
            if fenced is not None:
                return Outcome(have, error=fenced)
            if have >= n:
                return Outcome(have, repeated=True)
            if have != n - 1:
                return Outcome(have)
            try:
                if method in ("call", "import_points"):   # loaded first: a load may write (recovery)
                    self.db.get_collection(args[0])
                if method == "import_points":
                    answer = getattr(self, method)(*args)
                    with self.db.marking(APPLIED, K.u64(n)):
                        pass
                else:
                    with self.db.marking(APPLIED, K.u64(n)):
                        answer = getattr(self, method)(*args)
            except VecdbError as exc:
                return Outcome(self.applied(), error=exc)
            return Outcome(n, answer)

    def copy_from(self, source: Any, n: int, epoch: int) -> int:
        """Make this replica's database equal to that of replica actor ``source``, which holds
        write ``n`` (the router of epoch ``epoch`` keeps the shard's writes back meanwhile),
        then record ``n``. Collection by collection, points in bounded batches; first this
        replica's number is cleared, so a copy cut short leaves it behind, never current."""
        with self._writing:
            fenced = self._fenced(epoch)
            if fenced is not None:
                raise fenced
            with self.db.marking(APPLIED, K.u64(0)):
                pass
            for info in self.db.list_collections():
                self.db.drop_collection(info.name)
            for info in ray.get(source.list_collections.remote()):
                self.create_collection(info)
                coll = self.db.get_collection(info.name)
                for tenant in ray.get(source.call.remote(info.name, "list_tenants")):
                    coll.create_tenant(tenant)
                after = -1
                while True:
                    batch: PointBatch = ray.get(source.export.remote(info.name, after, COPY_BATCH, None))
                    import_points(coll, batch)
                    after = batch.last_iid
                    if batch.done:
                        break
            with self.db.marking(APPLIED, K.u64(n)):
                pass
            return n

    # ---- collections ---------------------------------------------------------------------
    def create_collection(self, info: CollectionInfo) -> None:
        self.db.create_collection(info.name, info.dim, info.metric, info.index, info.index_params, info.id_type,
                                  info.multi_tenant)

    def drop_collection(self, name: str) -> None:
        self.db.drop_collection(name)

    def list_collections(self) -> list[CollectionInfo]:
        return self.db.list_collections()

    def call(self, name: str, method: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        """``collection(name).method(*args, **kwargs)`` for a method of ``COLLECTION_CALLS``."""
        if method not in COLLECTION_CALLS:
            raise InvalidArgumentError(f"no collection call {method!r}")
        return getattr(self.db.get_collection(name), method)(*args, **(kwargs or {}))

    # ---- reads -----------------------------------------------------------------------------
    def execute(self, name: str, req: SearchRequest) -> QueryResult:
        """A search validated by the router (the trusted path)."""
        return self.db.get_collection(name).execute(req)

    def get(self, name: str, ids: list[Any], tenant: str | None) -> tuple[list[bool], GetResult | None]:
        """Which of ``ids`` this replica holds (and ``tenant`` may see), and those points in
        order (None when it holds none)."""
        coll = self.db.get_collection(name)
        try:
            return [True] * len(ids), coll.get(ids, tenant=tenant)
        except IdNotFoundError:
            present, held = [], []
            for ident in ids:   # one by one: each answer stands even if a write removes another meanwhile
                try:
                    held.append(coll.get([ident], tenant=tenant))
                    present.append(True)
                except IdNotFoundError:
                    present.append(False)
            if not held:
                return present, None
            return present, GetResult(np.concatenate([g.ids for g in held]), np.concatenate([g.vectors for g in held]),
                                      [p for g in held for p in g.payloads])

    def present(self, name: str, keys: list[bytes]) -> list[bool]:
        """Whether each id key is stored here (where a multi-tenant collection's ids live)."""
        return present_keys(self.db.get_collection(name), keys)

    # ---- moving points -------------------------------------------------------------------
    def export(self, name: str, after_iid: int, limit: int, ring: dict[str, Any] | None) -> PointBatch:
        """Points to move (those ``ring`` places elsewhere; all when None), after ``after_iid``."""
        return export_points(self.db.get_collection(name), after_iid, limit,
                             None if ring is None else HashRing.from_spec(ring), self.shard)

    def import_points(self, name: str, batch: PointBatch) -> None:
        import_points(self.db.get_collection(name), batch)

    def snapshot(self, path: str) -> None:
        self.db.snapshot(path)

    def close(self) -> None:
        self.db.close()

    def destroy(self) -> None:
        """Close and delete this replica's directory (a shard removed from the cluster)."""
        self.db.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()   # the shard's folder, once its last replica is gone
