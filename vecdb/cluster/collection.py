"""``ClusterCollection``: one collection spread over the shards of a cluster, with exactly the
API of an embedded collection (``vecdb.api.CollectionAPI``).

Calls are validated here (the public boundary). Reads are split by owning shard
(``placement``) and sent to one replica of each shard at once; writes go to the cluster's
writer as one call (``writes``), which splits them by owning shard for the replicas. A
write spanning shards either commits on all of them or raises the failing shard's exception class, whose message
(and the ``committed_ids`` / ``failed_ids`` attributes) says which ids were committed;
nothing is acknowledged that was not committed on every current replica of its shard (a
replica down longer than the write wait is left behind and caught up once back)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from vecdb.api import (CollectionInfo, CollectionStats, Filter, GetResult, Payload, QueryResult, SearchRequest,
                       check_tenant)
from vecdb.cluster.merge import merge_topk
from vecdb.cluster.points import check_tenant_arg, check_upsert, not_found_message
from vecdb.collection.idkeys import id_keys
from vecdb.errors import IdNotFoundError, InvalidArgumentError, TenantNotFoundError

if TYPE_CHECKING:
    from vecdb.cluster.shards import Shards


class ClusterCollection:
    """A collection of a ``ClusterDatabase``; get one from it."""

    def __init__(self, shards: "Shards", write: Callable[..., Any], info: CollectionInfo) -> None:
        self._shards = shards   # the router's shard layer: reads go straight to the replicas
        self._write = write     # the router's way to the writer: write(op, *args)
        self._info = info
        self._affine = info.multi_tenant   # points placed by owner tenant, ids located by asking

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def info(self) -> CollectionInfo:
        return self._info

    def __repr__(self) -> str:
        return f"ClusterCollection({self._info.name!r}, dim={self._info.dim}, metric={self._info.metric!r})"

    # ---- writes (validated here, then sent to the cluster's writer: ``writes``) ---------------
    def upsert(self, ids: Sequence[int | str] | np.ndarray, vectors: Any,
               payloads: Sequence[Payload | None] | None = None, tenant: str | Sequence[str] | None = None) -> None:
        """Insert or replace points; returns once every current replica of every shard involved
        has committed its part (see the module docs for a batch that fails on some shard)."""
        self._shards.check()
        up = check_upsert(self._info, ids, vectors, payloads, tenant)
        if up.keys:
            self._write("upsert", self.name, up)

    def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        """Delete points (with ``tenant``: see ``vecdb.api``); how many left the caller's view."""
        self._shards.check()
        keys, uids = id_keys(self._info, ids, unique=False)
        name = check_tenant_arg(tenant)
        if not keys:
            if name is not None:
                self._require_tenant(name)   # as embedded: an unknown tenant is an error even with no ids
            return 0
        return int(self._write("delete", self.name, keys, uids, name))

    def create_tenant(self, tenant: str) -> None:
        """Create the tenant on every shard; AlreadyExistsError if it exists."""
        self._shards.check()
        self._write("create_tenant", self.name, check_tenant(tenant))

    def drop_tenant(self, tenant: str) -> None:
        """Drop the tenant and its access on every shard (the points stay)."""
        self._shards.check()
        self._write("drop_tenant", self.name, check_tenant(tenant))

    def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray, write: bool = False) -> None:
        """Give ``tenant`` read (``write=True``: also replace) access; IdNotFoundError (nothing
        changed) if any id is missing."""
        if not isinstance(write, (bool, np.bool_)):
            raise InvalidArgumentError(f"write must be True or False, got {write!r:.80}")
        self._membership("grant", tenant, ids, {"write": bool(write)})

    def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Take all of ``tenant``'s access to the points away (the points stay)."""
        self._membership("revoke", tenant, ids, {})

    def _membership(self, method: str, tenant: str, ids: Any, extra: dict[str, Any]) -> None:
        self._shards.check()
        name = check_tenant(tenant)
        keys, uids = id_keys(self._info, ids, unique=False)
        self._write("membership", self.name, method, name, keys, uids, extra)

    def train(self) -> None:
        """Train (or retrain) each shard's index on its points; FailedPreconditionError when the
        collection is empty (shards without points keep their exact scan)."""
        self._shards.check()
        self._write("train", self.name)

    # ---- reads ---------------------------------------------------------------------------
    def count(self, tenant: str | None = None) -> int:
        """Number of points (of ``tenant`` when given), summed over the shards."""
        self._shards.check()
        name = check_tenant_arg(tenant)

        def count(view: Any) -> int:
            with self._shards.stable_reads(view):
                pending = [view.groups[s].read("call", self.name, "count", (name,)) for s in view.shards()]
                return sum(int(p.result()) for p in pending)

        return self._shards.consistent(count)

    def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        """Vectors and payloads of ``ids`` in the order asked; IdNotFoundError (the embedded
        message) if any is missing or, with ``tenant``, not visible to it."""
        self._shards.check()
        keys, uids = id_keys(self._info, ids, unique=False)
        name = check_tenant_arg(tenant)
        found, missing = self._points(keys, uids, name)
        if len(missing):
            raise IdNotFoundError(not_found_message(self.name, [uids[i] for i in missing]))
        vectors = np.zeros((len(uids), self._info.dim), np.float32)
        payloads: list[Payload | None] = [None] * len(uids)
        for rows, answer in found:
            if not len(rows):
                continue
            vectors[rows] = answer.vectors
            for j, row in enumerate(rows):
                payloads[row] = answer.payloads[j]
        return GetResult(_id_array(self._info, uids), vectors, payloads)

    def _points(self, keys: list[bytes], uids: list[Any], tenant: str | None) -> tuple[list[tuple[np.ndarray, Any]],
                                                                                       np.ndarray]:
        """``Shards.read_points`` of these ids, over a layout that held throughout."""
        def send(g: Any, rows: np.ndarray) -> Any:
            return g.read("get", self.name, [uids[i] for i in rows], tenant)

        return self._shards.consistent(lambda view: self._shards.read_points(view, self.name, keys, send, self._affine))

    def search(self, queries: Any, k: int = 10, filter: Filter | None = None,
               tenant: str | Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
               with_payloads: bool = False) -> QueryResult:
        """The k nearest points per query row over all shards (a tenant's over its shards),
        ranked by (distance, id); the whole batch of queries travels as one message per shard."""
        self._shards.check()
        req = SearchRequest.build(self._info, queries, k, filter, tenant, params, with_payloads)
        return self.execute(req)

    def execute(self, req: SearchRequest) -> QueryResult:
        """Run a validated search on every shard that can hold hits, and merge exactly."""
        self._shards.check()
        sent = req._replace(params=dict(req.params))   # a plain dict travels; the shard resolves the knobs

        def search(view: Any) -> QueryResult:
            shards = self._search_shards(view, req.tenant)
            if not shards:   # the tenants hold no point anywhere (their names were checked)
                return _no_hits(self._info, len(req.queries), req.k, req.with_payloads)
            answers = self._shards.fan_out(view, shards, lambda g: g.read("execute", self.name, sent))
            return merge_topk([answers[s] for s in shards], req.k, self._info.id_type)

        return self._shards.consistent(search)

    def search_shards(self, tenant: str | tuple[str, ...] | None = None) -> list[int]:
        """The shards a search (of ``tenant``: a checked name or names) is sent to: every shard,
        or in a multi-tenant collection those holding points the tenants may access (the
        tenants' own points share one shard: ``placement.placement_key``)."""
        return self._search_shards(self._shards.layout, tenant)

    def _search_shards(self, view: Any, tenant: str | tuple[str, ...] | None) -> list[int]:
        if not self._affine or tenant is None:
            return view.shards()  # type: ignore[no-any-return]
        names = (tenant,) if isinstance(tenant, str) else tuple(tenant)
        return [g.shard for g in self._shards.tenant_shards(self.name, names, view)]

    def list_tenants(self) -> list[str]:
        """Names of all tenants, sorted (as the catalog shard records them)."""
        self._shards.check()
        return self._shards.catalog_group().read("call", self.name, "list_tenants").result()  # type: ignore[no-any-return]

    def stats(self) -> CollectionStats:
        """Figures summed over the shards (one replica each); ``trained`` when every shard
        holding points serves from its index."""
        self._shards.check()

        def stats(view: Any) -> list[CollectionStats]:
            with self._shards.stable_reads(view):
                return [p.result() for p in [view.groups[s].read("call", self.name, "stats") for s in view.shards()]]

        parts = self._shards.consistent(stats)
        holding = [s for s in parts if s.count] or parts
        return CollectionStats(count=sum(s.count for s in parts), memory_bytes=sum(s.memory_bytes for s in parts),
                               disk_bytes=sum(s.disk_bytes for s in parts), index=parts[0].index,
                               index_params=dict(parts[0].index_params), n_tenants=parts[0].n_tenants,
                               trained=all(s.trained for s in holding), indexed=sum(s.indexed for s in parts),
                               pending=sum(s.pending for s in parts))

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds, on every replica at once) until every replica's
        index holds all its points; True when all do."""
        self._shards.check()
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
                raise InvalidArgumentError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r:.80}")
            timeout = float(timeout)
        answers = [g.everyone("call", self.name, "wait_indexed", (timeout,)) for g in self._shards.groups_now()]
        return all(all(p.all_results()) for p in answers)

    # ---- helpers -------------------------------------------------------------------------
    def _require_tenant(self, name: str) -> None:
        if name not in self.list_tenants():
            raise TenantNotFoundError(f"no tenant {name!r} in collection {self.name!r}")


def _no_hits(info: CollectionInfo, nq: int, k: int, with_payloads: bool) -> QueryResult:
    ids = np.full((nq, k), -1, np.int64) if info.id_type == "int" else np.full((nq, k), None, object)
    return QueryResult(ids, np.full((nq, k), np.inf, np.float32), [[None] * k for _ in range(nq)] if with_payloads else None)


def _id_array(info: CollectionInfo, uids: list[Any]) -> np.ndarray:
    if info.id_type == "int":
        return np.array(uids, np.int64).reshape(-1)
    out = np.empty(len(uids), object)
    out[:] = uids
    return out
