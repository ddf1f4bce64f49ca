"""The writer's operations (``writer.ClusterWriter.write``), on the writer role of
``ClusterDatabase``: arguments were validated by the router that sent them (the public
boundary); here they are split by owning shard, ordered by the shards' write locks and sent
to the replicas. ``OPS`` names them; a router calls them only through the writer."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vecdb.api import CollectionInfo
from vecdb.cluster.placement import tenant_key
from vecdb.cluster.points import Upsert, not_found_message
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, FailedPreconditionError, IdNotFoundError,
                          TenantNotFoundError, VecdbError)

if TYPE_CHECKING:
    from vecdb.cluster.database import ClusterDatabase


def create_collection(db: "ClusterDatabase", info: CollectionInfo) -> None:
    """On the catalog shard first (AlreadyExistsError there is the answer), then the others."""
    with db._all_locks():
        db._catalog_group().write("create_collection", info).result()
        db._rest("create_collection", (info,), AlreadyExistsError)
        db._infos[info.name] = info


def drop_collection(db: "ClusterDatabase", name: str) -> None:
    with db._all_locks():
        db._catalog_group().write("drop_collection", name).result()
        db._infos.pop(name, None)
        db._rest("drop_collection", (name,), CollectionNotFoundError)
        db._moved.pop(name, None)


def snapshot(db: "ClusterDatabase", path: str) -> None:
    """Writes pause while each shard copies itself, then the copies are merged into ``path``
    (shard folders must be reachable from the writer's process)."""
    from vecdb.cluster.snapshot import merge_shard_copies
    work = db.root / ".snapshots" / uuid.uuid4().hex
    work.mkdir(parents=True)
    try:
        with db._all_locks():
            groups = db._groups_now()
            infos = db.list_collections()
            copies = [work / f"shard-{g.shard}" for g in groups]
            pending = [g.read("snapshot", str(c)) for g, c in zip(groups, copies)]
            for p in pending:
                p.result()
        merge_shard_copies(Path(path), infos, copies)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rebalance_step(db: "ClusterDatabase", shards: int, batch: int) -> tuple[int, bool]:
    """Move one batch towards ``shards`` shards (``rebalance.Move``), starting the move when
    none is in progress: (points moved so far, whether the move is done). Routers asking
    at once share one move; asking another shard count meanwhile is refused."""
    from vecdb.cluster.rebalance import Move
    with db._rebalance_lock:
        move = db._move
        if move is None:
            placement = db.placement
            kept = sorted(placement.shards)[:shards]
            new = list(range(placement.next_shard, placement.next_shard + max(0, shards - len(kept))))
            target = tuple(sorted(kept + new))
            if placement.moving_to is None and target == placement.shards:
                return 0, True
            move = db._move = Move(db, target)
        elif len(move.target) != shards:
            raise FailedPreconditionError(f"cluster {db.root}: a rebalance to {len(move.target)} shards is in "
                                          f"progress; ask for {shards} once it is done")
        if move.step(batch):
            return move.total, False
        move.finish()
        db._move = None
        return move.total, True


def upsert(db: "ClusterDatabase", name: str, up: Upsert) -> None:
    info = db._info(name)

    def send(group: Any, rows: np.ndarray) -> Any:
        uids, x, pays, tenants = up.part(rows)
        return group.write("call", name, "upsert", (uids, x, pays, tenants))

    home = tenant_key(min(up.tenants)) if info.multi_tenant and up.tenants else None
    db._write_split(name, up.keys, up.uids, send, affine=info.multi_tenant, home=home, place_new=True)


def delete(db: "ClusterDatabase", name: str, keys: list[bytes], uids: list[Any], tenant: str | None) -> int:
    """How many points left the caller's view."""
    def send(group: Any, rows: np.ndarray) -> Any:
        return group.write("call", name, "delete", ([uids[i] for i in rows], tenant))

    return sum(int(n) for n in db._write_split(name, keys, uids, send, affine=db._info(name).multi_tenant).values())


def create_tenant(db: "ClusterDatabase", name: str, tenant: str) -> None:
    db._everywhere(name, "create_tenant", (tenant,), AlreadyExistsError)


def drop_tenant(db: "ClusterDatabase", name: str, tenant: str) -> None:
    db._everywhere(name, "drop_tenant", (tenant,), TenantNotFoundError)


def membership(db: "ClusterDatabase", name: str, method: str, tenant: str, keys: list[bytes], uids: list[Any],
               extra: dict[str, Any]) -> None:
    """``grant`` or ``revoke``: TenantNotFoundError / IdNotFoundError (nothing changed) when the
    tenant or any id is missing, so that the write changes every shard's part or none."""
    affine = db._info(name).multi_tenant
    if tenant not in db._catalog_group().read("call", name, "list_tenants").result():
        raise TenantNotFoundError(f"no tenant {tenant!r} in collection {name!r}")

    def get(g: Any, rows: np.ndarray) -> Any:
        return g.read("get", name, [uids[i] for i in rows], None)

    _, missing = db._consistent(lambda view: db._read_points(view, name, keys, get, affine))
    if len(missing):
        raise IdNotFoundError(not_found_message(name, [uids[i] for i in missing]))

    def send(group: Any, rows: np.ndarray) -> Any:
        return group.write("call", name, method, (tenant, [uids[i] for i in rows]), extra)

    if keys:
        db._write_split(name, keys, uids, send, affine=affine)


def train(db: "ClusterDatabase", name: str) -> None:
    """Each shard's index on its points (not a numbered write); FailedPreconditionError when
    the collection is empty (shards without points keep their exact scan)."""
    info = db._info(name)
    with db._all_locks():
        pending = [g.everyone("call", name, "train") for g in db._groups_now()]
        refused: list[VecdbError] = []
        for p in pending:
            try:
                p.result()
            except FailedPreconditionError as exc:
                refused.append(exc)
        if len(refused) == len(pending):
            raise FailedPreconditionError(f"collection {name!r} is empty: there is nothing to train the "
                                          f"{info.index!r} index on")


OPS: dict[str, Callable[..., Any]] = {
    "create_collection": create_collection, "drop_collection": drop_collection, "snapshot": snapshot,
    "rebalance_step": rebalance_step, "upsert": upsert, "delete": delete, "create_tenant": create_tenant,
    "drop_tenant": drop_tenant, "membership": membership, "train": train,
}
