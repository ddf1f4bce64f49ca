"""``ClusterDatabase``: the collections of a vecdb cluster on Ray, with exactly the API of an
embedded database (``vecdb.api.DatabaseAPI``); ``vecdb.cluster.connect`` returns one.

The cluster's root directory holds the placement record (``placement``) and, on a machine
running its shard actors, each replica's database (``shard-<s>/replica-<r>/``). Every shard
holds every collection (its part of the points) and every tenant; shard 0, never removed,
is the catalog: collection and tenant changes are decided there first, then carried to the
others (the writer completes a change a crash interrupted half-way).

The object plays one of two roles. A router (what ``connect`` returns; any number of them,
in any processes) validates requests, reads the replicas directly and sends each write to
the cluster's writer as one call (``writer``); it takes the shards' write numbers from the
acknowledgement before returning, so its own writes are visible to its next read, and
other routers' within one refresh of its view (``routers``: session consistency). The
writer role runs inside the writer actor: writes to a shard are ordered by its lock of
the shard and numbered, which is what keeps its replicas identical, and carry its epoch,
below which replicas refuse writes. On starting, the writer fences the replicas and copies
a shard's replicas holding fewer writes than the others from one holding them all
(``catchup``: a writer that died between two replicas' commits leaves them so); later, a
replica that misses writes is caught up in the background when it answers again."""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, TypeVar

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from vecdb.api import CollectionInfo
from vecdb.cluster import placement as P
from vecdb.cluster.catchup import CatchUpWorker, catch_up
from vecdb.cluster.collection import ClusterCollection
from vecdb.cluster.replicas import PendingRead, PendingWrite, ShardGroup, unwrap
from vecdb.cluster.routers import ReadRefresher, RouterMark, replica_numbers
from vecdb.cluster.shard import ShardReplica
from vecdb.cluster.writer import IDEMPOTENT, Ack, WriterClient
from vecdb.database import validate_info
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, DataLossError, FailedPreconditionError,
                          InvalidArgumentError, TenantNotFoundError, UnavailableError, VecdbError)
from vecdb.validation import as_fs_path, as_positive_int

NAMESPACE = "vecdb"
#: Ray options of a replica actor: no CPU reserved (a replica is mostly idle, and a small
#: machine must fit many), restarted for ever by Ray, calls never replayed by Ray itself
#: (the router retries writes and fails reads over), threaded, and detached: a router that
#: dies leaves its replicas serving (the next router finds them by name, indexes loaded);
#: ``close`` stops them.
ACTOR_OPTIONS = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0, "max_concurrency": 16,
                 "lifetime": "detached"}


T = TypeVar("T")


class Layout(NamedTuple):
    """What a router reads by, replaced whole on every change: the placement, the replica
    groups of its shards and (a router) the bytes of the record it was read from."""

    placement: P.Placement
    groups: dict[int, ShardGroup]
    raw: bytes | None

    def shards(self) -> list[int]:
        return sorted(self.groups)


