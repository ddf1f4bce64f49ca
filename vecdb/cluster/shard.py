"""One replica of one shard: a Ray actor owning an embedded vecdb database in its own
directory, which holds this shard's part of every collection of the cluster.

The actor is threaded (several calls at once; the embedded database is thread-safe) and
restartable: Ray restarts a dead replica (``max_restarts``), and ``__init__`` reopens the
same directory, so everything the replica committed is there again (recovery replays the
op log). Calls go through ``ShardReplica`` methods only; exceptions travel back as the
vecdb exception classes the embedded database raised."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from vecdb.api import CollectionInfo, GetResult, QueryResult, SearchRequest
from vecdb.cluster.placement import HashRing
from vecdb.cluster.points import PointBatch
from vecdb.cluster.transfer import export_points, import_points, present_keys
from vecdb.database import Database
from vecdb.errors import IdNotFoundError, InvalidArgumentError

#: collection methods a router may call on a replica by name (everything else is explicit)
COLLECTION_CALLS = frozenset({"upsert", "delete", "count", "create_tenant", "drop_tenant", "list_tenants", "grant",
                              "revoke", "stats", "train", "wait_indexed"})


class ShardReplica:
    """Replica ``replica`` of shard ``shard``, its database in ``directory``."""

    def __init__(self, directory: str, shard: int, replica: int, options: dict[str, Any] | None = None) -> None:
        self.shard, self.replica = shard, replica
        self.directory = Path(directory)
        self.db = Database(self.directory, **(options or {}))

    def ping(self) -> tuple[int, int, int]:
        """(shard, replica, process id): the replica is up."""
        return self.shard, self.replica, os.getpid()

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

    def get(self, name: str, ids: list[Any], tenant: str | None) -> GetResult | list[Any]:
        """The points, or the list of ids this replica does not hold (or ``tenant`` cannot see)."""
        coll = self.db.get_collection(name)
        try:
            return coll.get(ids, tenant=tenant)
        except IdNotFoundError:
            missing = []
            for ident in ids:
                try:
                    coll.get([ident], tenant=tenant)
                except IdNotFoundError:
                    missing.append(ident)
            return missing

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
