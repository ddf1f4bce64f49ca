"""The Index contract every vecdb index implements (``Index``), and ``BaseIndex``, which holds
the parts every index shares: validation at the public boundary, the id map, allow-sets in slot
space, cosine normalisation and its distance fix-up, membership no-ops, save/load."""
from __future__ import annotations

import abc
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping as abc_Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from vecdb.errors import AlreadyExistsError, DataLossError, FailedPreconditionError, InvalidArgumentError
from vecdb.index.allow import AllowSet, as_allow
from vecdb.index.ids import IdMap
from vecdb.kernels.distances import normalize_rows
from vecdb.kernels.rows import all_finite
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult
from vecdb.validation import as_id_array, as_ids, as_k, as_matrix, as_positive_int, as_tenant, checked_queries

if TYPE_CHECKING:
    from vecdb.storage.space import IndexSpace

FORMAT = "vecdb-index"
FORMAT_VERSION = 1
#: what a long step of background index work (``prepare_remove``, ``finish_add``) calls
#: between the chunks it runs in, with the seconds the chunk took; returns the seconds it
#: rested there (a collection serving searches rests, so the step takes less of the memory
#: bandwidth and cores the searches need). The index keeps its chunks short while the caller
#: rests, and lets them grow while it does not.
Pace = Callable[[float], float]
_REGISTRY: dict[str, type["BaseIndex"]] = {}
#: distinct knob mappings remembered per index (resolving ``{"ef": 32}`` again is a dict hit).
_PARAMS_CACHE_SIZE = 64
#: allow-sets remembered per index with their slot-space translation (per id-map version).
_ALLOW_CACHE_SIZE = 4
#: an allow-set with at least 1/this of the slots is translated by masks (vectorised passes over
#: the slots) rather than by listing its ids (a list of ~n ids, its scatter into a bitmap)
_LIST_SHARE = 8
_ONE = np.float32(1.0)
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclasses.dataclass(frozen=True)
class SearchParams:
    """Typed search knobs of one index class, validated once by ``resolve_params``.

    Subclasses are frozen dataclasses whose fields (all with defaults) are the knob names;
    ``__post_init__`` checks and normalises the values (raising InvalidArgumentError).
    """

    @classmethod
    def knobs(cls) -> frozenset[str]:
        """The knob names this class accepts."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, params: Mapping[str, Any]) -> "SearchParams":
        """An instance from a mapping whose names were already checked (others are ignored)."""
        return cls(**{name: params[name] for name in cls.knobs() if name in params})

    def as_dict(self) -> dict[str, Any]:
        """The knobs as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class FoldRows(NamedTuple):
    """Rows searched exactly beside an index (a collection's staged rows), to be folded into
    its answer (see ``BaseIndex.search_folded``): ``rows[r]`` has id ``ids[r]`` and is skipped
    where ``dead[r]``; ``metric`` is the kernel code they are compared with (0: squared L2,
    1: -<q, x>), on the queries as given."""

    rows: F32Matrix
    ids: I64Vector
    dead: np.ndarray
    metric: int


class MembershipOp(NamedTuple):
    """One membership change as an index with persistence "self" writes it: ``op`` ("create",
    "drop", "grant" or "revoke"), the tenant number, and the ids (empty for create / drop)."""

    op: str
    tenant: int
    ids: I64Vector


@dataclasses.dataclass(frozen=True)
class IndexBatch:
    """What one write batch changes for an index with persistence "self", to apply in this
    order: ``removed`` ids leave (deleted points, and the old entries of replaced ones), then
    ``ids`` enter with ``vectors`` (read-only float32 rows as given to ``add``: the index
    prepares them itself), then the ``membership`` ops in order. ``seq`` is the batch's write
    sequence (increasing; each committed batch has its own)."""

    seq: int
    ids: I64Vector
    vectors: F32Matrix
    removed: I64Vector
    membership: tuple[MembershipOp, ...] = ()


