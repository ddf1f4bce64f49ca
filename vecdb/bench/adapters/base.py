"""The Target protocol: how the harness drives vecdb indexes and reference libraries alike."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

from vecdb.errors import FailedPreconditionError
from vecdb.types import F32Matrix, Metric

TARGETS: dict[str, type["Target"]] = {}
#: most filter objects one target keeps (one per allow array: per filter, per tenant)
FILTER_CACHE = 4096
T = TypeVar("T", bound=type["Target"])


def register(cls: T) -> T:
    """Class decorator: make a Target selectable by its ``name`` from the CLI."""
    TARGETS[cls.name] = cls
    return cls


class Target(abc.ABC):
    """One index implementation under test.

    ``build_params`` are shared names (``M``, ``ef_construction``, ``m``, ``nbits`` ...) that
    each target maps to its own knobs, so every target in a run is built the same way.
    ``search`` returns int64 row numbers of ``base`` (nq, k), -1 padded.
    """

    name: ClassVar[str] = ""
    #: search parameter names this target understands (others in a sweep are ignored)
    search_knobs: ClassVar[tuple[str, ...]] = ()
    #: knobs whose sweep must move recall (the runner checks; default: every search knob)
    recall_knobs: ClassVar[tuple[str, ...] | None] = None
    #: True when ``search`` honours ``allow`` exactly (filtered benchmarks skip others)
    supports_filter: ClassVar[bool] = False
    #: True when the target filters ``vecdb bench run``'s filter workloads by a payload range on
    #: ``filter_attribute`` (the allow-sets it is given are those ranges), not by arbitrary ids
    payload_filter: ClassVar[bool] = False
    #: "exact" or "ann": ratios are only taken between targets of the same class
    algorithm: ClassVar[str] = "ann"
    #: filter strategies this target can run ("graph", "scan", "auto"); the first is its own
    filter_strategies: ClassVar[tuple[str, ...]] = ("scan",)
    #: what each strategy runs, in words (printed under the tables)
    filter_paths: ClassVar[dict[str, str]] = {"scan": "the index's own filtered scan"}
    #: where ``memory_bytes`` comes from: "library" (its own count) or "formula" (documented layout)
    memory_source: ClassVar[str] = "library"
    #: threads the runner allows for the next calls (for libraries that take it per call)
    threads: int = 1
    #: a folder of its own for targets that persist (set by the runner before ``build``)
    workdir: Path | None = None
    #: the vecdb index kind whose search params check this target's knob values (None: unchecked)
    params_kind: ClassVar[str | None] = None
    #: True when ``insert`` / ``delete`` work after ``build`` (the churn workload needs them)
    supports_churn: ClassVar[bool] = False
    #: how the churn workload's writer meets searches (churn.WRITE_MODES): "concurrent" (the
    #: target is safe to write while searched), "linked" (``insert_linked``: rows placed while
    #: searches are held off, linked while they run; deletes held off) or "serialised" (each
    #: write batch holds searches off); ``churn_note`` says why, recorded in every churn line
    churn_writes: ClassVar[str] = "serialised"
    churn_note: ClassVar[str] = "the index is not documented safe to change while searched"
    #: True when the target keeps tenants itself (granted at build from ``tenant_members``)
    native_tenants: ClassVar[bool] = False
    #: rows of each tenant (sorted), set by the runner before ``build`` for tenant workloads
    tenant_members: list[np.ndarray] | None = None
    #: the filter workloads' attribute per row (set by the runner before ``build`` when the run has
    #: filters), for targets that store it as a payload and filter on it
    filter_attribute: np.ndarray | None = None
    #: most rows the target will hold (set by the runner before ``build`` for churn)
    capacity: int | None = None

    def __init__(self, metric: Metric, dim: int, build_params: dict[str, Any]) -> None:
        self.metric = metric
        self.dim = dim
        self.build_params = dict(build_params)
        self.search_knobs = self.knobs_for(self.build_params)

    @classmethod
    def check_search(cls, params: dict[str, Any]) -> None:
        """Raise InvalidArgumentError for a search setting this target would reject (checked for
        every setting before anything is built): the knob values of ``params_kind``'s index."""
        if cls.params_kind is not None and params:
            from vecdb.index import index_class

            index_class(cls.params_kind).params_type.build(params)

    @classmethod
    def knobs_for(cls, build_params: dict[str, Any]) -> tuple[str, ...]:
        """The search knobs a target built with ``build_params`` reads (default: all of
        ``search_knobs``; a target whose knobs depend on its build narrows them here)."""
        return tuple(cls.search_knobs)

    @abc.abstractmethod
    def build(self, base: F32Matrix) -> None:
        """Index every row of ``base`` under its row number."""

    @abc.abstractmethod
    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        """Top-k row numbers per query; ``allow`` (sorted int64 rows) restricts the results."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes the built index holds in memory (as the library reports or documents it)."""

    def close(self) -> None:
        """Free resources (default: nothing)."""

    def reused(self, allow: np.ndarray, make: Callable[[np.ndarray], Any]) -> Any:
        """``make(allow)`` built once per allow array (by identity: the harness keeps one array per
        filter and per tenant), as an application reusing its filters would; not timed per call."""
        cache: dict[int, tuple[np.ndarray, Any]] = self.__dict__.setdefault("_filters", {})
        hit = cache.get(id(allow))
        if hit is None or hit[0] is not allow:
            if len(cache) >= FILTER_CACHE:
                cache.clear()
            hit = cache[id(allow)] = (allow, make(allow))
        return hit[1]

    def search_tenant(self, queries: F32Matrix, k: int, params: dict[str, Any], tenant: int,
                      members: np.ndarray) -> np.ndarray:
        """Top-k among one tenant's rows: by default the filtered search over ``members``."""
        return self.search(queries, k, params, members)

    def insert(self, rows: F32Matrix, ids: np.ndarray) -> None:
        """Add ``rows`` under ``ids`` after the build (churn; only when ``supports_churn``)."""
        raise FailedPreconditionError(f"target {self.name} cannot insert after its build (no churn support)")

    def delete(self, ids: np.ndarray) -> None:
        """Remove ``ids`` after the build (churn; only when ``supports_churn``)."""
        raise FailedPreconditionError(f"target {self.name} cannot delete after its build (no churn support)")

    def insert_linked(self, rows: F32Matrix, ids: np.ndarray, exclusive: Callable[[], Any]) -> None:
        """Insert while searched (``churn_writes == "linked"``): the parts that must not meet a
        search run inside ``exclusive()``; default: all of ``insert``."""
        with exclusive():
            self.insert(rows, ids)

    def settle(self) -> None:
        """Finish background work earlier writes started (e.g. a collection's indexer), so an
        idle measurement has nothing running beside it (default: nothing to finish)."""

    def disk_bytes(self) -> int | None:
        """Bytes on disk for targets that persist (databases); None for in-memory indexes."""
        return None

    def build_info(self) -> dict[str, Any]:
        """Extra build figures a target measures itself (e.g. insert vs index seconds)."""
        return {}

    def knobs_for_recall(self) -> tuple[str, ...]:
        """The search knobs whose sweep must move recall."""
        return self.search_knobs if self.recall_knobs is None else self.recall_knobs

    def strategy_used(self, params: dict[str, Any], allow: np.ndarray, k: int) -> str:
        """The strategy a filtered search with ``params`` actually runs ("graph" or "scan")."""
        return self.filter_strategies[0]

    def label(self, params: dict[str, Any]) -> str:
        """Short text naming this target and the search knobs it used."""
        used = {k: v for k, v in params.items() if k in self.search_knobs}
        return self.name + ("" if not used else " " + ",".join(f"{k}={v}" for k, v in used.items()))


