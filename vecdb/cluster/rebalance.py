"""Moving points between shards online, when shards are added or removed.

The placement record first says where points go (``moving_to``, durably: a restarted
writer finishes the move before serving). Then, collection by collection and shard by
shard, bounded batches of the points the new ring places elsewhere are copied to their new
shard (every replica) and deleted from the old one, each batch under the write locks (writes
wait for one batch, never for the whole move), and their ids are marked moved, so that
writes follow them. A point is always on at least one shard, and searches drop the copy
seen twice, so they stay complete and duplicate-free throughout. A last pass under all the
locks takes what writers added meanwhile; then the new ring becomes the placement.

Routers never depend on when they learn of the move. The record is written (``moving_to``,
a higher generation) before any point moves, and again (finished) before a removed shard
stops; a read checks that the layout it used still holds afterwards and reads again when
it changed (``Shards.consistent``: a router compares the record's bytes, the
writer its layout object), and while points move it asks the shards in waves
(``Placement.waves``) so that a point moving during the read is seen once at least."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Sequence

import numpy as np
import ray

from vecdb.cluster import placement as P
from vecdb.cluster.points import PointBatch
from vecdb.errors import CollectionNotFoundError

if TYPE_CHECKING:
    from vecdb.cluster.shards import Shards

#: points per batch (the longest writers wait for a move step)
BATCH = 1024


def rebalance(db: "Shards", target: Sequence[int], batch: int = BATCH) -> None:
    """Move the points of the cluster whose shard layer is ``db`` (the writer's) onto the
    shards ``target`` (see the module docs); returns once done (the writer finishing a move
    it finds interrupted)."""
    move = Move(db, tuple(sorted(target)))
    while move.step(batch):
        pass
    move.finish()


class Move:
    """A rebalance in progress on the writer (``db``: its shard layer), one batch per ``step``
    (routers drive it through ``Writes.rebalance_step``, reporting progress between batches)."""

    def __init__(self, db: "Shards", target: tuple[int, ...]) -> None:
        self.db, self.target, self.total = db, target, 0
        with db.layout_lock:
            # new shards hold every collection and tenant before the record names them (routers
            # search them as soon as they read it)
            with db.all_locks():   # no collection or tenant is created while a shard is added
                for s in target:
                    if s not in db.groups:
                        added = db.add_shard(s)
                        groups = dict(db.groups)
                        groups[s] = added
                        db.groups = groups
            if db.placement.moving_to != target:
                moving = db.placement.with_target(target)
                P.save(db.root, moving)   # before any point moves: routers' reads check it
                db.placement = moving     # and the writer's own reads in progress read again
            self.ring = P.HashRing(target, db.placement.vnodes).spec()
            self.sources = list(db.placement.all_shards())
            self.cursors = {(info.name, s): -1 for info in db.list_collections() for s in self.sources}
            self._left = list(self.cursors)

    def step(self, batch: int) -> int:
        """Move the next batch of at most ``batch`` points (under every write lock: writes wait
        for one batch); how many moved (0: every collection's first pass is done)."""
        db = self.db
        while self._left:
            key = self._left[0]
            with db.all_locks():
                moved = _step(db, key[0], key[1], self.cursors[key], batch, self.ring)
            if moved is None or moved.done:   # the collection was dropped meanwhile, or its pass is done
                self._left.pop(0)
            if moved is None:
                continue
            self.cursors[key] = moved.last_iid
            self.total += len(moved)
            if len(moved):
                return len(moved)
        return 0

    def finish(self) -> None:
        """The last pass under all the locks (what writers added meanwhile, in collections
        created meanwhile too), then the new layout recorded and removed shards stopped."""
        db, target = self.db, self.target
        with db.layout_lock:
            with db.all_locks():
                for name in [info.name for info in db.list_collections()]:
                    for s in self.sources:
                        after = self.cursors.get((name, s), -1)
                        while True:
                            moved = _step(db, name, s, after, BATCH, self.ring)
                            if moved is None:
                                break
                            after = moved.last_iid
                            self.total += len(moved)
                            if moved.done:
                                break
                removed = [s for s in db.groups if s not in target]
                done = db.placement.finished()
                P.save(db.root, done)   # before a removed shard stops (reads in progress check it)
                db.placement = done
                db.moved.clear()
                groups = {s: g for s, g in db.groups.items() if s in target}
                gone = [db.groups[s] for s in removed]
                db.groups = groups
        for g in gone:   # a read still asking them fails, finds the layout changed and reads again
            for actor in g.actors:
                with contextlib.suppress(Exception):
                    ray.get(actor.destroy.remote())
                    ray.kill(actor, no_restart=True)


def _step(db: "Shards", name: str, shard: int, after: int, batch: int, ring: dict) -> PointBatch | None:
    """Move one batch of ``name``'s points off ``shard`` (caller holds every write lock);
    None when the collection is gone."""
    src = db.groups[shard]
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
        pending.append(db.groups[s].write("import_points", name, _subset(moving, rows)))
    for p in pending:
        p.result()
    db.moved.setdefault(name, set()).update(moving.keys)
    src.write("call", name, "delete", (moving.uids,)).result()
    return moving


def _subset(b: PointBatch, rows: np.ndarray) -> PointBatch:
    keep = {b.uids[i] for i in rows}
    grants = {k: [u for u in ids if u in keep] for k, ids in b.grants.items()}
    return PointBatch([b.uids[i] for i in rows], [b.keys[i] for i in rows], [b.place[i] for i in rows], b.vectors[rows],
                      [b.payloads[i] for i in rows], [b.owners[i] for i in rows],
                      {k: v for k, v in grants.items() if v}, b.last_iid, b.done)
