"""Reading a shard's points out whole (vector, payload, owners, grants) and writing them into
another collection: what rebalancing moves and what a cluster snapshot merges.

The reader is the collection's own ``export`` (its committed records, in internal-id order
from a scan position, in bounded batches); the caller keeps writers of those points away
meanwhile (the router's write lock)."""
from __future__ import annotations

from typing import Any

from vecdb.cluster.placement import HashRing, placement_key
from vecdb.cluster.points import PointBatch
from vecdb.collection import Collection


def export_points(coll: Collection, after_iid: int, limit: int, ring: HashRing | None = None,
                  keep: int | None = None) -> PointBatch:
    """The points among the next ``limit`` (internal id > ``after_iid``, in internal-id
    order); with ``ring``, only those the ring places on another shard than ``keep`` (the
    points to move; a multi-tenant collection places a point by its first owner tenant).
    ``last_iid`` is where the scan stopped (pass it back to go on); ``done`` at the end."""
    multi = coll.info.multi_tenant

    def elsewhere(keys: list[bytes], owners: list[tuple[str, ...]]) -> list[bool]:
        assert ring is not None
        where = ring.owners([placement_key(key, o, multi) for key, o in zip(keys, owners)])
        return [w != keep for w in where]

    out = coll.export(after_iid, limit, None if ring is None else elsewhere)
    grants: dict[tuple[str, bool], list[Any]] = {}
    for uid, levels in zip(out.uids, out.grants):
        for name, write in levels.items():
            grants.setdefault((name, write), []).append(uid)
    place = [placement_key(key, o, multi) for key, o in zip(out.keys, out.owners)]
    return PointBatch(out.uids, out.keys, place, out.vectors, out.payloads, out.owners, grants, out.last_iid,
                      out.done)


def present_keys(coll: Collection, keys: list[bytes]) -> list[bool]:
    """Whether each id key is stored in ``coll`` (committed records)."""
    return coll.stored_keys(keys)


def import_points(coll: Any, batch: PointBatch) -> None:
    """Write ``batch`` into ``coll`` (any CollectionAPI) as the points it was: replaced whole
    (an earlier copy is deleted first), created owned by their owner tenants, then granted."""
    if not len(batch):
        return
    coll.delete(batch.uids)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, owners in enumerate(batch.owners):
        groups.setdefault(owners, []).append(i)
    for owners, rows in groups.items():
        coll.upsert([batch.uids[i] for i in rows], batch.vectors[rows], [batch.payloads[i] for i in rows],
                    tenant=list(owners) or None)
    for (tenant, write), ids in sorted(batch.grants.items()):
        coll.grant(tenant, ids, write=write)
