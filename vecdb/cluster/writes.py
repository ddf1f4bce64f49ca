"""``Writes``: the cluster's writer role, run inside the writer actor (``writer.ClusterWriter``).

Arguments were validated by the router that sent them (the public boundary); here writes are
split by owning shard, ordered by the shards' write locks and sent to the replicas
(``shards.Shards``). The writer also keeps the catalog of collections (it makes every change
of it), the rebalance in progress and the catch-up of replicas left behind. On starting it
fences the replicas with an epoch above any they hold, takes their write numbers, copies a
shard's replicas holding fewer writes than the others from one holding them all (a writer
that died between two replicas' commits leaves them so), completes interrupted catalog
changes and finishes an interrupted rebalance. ``OPS`` names the operations a router may
ask for."""
from __future__ import annotations

import contextlib
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from vecdb.api import CollectionInfo
from vecdb.cluster import placement as P
from vecdb.cluster.catchup import CatchUpWorker, catch_up
from vecdb.cluster.placement import tenant_key
from vecdb.cluster.points import Upsert, not_found_message
from vecdb.cluster.routers import replica_numbers
from vecdb.cluster.shards import Layout, Shards, cluster_tag, count_arg
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, FailedPreconditionError, IdNotFoundError,
                          TenantNotFoundError, VecdbError)

#: the operations a router sends the writer (``Writes.apply``)
OPS = frozenset({"create_collection", "drop_collection", "snapshot", "rebalance_step", "upsert", "delete",
                 "create_tenant", "drop_tenant", "membership", "train"})