@runtime_checkable
class Index(Protocol):
    """The contract between an index and its callers (collections, standalone users).

    Ids are non-negative int64 labels; results are ``SearchResult`` (ids int64 (nq, k) padded
    with -1, distances float32 (nq, k) padded with +inf, smaller is closer).

    Public path (standalone users): ``add``, ``remove``, ``search``, ``train`` and the
    membership operations validate every argument and raise ``VecdbError`` subclasses; a
    failed call changes nothing.

    Trusted path (a collection, after validating once at its own boundary):
    ``resolve_params(params)`` checks knob names and values once and returns a frozen typed
    ``SearchParams``; ``search_trusted(queries, k, allow, tenant, params)`` takes C-contiguous
    finite float32 queries (nq, dim) (not normalised: the index normalises for cosine), k >= 1,
    an ``AllowSet`` of ids or None, and repeats no checks. ``search`` == validate +
    ``search_trusted``.

    Training: ``needs_training`` (class) says whether ``add`` needs a trained index;
    ``is_trained`` is True once it is (always, for indexes needing none); ``train(sample)``
    fits the index to sample vectors (a no-op when none is needed); ``min_train_points`` is how
    many points a collection gathers before it trains automatically (0 when none are needed).

    Tenants: an index with ``tenant_aware`` True keeps tenant membership itself
    (``create_tenant``, ``drop_tenant``, ``grant``, ``revoke``, ``add(..., tenant=)``) and
    serves ``search(..., tenant=t)``; for the others the membership operations are no-ops and a
    tenant's members arrive as ``allow=`` (``search(tenant=)`` is an InvalidArgumentError).
    A tenant-aware index with ``multi_tenant_search`` True also serves a search over several
    tenants at once: ``tenant`` is then a sorted tuple of distinct numbers, and a result may be
    any vector one of them may access, each once. For the others a collection passes the
    union of those tenants' members as ``allow`` (and no tenant).

    Persistence: ``persistence`` is "checkpoint" (the collection saves the index to a folder
    with ``save`` and replays its op log over it after a restart) or "self" (the index keeps
    its state in LMDB sub-databases of the collection's environment, written in the same
    transaction as each batch; it is never saved to a folder and never replayed, so a change
    reaches its disk state exactly once). A "self" index is ``attach``ed to its ``IndexSpace``
    once, right after construction, and loads the state the space holds (a reopened
    collection); ``persist_batch(txn, batch)`` writes one ``IndexBatch`` (points removed,
    points written with their vectors, membership ops) inside the batch's write transaction,
    before the commit, changing nothing in memory (the transaction may still abort, or run
    again after the map grows); after the commit the collection applies the same batch to
    memory through ``add`` / ``remove`` / the membership operations, which write nothing.
    ``persist_all(txn)`` writes the whole state into its empty space after a build or
    training (the collection makes that space live in the same transaction, while the old
    index keeps serving from its own space until the swap).
    """

    dim: int
    metric: Metric
    search_params: ClassVar[frozenset[str]]
    needs_training: ClassVar[bool]
    tenant_aware: ClassVar[bool]
    multi_tenant_search: ClassVar[bool]
    persistence: ClassVar[str]
    links_while_searched: ClassVar[bool]

    def add(self, vectors: Any, ids: Any = None, *, tenant: int | None = None) -> None: ...
    def remove(self, ids: Any) -> int: ...
    def prepare_remove(self, ids: Any, pace: Pace | None = None) -> Any: ...
    def finish_remove(self, ids: Any, prepared: Any = None) -> int: ...
    def search(self, queries: Any, k: int, *, allow: Any = None,
               tenant: int | Sequence[int] | None = None, **params: Any) -> SearchResult: ...
    def resolve_params(self, params: Mapping[str, Any]) -> SearchParams: ...
    def search_trusted(self, queries: F32Matrix, k: int, allow: AllowSet | None,
                       tenant: int | tuple[int, ...] | None, params: SearchParams) -> SearchResult: ...
    def search_folded(self, queries: F32Matrix, k: int, allow: AllowSet | None,
                      tenant: int | tuple[int, ...] | None, params: SearchParams,
                      fold: FoldRows) -> SearchResult | None: ...
    def train(self, sample: Any) -> None: ...
    @property
    def is_trained(self) -> bool: ...
    @property
    def min_train_points(self) -> int: ...
    def create_tenant(self, tenant: int) -> None: ...
    def drop_tenant(self, tenant: int) -> None: ...
    def grant(self, tenant: int, ids: Any) -> None: ...
    def revoke(self, tenant: int, ids: Any) -> None: ...
    def __len__(self) -> int: ...
    @property
    def ids(self) -> I64Vector: ...
    @property
    def ids_version(self) -> int: ...
    def id_mask(self) -> np.ndarray: ...
    def memory_bytes(self) -> int: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    def reserve(self, n: int) -> None: ...
    def params(self) -> dict[str, Any]: ...
    @property
    def space(self) -> "IndexSpace | None": ...
    def attach(self, space: "IndexSpace") -> None: ...
    def persist_batch(self, txn: Any, batch: IndexBatch) -> None: ...
    def persist_all(self, txn: Any) -> None: ...


