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

Tenants: a point belongs to zero or more named tenants (created with ``create_tenant``);
``tenant=`` on search/count sees only that tenant's points, whatever the filter says.
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
        """Insert or replace points atomically; acknowledged only once durable."""

    def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        """Delete points (with ``tenant``: only points of that tenant); returns how many."""

    def count(self, tenant: str | None = None) -> int: ...

    def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        """Fetch points; IdNotFoundError if any is missing (or, with ``tenant``, not that tenant's)."""

    def search(self, queries: Any, k: int = 10, filter: Filter | None = None, tenant: str | None = None,
               params: Mapping[str, Any] | None = None, with_payloads: bool = False) -> QueryResult: ...

    def create_tenant(self, tenant: str) -> None: ...
    def drop_tenant(self, tenant: str) -> None: ...
    def list_tenants(self) -> list[str]: ...
    def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Give ``tenant`` access to existing points."""
    def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Take away ``tenant``'s access to points (the points stay)."""

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