class Writes:
    """The writer of cluster ``root`` (see the module docs): started once per writer actor."""

    def __init__(self, root: str, shards: int | None, replicas: int | None, wait_seconds: float,
                 db_options: Mapping[str, Any]) -> None:
        path = Path(root)
        found = P.load(path)
        if found is None:
            found = P.new_placement(count_arg(shards, 3, "shards"), count_arg(replicas, 2, "replicas"))
            P.save(path, found)
        self.shards = Shards(path, cluster_tag(path), Layout(found, {}, None), writes=True,
                             wait_seconds=wait_seconds, db_options=db_options)
        self._infos: dict[str, CollectionInfo] = {}
        self._move: Any = None                       # the rebalance in progress (``rebalance.Move``)
        self._rebalance_lock = threading.Lock()
        self._catch_up = CatchUpWorker(self.shards.groups_now)
        self.shards.on_behind = self._catch_up.wake
        try:
            self._recover()
        except BaseException:
            self._catch_up.close()
            raise

    def apply(self, op: str, args: tuple[Any, ...]) -> Any:
        """Run write ``op`` (one of ``OPS``) with arguments a router validated."""
        self.shards.check()
        if op not in OPS:
            raise FailedPreconditionError(f"the cluster's writer has no operation {op!r:.40}")
        return getattr(self, op)(*args)

    def close(self) -> None:
        """Stop writing and catching replicas up (the last router closes)."""
        with self.shards.layout_lock:
            if self.shards.closed:
                return
            self.shards.closed = True
            self._catch_up.close()

    # ---- the operations ---------------------------------------------------------------------
    def create_collection(self, info: CollectionInfo) -> None:
        """On the catalog shard first (AlreadyExistsError there is the answer), then the others."""
        s = self.shards
        with s.all_locks():
            s.catalog_group().write("create_collection", info).result()
            s.rest("create_collection", (info,), AlreadyExistsError)
            self._infos[info.name] = info

    def drop_collection(self, name: str) -> None:
        s = self.shards
        with s.all_locks():
            s.catalog_group().write("drop_collection", name).result()
            self._infos.pop(name, None)
            s.rest("drop_collection", (name,), CollectionNotFoundError)
            s.moved.pop(name, None)

    def snapshot(self, path: str) -> None:
        """Writes pause while each shard copies itself, then the copies are merged into ``path``
        (shard folders must be reachable from the writer's process)."""
        from vecdb.cluster.snapshot import merge_shard_copies
        s = self.shards
        work = s.root / ".snapshots" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            with s.all_locks():
                groups = s.groups_now()
                infos = s.list_collections()
                copies = [work / f"shard-{g.shard}" for g in groups]
                pending = [g.read("snapshot", str(c)) for g, c in zip(groups, copies)]
                for p in pending:
                    p.result()
            merge_shard_copies(Path(path), infos, copies)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def rebalance_step(self, shards: int, batch: int) -> tuple[int, bool]:
        """Move one batch towards ``shards`` shards (``rebalance.Move``), starting the move when
        none is in progress: (points moved so far, whether the move is done). Routers asking
        at once share one move; asking another shard count meanwhile is refused."""
        from vecdb.cluster.rebalance import Move
        with self._rebalance_lock:
            move = self._move
            if move is None:
                placement = self.shards.placement
                kept = sorted(placement.shards)[:shards]
                new = list(range(placement.next_shard, placement.next_shard + max(0, shards - len(kept))))
                target = tuple(sorted(kept + new))
                if placement.moving_to is None and target == placement.shards:
                    return 0, True
                move = self._move = Move(self.shards, target)
            elif len(move.target) != shards:
                raise FailedPreconditionError(f"cluster {self.shards.root}: a rebalance to {len(move.target)} shards "
                                              f"is in progress; ask for {shards} once it is done")
            if move.step(batch):
                return move.total, False
            move.finish()
            self._move = None
            return move.total, True

    def upsert(self, name: str, up: Upsert) -> None:
        info = self._info(name)

        def send(group: Any, rows: np.ndarray) -> Any:
            uids, x, pays, tenants = up.part(rows)
            return group.write("call", name, "upsert", (uids, x, pays, tenants))

        home = tenant_key(min(up.tenants)) if info.multi_tenant and up.tenants else None
        self.shards.write_split(name, up.keys, up.uids, send, affine=info.multi_tenant, home=home, place_new=True)

    def delete(self, name: str, keys: list[bytes], uids: list[Any], tenant: str | None) -> int:
        """How many points left the caller's view."""
        def send(group: Any, rows: np.ndarray) -> Any:
            return group.write("call", name, "delete", ([uids[i] for i in rows], tenant))

        answers = self.shards.write_split(name, keys, uids, send, affine=self._info(name).multi_tenant)
        return sum(int(n) for n in answers.values())

    def create_tenant(self, name: str, tenant: str) -> None:
        self.shards.everywhere(name, "create_tenant", (tenant,), AlreadyExistsError)

    def drop_tenant(self, name: str, tenant: str) -> None:
        self.shards.everywhere(name, "drop_tenant", (tenant,), TenantNotFoundError)

    def membership(self, name: str, method: str, tenant: str, keys: list[bytes], uids: list[Any],
                   extra: dict[str, Any]) -> None:
        """``grant`` or ``revoke``: TenantNotFoundError / IdNotFoundError (nothing changed) when
        the tenant or any id is missing, so that the write changes every shard's part or none."""
        s = self.shards
        affine = self._info(name).multi_tenant
        if tenant not in s.catalog_group().read("call", name, "list_tenants").result():
            raise TenantNotFoundError(f"no tenant {tenant!r} in collection {name!r}")

        def get(g: Any, rows: np.ndarray) -> Any:
            return g.read("get", name, [uids[i] for i in rows], None)

        _, missing = s.consistent(lambda view: s.read_points(view, name, keys, get, affine))
        if len(missing):
            raise IdNotFoundError(not_found_message(name, [uids[i] for i in missing]))

        def send(group: Any, rows: np.ndarray) -> Any:
            return group.write("call", name, method, (tenant, [uids[i] for i in rows]), extra)

        if keys:
            s.write_split(name, keys, uids, send, affine=affine)

    def train(self, name: str) -> None:
        """Each shard's index on its points (not a numbered write); FailedPreconditionError when
        the collection is empty (shards without points keep their exact scan)."""
        info = self._info(name)
        with self.shards.all_locks():
            pending = [g.everyone("call", name, "train") for g in self.shards.groups_now()]
            refused: list[VecdbError] = []
            for p in pending:
                try:
                    p.result()
                except FailedPreconditionError as exc:
                    refused.append(exc)
            if len(refused) == len(pending):
                raise FailedPreconditionError(f"collection {name!r} is empty: there is nothing to train the "
                                              f"{info.index!r} index on")

    # ---- helpers ----------------------------------------------------------------------------
    def _info(self, name: str) -> CollectionInfo:
        """Collection ``name``'s info (the writer makes every catalog change, so its copy stays
        exact); CollectionNotFoundError if none."""
        info = self._infos.get(name)
        if info is None:
            for found in self.shards.list_collections():
                self._infos.setdefault(found.name, found)
            info = self._infos.get(name)
            if info is None:
                raise CollectionNotFoundError(f"no collection named {name!r}")
        return info

    def _recover(self) -> None:
        """Find the replicas as the placement record lists them, fence them with an epoch above
        any they hold, take their write numbers, copy replicas a crash left behind, complete
        interrupted catalog changes and finish an interrupted rebalance."""
        s = self.shards
        groups = {shard: s.start_group(shard) for shard in s.placement.all_shards()}
        pings = [(g, r, a.ping.remote()) for g in groups.values() for r, a in enumerate(g.actors)]
        epochs = [0]
        for _, _, ref in pings:
            with contextlib.suppress(RayActorError, GetTimeoutError):
                epochs.append(int(ray.get(ref, timeout=s.wait)[4]))
        epoch = 1 + max(epochs)
        fences = [(g, r, g.actors[r].fence.remote(epoch)) for g, r, _ in pings]
        for g, r, ref in fences:
            try:
                if ray.get(ref) != epoch:   # a newer writer fenced it meanwhile: it writes
                    raise FailedPreconditionError(f"cluster {s.root}: another writer took the writing over")
            except RayActorError:
                g.set_applied(r, -1)   # not fenced: copied once it answers (catchup)
        for g in groups.values():
            numbers = replica_numbers(g)
            applied = [numbers.get(r, -1) if g.applied[r] != -1 else -1 for r in range(len(g.actors))]
            g.set_numbers(max(0, *applied), applied)   # none answered (-1 each): none is current until caught up
            g.epoch = epoch
        s.epoch = epoch
        s.moved.clear()
        s.layout = Layout(s.placement, groups, None)
        for group in s.groups_now():   # replicas a crash left behind the others
            catch_up(group)
        s.repair()
        if s.placement.moving_to is not None:   # a rebalance was interrupted: finish it before serving
            from vecdb.cluster.rebalance import rebalance
            rebalance(s, list(s.placement.moving_to))
