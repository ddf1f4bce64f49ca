"""Moving points between shards online, when shards are added or removed.

The placement record first says where points go (``moving_to``, durably: a restarted
router finishes the move before serving). Then, collection by collection and shard by
shard, bounded batches of the points the new ring places elsewhere are copied to their new
shard (every replica) and deleted from the old one, each batch under the write locks (writes
wait for one batch, never for the whole move), and their ids are marked moved, so that
writes follow them. A point is always on at least one shard, and searches drop the copy
seen twice, so they stay complete and duplicate-free throughout. A last pass under all the
locks takes what writers added meanwhile; then the new ring becomes the placement.

Routers never depend on when they learn of the move. The record is written (``moving_to``,
a higher generation) before any point moves, and again (finished) before a removed shard
stops; a read checks that the layout it used still holds afterwards and reads again when
it changed (``ClusterDatabase._consistent``: a reading router compares the record's bytes,
the writer its layout object), and while points move it asks the shards in waves
(``Placement.waves``) so that a point moving during the read is seen once at least."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import ray

from vecdb.cluster import placement as P
from vecdb.cluster.points import PointBatch
from vecdb.errors import CollectionNotFoundError

if TYPE_CHECKING:
    from vecdb.cluster.database import ClusterDatabase

#: points per batch (the longest writers wait for a move step)
BATCH = 1024


def rebalance(db: "ClusterDatabase", shards: Sequence[int], batch: int = BATCH,
              on_batch: Callable[[int], None] | None = None) -> None:
    """Move ``db``'s points onto ``shards`` (see the module docs); returns once done.
    ``on_batch(points moved so far)`` runs between batches, with no lock held."""
    with db._layout_lock:
        target = tuple(sorted(shards))
        if db.placement.moving_to is None and target == db.placement.shards:
            return
        # new shards hold every collection and tenant before the record names them (reading
        # routers search them as soon as they read it)
        with db._all_locks():   # no collection or tenant is created while a shard is added
            for s in target:
                if s not in db._groups:
                    added = db._add_shard(s)
                    groups = dict(db._groups)
                    groups[s] = added
                    db._groups = groups
        moving = db.placement.with_target(target)
        P.save(db.root, moving)   # before any point moves: reading routers' reads check it
        db.placement = moving     # and the writer's own reads in progress read again
        db._tenants_forget(None)   # tenant searches ask every shard while points move
        ring = P.HashRing(target, db.placement.vnodes).spec()
        sources = [s for s in db.placement.all_shards()]
        cursors = {(info.name, s): -1 for info in db.list_collections() for s in sources}
        total = 0
        for key in list(cursors):
            while True:
                with db._all_locks():
                    moved = _step(db, key[0], key[1], cursors[key], batch, ring)
                    if moved is None:   # the collection was dropped meanwhile
                        break
                cursors[key] = moved.last_iid
                total += len(moved)
                if on_batch is not None and len(moved):
                    on_batch(total)
                if moved.done:
                    break
        with db._all_locks():   # the last pass: what writers added meanwhile, in collections created meanwhile too
            for name in [info.name for info in db.list_collections()]:
                for s in sources:
                    after = cursors.get((name, s), -1)
                    while True:
                        moved = _step(db, name, s, after, batch, ring)
                        if moved is None:
                            break
                        after = moved.last_iid
                        if moved.done:
                            break
            removed = [s for s in db._groups if s not in target]
            done = db.placement.finished()
            P.save(db.root, done)   # before a removed shard stops (reads in progress check it)
            db.placement = done
            db._moved.clear()
            db._tenants_forget(None)
            groups = {s: g for s, g in db._groups.items() if s in target}
            gone = [db._groups[s] for s in removed]
            db._groups = groups
        for g in gone:   # a read still asking them fails, finds the layout changed and reads again
            for actor in g.actors:
                with contextlib.suppress(Exception):
                    ray.get(actor.destroy.remote())
                    ray.kill(actor, no_restart=True)


def _step(db: "ClusterDatabase", name: str, shard: int, after: int, batch: int, ring: dict) -> PointBatch | None:
    """Move one batch of ``name``'s points off ``shard`` (caller holds every write lock);
    None when the collection is gone."""
    src = db._groups[shard]
    try:
        moving: PointBatch = src.read("export", name, after, batch, ring).result()
    except CollectionNotFoundError:
        return None
    if not len(moving):
        return moving
    dest = P.HashRing.from_spec(ring).owners(moving.place)
    pending = []
    for s in sorted(set(dest.tolist())):
        rows = np.flatnonzero(dest == s)
        pending.append(db._groups[s].write("import_points", name, _subset(moving, rows)))
    for p in pending:
        p.result()
    db._moved.setdefault(name, set()).update(moving.keys)
    src.write("call", name, "delete", (moving.uids,)).result()
    return moving


def _subset(b: PointBatch, rows: np.ndarray) -> PointBatch:
    keep = {b.uids[i] for i in rows}
    grants = {k: [u for u in ids if u in keep] for k, ids in b.grants.items()}
    return PointBatch([b.uids[i] for i in rows], [b.keys[i] for i in rows], [b.place[i] for i in rows], b.vectors[rows],
                      [b.payloads[i] for i in rows], [b.owners[i] for i in rows],
                      {k: v for k, v in grants.items() if v}, b.last_iid, b.done)