class BaseIndex(abc.ABC):
    """Shared boundary of all indexes. Subclasses implement the underscored hooks on slots.

    Subclass contract:
      - ``kind``: registry name stored in saved files; ``metrics``: supported metrics;
        ``params_type``: a ``SearchParams`` dataclass naming the per-call knobs (its field
        names become ``search_params``).
      - ``_add(vectors, ids)`` stores validated float32 rows (already unit-normalised for
        cosine) under new, unused ids and records them in ``self._ids``.
      - ``_search_slots(queries, k, allow, tenant, params) -> (slots, dists)``: ``queries``
        prepared by ``_prepare_vectors`` (unit rows for cosine), ``allow`` None or a non-empty
        ``AllowSet`` of live slots, ``params`` of ``params_type``; returns int64/float32
        (nq, k) arrays it owns, sorted, padded with -1/+inf, distances as the kernels give them
        (cosine: -<q, x>); the base applies ``_finish_distances`` (cosine: + 1).
      - ``_remove(slots)`` forgets the given slots (already released from ``self._ids``).
      - ``_state() -> (params, arrays)`` and ``_from_state(dim, metric, params, arrays)``.
      - ``_memory_bytes()`` bytes held besides the id map.
      - training (``needs_training`` True): ``_train(sample)`` and ``is_trained``.
      - tenants (``tenant_aware`` True): ``_create_tenant``, ``_drop_tenant``, ``_grant``,
        ``_revoke``, and ``_search_slots`` honouring ``tenant``.
      - persistence "self": ``_attach(space)`` opens its sub-databases (``space.db(name)``,
        outside any transaction) and loads the state they hold; ``_persist_batch(txn, batch)``
        and ``_persist_all(txn)`` read and write through ``txn`` only (another transaction in
        the same thread is refused: it would deadlock) and change nothing in memory; ``add``,
        ``remove`` and the membership hooks change memory only.
    """

    kind: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = (Metric.L2, Metric.IP, Metric.COSINE)
    params_type: ClassVar[type[SearchParams]] = SearchParams
    search_params: ClassVar[frozenset[str]] = frozenset()
    needs_training: ClassVar[bool] = False
    tenant_aware: ClassVar[bool] = False
    #: True when a tenant-aware index's ``search_trusted`` also takes ``tenant`` as a sorted
    #: tuple of several tenant numbers (their union).
    multi_tenant_search: ClassVar[bool] = False
    persistence: ClassVar[str] = "checkpoint"
    #: True when the index takes new rows in two halves, ``begin_add(vectors, ids, placement)``
    #: (slots, no links; the caller keeps searches out) and ``finish_add(slots, pace)`` (links
    #: them while searches run; ``Pace``), so a collection's background indexer holds readers off only
    #: briefly; ``prepare_add(vectors, ids)`` may do ``begin_add``'s work ahead, beside searches,
    #: as ``prepare_remove(ids)`` does for ``finish_remove(ids, prepared)``.
    links_while_searched: ClassVar[bool] = False
    _default_params: ClassVar[SearchParams] = SearchParams()
    _space: "IndexSpace | None" = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params_type" in cls.__dict__:
            cls.search_params = cls.params_type.knobs()
        cls._default_params = cls.params_type.build({})
        if cls.persistence not in ("checkpoint", "self"):
            raise TypeError(f"{cls.__name__}.persistence must be 'checkpoint' or 'self'")
        if cls.kind and "kind" in cls.__dict__:   # a subclass without its own kind never replaces its parent's
            _check_hooks(cls)
            _REGISTRY[cls.kind] = cls

    def __init__(self, dim: int, metric: Metric | str = Metric.L2) -> None:
        self.dim = as_positive_int(dim, "dim")
        self.metric = Metric.parse(metric)
        if self.metric not in self.metrics:
            valid = ", ".join(m.value for m in self.metrics)
            raise InvalidArgumentError(f"{type(self).__name__} does not support metric {self.metric.value!r}; use {valid}")
        self._cosine = self.metric is Metric.COSINE
        self._ids = IdMap()
        self._params_cache: dict[Any, SearchParams] = {}
        self._allow_cache: dict[int, tuple[AllowSet, int, AllowSet]] = {}

    # ---- public surface -------------------------------------------------------------
    def add(self, vectors: Any, ids: Any = None, *, tenant: int | None = None) -> None:
        """Add float32 rows ``vectors`` (n, dim) under int64 ``ids`` (default: sequential),
        granted to ``tenant`` when given (ignored by indexes that keep no tenants).

        Raises InvalidArgumentError / DimensionMismatchError for bad vectors, ids or tenant and
        AlreadyExistsError when an id is already stored; nothing is added then.
        """
        x = as_matrix(vectors, self.dim)
        number = None if tenant is None else as_tenant(tenant)
        ids_arr = self._ids.next_free_ids(len(x)) if ids is None else as_ids(ids, len(x))
        present = self._ids.contains(ids_arr)
        if present.any():
            raise AlreadyExistsError(f"ids already in the index: {ids_arr[present][:5].tolist()}")
        if len(x):
            self._add(self._prepare_vectors(x), ids_arr)
            if number is not None:
                self._grant(number, ids_arr)

    def search(self, queries: Any, k: int, *, allow: Any = None, tenant: int | Sequence[int] | None = None,
               **params: Any) -> SearchResult:
        """The ``k`` nearest stored vectors to each query, closest first.

        ``queries``: (nq, dim) or one (dim,) row. ``allow``: optional ids (AllowSet, array,
        list or set); only those can be returned. ``tenant``: only for tenant-aware indexes;
        a sequence of several tenant numbers (their union) for ``multi_tenant_search`` ones.
        ``params``: per-call knobs of this index type (``search_params``).
        """
        q = _trusted_form(queries, self.dim)
        if q is None:
            q = checked_queries(queries, self.dim)
        if type(k) is not int or k < 1:
            k = as_k(k)
        p = self.resolve_params(params) if params else self._default_params
        if tenant is not None:
            if not self.tenant_aware:
                raise InvalidArgumentError(f"index {type(self).__name__} does not keep tenants; "
                                           f"pass the tenant's ids as allow=")
            if type(tenant) is not int or not 0 <= tenant <= _INT64_MAX:    # a valid number is itself
                tenant = self._checked_tenant(tenant)
        return self.search_trusted(q, k, None if allow is None else as_allow(allow), tenant, p)

    def _checked_tenant(self, tenant: Any) -> int | tuple[int, ...]:
        """A search's tenant: one number, or (``multi_tenant_search``) several as a sorted
        tuple of distinct numbers; one number in a sequence is that number."""
        if not isinstance(tenant, (list, tuple, np.ndarray)):
            return as_tenant(tenant)
        numbers = tuple(sorted({as_tenant(t.item() if isinstance(t, np.generic) else t) for t in tenant}))
        if not numbers:
            raise InvalidArgumentError("tenant must be a tenant number or a non-empty sequence of them")
        if len(numbers) == 1:
            return numbers[0]
        if not self.multi_tenant_search:
            raise InvalidArgumentError(f"index {type(self).__name__} searches one tenant at a time; "
                                       f"pass the tenants' ids as allow=")
        return numbers

    def resolve_params(self, params: Mapping[str, Any] | None = None) -> SearchParams:
        """Check knob names and values once; a frozen ``params_type`` instance (cached per
        distinct mapping of hashable values). InvalidArgumentError on unknown or bad knobs."""
        if not params:
            return self._default_params
        if type(params) is not dict and not isinstance(params, abc_Mapping):   # collections.abc: typing's isinstance costs ~2 us
            raise InvalidArgumentError(f"search params must be a mapping of knob names to values, got {type(params).__name__}")
        # the key holds each value's type, so True / 1.0 never hit the entry of 1
        if len(params) == 1:
            ((name, value),) = params.items()
            key: Any = (name, value.__class__, value)
        elif len(params) == 2:                   # unrolled: a generator costs ~0.3 us more
            (name, value), (name2, value2) = params.items()
            key = (name, value.__class__, value, name2, value2.__class__, value2)
        elif len(params) == 3:                   # e.g. SPANN's max_postings, eps2, rerank
            (name, value), (name2, value2), (name3, value3) = params.items()
            key = (name, value.__class__, value, name2, value2.__class__, value2, name3, value3.__class__, value3)
        else:
            key = tuple((name, value.__class__, value) for name, value in params.items())
        try:
            hit = self._params_cache.get(key)
        except TypeError:                        # an unhashable value: resolve without caching
            hit, key = None, None
        if hit is not None:
            return hit
        known = self.search_params
        unknown = [name for name in params if name not in known]
        if unknown:
            shown = ", ".join(sorted(known)) or "none"
            raise InvalidArgumentError(f"unknown search parameter(s) {sorted(map(str, unknown))} for "
                                       f"{type(self).__name__}; known: {shown}")
        resolved = self.params_type.build(params)
        if key is not None:
            if len(self._params_cache) >= _PARAMS_CACHE_SIZE:
                self._params_cache.clear()
            self._params_cache[key] = resolved
        return resolved

    def search_trusted(self, queries: F32Matrix, k: int, allow: AllowSet | None,
                       tenant: int | tuple[int, ...] | None, params: SearchParams) -> SearchResult:
        """``search`` without checks (see ``Index``): ``queries`` C-contiguous finite float32
        (nq, dim), ``k`` >= 1, ``allow`` an AllowSet of ids or None, ``params`` from
        ``resolve_params``."""
        nq = len(queries)
        if nq == 0 or len(self._ids) == 0:
            return SearchResult.empty(nq, k)
        if allow is not None:
            allow = self._slot_allow(allow)
            if not len(allow):
                return SearchResult.empty(nq, k)
        slots, dists = self._search_slots(self._prepare_vectors(queries), k, allow, tenant, params)
        return SearchResult(self._ids.ids_of(slots), self._finish_distances(dists))

    def search_folded(self, queries: F32Matrix, k: int, allow: AllowSet | None,
                      tenant: int | tuple[int, ...] | None, params: SearchParams,
                      fold: FoldRows) -> SearchResult | None:
        """``search_trusted`` with ``fold``'s live rows merged into the answer by exact distance
        (each id once, at its smaller distance; on ties the index's entry first) in the same
        kernel entry, when this index can for these queries; None when it cannot (the caller
        merges them itself). A search that also scans rows beside the index then waits for the
        GIL once on the way back from its kernels instead of twice: under a writer, a
        one-query search's median latency fell 15-30 % with the second wait gone."""
        return None

    def remove(self, ids: Any) -> int:
        """Remove the stored ones among ``ids``; returns how many were removed."""
        slots = self._ids.release(np.unique(as_id_array(ids)))
        if len(slots):
            self._remove(slots)
        return int(len(slots))

    # ---- training -------------------------------------------------------------------
    def train(self, sample: Any) -> None:
        """Fit the index to ``sample`` vectors (n, dim); a no-op for indexes that need no
        training (``needs_training`` False), which are always trained."""
        x = as_matrix(sample, self.dim, what="training vectors")
        if self.needs_training:
            self._train(self._prepare_vectors(x))

    @property
    def is_trained(self) -> bool:
        """True when ``add`` can take vectors (always, for indexes that need no training)."""
        return True

    @property
    def min_train_points(self) -> int:
        """Points a collection gathers before training this index automatically (0: none needed)."""
        return 0

    # ---- tenants (no-ops unless tenant_aware) ---------------------------------------
    def create_tenant(self, tenant: int) -> None:
        """Start keeping membership for tenant number ``tenant`` (no-op unless tenant-aware)."""
        self._create_tenant(as_tenant(tenant))

    def drop_tenant(self, tenant: int) -> None:
        """Forget tenant ``tenant`` and its membership (points stay; no-op unless tenant-aware)."""
        self._drop_tenant(as_tenant(tenant))

    def grant(self, tenant: int, ids: Any) -> None:
        """Make ``ids`` members of ``tenant`` (no-op unless tenant-aware)."""
        self._grant(as_tenant(tenant), as_id_array(ids))

    def revoke(self, tenant: int, ids: Any) -> None:
        """Remove ``ids`` from ``tenant``'s members (no-op unless tenant-aware)."""
        self._revoke(as_tenant(tenant), as_id_array(ids))

    # ---- the index as arrays: what ``save`` writes, and how an index holds another ----
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(params, arrays): views of the live arrays, the slot -> id map (``slot_ids``)
        included; ``from_state`` makes the index again from them."""
        params, arrays = self._state()
        return params, dict(arrays, slot_ids=self._ids.slot_ids)

    @classmethod
    def from_state(cls, dim: int, metric: Metric | str, params: dict[str, Any],
                   arrays: dict[str, np.ndarray]) -> Any:
        """The index ``state`` described (its arrays used as given, not copied); ValueError
        when they do not fit together."""
        index = cls._from_state(int(dim), Metric.parse(metric), dict(params), arrays)
        slot_ids = np.array(arrays["slot_ids"], np.int64)
        if slot_ids.ndim != 1 or (slot_ids < -1).any() or len(np.unique(slot_ids[slot_ids >= 0])) != int((slot_ids >= 0).sum()):
            raise ValueError("slot_ids must be a 1-D array of distinct ids (-1 for free slots)")
        index._ids = IdMap(slot_ids)
        return index

    def slots_of(self, ids: I64Vector) -> I64Vector:
        """The slot of each stored id (-1 where absent): for an owner that reads the index's
        rows by slot (see ``HNSW.stored_rows``)."""
        return self._ids.lookup(np.asarray(ids, np.int64))

    # ---- persistence "self": state in LMDB sub-databases ------------------------------
    @property
    def space(self) -> "IndexSpace | None":
        """The sub-databases this index keeps its state in (None until ``attach``, and
        always for persistence "checkpoint")."""
        return self._space

    def attach(self, space: "IndexSpace") -> None:
        """Bind an index with persistence "self" to ``space``, once, right after construction;
        the state the space holds is loaded into memory. FailedPreconditionError for a
        "checkpoint" index or a second attach."""
        if self.persistence != "self":
            raise FailedPreconditionError(f"{type(self).__name__} keeps no state in LMDB (persistence 'checkpoint')")
        if self._space is not None:
            raise FailedPreconditionError(f"{type(self).__name__} is already attached to {self._space!r}")
        self._attach(space)
        self._space = space

    def persist_batch(self, txn: Any, batch: IndexBatch) -> None:
        """Write ``batch`` to this index's sub-databases inside the write transaction ``txn``,
        before it commits; memory is left unchanged (see ``Index``)."""
        self._check_attached()
        self._persist_batch(txn, batch)

    def persist_all(self, txn: Any) -> None:
        """Write this index's whole state into its (empty) sub-databases inside ``txn``."""
        self._check_attached()
        self._persist_all(txn)

    def _check_attached(self) -> None:
        if self._space is None:
            raise FailedPreconditionError(f"{type(self).__name__} is not attached to LMDB sub-databases "
                                          f"(persistence {self.persistence!r})")

    # ---- the rest of the surface ----------------------------------------------------
    def reserve(self, n: int) -> None:
        """Make room for ``n`` stored vectors ahead of time, so a later ``add`` need not grow
        (copy) its arrays. Safe while searches run (never while adds or removes run): growth
        only copies, and readers see the old or the new arrays, both holding every row."""

    def prepare_add(self, vectors: Any, ids: Any) -> Any:
        """For an index that ``links_while_searched``: the part of ``begin_add`` it can do
        beside searches (an opaque placement ``begin_add`` takes), or None when it has none
        and ``begin_add`` places the rows itself."""
        return None

    def prepare_remove(self, ids: Any, pace: Pace | None = None) -> Any:
        """For an index that ``links_while_searched``: the part of removing ``ids`` it can do
        beside searches (they may still be returned until ``finish_remove``: the caller hides
        them), as an opaque plan for ``finish_remove``; None when it has none. ``pace``: see
        ``Pace``."""
        return None

    def finish_remove(self, ids: Any, prepared: Any = None) -> int:
        """Remove ``ids`` (the caller keeps searches out), using ``prepared`` from
        ``prepare_remove`` of the same ids when the index can; returns how many were removed."""
        return self.remove(ids)

    def __contains__(self, ident: int) -> bool:
        return bool(self._ids.contains(np.array([ident], np.int64))[0])

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids_version(self) -> int:
        """Counts changes of the stored ids: a cache of something derived from ``ids`` stays
        valid while this is unchanged."""
        return self._ids.version

    @property
    def ids(self) -> I64Vector:
        """Stored ids, in slot order."""
        live = self._ids.slot_ids
        return live[live >= 0].copy()

    def id_mask(self) -> np.ndarray:
        """A new uint8 mask over ids, 1 at the stored ones (the caller may change it): what
        ``ids`` lists, without listing them."""
        return self._ids.id_mask()

    def memory_bytes(self) -> int:
        """Bytes held in memory by this index: its structures plus the id map."""
        return int(self._memory_bytes() + self._ids.memory_bytes())

    def params(self) -> dict[str, Any]:
        """Construction parameters (what ``save`` records besides arrays)."""
        return self._state()[0]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}(dim={self.dim}, metric={self.metric.value!r}{extra}, n={len(self)})"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to directory ``path`` (replaced atomically): meta.json + .npy arrays."""
        save_index(self, path)

    # ---- shared steps (the one place for cosine handling) ---------------------------
    def _prepare_vectors(self, x: F32Matrix) -> F32Matrix:
        """Rows as the index stores and searches them: unit-normalised (a copy) for cosine,
        ``x`` itself otherwise. Applied to added rows, training samples and queries."""
        return normalize_rows(x) if self._cosine else x

    def _finish_distances(self, dists: np.ndarray) -> np.ndarray:
        """Kernel distances as the metric defines them, in place: cosine ranks by -<q, x> on
        unit rows, and 1 - cos = that + 1 (padding +inf stays +inf)."""
        if self._cosine:
            dists += _ONE
        return dists

    def _slot_allow(self, allow: AllowSet) -> AllowSet:
        """``allow`` (ids) as the AllowSet of the live slots holding them. When ids are slots
        and all are live, ``allow`` itself (its cached bitmap is reused); other translations
        are cached per allow-set and id-map version."""
        idmap = self._ids
        if idmap.is_identity and allow.max_id() < idmap.n_slots and len(idmap) == idmap.n_slots:
            return allow
        hit = self._allow_cache.get(id(allow))
        if hit is not None and hit[0] is allow and hit[1] == idmap.version:
            return hit[2]
        n = idmap.n_slots
        if idmap.is_identity and len(allow) * _LIST_SHARE >= n:   # a large set: by masks, no list of ids
            out = AllowSet.of_bitmap(allow.bitmap(n)[:n] & idmap.id_mask()[:n])
        elif idmap.is_identity:
            ids = allow.ids
            ids = ids[: np.searchsorted(ids, n)]
            slots = ids[idmap.slot_ids[ids] >= 0]
            out = allow if len(slots) == len(allow) else AllowSet(slots)
        else:
            slots = idmap.lookup(allow.ids)
            slots = slots[slots >= 0]
            slots.sort()
            out = AllowSet(slots)
        cache = self._allow_cache
        if len(cache) >= _ALLOW_CACHE_SIZE:
            cache.clear()
        cache[id(allow)] = (allow, idmap.version, out)
        return out

    # ---- hooks ----------------------------------------------------------------------
    @abc.abstractmethod
    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None: ...

    @abc.abstractmethod
    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        """Top-k slots of prepared queries (see the class docstring)."""

    @abc.abstractmethod
    def _remove(self, slots: I64Vector) -> None: ...

    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> "BaseIndex": ...

    @abc.abstractmethod
    def _memory_bytes(self) -> int: ...

    def _train(self, sample: F32Matrix) -> None:
        """Fit to prepared sample rows; only called when ``needs_training`` (then required)."""

    def _create_tenant(self, tenant: int) -> None:
        """Membership hook: no tenants are kept unless the index is tenant-aware."""

    def _drop_tenant(self, tenant: int) -> None:
        """Membership hook: no tenants are kept unless the index is tenant-aware."""

    def _grant(self, tenant: int, ids: I64Vector) -> None:
        """Membership hook: no tenants are kept unless the index is tenant-aware."""

    def _revoke(self, tenant: int, ids: I64Vector) -> None:
        """Membership hook: no tenants are kept unless the index is tenant-aware."""

    def _attach(self, space: "IndexSpace") -> None:
        """Persistence hook ("self" indexes define it): open the sub-databases, load their state."""
        raise FailedPreconditionError(f"{type(self).__name__} defines no _attach")

    def _persist_batch(self, txn: Any, batch: IndexBatch) -> None:
        """Persistence hook ("self" indexes define it): write one batch through ``txn``."""
        raise FailedPreconditionError(f"{type(self).__name__} defines no _persist_batch")

    def _persist_all(self, txn: Any) -> None:
        """Persistence hook ("self" indexes define it): write the whole state through ``txn``."""
        raise FailedPreconditionError(f"{type(self).__name__} defines no _persist_all")


