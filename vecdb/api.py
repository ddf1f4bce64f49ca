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
    cannot tell another tenant's id from a free one. A search may name several tenants
    (``tenant=["a", "b"]``): it covers every point any of them may access, each once.
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

Training: a collection whose index needs training (pq, binary, sq8) answers searches by an
exact scan of its stored vectors until it holds the index's ``min_train_points`` points, then
trains the index on a seeded sample of them and serves from it (``stats().trained`` says
which). ``train()`` trains (or rebuilds) the index on request; searches go on meanwhile.

Validation happens once, at the boundary: ``SearchRequest.build`` checks a search (the
embedded ``search`` and the server both build one), and the collection's ``execute`` runs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from collections.abc import Mapping as abc_Mapping
from typing import Any, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from vecdb.errors import InvalidArgumentError
from vecdb.filters import parse_filter
from vecdb.types import F32Matrix
from vecdb.validation import as_k, checked_queries

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
    multi_tenant: bool = False  # created for many tenants (its default index is then "curator")


@dataclass(frozen=True)
class CollectionStats:
    """Live figures of a collection."""

    count: int
    memory_bytes: int
    disk_bytes: int
    index: str
    index_params: dict[str, Any]
    n_tenants: int = 0
    trained: bool = True  # False while an index that needs training is stood in for by an exact scan
    indexed: int = 0      # points served by the index
    pending: int = 0      # points committed and searchable (by exact scan) but not yet in the index


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


MAX_TENANT_BYTES = 200


def default_index(multi_tenant: bool) -> str:
    """The index a collection gets when none is named: Curator's shared tree with per-tenant
    sub-trees for a multi-tenant collection, HNSW otherwise."""
    return "curator" if multi_tenant else "hnsw"


def check_tenant(tenant: Any) -> str:
    """A tenant name: a non-empty string of at most ``MAX_TENANT_BYTES`` UTF-8 bytes."""
    if not isinstance(tenant, str) or not tenant or len(tenant.encode("utf-8")) > MAX_TENANT_BYTES:
        raise InvalidArgumentError(f"tenant must be a non-empty string of at most {MAX_TENANT_BYTES} bytes, "
                                   f"got {tenant!r:.300}")
    return tenant


def check_tenants(tenant: Any) -> list[str]:
    """The distinct tenant names of an upsert's ``tenant`` (None, one name, or several)."""
    if tenant is None:
        return []
    names = [tenant] if isinstance(tenant, str) else list(tenant) if isinstance(tenant, (list, tuple)) else [tenant]
    return list(dict.fromkeys(check_tenant(name) for name in names))


def check_search_tenant(tenant: Any) -> str | tuple[str, ...] | None:
    """A search's ``tenant``: None, one name, or several names (a list or tuple: the search
    covers the union of their points). Several names come back distinct and sorted as a
    tuple (so equal requests key the same caches); a list of one name is that name."""
    if tenant is None or isinstance(tenant, str):
        return None if tenant is None else check_tenant(tenant)
    if not isinstance(tenant, (list, tuple)) or not tenant:
        raise InvalidArgumentError(f"tenant must be a name or a non-empty list of names, got {tenant!r:.300}")
    names = tuple(sorted({check_tenant(name) for name in tenant}))
    return names[0] if len(names) == 1 else names


