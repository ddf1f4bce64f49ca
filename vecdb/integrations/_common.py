"""What both framework adapters share, free of either framework: finding (or creating) the
collection lazily, sync and asyncio; turning distances into similarities; reading hits
and points; Mongo-style metadata filters into vecdb's filter grammar (``vecdb.api``).

Similarity (higher is better) from vecdb's distance ``d`` (smaller is closer), by metric:
  cosine: ``d = 1 - cos``        -> ``cos``            in [-1, 1]
  ip:     ``d = -<q, x>``        -> ``<q, x>``         (unbounded)
  l2:     ``d = |q - x|^2``      -> ``1 / (1 + d)``    in (0, 1]
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import numpy as np

from vecdb.api import CollectionAPI, QueryResult, check_tenant
from vecdb.errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    IdNotFoundError,
    InvalidArgumentError,
)


def similarity(metric: str, distance: float) -> float:
    """The similarity (higher is better) of a hit at vecdb ``distance`` under ``metric``."""
    if metric == "cosine":
        return min(1.0, max(-1.0, 1.0 - distance))   # float32 rounding can step past +-1
    if metric == "ip":
        return -distance
    if metric == "l2":
        return 1.0 / (1.0 + max(distance, 0.0))
    raise InvalidArgumentError(f"no similarity is defined for metric {metric!r}")


def relevance(metric: str, sim: float) -> float:
    """A similarity rescaled to [0, 1] (1 = identical): ``(1 + cos) / 2`` for cosine, the
    same for ip (exact for unit-norm embeddings), ``1 / (1 + d)`` as is for l2."""
    if metric in ("cosine", "ip"):
        return (1.0 + sim) / 2.0
    return sim


def hits(result: QueryResult, row: int = 0) -> list[tuple[str, dict[str, Any] | None, float]]:
    """``(id, payload, distance)`` of the real hits of query ``row`` (padding dropped)."""
    out = []
    payloads = result.payloads[row] if result.payloads is not None else None
    for j, (ident, dist) in enumerate(zip(result.ids[row].tolist(), result.distances[row].tolist())):
        if ident is None or ident == -1 or not math.isfinite(dist):
            continue
        out.append((str(ident), payloads[j] if payloads is not None else None, float(dist)))
    return out


def unique_ids(ids: Sequence[Any], what: str = "ids") -> list[str]:
    """``ids`` as distinct non-empty strings, first occurrence first."""
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise InvalidArgumentError(f"{what} must be a list of strings, got {type(ids).__name__}")
    for ident in ids:
        if not isinstance(ident, str) or not ident:
            raise InvalidArgumentError(f"{what} must be non-empty strings, got {ident!r:.80}")
    return list(dict.fromkeys(ids))


def checked_k(k: Any, what: str = "k") -> int:
    """A result count: an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"{what} must be an int >= 1, got {k!r:.80}")
    return int(k)


def knobs(base: Any, extra: Any = None) -> dict[str, Any]:
    """Search knobs: the store's defaults (``base``) updated by one call's ``params``."""
    out: dict[str, Any] = {}
    for what, part in (("search_params", base), ("params", extra)):
        if part is None:
            continue
        if not isinstance(part, Mapping):
            raise InvalidArgumentError(f"{what} must be a dict of search knobs, got {type(part).__name__}")
        out.update(part)
    return out


def vectors_of(rows: Sequence[Sequence[float]], n: int) -> np.ndarray:
    """Embeddings as a float32 (n, dim) matrix; a clear error when the embedder gave the
    wrong number of rows or ragged ones."""
    if len(rows) != n:
        raise InvalidArgumentError(f"the embedding model returned {len(rows)} vectors for {n} texts")
    try:
        x = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"the embedding model returned vectors that are not a numeric matrix: {exc}") from None
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidArgumentError(f"the embedding model returned vectors of shape {x.shape}, expected (n, dim)")
    return x


# ---- finding the collection -------------------------------------------------------------------