_F32 = np.dtype(np.float32)


def _trusted_form(queries: Any, dim: int) -> F32Matrix | None:
    """``queries`` as ``checked_queries`` returns them when they already are a C-contiguous
    finite float32 (nq, dim) array or one (dim,) row (finiteness in one kernel call: about
    1 us less than ``checked_queries``' numpy test, a sizeable part of a one-query search);
    None for anything else, which ``checked_queries`` then converts or rejects."""
    if type(queries) is not np.ndarray or queries.dtype is not _F32 or not queries.flags.c_contiguous:
        return None
    if queries.ndim == 2 and queries.shape[1] == dim:
        q = queries
    elif queries.ndim == 1 and queries.shape[0] == dim:
        q = queries.reshape(1, dim)
    else:
        return None
    return q if all_finite(q) else None


def _check_hooks(cls: type[BaseIndex]) -> None:
    """A registered index class that needs training, keeps tenants or persists itself must define those hooks
    (else TypeError when the class is created, not a silent no-op later)."""
    def defines(*names: str) -> bool:
        return any(getattr(cls, name, None) not in (None, getattr(BaseIndex, name, None)) for name in names)

    if cls.needs_training and not defines("_train", "train"):
        raise TypeError(f"{cls.__name__} needs training but defines no _train")
    if cls.tenant_aware:
        for op in ("create_tenant", "drop_tenant", "grant", "revoke"):
            if not defines(f"_{op}", op):
                raise TypeError(f"{cls.__name__} is tenant-aware but defines no _{op}")
    if cls.links_while_searched:
        for hook in ("begin_add", "finish_add"):
            if not defines(hook):
                raise TypeError(f"{cls.__name__} links while searched but defines no {hook}")
    if cls.persistence == "self":
        for hook in ("_attach", "_persist_batch", "_persist_all"):
            if not defines(hook):
                raise TypeError(f"{cls.__name__} persists itself but defines no {hook}")