class SearchRequest(NamedTuple):
    """One search, validated once (by ``build``) at the public boundary: the embedded
    ``Collection.search`` and the server build it, and ``Collection.execute`` trusts it.

    queries: C-contiguous finite float32 (nq, dim); k >= 1; filter: the parsed filter tree
    (``vecdb.filters.parse_filter``, lists frozen to tuples so it can key a cache) or None for
    every point; tenant: a checked name, a sorted tuple of several names (their union), or
    None; params: the raw search knobs (names and
    values are resolved by the serving index, once per request); with_payloads: bool.
    A named tuple: built on every search, and a tuple costs a fraction of a dataclass.
    """

    queries: F32Matrix
    k: int
    filter: Any
    tenant: str | tuple[str, ...] | None
    params: Mapping[str, Any]
    with_payloads: bool

    @classmethod
    def build(cls, info: CollectionInfo, queries: Any, k: Any = 10, filter: Any = None, tenant: Any = None,
              params: Any = None, with_payloads: Any = False) -> "SearchRequest":
        """Validate a search against collection ``info``; InvalidArgumentError /
        DimensionMismatchError name the offending argument."""
        q = checked_queries(queries, info.dim)
        if type(k) is not int or k < 1:
            k = as_k(k)
        node = None if filter is None else parse_filter(filter)
        if not params:
            if params is not None and not isinstance(params, abc_Mapping):
                raise InvalidArgumentError(f"params must be a dict of search knobs, got {params!r:.200}")
            knobs: Mapping[str, Any] = _NO_PARAMS
        elif type(params) is not dict and not isinstance(params, abc_Mapping):
            raise InvalidArgumentError(f"params must be a dict of search knobs, got {params!r:.200}")
        else:
            knobs = dict(params)   # names and values are checked by the serving index's resolve_params
        if with_payloads is not False and with_payloads is not True:
            if not isinstance(with_payloads, np.bool_):
                raise InvalidArgumentError(f"with_payloads must be True or False, got {with_payloads!r:.80}")
            with_payloads = bool(with_payloads)
        return cls(q, k, None if node is None or node == ("all",) else _frozen(node),
                   None if tenant is None else check_search_tenant(tenant), knobs, with_payloads)


_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


def _frozen(node: Any) -> Any:
    """The filter tree with every list turned into a tuple (hashable, and read the same way)."""
    if isinstance(node, (list, tuple)):
        return tuple(_frozen(part) for part in node)
    return node


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

    def search(self, queries: Any, k: int = 10, filter: Filter | None = None,
               tenant: str | Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
               with_payloads: bool = False) -> QueryResult:
        """The ``k`` nearest points per query row among those passing ``filter``; with
        ``tenant`` (one name, or a list: their union) only points those tenants may access."""

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait until every acknowledged point is in the index (searches never need to: they
        see acknowledged points meanwhile), at most ``timeout`` seconds; True once it is."""

    def create_tenant(self, tenant: str) -> None: ...
    def drop_tenant(self, tenant: str) -> None: ...
    def list_tenants(self) -> list[str]: ...
    def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray, write: bool = False) -> None:
        """Give ``tenant`` read access (``write=True``: also replace) to existing points."""
    def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Take away all of ``tenant``'s access to points, ownership included (the points stay)."""

    def stats(self) -> CollectionStats: ...

    def train(self) -> None:
        """Train (or retrain) the configured index on the stored points and rebuild it; searches
        are served meanwhile. FailedPreconditionError when the collection is empty."""

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait until every committed point is in the index (writes are acknowledged and
        searchable before that), at most ``timeout`` seconds; True when nothing is pending."""


@runtime_checkable
class DatabaseAPI(Protocol):
    """A set of collections: ``vecdb.open(path)`` in process, ``vecdb.connect(addr)`` remote."""

    def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str | None = None,
                          index_params: Mapping[str, Any] | None = None, id_type: str = "int",
                          multi_tenant: bool = False) -> CollectionAPI:
        """Create a collection; ``index`` None means ``default_index(multi_tenant)``: "hnsw", or
        "curator" (the tenant-aware index) for a collection created with ``multi_tenant=True``."""
    def get_collection(self, name: str) -> CollectionAPI: ...
    def list_collections(self) -> list[CollectionInfo]: ...
    def drop_collection(self, name: str) -> None: ...
    def snapshot(self, path: str) -> None:
        """Write a consistent copy of the whole database to ``path`` while serving."""
    def close(self) -> None: ...
    def __enter__(self) -> "DatabaseAPI": ...
    def __exit__(self, *exc: object) -> None: ...
