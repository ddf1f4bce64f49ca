"""``ClusterDatabase``: the collections of a vecdb cluster on Ray, with exactly the API of an
embedded database (``vecdb.api.DatabaseAPI``); ``vecdb.cluster.connect`` returns one.

The cluster's root directory holds the placement record (``placement``) and, on a machine
running its shard actors, each replica's database (``shard-<s>/replica-<r>/``). Every shard
holds every collection (its part of the points) and every tenant; shard 0, never removed,
is the catalog: collection and tenant changes are decided there first, then carried to the
others (the writer completes a change a crash interrupted half-way).

A ``ClusterDatabase`` is a router (any number of them, in any processes): it validates
requests, reads the replicas directly (``shards.Shards``) and sends each write to the
cluster's writer actor as one call (``writer``, ``writes``); it takes the shards' write
numbers from the acknowledgement before returning, so its own writes are visible to its
next read, and other routers' within one refresh of its view (``routers``: session
consistency)."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import ray

from vecdb.api import CollectionInfo
from vecdb.cluster import placement as P
from vecdb.cluster.collection import ClusterCollection
from vecdb.cluster.routers import ReadRefresher, RouterMark, replica_numbers
from vecdb.cluster.shards import NAMESPACE, Layout, Shards, cluster_tag, count_arg
from vecdb.cluster.writer import IDEMPOTENT, Ack, WriterClient
from vecdb.database import validate_info
from vecdb.errors import CollectionNotFoundError, DataLossError, FailedPreconditionError, InvalidArgumentError
from vecdb.validation import as_fs_path, as_positive_int

__all__ = ["NAMESPACE", "ClusterDatabase"]


class ClusterDatabase:
    """A vecdb database sharded and replicated over Ray actors (see the module docs)."""

    def __init__(self, root: str | os.PathLike[str], *, shards: int | None = None, replicas: int | None = None,
                 wait_seconds: float = 120.0, db_options: Mapping[str, Any] | None = None,
                 owns_ray: bool = False) -> None:
        if not ray.is_initialized():
            raise FailedPreconditionError("Ray is not initialised: use vecdb.cluster.connect")
        count_arg(shards, 3, "shards"), count_arg(replicas, 2, "replicas")   # checked here, not in the writer
        self.root = Path(as_fs_path(root, what="cluster root"))
        self.root.mkdir(parents=True, exist_ok=True)
        tag = cluster_tag(self.root)
        self._owns_ray = owns_ray
        found = P.load(self.root)
        if found is not None:
            _check_layout(self.root, found, shards, replicas)
        self._mark = RouterMark(self.root, uuid.uuid4().hex)   # the last router to close stops the cluster
        self._writer = WriterClient(f"vecdb-{tag}-writer", NAMESPACE,
                                    (str(self.root), shards, replicas, float(wait_seconds), dict(db_options or {})),
                                    float(wait_seconds))
        self._refresher: ReadRefresher | None = None
        self._shards: Shards | None = None
        try:
            ack = self._writer.call("ready", retry=True)   # started (and recovered) or found running
            raw = P.read_raw(self.root)
            if raw is None:
                raise DataLossError(f"cluster {self.root}: the placement record {P.RECORD} is gone")
            found = P.parse(raw, self.root / P.RECORD)
            _check_layout(self.root, found, shards, replicas)
            self._shards = Shards(self.root, tag, Layout(found, {}, raw), writes=False, wait_seconds=wait_seconds,
                                  db_options=db_options or {})
            self._shards.groups = {s: self._shards.start_group(s) for s in found.all_shards()}
            self._note(ack)
            self._refresher = ReadRefresher(self._refresh_view)
        except BaseException:
            if self._shards is not None:
                self._shards.closed = True
            self._stop_if_last()
            raise

    @property
    def placement(self) -> P.Placement:
        """The layout this router reads and writes by, as last read."""
        return self._layer().placement

    # ---- DatabaseAPI -----------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str | None = None,
                          index_params: Mapping[str, Any] | None = None, id_type: str = "int",
                          multi_tenant: bool = False) -> ClusterCollection:
        """Create the collection on every shard; AlreadyExistsError if the name is taken.
        ``index`` None: ``vecdb.api.default_index(multi_tenant)``."""
        layer = self._layer()
        info = validate_info(name, dim, metric, index, index_params, id_type, multi_tenant)
        self._write("create_collection", info)
        return ClusterCollection(layer, self._write, info)

    def get_collection(self, name: str) -> ClusterCollection:
        """The collection named ``name``; CollectionNotFoundError if none."""
        layer = self._layer()
        if not isinstance(name, str):
            raise InvalidArgumentError(f"collection name must be a string, got {type(name).__name__}")
        for info in layer.list_collections():
            if info.name == name:
                return ClusterCollection(layer, self._write, info)
        raise CollectionNotFoundError(f"no collection named {name!r}")

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection's CollectionInfo, sorted by name (from the catalog shard)."""
        return self._layer().list_collections()

    def drop_collection(self, name: str) -> None:
        """Delete a collection on every shard; CollectionNotFoundError if none."""
        self._layer()
        if not isinstance(name, str):
            raise InvalidArgumentError(f"collection name must be a string, got {type(name).__name__}")
        self._write("drop_collection", name)

    def snapshot(self, path: str) -> None:
        """Write a consistent copy of the whole cluster to ``path`` as one embedded database
        (``vecdb.open(path)`` reads it): writes pause while each shard copies itself, then the
        copies are merged by the writer (shard folders and ``path`` must be reachable from it)."""
        self._layer()
        target = Path(as_fs_path(path, what="snapshot path"))
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InvalidArgumentError(f"snapshot target {target} must be missing or an empty directory")
        self._write("snapshot", str(target.resolve()))

    def rebalance(self, shards: int, batch: int = 1024, on_batch: Callable[[int], None] | None = None) -> None:
        """Spread the points over ``shards`` shards, online: points move in batches of at most
        ``batch`` while searches go on (complete, never a duplicate); writes wait for one batch.
        ``on_batch(points moved so far)`` is called between batches (progress reports).
        Each batch is one call to the writer; a writer that died meanwhile finishes the move
        when it starts again (the next call then finds it done)."""
        self._layer()
        n = count_arg(shards, 1, "shards")
        batch = as_positive_int(batch, "batch")
        while True:
            total, done = self._write("rebalance_step", n, batch, retry=True)
            if done:
                return
            if on_batch is not None:
                on_batch(total)

    def close(self) -> None:
        """When no other router of the cluster is open (``routers.RouterMark``), stop the
        writer, close every replica's database and stop the actors (their data stays in their
        directories); else leave them serving the others. Further calls raise
        FailedPreconditionError. Closing twice is harmless."""
        if self._refresher is not None:
            self._refresher.close()   # first: a refresh in progress holds the layout lock
        layer = self._shards
        if layer is None:
            return
        with layer.layout_lock:
            if layer.closed:
                return
            layer.closed = True
            self._stop_if_last()

    def __enter__(self) -> "ClusterDatabase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        layer = self._shards
        where = "" if layer is None else f", shards={list(layer.placement.shards)}, replicas={layer.placement.replicas}"
        return f"ClusterDatabase({str(self.root)!r}{where}{', closed' if layer is None or layer.closed else ''})"

    # ---- the router's part ---------------------------------------------------------------------
    def _layer(self) -> Shards:
        """The shard layer; FailedPreconditionError once closed."""
        layer = self._shards
        if layer is None:
            raise FailedPreconditionError(f"cluster database {self.root} is closed")
        layer.check()
        return layer

    def _write(self, op: str, *args: Any, retry: bool = False) -> Any:
        """Write ``op`` (``writes.OPS``, arguments validated) through the writer; its answer
        once the shards' new write numbers are this router's view. ``retry``: sent again
        when the writer died during it (an idempotent step)."""
        self._layer()
        ack: Ack = self._writer.call("write", op, args, retry=retry or op in IDEMPOTENT)
        self._note(ack)
        if ack.error is not None:
            raise ack.error
        return ack.answer

    def _note(self, ack: Ack) -> None:
        """Take the writer's view after a write: the placement record again when its
        generation moved, then every shard's write numbers (``ShardGroup.note``)."""
        layer = self._layer()
        if ack.generation != layer.placement.generation:
            with layer.layout_lock:
                if not layer.closed:
                    layer.reload_placement()
        groups = layer.groups
        for shard, (seq, applied) in ack.numbers.items():
            group = groups.get(shard)
            if group is not None and len(applied) == len(group.applied):
                group.note(seq, applied)

    def _refresh_view(self) -> None:
        """The placement record again when it changed (shards added or removed, a rebalance
        started or done), and every replica's write number."""
        layer = self._shards
        if layer is None:
            return
        with layer.layout_lock:
            if layer.closed:
                return
            layer.reload_placement()
            groups = layer.groups_now()
        for group in groups:
            since = group.noted
            group.refresh(replica_numbers(group), since)

    def _stop_if_last(self) -> None:
        """Stop the writer and the replicas when no other router is open; give this router's
        mark up; stop the local Ray it started."""
        if not self._mark.others():
            self._writer.stop()   # first: nothing writes the replicas any more
            layer = self._shards
            actors: list[Any] = []
            if layer is not None:
                with contextlib.suppress(Exception):
                    layer.reload_placement()   # every shard the writer last recorded
                actors = [a for g in layer.groups.values() for a in g.actors]
            for ref in [a.close.remote() for a in actors]:
                with contextlib.suppress(Exception):
                    ray.get(ref)
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        self._mark.close()
        if self._owns_ray:
            ray.shutdown()


def _check_layout(root: Path, found: P.Placement, shards: int | None, replicas: int | None) -> None:
    """InvalidArgumentError when ``shards`` / ``replicas`` (None: whatever it has) are not the
    layout ``found`` of the existing cluster ``root``."""
    if replicas is not None and count_arg(replicas, 2, "replicas") != found.replicas:
        raise InvalidArgumentError(f"cluster {root} has {found.replicas} replicas per shard, not {replicas}")
    if shards is not None and found.moving_to is None and count_arg(shards, 3, "shards") != len(found.shards):
        raise InvalidArgumentError(f"cluster {root} has {len(found.shards)} shards, not {shards}; "
                                   f"use rebalance() to change it")