class ClusterDatabase:
    """A vecdb database sharded and replicated over Ray actors (see the module docs)."""

    def __init__(self, root: str | os.PathLike[str], *, shards: int | None = None, replicas: int | None = None,
                 wait_seconds: float = 120.0, db_options: Mapping[str, Any] | None = None,
                 owns_ray: bool = False, role: str = "router") -> None:
        if not ray.is_initialized():
            raise FailedPreconditionError("Ray is not initialised: use vecdb.cluster.connect")
        if role not in ("router", "writer"):
            raise InvalidArgumentError(f"role must be 'router' or 'writer', got {role!r:.40}")
        _count(shards, 3, "shards"), _count(replicas, 2, "replicas")   # checked here, not in the writer
        self.root = Path(as_fs_path(root, what="cluster root"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._tag = hashlib.blake2b(os.path.realpath(self.root).encode(), digest_size=6).hexdigest()
        self._wait = float(wait_seconds)
        self._db_options = dict(db_options or {})
        self._owns_ray = owns_ray
        self._writes = role == "writer"   # this object is the cluster's writer (in the writer actor)
        self._layout_lock = threading.RLock()
        self._closed = False
        self._moved: dict[str, set[bytes]] = {}      # writer: ids a rebalance in progress moved, by collection
        self._infos: dict[str, CollectionInfo] = {}  # writer: the catalog (it makes every change of it)
        self._move: Any = None                       # writer: the rebalance in progress (``rebalance.Move``)
        self._rebalance_lock = threading.Lock()
        self._tenant_lock = threading.Lock()
        #: router: (collection, tenant) -> (shards holding points it may access, every shard's
        #: write number when that was asked): valid for the shards whose number did not move
        self._tenant_cache: dict[tuple[str, str], tuple[set[int], dict[int, int]]] = {}
        self._epoch: int | None = None   # writer: the epoch it fenced the replicas with
        self._catch_up: CatchUpWorker | None = None
        self._refresher: ReadRefresher | None = None
        self._mark: RouterMark | None = None
        self._writer: WriterClient | None = None
        found = P.load(self.root)
        if found is not None and not self._writes:   # (the writer: its router checked)
            _check_layout(self.root, found, shards, replicas)
        if self._writes:
            if found is None:
                found = P.new_placement(_count(shards, 3, "shards"), _count(replicas, 2, "replicas"))
                P.save(self.root, found)
            self._state = Layout(found, {}, None)
            self._catch_up = CatchUpWorker(self._groups_now)
            try:
                self._become_writer()
            except BaseException:
                self._catch_up.close()
                raise
            return
        self._mark = RouterMark(self.root, uuid.uuid4().hex)   # the last router to close stops the cluster
        self._writer = WriterClient(f"vecdb-{self._tag}-writer", NAMESPACE,
                                    (str(self.root), shards, replicas, self._wait, self._db_options), self._wait)
        try:
            ack = self._writer.call("ready", retry=True)   # started (and recovered) or found running
            raw = P.read_raw(self.root)
            if raw is None:
                raise DataLossError(f"cluster {self.root}: the placement record {P.RECORD} is gone")
            found = P.parse(raw, self.root / P.RECORD)
            _check_layout(self.root, found, shards, replicas)
            self._state = Layout(found, {}, raw)
            self._state = self._state._replace(groups={s: self._start_group(s) for s in found.all_shards()})
            self._note(ack)
            self._refresher = ReadRefresher(self._refresh_view)
        except BaseException:
            self._closed = True
            self._stop_if_last()
            raise

    @property
    def placement(self) -> P.Placement:
        """The layout this object reads and writes by (a router's: as last read)."""
        return self._state.placement

    @placement.setter
    def placement(self, value: P.Placement) -> None:
        self._state = self._state._replace(placement=value)

    @property
    def _groups(self) -> dict[int, ShardGroup]:
        return self._state.groups

    @_groups.setter
    def _groups(self, value: dict[int, ShardGroup]) -> None:
        self._state = self._state._replace(groups=value)

    # ---- DatabaseAPI -----------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str | None = None,
                          index_params: Mapping[str, Any] | None = None, id_type: str = "int",
                          multi_tenant: bool = False) -> ClusterCollection:
        """Create the collection on every shard; AlreadyExistsError if the name is taken.
        ``index`` None: ``vecdb.api.default_index(multi_tenant)``."""
        self._check()
        info = validate_info(name, dim, metric, index, index_params, id_type, multi_tenant)
        self._write("create_collection", info)
        return ClusterCollection(self, info)

    def get_collection(self, name: str) -> ClusterCollection:
        """The collection named ``name``; CollectionNotFoundError if none."""
        self._check()
        if not isinstance(name, str):
            raise InvalidArgumentError(f"collection name must be a string, got {type(name).__name__}")
        for info in self.list_collections():
            if info.name == name:
                return ClusterCollection(self, info)
        raise CollectionNotFoundError(f"no collection named {name!r}")

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection's CollectionInfo, sorted by name (from the catalog shard)."""
        self._check()
        return self._catalog_group().read("list_collections").result()  # type: ignore[no-any-return]

    def drop_collection(self, name: str) -> None:
        """Delete a collection on every shard; CollectionNotFoundError if none."""
        self._check()
        if not isinstance(name, str):
            raise InvalidArgumentError(f"collection name must be a string, got {type(name).__name__}")
        self._write("drop_collection", name)

    def snapshot(self, path: str) -> None:
        """Write a consistent copy of the whole cluster to ``path`` as one embedded database
        (``vecdb.open(path)`` reads it): writes pause while each shard copies itself, then the
        copies are merged by the writer (shard folders and ``path`` must be reachable from it)."""
        self._check()
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
        self._check()
        n = _count(shards, 1, "shards")
        batch = as_positive_int(batch, "batch")
        while True:
            total, done = self._write("rebalance_step", n, batch, retry=True)
            if done:
                return
            if on_batch is not None:
                on_batch(total)

    def close(self) -> None:
        """A router: when no other router of the cluster is open (``routers.RouterMark``), stop
        the writer, close every replica's database and stop the actors (their data stays in
        their directories); else leave them serving the others. The writer (in its actor):
        stop catching replicas up. Further calls raise FailedPreconditionError. Closing twice
        is harmless."""
        if self._refresher is not None:
            self._refresher.close()   # first: a refresh in progress holds the layout lock
        with self._layout_lock:
            if self._closed:
                return
            self._closed = True
            if self._catch_up is not None:
                self._catch_up.close()
            self._stop_if_last()

    def _stop_if_last(self) -> None:
        """A router closing: stop the writer and the replicas when no other router is open;
        give its mark up; stop the local Ray it started."""
        if self._mark is None:
            return
        if not self._mark.others():
            if self._writer is not None:
                self._writer.stop()   # first: nothing writes the replicas any more
            with contextlib.suppress(Exception):
                self._reload_placement()   # every shard the writer last recorded
            actors = [a for g in self._groups.values() for a in g.actors]
            for ref in [a.close.remote() for a in actors]:
                with contextlib.suppress(Exception):
                    ray.get(ref)
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        self._mark.close()
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> "ClusterDatabase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClusterDatabase({str(self.root)!r}, shards={list(self.placement.shards)}, " \
               f"replicas={self.placement.replicas}{', closed' if self._closed else ''})"

    # ---- what collections use --------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise FailedPreconditionError(f"cluster database {self.root} is closed")

    def _groups_now(self) -> list[ShardGroup]:
        groups = self._groups
        return [groups[s] for s in sorted(groups)]

    def _catalog_group(self) -> ShardGroup:
        return self._groups[min(self._groups)]

    def _owners(self, name: str, keys: list[bytes], placement: P.Placement | None = None) -> np.ndarray:
        """The shard each id key is written to now (during a rebalance: the new shard of
        the points already moved, the old one of the rest; a router knows of none moved).
        ``placement``: of a layout read by ``_consistent`` (else the current one)."""
        placement = placement or self.placement
        owners = placement.ring().owners(keys)
        moved = self._moved.get(name)
        target = placement.target_ring()
        if moved and target is not None:
            done = np.fromiter((k in moved for k in keys), bool, len(keys))
            if done.any():
                owners[done] = target.owners([k for k, d in zip(keys, done) if d])
        return owners

    def _locks(self, shards: list[int]) -> contextlib.AbstractContextManager[None]:
        groups = self._groups
        return _holding([groups[s].lock for s in sorted(shards)])

    def _all_locks(self) -> contextlib.AbstractContextManager[None]:
        return self._locks(list(self._groups))

    def _write(self, op: str, *args: Any, retry: bool = False) -> Any:
        """A router: write ``op`` (``writes.OPS``, arguments validated) through the writer;
        its answer once the shards' new write numbers are this router's view. ``retry``:
        sent again when the writer died during it (an idempotent step)."""
        self._check()
        assert self._writer is not None, "the writer role runs writes itself (writes.OPS)"
        ack: Ack = self._writer.call("write", op, args, retry=retry or op in IDEMPOTENT)
        self._note(ack)
        if ack.error is not None:
            raise ack.error
        return ack.answer

    def _apply(self, op: str, args: tuple[Any, ...]) -> Any:
        """The writer: run write ``op`` (``writer.ClusterWriter.write``)."""
        from vecdb.cluster.writes import OPS
        self._check()
        return OPS[op](self, *args)

    def _note(self, ack: Ack) -> None:
        """A router takes the writer's view after a write: the placement record again when
        its generation moved, then every shard's write numbers (``ShardGroup.note``)."""
        if ack.generation != self._state.placement.generation:
            with self._layout_lock:
                if not self._closed:
                    self._reload_placement()
        groups = self._groups
        for shard, (seq, applied) in ack.numbers.items():
            group = groups.get(shard)
            if group is not None and len(applied) == len(group.applied):
                group.note(seq, applied)

    def _info(self, name: str) -> CollectionInfo:
        """The writer: collection ``name``'s info (it makes every catalog change, so its copy
        stays exact); CollectionNotFoundError if none."""
        info = self._infos.get(name)
        if info is None:
            for found in self.list_collections():
                self._infos.setdefault(found.name, found)
            info = self._infos.get(name)
            if info is None:
                raise CollectionNotFoundError(f"no collection named {name!r}")
        return info

    def _become_writer(self) -> None:
        """The writer starting: find the replicas as the placement record lists them, fence
        them with an epoch above any they hold, take their write numbers, copy replicas a
        crash left behind, complete interrupted catalog changes and rebalance."""
        groups = {s: self._start_group(s) for s in self.placement.all_shards()}
        pings = [(g, r, a.ping.remote()) for g in groups.values() for r, a in enumerate(g.actors)]
        epochs = [0]
        for _, _, ref in pings:
            with contextlib.suppress(RayActorError, GetTimeoutError):
                epochs.append(int(ray.get(ref, timeout=self._wait)[4]))
        epoch = 1 + max(epochs)
        fences = [(g, r, g.actors[r].fence.remote(epoch)) for g, r, _ in pings]
        for g, r, ref in fences:
            try:
                if ray.get(ref) != epoch:   # a newer writer fenced it meanwhile: it writes
                    raise FailedPreconditionError(f"cluster {self.root}: another writer took the writing over")
            except RayActorError:
                g.set_applied(r, -1)   # not fenced: copied once it answers (catchup)
        for g in groups.values():
            numbers = replica_numbers(g)
            applied = [numbers.get(r, -1) if g.applied[r] != -1 else -1 for r in range(len(g.actors))]
            g.set_numbers(max(0, *applied), applied)   # none answered (-1 each): none is current until caught up
            g.epoch = epoch
        self._epoch = epoch
        self._moved.clear()
        self._state = Layout(self.placement, groups, None)
        for group in self._groups_now():   # replicas a crash left behind the others
            catch_up(group)
        self._repair()
        if self.placement.moving_to is not None:   # a rebalance was interrupted: finish it before serving
            from vecdb.cluster.rebalance import rebalance
            rebalance(self, list(self.placement.moving_to))

    def _refresh_view(self) -> None:
        """A router: the placement record again when it changed (shards added or removed, a
        rebalance started or done), and every replica's write number."""
        with self._layout_lock:
            if self._closed:
                return
            self._reload_placement()
            groups = self._groups_now()
        for group in groups:
            since = group.noted
            group.refresh(replica_numbers(group), since)

    def _reload_placement(self) -> None:
        """A router (caller holds the layout lock): the placement record again when it changed."""
        if self._writes:
            return
        raw = P.read_raw(self.root)
        if raw is None or raw == self._state.raw:
            return
        found = P.parse(raw, self.root / P.RECORD)
        old = self._groups
        groups = {s: old[s] if s in old else self._start_group(s) for s in found.all_shards()}
        self._state = Layout(found, groups, raw)
        self._tenants_forget()

    def _consistent(self, read: Callable[["Layout"], T]) -> T:
        """``read(layout)`` run against a layout that held throughout it (a seqlock on the
        layout): a router reads the placement record's bytes before and after (its
        generation makes them unique), the writer compares its own layout object; a change
        (a rebalance started or finished meanwhile) means reload and read again, as does an
        error raised while it changed (a removed shard stopped). Each pass is one small file
        read more for a router, nothing for the writer."""
        while True:
            view = self._state
            if view.raw is not None:   # a router: is the record still the one it holds?
                raw = P.read_raw(self.root)
                if raw is None:
                    raise DataLossError(f"cluster {self.root}: the placement record {P.RECORD} is gone")
                if raw != view.raw:
                    with self._layout_lock:
                        self._reload_placement()
                    view = self._state
                    if view.raw != raw:
                        continue   # changed again meanwhile
            try:
                out = read(view)
            except VecdbError:
                if self._held(view):
                    raise
                continue
            if self._held(view):
                return out

    def _held(self, view: "Layout") -> bool:
        """Whether the layout ``view`` still holds (see ``_consistent``)."""
        if view.raw is None:
            return self._state is view
        return P.read_raw(self.root) == view.raw

    def _stable_reads(self, view: Layout) -> contextlib.AbstractContextManager[None]:
        """Figures summed over shards see no point twice: during a rebalance the writer's wait
        for the batch being moved (a point is briefly on two shards). A router cannot hold
        the writer's locks: its figures may count a moving point twice or not at all while
        points move."""
        if view.placement.moving_to is None or not self._writes:
            return contextlib.nullcontext()
        return _holding([view.groups[s].lock for s in view.shards()])

    def _write_split(self, name: str, keys: list[bytes], uids: list[Any],
                     send: Callable[[ShardGroup, np.ndarray], PendingWrite], *, affine: bool = False,
                     home: bytes | None = None, place_new: bool = False) -> dict[int, Any]:
        """Send each owning shard its rows (``send``) and wait for all of them; the answers by
        shard. Raises the failing shard's exception, saying which ids were committed.

        ``affine`` (a multi-tenant collection): ids live where they were created, found by
        asking every shard under all the write locks; new ids (``place_new``) go to the shard
        of ``home`` (the writing tenant's key) or of their id; absent ids are left out."""
        while True:
            if affine:
                with self._all_locks():
                    owners = self._locate(self._state, name, keys)
                    absent = owners < 0
                    if place_new and absent.any():
                        ring = self.placement.ring()
                        owners[absent] = ring.owner(home) if home is not None else \
                            ring.owners([k for k, a in zip(keys, absent) if a])
                    return self._send_split(name, owners, uids, send)
            owners = self._owners(name, keys)
            shards = sorted(set(owners.tolist()))
            with self._locks(shards):
                if not np.array_equal(self._owners(name, keys), owners):
                    continue   # a rebalance step moved some of them meanwhile
                return self._send_split(name, owners, uids, send)

    def _send_split(self, name: str, owners: np.ndarray, uids: list[Any],
                    send: Callable[[ShardGroup, np.ndarray], PendingWrite]) -> dict[int, Any]:
        """``_write_split`` once the owners are known (caller holds their locks)."""
        shards = sorted(s for s in set(owners.tolist()) if s >= 0)
        pending = {s: send(self._groups[s], np.flatnonzero(owners == s)) for s in shards}
        results: dict[int, Any] = {}
        failures: dict[int, BaseException] = {}
        for s, p in pending.items():
            try:
                results[s] = p.result()
            except VecdbError as exc:
                failures[s] = exc
        if failures:
            raise _partial(name, owners, uids, results, failures)
        return results

    def _fan_out(self, view: Layout, shards: list[int], send: Callable[[ShardGroup], PendingRead]) -> dict[int, Any]:
        """Ask ``shards`` of ``view`` (``send``, one replica each); their answers by shard.
        While points move, in the placement's waves (``Placement.waves``), each wave sent once
        the one before answered: a point moves from a shard of an earlier wave to one of a
        later wave, copied there before it leaves, so a point the earlier shard no longer
        held when it answered was already on the later one when that was asked: every
        point is seen at least once (``merge`` drops the second copy). Else all at once."""
        out: dict[int, Any] = {}
        for wave in view.placement.waves(shards):
            pending = [(s, send(view.groups[s])) for s in wave]
            for s, p in pending:
                out[s] = p.result()
        return out

    def _read_points(self, view: Layout, name: str, keys: list[bytes],
                     send: Callable[[ShardGroup, np.ndarray], PendingRead],
                     affine: bool = False) -> tuple[list[tuple[np.ndarray, Any]], np.ndarray]:
        """The points of ``keys`` (``send`` asks a shard for some rows; it answers a mask of
        those it holds and their points): ([(rows, their points)] per answer, the rows no
        shard holds). Each id is asked of the shard holding it: its owner by the ring (the
        writer: where it wrote it), or in a multi-tenant collection (``affine``) the shard
        ``_locate`` finds. While points move, ids a shard did not hold are asked once more
        where they go (their target owner, or located again): a point leaves a shard only
        after it is on its new one, and moves once."""
        placement = view.placement
        owners = self._locate(view, name, keys) if affine else self._owners(name, keys, placement)
        rows = np.arange(len(keys))
        found: list[tuple[np.ndarray, Any]] = []
        missing: list[np.ndarray] = [rows[owners < 0]]
        rows = rows[owners >= 0]
        for attempt in range(2):
            split = [(s, rows[owners[rows] == s]) for s in sorted(set(owners[rows].tolist()))]
            pending = [(part, send(view.groups[s], part)) for s, part in split]
            left: list[np.ndarray] = []
            for part, p in pending:
                present, points = p.result()
                present = np.asarray(present, bool)
                found.append((part[present], points))
                left.append(part[~present])
            rows = np.concatenate(left) if left else rows[:0]
            if attempt or placement.moving_to is None or not len(rows):
                break
            sub = [keys[i] for i in rows]
            again = self._locate(view, name, sub) if affine else placement.target_ring().owners(sub)
            moved = (again >= 0) & (again != owners[rows])
            missing.append(rows[~moved])
            owners[rows] = again
            rows = rows[moved]
        missing.append(rows)
        return found, np.sort(np.concatenate(missing))

    def _locate(self, view: Layout, name: str, keys: list[bytes]) -> np.ndarray:
        """The shard holding each id key (-1: none), asking one replica of every shard (in
        waves while points move: a point moving meanwhile is found; one on two shards is
        given its later one, which it does not leave)."""
        owners = np.full(len(keys), -1, np.int64)
        if not keys:
            return owners
        answers = self._fan_out(view, view.shards(), lambda g: g.read("present", name, keys))
        for wave in view.placement.waves(view.shards()):
            for shard in wave:
                owners[np.array(answers[shard], bool)] = shard
        return owners

    def _tenant_shards(self, name: str, tenants: tuple[str, ...], view: Layout | None = None) -> list[ShardGroup]:
        """The shards a search of ``tenants`` in multi-tenant collection ``name`` must ask:
        those holding points the tenants may access, as of this router's view (every shard
        while a rebalance moves points). Each tenant's shards are asked once and kept with
        every shard's write number then; a shard whose number moved since (a write there,
        this router's own as soon as it is acknowledged) is asked again."""
        view = view or self._state
        if view.placement.moving_to is not None or self._writes:
            return [view.groups[s] for s in view.shards()]
        shards: set[int] = set()
        for tenant in tenants:
            key = (name, tenant)
            numbers = {s: view.groups[s].seq for s in view.shards()}   # before asking: a write meanwhile moves them
            with self._tenant_lock:
                known, then = self._tenant_cache.get(key, (set(), {}))
            ask = [s for s in view.shards() if s not in known and then.get(s) != numbers[s]]
            if ask:
                counts = [(s, view.groups[s].read("call", name, "count", (tenant,))) for s in ask]
                known = known | {s for s, p in counts if p.result() > 0}
                with self._tenant_lock:
                    self._tenant_cache[key] = (known, numbers)
            shards |= known
        return [view.groups[s] for s in view.shards() if s in shards]

    def _tenants_forget(self) -> None:
        """Drop every tenant's known shards (the layout changed)."""
        with self._tenant_lock:
            self._tenant_cache.clear()

    def _rest(self, method: str, args: tuple[Any, ...], already: type[VecdbError], name: str | None = None) -> None:
        """Carry a change the catalog shard made to every other shard (``already``: done there)."""
        catalog = min(self._groups)
        groups = [g for s, g in sorted(self._groups.items()) if s != catalog]
        pending = [g.write(method, *args) if name is None else g.write("call", name, method, args) for g in groups]
        for p in pending:
            with contextlib.suppress(already):
                p.result()

    def _everywhere(self, name: str, method: str, args: tuple[Any, ...], already: type[VecdbError]) -> None:
        """A tenant change: decided by the catalog shard (its exception is the answer), then
        made on every other shard, which also completes an earlier interrupted change."""
        with self._all_locks():
            try:
                self._catalog_group().write("call", name, method, args).result()
            except already:
                self._rest(method, args, already, name)
                raise
            self._rest(method, args, already, name)

    # ---- starting ----------------------------------------------------------------------------
    def _start_group(self, shard: int) -> ShardGroup:
        """The replica actors of ``shard`` (started, or found running under their names),
        with the number of the last write each applied."""
        cls = ray.remote(ShardReplica)

        def start(r: int) -> Any:
            folder = self.root / f"shard-{shard}" / f"replica-{r}"
            return cls.options(name=f"vecdb-{self._tag}-s{shard}-r{r}", namespace=NAMESPACE, get_if_exists=True,
                               **ACTOR_OPTIONS).remote(str(folder), shard, r, self._db_options)

        actors = [start(r) for r in range(self.placement.replicas)]
        applied = []
        deadline = time.monotonic() + self._wait
        for r in range(len(actors)):
            while True:
                try:
                    applied.append(int(ray.get(actors[r].ping.remote())[3]))
                    break
                except RayActorError as exc:
                    # found under its name but dying with the router that started it: start it
                    # again once it is gone (its own failure to start is the answer)
                    if exc.actor_init_failed or time.monotonic() > deadline:
                        raise UnavailableError(f"replica {r} of shard {shard} did not start: {exc.error_msg}") from None
                    time.sleep(0.2)
                    actors[r] = start(r)
                except Exception as exc:  # noqa: BLE001 - the replica's own error, unwrapped
                    raise unwrap(exc) from None
        return ShardGroup(shard, actors, applied, self._wait, revive=start, epoch=self._epoch,
                          on_behind=self._catch_up.wake if self._catch_up is not None else None,
                          listed=lambda: self._still_listed(shard))

    def _still_listed(self, shard: int) -> bool:
        """Whether this layout still lists ``shard`` (a router reads the placement record
        again first)."""
        if not self._writes and not self._closed:
            with self._layout_lock:
                self._reload_placement()
        return shard in self._groups

    def _add_shard(self, shard: int) -> ShardGroup:
        """Start ``shard`` holding every collection and tenant (empty); callers hold all locks."""
        group = self._start_group(shard)
        for info in self.list_collections():
            tenants = self._catalog_group().read("call", info.name, "list_tenants").result()
            with contextlib.suppress(AlreadyExistsError):
                group.write("create_collection", info).result()
            for t in tenants:
                with contextlib.suppress(AlreadyExistsError):
                    group.write("call", info.name, "create_tenant", (t,)).result()
        return group

    def _repair(self) -> None:
        """Make every shard hold the catalog's collections and tenants, and nothing else
        (completes a create or drop a crash interrupted after the catalog shard)."""
        catalog = min(self._groups)
        infos = {i.name: i for i in self._catalog_group().read("list_collections").result()}
        tenants = {n: set(self._catalog_group().read("call", n, "list_tenants").result()) for n in infos}
        for s, group in sorted(self._groups.items()):
            if s == catalog:
                continue
            have = {i.name for i in group.read("list_collections").result()}
            for name in have - set(infos):
                with contextlib.suppress(CollectionNotFoundError):
                    group.write("drop_collection", name).result()
            for name, info in infos.items():
                if name not in have:
                    group.write("create_collection", info).result()
                held = set(group.read("call", name, "list_tenants").result())
                for t in sorted(tenants[name] - held):
                    group.write("call", name, "create_tenant", (t,)).result()
                for t in sorted(held - tenants[name]):
                    with contextlib.suppress(TenantNotFoundError):
                        group.write("call", name, "drop_tenant", (t,)).result()


def _check_layout(root: Path, found: P.Placement, shards: int | None, replicas: int | None) -> None:
    """InvalidArgumentError when ``shards`` / ``replicas`` (None: whatever it has) are not the
    layout ``found`` of the existing cluster ``root``."""
    if replicas is not None and _count(replicas, 2, "replicas") != found.replicas:
        raise InvalidArgumentError(f"cluster {root} has {found.replicas} replicas per shard, not {replicas}")
    if shards is not None and found.moving_to is None and _count(shards, 3, "shards") != len(found.shards):
        raise InvalidArgumentError(f"cluster {root} has {len(found.shards)} shards, not {shards}; "
                                   f"use rebalance() to change it")


def _partial(name: str, owners: np.ndarray, uids: list[Any], results: dict[int, Any],
             failures: dict[int, BaseException]) -> BaseException:
    """The exception for a batch some shards refused: the first refusal as is when nothing was
    committed; else its class, its message saying which ids were committed and which not
    (also as ``committed_ids`` / ``failed_ids``)."""
    first_shard = min(failures)
    first = failures[first_shard]
    if not results:
        return first
    committed = [uids[i] for i in np.flatnonzero(np.isin(owners, list(results)))]
    failed = [uids[i] for i in np.flatnonzero(np.isin(owners, list(failures)))]
    exc = type(first)(f"{first} -- partly written to collection {name!r}: committed on shard(s) {sorted(results)} "
                      f"for {len(committed)} id(s) {committed[:10]}{'...' if len(committed) > 10 else ''}; "
                      f"not written on shard(s) {sorted(failures)} for {len(failed)} id(s) {failed[:10]}"
                      f"{'...' if len(failed) > 10 else ''}")
    exc.committed_ids = committed   # type: ignore[attr-defined]
    exc.failed_ids = failed         # type: ignore[attr-defined]
    return exc


@contextlib.contextmanager
def _holding(locks: list[threading.Lock]) -> Iterator[None]:
    """Hold ``locks`` (given in shard order: every router takes them in one order)."""
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def _count(value: Any, default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise InvalidArgumentError(f"{what} must be an integer in 1..1024, got {value!r}")
    return value