class Target:
    """The collection a store writes to, found (or, on the first write, created with the
    embeddings' dimension) lazily: a store can be built before the collection exists, and a
    read of a missing collection is an empty answer rather than an error. With ``tenant``
    and ``create_tenant`` the tenant is created on first use when missing (an admin call)."""

    def __init__(self, name: str, *, metric: str, index: str, index_params: Mapping[str, Any] | None,
                 tenant: str | None, create_tenant: bool) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"collection_name must be a non-empty string, got {name!r:.80}")
        self.name = name
        self.metric = metric
        self.index = index
        self.index_params = dict(index_params or {})
        self.tenant = None if tenant is None else check_tenant(tenant)
        self.create_tenant = bool(create_tenant)

    def checked(self, coll: Any) -> Any:
        """``coll`` if its ids are strings (framework ids are), else InvalidArgumentError."""
        if coll.info.id_type != "str":
            raise InvalidArgumentError(f"collection {self.name!r} has {coll.info.id_type} ids; the framework "
                                       "adapters need a collection created with id_type='str'")
        return coll

    def drop(self, database: Any) -> None:
        """Drop the collection (every tenant's documents); nothing to do when it is missing."""
        try:
            database.drop_collection(self.name)
        except CollectionNotFoundError:
            pass

    def resolve(self, database: Any, dim: int | None, cached: Any) -> Any:
        """The collection (``cached`` if set); None when it is missing and ``dim`` is None."""
        if cached is not None:
            return cached
        try:
            coll = database.get_collection(self.name)
        except CollectionNotFoundError:
            if dim is None:
                return None
            try:
                coll = database.create_collection(self.name, dim, metric=self.metric, index=self.index,
                                                  index_params=self.index_params, id_type="str")
            except AlreadyExistsError:   # created meanwhile by another writer
                coll = database.get_collection(self.name)
        coll = self.checked(coll)
        if self.tenant is not None and self.create_tenant and self.tenant not in coll.list_tenants():
            try:
                coll.create_tenant(self.tenant)
            except AlreadyExistsError:
                pass
        return coll

    async def aresolve(self, database: Any, dim: int | None, cached: Any) -> Any:
        """``resolve`` on an asyncio client (``vecdb.aio_client.AsyncDatabase``)."""
        if cached is not None:
            return cached
        try:
            coll = await database.get_collection(self.name)
        except CollectionNotFoundError:
            if dim is None:
                return None
            try:
                coll = await database.create_collection(self.name, dim, metric=self.metric, index=self.index,
                                                        index_params=self.index_params, id_type="str")
            except AlreadyExistsError:
                coll = await database.get_collection(self.name)
        coll = self.checked(coll)
        if self.tenant is not None and self.create_tenant and self.tenant not in await coll.list_tenants():
            try:
                await coll.create_tenant(self.tenant)
            except AlreadyExistsError:
                pass
        return coll


class LoopClients:
    """One asyncio client per event loop, made by ``factory`` on first use in that loop (a
    ``grpc.aio`` channel belongs to the loop it was made in); a client whose loop has closed
    is dropped. ``ours`` says whether we made it (and so may close it)."""

    def __init__(self, factory: Callable[[], Any] | None, given: Any = None) -> None:
        self._factory = factory
        self._given = given
        self._by_loop: dict[int, tuple[asyncio.AbstractEventLoop, Any, dict[str, Any]]] = {}

    @property
    def enabled(self) -> bool:
        return self._factory is not None or self._given is not None

    def current(self) -> tuple[Any, dict[str, Any]]:
        """The client for the running loop and a per-client scratch dict (for the cached
        collection handle)."""
        loop = asyncio.get_running_loop()
        for key, (other, _, _) in list(self._by_loop.items()):
            if other.is_closed():
                del self._by_loop[key]
        entry = self._by_loop.get(id(loop))
        if entry is None or entry[0] is not loop:
            client = self._given if self._given is not None else self._factory()  # type: ignore[misc]
            entry = self._by_loop[id(loop)] = (loop, client, {})
        return entry[1], entry[2]

    async def aclose(self) -> None:
        """Close the client we made for the running loop (a given client is the caller's)."""
        if self._factory is None:
            return
        entry = self._by_loop.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].close()