def save_index(index: BaseIndex, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to directory ``path``; a crash mid-write leaves any old copy intact."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    params, arrays = index.state()
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": index.kind, "dim": index.dim,
            "metric": index.metric.value, "params": params, "arrays": sorted(arrays)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_index(path: str | os.PathLike[str], *, mmap: bool = False) -> BaseIndex:
    """Load any index written by ``save``; ``mmap=True`` maps arrays read-only instead of reading.

    Raises DataLossError for a missing, corrupt or unknown-version file.
    """
    import vecdb.index  # noqa: F401  (registers every index type)

    folder = Path(path)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise DataLossError(f"no index at {folder} (meta.json missing)") from None
    except (OSError, ValueError) as exc:
        raise DataLossError(f"corrupt index metadata at {folder}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataLossError(f"{folder} is not a vecdb index")
    if meta.get("version") != FORMAT_VERSION:
        raise DataLossError(f"index format version {meta.get('version')} not supported (expected {FORMAT_VERSION})")
    cls = _REGISTRY.get(str(meta.get("kind")))
    if cls is None:
        raise DataLossError(f"unknown index kind {meta.get('kind')!r} in {folder}; known: {sorted(_REGISTRY)}")
    arrays: dict[str, np.ndarray] = {}
    try:
        for name in meta["arrays"]:
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        index = cls.from_state(int(meta["dim"]), Metric.parse(meta["metric"]), dict(meta["params"]), arrays)
    except DataLossError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise DataLossError(f"corrupt index data at {folder}: {exc}") from None
    return index


def index_kinds() -> list[str]:
    """Names of all registered index kinds, sorted: what ``index_class`` and ``load_index`` accept."""
    import vecdb.index  # noqa: F401  (registers every index kind)

    return sorted(_REGISTRY)


def index_class(kind: str) -> type[BaseIndex]:
    """The index class registered as ``kind``; InvalidArgumentError naming the known kinds otherwise."""
    import vecdb.index  # noqa: F401  (registers every index kind)

    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidArgumentError(f"unknown index kind {kind!r}; known: {', '.join(index_kinds())}")
    return cls
