"""``Shards``: the shard layer of a vecdb cluster, shared by a router (``ClusterDatabase``,
``ClusterCollection``) and the writer (``writes.Writes``, ``rebalance``): the layout (the
placement record and the replica groups of its shards), each shard's write lock, and the
ways requests reach the shards: a write split by owning shard (``write_split``), reads of
points located by owner (``read_points``), a fan-out in the placement's waves
(``fan_out``) and reads checked against a layout that held throughout (``consistent``).

One object per router or writer; ``writes`` says which role it serves (the writer knows the
ids a rebalance in progress moved and holds the write locks; a router knows neither and
reads the placement record again when it changed)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, TypeVar

import numpy as np
import ray
from ray.exceptions import RayActorError

from vecdb.api import CollectionInfo
from vecdb.cluster import placement as P
from vecdb.cluster.replicas import PendingRead, PendingWrite, ShardGroup, unwrap
from vecdb.cluster.shard import ShardReplica
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, FailedPreconditionError, InvalidArgumentError,
                          TenantNotFoundError, UnavailableError, VecdbError)

NAMESPACE = "vecdb"
#: Ray options of a replica actor: no CPU reserved (a replica is mostly idle, and a small
#: machine must fit many), restarted for ever by Ray, calls never replayed by Ray itself
#: (the writer retries writes and routers fail reads over), threaded, and detached: a router
#: that dies leaves its replicas serving (the next router finds them by name, indexes
#: loaded); the last router to close stops them.
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


class Shards:
    """The shards of one cluster as a router or the writer sees them (see the module docs)."""

    def __init__(self, root: Path, tag: str, layout: Layout, *, writes: bool, wait_seconds: float,
                 db_options: Mapping[str, Any]) -> None:
        self.root = root
        self.layout = layout
        self.writes = writes             # the writer's view (else a router's)
        self.wait = float(wait_seconds)
        self.layout_lock = threading.RLock()
        self.closed = False
        self.moved: dict[str, set[bytes]] = {}   # writer: ids a rebalance in progress moved, by collection
        self.epoch: int | None = None            # writer: the epoch it fenced the replicas with
        self.on_behind: Callable[[], None] | None = None   # writer: wakes the catch-up of replicas left behind
        self._tag = tag
        self._db_options = dict(db_options)
        self._tenant_lock = threading.Lock()
        #: router: (collection, tenant) -> (shards holding points it may access, every shard's
        #: write number when that was asked): valid for the shards whose number did not move
        self._tenant_cache: dict[tuple[str, str], tuple[set[int], dict[int, int]]] = {}

    @property
    def placement(self) -> P.Placement:
        """The layout's placement (a router's: as last read)."""
        return self.layout.placement

    @placement.setter
    def placement(self, value: P.Placement) -> None:
        self.layout = self.layout._replace(placement=value)

    @property
    def groups(self) -> dict[int, ShardGroup]:
        """The replica groups by shard."""
        return self.layout.groups

    @groups.setter
    def groups(self, value: dict[int, ShardGroup]) -> None:
        self.layout = self.layout._replace(groups=value)

    def check(self) -> None:
        """FailedPreconditionError once closed (the database was closed)."""
        if self.closed:
            raise FailedPreconditionError(f"cluster database {self.root} is closed")

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection's CollectionInfo, sorted by name (from the catalog shard)."""
        return self.catalog_group().read("list_collections").result()  # type: ignore[no-any-return]

    def groups_now(self) -> list[ShardGroup]:
        groups = self.groups
        return [groups[s] for s in sorted(groups)]


    def catalog_group(self) -> ShardGroup:
        return self.groups[min(self.groups)]


    def owners(self, name: str, keys: list[bytes], placement: P.Placement | None = None) -> np.ndarray:
        """The shard each id key is written to now (during a rebalance: the new shard of
        the points already moved, the old one of the rest; a router knows of none moved).
        ``placement``: of a layout read by ``_consistent`` (else the current one)."""
        placement = placement or self.placement
        owners = placement.ring().owners(keys)
        moved = self.moved.get(name)
        target = placement.target_ring()
        if moved and target is not None:
            done = np.fromiter((k in moved for k in keys), bool, len(keys))
            if done.any():
                owners[done] = target.owners([k for k, d in zip(keys, done) if d])
        return owners


    def locks(self, shards: list[int]) -> contextlib.AbstractContextManager[None]:
        groups = self.groups
        return holding([groups[s].lock for s in sorted(shards)])


    def all_locks(self) -> contextlib.AbstractContextManager[None]:
        return self.locks(list(self.groups))


    def consistent(self, read: Callable[["Layout"], T]) -> T:
        """``read(layout)`` run against a layout that held throughout it (a seqlock on the
        layout): a router reads the placement record's bytes before and after (its
        generation makes them unique), the writer compares its own layout object; a change
        (a rebalance started or finished meanwhile) means reload and read again, as does an
        error raised while it changed (a removed shard stopped). Each pass is one small file
        read more for a router, nothing for the writer."""
        while True:
            view = self.layout
            if view.raw is not None:   # a router: is the record still the one it holds?
                raw = P.read_raw(self.root)
                if raw is None:
                    raise DataLossError(f"cluster {self.root}: the placement record {P.RECORD} is gone")
                if raw != view.raw:
                    with self.layout_lock:
                        self.reload_placement()
                    view = self.layout
                    if view.raw != raw:
                        continue   # changed again meanwhile
            try:
                out = read(view)
            except VecdbError:
                if self.held(view):
                    raise
                continue
            if self.held(view):
                return out


    def held(self, view: "Layout") -> bool:
        """Whether the layout ``view`` still holds (see ``_consistent``)."""
        if view.raw is None:
            return self.layout is view
        return P.read_raw(self.root) == view.raw


    def stable_reads(self, view: Layout) -> contextlib.AbstractContextManager[None]:
        """Figures summed over shards see no point twice: during a rebalance the writer's wait
        for the batch being moved (a point is briefly on two shards). A router cannot hold
        the writer's locks: its figures may count a moving point twice or not at all while
        points move."""
        if view.placement.moving_to is None or not self.writes:
            return contextlib.nullcontext()
        return holding([view.groups[s].lock for s in view.shards()])


    def write_split(self, name: str, keys: list[bytes], uids: list[Any],
                     send: Callable[[ShardGroup, np.ndarray], PendingWrite], *, affine: bool = False,
                     home: bytes | None = None, place_new: bool = False) -> dict[int, Any]:
        """Send each owning shard its rows (``send``) and wait for all of them; the answers by
        shard. Raises the failing shard's exception, saying which ids were committed.

        ``affine`` (a multi-tenant collection): ids live where they were created, found by
        asking every shard under all the write locks; new ids (``place_new``) go to the shard
        of ``home`` (the writing tenant's key) or of their id; absent ids are left out."""
        while True:
            if affine:
                with self.all_locks():
                    owners = self.locate(self.layout, name, keys)
                    absent = owners < 0
                    if place_new and absent.any():
                        ring = self.placement.ring()
                        owners[absent] = ring.owner(home) if home is not None else \
                            ring.owners([k for k, a in zip(keys, absent) if a])
                    return self._send_split(name, owners, uids, send)
            owners = self.owners(name, keys)
            shards = sorted(set(owners.tolist()))
            with self.locks(shards):
                if not np.array_equal(self.owners(name, keys), owners):
                    continue   # a rebalance step moved some of them meanwhile
                return self._send_split(name, owners, uids, send)


    def _send_split(self, name: str, owners: np.ndarray, uids: list[Any],
                    send: Callable[[ShardGroup, np.ndarray], PendingWrite]) -> dict[int, Any]:
        """``_write_split`` once the owners are known (caller holds their locks)."""
        shards = sorted(s for s in set(owners.tolist()) if s >= 0)
        pending = {s: send(self.groups[s], np.flatnonzero(owners == s)) for s in shards}
        results: dict[int, Any] = {}
        failures: dict[int, BaseException] = {}
        for s, p in pending.items():
            try:
                results[s] = p.result()
            except VecdbError as exc:
                failures[s] = exc
        if failures:
            raise partial_failure(name, owners, uids, results, failures)
        return results


    def fan_out(self, view: Layout, shards: list[int], send: Callable[[ShardGroup], PendingRead]) -> dict[int, Any]:
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


    def read_points(self, view: Layout, name: str, keys: list[bytes],
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
        owners = self.locate(view, name, keys) if affine else self.owners(name, keys, placement)
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
            again = self.locate(view, name, sub) if affine else placement.target_ring().owners(sub)
            moved = (again >= 0) & (again != owners[rows])
            missing.append(rows[~moved])
            owners[rows] = again
            rows = rows[moved]
        missing.append(rows)
        return found, np.sort(np.concatenate(missing))


    def locate(self, view: Layout, name: str, keys: list[bytes]) -> np.ndarray:
        """The shard holding each id key (-1: none), asking one replica of every shard (in
        waves while points move: a point moving meanwhile is found; one on two shards is
        given its later one, which it does not leave)."""
        owners = np.full(len(keys), -1, np.int64)
        if not keys:
            return owners
        answers = self.fan_out(view, view.shards(), lambda g: g.read("present", name, keys))
        for wave in view.placement.waves(view.shards()):
            for shard in wave:
                owners[np.array(answers[shard], bool)] = shard
        return owners


    def tenant_shards(self, name: str, tenants: tuple[str, ...], view: Layout | None = None) -> list[ShardGroup]:
        """The shards a search of ``tenants`` in multi-tenant collection ``name`` must ask:
        those holding points the tenants may access, as of this router's view (every shard
        while a rebalance moves points). Each tenant's shards are asked once and kept with
        every shard's write number then; a shard whose number moved since (a write there,
        this router's own as soon as it is acknowledged) is asked again."""
        view = view or self.layout
        if view.placement.moving_to is not None or self.writes:
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


    def tenants_forget(self) -> None:
        """Drop every tenant's known shards (the layout changed)."""
        with self._tenant_lock:
            self._tenant_cache.clear()


    def rest(self, method: str, args: tuple[Any, ...], already: type[VecdbError], name: str | None = None) -> None:
        """Carry a change the catalog shard made to every other shard (``already``: done there)."""
        catalog = min(self.groups)
        groups = [g for s, g in sorted(self.groups.items()) if s != catalog]
        pending = [g.write(method, *args) if name is None else g.write("call", name, method, args) for g in groups]
        for p in pending:
            with contextlib.suppress(already):
                p.result()


    def everywhere(self, name: str, method: str, args: tuple[Any, ...], already: type[VecdbError]) -> None:
        """A tenant change: decided by the catalog shard (its exception is the answer), then
        made on every other shard, which also completes an earlier interrupted change."""
        with self.all_locks():
            try:
                self.catalog_group().write("call", name, method, args).result()
            except already:
                self.rest(method, args, already, name)
                raise
            self.rest(method, args, already, name)


    def start_group(self, shard: int) -> ShardGroup:
        """The replica actors of ``shard`` (started, or found running under their names),
        with the number of the last write each applied."""
        cls = ray.remote(ShardReplica)

        def start(r: int) -> Any:
            folder = self.root / f"shard-{shard}" / f"replica-{r}"
            return cls.options(name=f"vecdb-{self._tag}-s{shard}-r{r}", namespace=NAMESPACE, get_if_exists=True,
                               **ACTOR_OPTIONS).remote(str(folder), shard, r, self._db_options)

        actors = [start(r) for r in range(self.placement.replicas)]
        applied = []
        deadline = time.monotonic() + self.wait
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
        return ShardGroup(shard, actors, applied, self.wait, revive=start, epoch=self.epoch,
                          on_behind=self.on_behind,
                          listed=lambda: self._still_listed(shard))


    def _still_listed(self, shard: int) -> bool:
        """Whether this layout still lists ``shard`` (a router reads the placement record
        again first)."""
        if not self.writes and not self.closed:
            with self.layout_lock:
                self.reload_placement()
        return shard in self.groups


    def add_shard(self, shard: int) -> ShardGroup:
        """Start ``shard`` holding every collection and tenant (empty); callers hold all locks."""
        group = self.start_group(shard)
        for info in self.list_collections():
            tenants = self.catalog_group().read("call", info.name, "list_tenants").result()
            with contextlib.suppress(AlreadyExistsError):
                group.write("create_collection", info).result()
            for t in tenants:
                with contextlib.suppress(AlreadyExistsError):
                    group.write("call", info.name, "create_tenant", (t,)).result()
        return group


    def repair(self) -> None:
        """Make every shard hold the catalog's collections and tenants, and nothing else
        (completes a create or drop a crash interrupted after the catalog shard)."""
        catalog = min(self.groups)
        infos = {i.name: i for i in self.catalog_group().read("list_collections").result()}
        tenants = {n: set(self.catalog_group().read("call", n, "list_tenants").result()) for n in infos}
        for s, group in sorted(self.groups.items()):
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


    def reload_placement(self) -> None:
        """A router (caller holds the layout lock): the placement record again when it changed."""
        if self.writes:
            return
        raw = P.read_raw(self.root)
        if raw is None or raw == self.layout.raw:
            return
        found = P.parse(raw, self.root / P.RECORD)
        old = self.groups
        groups = {s: old[s] if s in old else self.start_group(s) for s in found.all_shards()}
        self.layout = Layout(found, groups, raw)
        self.tenants_forget()



def partial_failure(name: str, owners: np.ndarray, uids: list[Any], results: dict[int, Any],
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
def holding(locks: list[threading.Lock]) -> Iterator[None]:
    """Hold ``locks`` (given in shard order: every writer takes them in one order)."""
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def cluster_tag(root: Path) -> str:
    """The short name of cluster ``root`` in its actors' names (from its real path)."""
    return hashlib.blake2b(os.path.realpath(root).encode(), digest_size=6).hexdigest()


def count_arg(value: Any, default: int, what: str) -> int:
    """A shard or replica count (``default`` when None); InvalidArgumentError unless 1..1024."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise InvalidArgumentError(f"{what} must be an integer in 1..1024, got {value!r}")
    return value