# ---- reading points ----------------------------------------------------------------------------


def fetch(coll: CollectionAPI, ids: list[str], tenant: str | None) -> dict[str, tuple[np.ndarray, Any]]:
    """``{id: (vector, payload)}`` of those of ``ids`` (distinct) that exist and ``tenant``
    may see; missing ones are left out (one call, or one per id when some are missing)."""
    if not ids:
        return {}
    try:
        return _by_id(coll.get(ids, tenant=tenant))
    except IdNotFoundError:
        pass
    out: dict[str, tuple[np.ndarray, Any]] = {}
    for ident in ids:
        try:
            out.update(_by_id(coll.get([ident], tenant=tenant)))
        except IdNotFoundError:
            continue
    return out


async def afetch(coll: Any, ids: list[str], tenant: str | None) -> dict[str, tuple[np.ndarray, Any]]:
    """``fetch`` on an asyncio collection."""
    if not ids:
        return {}
    try:
        return _by_id(await coll.get(ids, tenant=tenant))
    except IdNotFoundError:
        pass
    out: dict[str, tuple[np.ndarray, Any]] = {}
    for ident in ids:
        try:
            out.update(_by_id(await coll.get([ident], tenant=tenant)))
        except IdNotFoundError:
            continue
    return out


def _by_id(got: Any) -> dict[str, tuple[np.ndarray, Any]]:
    return {str(i): (got.vectors[j], got.payloads[j]) for j, i in enumerate(got.ids.tolist())}


# ---- Mongo-style metadata filters ------------------------------------------------------------

_FIELD_OPS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte", "$in": "in"}
_NATIVE_OPS = frozenset(("eq", "ne", "gt", "gte", "lt", "lte", "in"))


