"""The one API shape shared by the embedded database (``vecdb.open``) and the gRPC client
(``vecdb.connect``): the protocols both implement and the result types both return.

Ids: a collection is created with ``id_type="int"`` (non-negative int64 user ids; result
arrays are int64 padded with -1) or ``id_type="str"`` (result arrays are object arrays of
str padded with None).

Filters (payload conditions) are JSON-like dicts:
  ``{"lang": "en"}``                       equality (str, int, float, bool)
  ``{"year": {"gte": 2020, "lt": 2025}}``  range: gt / gte / lt / lte (numbers, strings)
  ``{"tag": {"in": ["a", "b"]}}``          membership; ``{"lang": {"eq": "en"}}``, ``{"ne": x}``
  ``{"$and": [f1, f2]}``, ``{"$or": [...]}``, ``{"$not": f}``  boolean combinations
  Several keys in one dict are ANDed. A field holding a list matches when any element does.

Tenants: a tenant (created with ``create_tenant``) has access to some points, at one of
three levels: *owner* (the tenant created the point), *write* or *read* (granted by an
admin). ``tenant=`` makes a call act as that tenant (a tenant API key always does):

  - search / count / get see exactly the points the tenant may access, whatever the filter
    says. ``get`` of an id the tenant cannot see raises IdNotFoundError with the same
    message as for a missing id ("N id(s) not found in collection 'c': [...]"), so a tenant
    cannot tell another tenant's id from a free one.
  - upsert creates new points owned by the tenant, and replaces existing points only if the
    tenant owns them or holds a write grant. Ids form one namespace per collection, so an
    upsert of an id the tenant cannot see must fail: it raises AlreadyExistsError ("not
    available to tenant ...") that says nothing about the point (not whose, nor what it
    holds); an id shared with the tenant read-only raises PermissionDeniedError. The check
    runs in the same write transaction as the write: of two tenants racing for one new id,
    exactly one wins. Requests are validated (dimension, ids, payloads) before any access
    check, so a malformed request answers InvalidArgumentError whatever the ids.
    Tenants that must never collide can use disjoint ids (e.g. str ids with a prefix).
  - delete removes the points the tenant owns (for every tenant); on points it was only
    granted, it revokes its own access (the point stays for the others); ids it cannot see
    are ignored. It returns how many points left the tenant's view.

Calls without ``tenant=`` act as an admin: upsert replaces any point (keeping its
tenants' access) and creates points no tenant holds; delete removes points for everyone.
``grant(tenant, ids, write=False)`` gives read access (``write=True``: also replace);
points the tenant owns stay owned, other levels are replaced. ``revoke`` takes every access
away, ownership included; ``drop_tenant`` removes the tenant and its access; points stay.
A point may have several owners (an upsert naming several tenants): each owner's delete
removes it. Databases written before owners existed load every access as a read grant.

Consistency: a write is acknowledged once committed, and every search sees each batch whole
or not at all. Over gRPC a search with many query rows runs in steps of bounded work, each
under its own short lock, so that no request holds writers off for long: rows of one answer
may then reflect writes that landed between steps (each row sees one consistent state).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from vecdb.types import F32Matrix

Payload = dict[str, Any]
Filter = Mapping[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection is: its name and the parameters it was created with."""

    name: str
    dim: int
    metric: str
    index: str
    index_params: dict[str, Any] = field(default_factory=dict)
    id_type: str = "int"


@dataclass(frozen=True)
class CollectionStats:
    """Live figures of a collection."""

    count: int
    memory_bytes: int
    disk_bytes: int
    index: str
    index_params: dict[str, Any]
    n_tenants: int = 0


@dataclass(frozen=True)
class GetResult:
    """Points fetched by id, in the order asked. vectors: float32 (n, dim)."""

    ids: np.ndarray
    vectors: F32Matrix
    payloads: list[Payload | None]


@dataclass(frozen=True)
class QueryResult:
    """Search hits, closest first. ids: (nq, k) user ids; distances: float32 (nq, k), +inf
    where no hit; payloads: per query, per hit (None unless ``with_payloads=True``)."""

    ids: np.ndarray
    distances: np.ndarray
    payloads: list[list[Payload | None]] | None = None


@runtime_checkable
class CollectionAPI(Protocol):
    """A named set of points (id, vector, payload, tenants) with one index."""

    @property
    def name(self) -> str: ...
    @property
    def info(self) -> CollectionInfo: ...

    def upsert(self, ids: Sequence[int | str] | np.ndarray, vectors: Any,
               payloads: Sequence[Payload | None] | None = None, tenant: str | Sequence[str] | None = None) -> None:
        """Insert or replace points atomically; acknowledged only once durable. With
        ``tenant``: new points are owned by it; existing ones need ownership or a write grant."""

    def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        """Delete points; with ``tenant``: its own points, and its grants on others (see the
        module docs); returns how many left the caller's view."""

    def count(self, tenant: str | None = None) -> int: ...

    def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        """Fetch points; IdNotFoundError if any is missing (or, with ``tenant``, not visible to
        it: the same message, so the two cannot be told apart)."""

    def search(self, queries: Any, k: int = 10, filter: Filter | None = None, tenant: str | None = None,
               params: Mapping[str, Any] | None = None, with_payloads: bool = False) -> QueryResult: ...

    def create_tenant(self, tenant: str) -> None: ...
    def drop_tenant(self, tenant: str) -> None: ...
    def list_tenants(self) -> list[str]: ...
    def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray, write: bool = False) -> None:
        """Give ``tenant`` read access (``write=True``: also replace) to existing points."""
    def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Take away all of ``tenant``'s access to points, ownership included (the points stay)."""

    def stats(self) -> CollectionStats: ...


@runtime_checkable
class DatabaseAPI(Protocol):
    """A set of collections: ``vecdb.open(path)`` in process, ``vecdb.connect(addr)`` remote."""

    def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str = "hnsw",
                          index_params: Mapping[str, Any] | None = None, id_type: str = "int") -> CollectionAPI: ...
    def get_collection(self, name: str) -> CollectionAPI: ...
    def list_collections(self) -> list[CollectionInfo]: ...
    def drop_collection(self, name: str) -> None: ...
    def snapshot(self, path: str) -> None:
        """Write a consistent copy of the whole database to ``path`` while serving."""
    def close(self) -> None: ...
    def __enter__(self) -> "DatabaseAPI": ...
    def __exit__(self, *exc: object) -> None: ...