class IndexChurn:
    """Churn for targets over a vecdb index in ``self.index``: ``add`` / ``remove`` by id."""

    supports_churn: ClassVar[bool] = True
    index: Any

    def insert(self, rows: F32Matrix, ids: np.ndarray) -> None:
        self.index.add(rows, ids)

    def delete(self, ids: np.ndarray) -> None:
        self.index.remove(ids)


def prepare_for_metric(x: F32Matrix, metric: Metric) -> F32Matrix:
    """For libraries without cosine: unit-normalise rows so inner product ranks as cosine."""
    from vecdb.kernels.distances import normalize_rows

    return normalize_rows(x) if metric is Metric.COSINE else np.ascontiguousarray(x, np.float32)


def faiss_metric(metric: Metric) -> int:
    """faiss metric constant for a vecdb metric (cosine is inner product on unit rows)."""
    import faiss

    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


class SubsetScan:
    """The exact-scan fallback every reference target shares: gather the allowed rows and run
    faiss' brute-force ``knn`` over them (BLAS, its OpenMP threads), per call, from the ids."""

    path = "scan: gather allowed rows + faiss.knn (shared by every reference)"

    def __init__(self, base: F32Matrix, metric: Metric) -> None:
        self.metric = metric
        self.base = prepare_for_metric(base, metric)

    def search(self, queries: F32Matrix, k: int, allow: np.ndarray) -> np.ndarray:
        import faiss

        q = prepare_for_metric(queries, self.metric)
        sub = self.base[allow]
        _, rows = faiss.knn(q, sub, min(k, len(sub)), metric=faiss_metric(self.metric))
        out = np.full((len(q), k), -1, np.int64)
        out[:, : rows.shape[1]] = np.where(rows >= 0, allow[np.maximum(rows, 0)], -1)
        return out


class GatheredScan:
    """An exact scan of a fixed allow-set whose rows are gathered once (as an application that
    knows its filter ahead would), then numpy per query: one matrix-vector product (l2:
    ``|x|^2 - 2 x.q``; inner product and cosine: ``-x.q`` on unit rows) and a partial sort."""

    path = "scan: allowed rows gathered once + numpy matrix-vector product per query"

    def __init__(self, base: F32Matrix, metric: Metric) -> None:
        self.metric = metric
        self.base = prepare_for_metric(base, metric)
        self._for: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def _gathered(self, allow: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._for is None or self._for[0] is not allow:  # once per allow array (the caller reuses it)
            sub = self.base[allow]
            norms = np.einsum("ij,ij->i", sub, sub) if self.metric is Metric.L2 else None
            self._for = (allow, sub, norms)
        return self._for[1], self._for[2]

    def search(self, queries: F32Matrix, k: int, allow: np.ndarray) -> np.ndarray:
        sub, norms = self._gathered(allow)
        out = np.full((len(queries), k), -1, np.int64)
        for i, q in enumerate(prepare_for_metric(queries, self.metric)):
            dist = norms - 2 * (sub @ q) if norms is not None else -(sub @ q)
            top = np.argpartition(dist, k)[:k] if len(dist) > k else np.arange(len(dist))
            top = top[np.argsort(dist[top], kind="stable")]
            out[i, : len(top)] = allow[top]
        return out