def mongo_filter(spec: Any, prefix: str) -> dict[str, Any] | None:
    """A LangChain-style metadata filter as a vecdb filter over fields under ``prefix``.

    Accepted: ``{"field": value}`` (equality), ``{"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|
    "$lte"|"$in"|"$nin": ...}}`` (vecdb's own ``eq``/``gte``/... spellings too), ``$and`` /
    ``$or`` / ``$not`` around filters; several keys are ANDed. ``$ne`` and ``$nin`` match
    documents without the field (as in MongoDB). Anything else (``$exists``, ``$like``,
    ``$regex``, ``$contains``, a list as a value, ...) raises InvalidArgumentError naming it.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidArgumentError(f"filter must be a dict, got {type(spec).__name__}")
    return _mongo(spec, prefix, 0)


def _mongo(spec: Mapping[str, Any], prefix: str, depth: int) -> dict[str, Any]:
    if depth > 32:
        raise InvalidArgumentError("filter is nested deeper than 32 levels")
    parts: list[dict[str, Any]] = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"filter keys must be non-empty strings, got {key!r:.80}")
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, Mapping) for v in value):
                raise InvalidArgumentError(f"{key} takes a non-empty list of filter dicts, got {value!r:.200}")
            parts.append({key: [_mongo(v, prefix, depth + 1) for v in value]})
        elif key == "$not":
            if not isinstance(value, Mapping):
                raise InvalidArgumentError(f"$not takes one filter dict, got {value!r:.200}")
            parts.append({"$not": _mongo(value, prefix, depth + 1)})
        elif key.startswith("$"):
            raise InvalidArgumentError(f"filter operator {key!r} is not supported; use $and, $or, $not "
                                       "or field conditions")
        else:
            parts.extend(_field(prefix + key, key, value))
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _field(path: str, name: str, cond: Any) -> list[dict[str, Any]]:
    if not isinstance(cond, Mapping):
        if isinstance(cond, (list, tuple, dict)) or cond is None:
            raise InvalidArgumentError(f"filter on {name!r}: {cond!r:.80} is not a scalar; use {{'$in': [...]}} "
                                       "for one of several values")
        return [{path: cond}]
    if not cond:
        raise InvalidArgumentError(f"filter on {name!r}: empty condition")
    native: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    for op, arg in cond.items():
        if op == "$nin":
            if not isinstance(arg, (list, tuple)):
                raise InvalidArgumentError(f"filter on {name!r}: $nin takes a list, got {arg!r:.80}")
            out.append({"$not": {path: {"in": list(arg)}}})
            continue
        mapped = _FIELD_OPS.get(op) or (op if op in _NATIVE_OPS else None)
        if mapped is None:
            raise InvalidArgumentError(f"filter on {name!r}: operator {op!r} is not supported; expected one of "
                                       f"{sorted(_FIELD_OPS) + ['$nin']}")
        if mapped in native:
            raise InvalidArgumentError(f"filter on {name!r}: {op!r} given twice")
        native[mapped] = list(arg) if mapped == "in" and isinstance(arg, tuple) else arg
    if native:
        out.insert(0, {path: native})
    return out


# ---- every point matching a filter ---------------------------------------------------------

#: the most points one selection pass asks for (the server's default --max-k)
SELECT_PAGE = 10_000


def _select_args(coll: Any, count: int) -> tuple[np.ndarray, int, dict[str, Any]]:
    """A probe query, k and knobs for a search meant to return every point its filter admits:
    any non-zero query does (the ranking does not matter); HNSW is told to scan the allowed
    points exactly instead of walking its graph."""
    params = {"filter_mode": "scan"} if coll.info.index == "hnsw" else {}
    return np.ones((1, coll.info.dim), np.float32), max(1, min(count, SELECT_PAGE)), params


def select(coll: Any, spec: dict[str, Any], tenant: str | None,
           with_payloads: bool = True) -> list[tuple[str, dict[str, Any] | None, float]]:
    """The points matching filter ``spec`` (visible to ``tenant``), in no useful order;
    InvalidArgumentError if more than ``SELECT_PAGE`` match (no silent truncation)."""
    count = coll.count(tenant=tenant)
    if count == 0:
        return []
    q, k, params = _select_args(coll, count)
    found = hits(coll.search(q, k=k, filter=spec, tenant=tenant, params=params, with_payloads=with_payloads))
    if len(found) == k and count > k:
        raise InvalidArgumentError(f"more than {k} points match {spec!r:.200}; narrow the filter")
    return found


async def aselect(coll: Any, spec: dict[str, Any], tenant: str | None,
                  with_payloads: bool = True) -> list[tuple[str, dict[str, Any] | None, float]]:
    """``select`` on an asyncio collection."""
    count = await coll.count(tenant=tenant)
    if count == 0:
        return []
    q, k, params = _select_args(coll, count)
    found = hits(await coll.search(q, k=k, filter=spec, tenant=tenant, params=params, with_payloads=with_payloads))
    if len(found) == k and count > k:
        raise InvalidArgumentError(f"more than {k} points match {spec!r:.200}; narrow the filter")
    return found


def delete_matching(coll: Any, spec: dict[str, Any], tenant: str | None) -> int:
    """Delete every point matching ``spec`` (as ``tenant``): pages of ``select`` until one
    finds nothing, so also more than a page, and points an approximate search missed once."""
    total = 0
    while True:
        count = coll.count(tenant=tenant)
        if count == 0:
            return total
        q, k, params = _select_args(coll, count)
        ids = [i for i, _, _ in hits(coll.search(q, k=k, filter=spec, tenant=tenant, params=params))]
        if not ids:
            return total
        removed = coll.delete(ids, tenant=tenant)
        total += removed
        if removed == 0:     # visible but not ours to remove (granted points leave the view only)
            return total


async def adelete_matching(coll: Any, spec: dict[str, Any], tenant: str | None) -> int:
    """``delete_matching`` on an asyncio collection."""
    total = 0
    while True:
        count = await coll.count(tenant=tenant)
        if count == 0:
            return total
        q, k, params = _select_args(coll, count)
        ids = [i for i, _, _ in hits(await coll.search(q, k=k, filter=spec, tenant=tenant, params=params))]
        if not ids:
            return total
        removed = await coll.delete(ids, tenant=tenant)
        total += removed
        if removed == 0:
            return total
