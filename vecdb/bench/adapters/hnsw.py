"""HNSW targets: vecdb's HNSW, hnswlib and faiss IndexHNSWFlat, built with the same M and
ef_construction and searched with the same ``ef``.

Filtered searches run under a strategy the runner passes as ``params["filter_strategy"]``:
"graph" (the library's filtered traversal), "scan" (exact scan of the allowed rows: vecdb's
own kernel; the references share ``SubsetScan``) or "auto" (scan when the rule of
``scan_preferred`` -- vecdb's own ``HNSW.prefers_exact`` -- says a scan is cheaper, else graph).
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from vecdb.bench.adapters.base import IndexChurn, SubsetScan, Target, faiss_metric, prepare_for_metric, register
from vecdb.errors import InvalidArgumentError
from vecdb.index.allow import AllowSet
from vecdb.index.hnsw import DEFAULT_EF, FILTER_COST, HNSW
from vecdb.types import F32Matrix, Metric

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
SEED = 1


GRAPH_STRATEGIES = ("graph", "scan", "auto")


def _build_knobs(params: dict[str, Any]) -> tuple[int, int]:
    return int(params.get("M", DEFAULT_M)), int(params.get("ef_construction", DEFAULT_EF_CONSTRUCTION))


def scan_preferred(n_allowed: int, n: int, ef: int, M: int) -> bool:
    """vecdb's rule for "auto", applied to any HNSW: scan the allowed rows when that costs fewer
    distances than a filtered traversal is expected to (ef * 2M * FILTER_COST / selectivity)."""
    selectivity = max(n_allowed, 1) / max(n, 1)
    return n_allowed <= ef * 2 * M * FILTER_COST / selectivity


def _strategy(params: dict[str, Any]) -> str:
    strategy = params.get("filter_strategy", "graph")
    if strategy not in GRAPH_STRATEGIES:
        raise InvalidArgumentError(f"filter_strategy must be one of {GRAPH_STRATEGIES}, got {strategy!r}")
    return strategy


class _ReferenceHNSW(Target):
    """A reference HNSW library: graph filter of its own, the shared scan, vecdb's auto rule."""

    search_knobs = ("ef",)
    supports_filter = True
    filter_strategies = GRAPH_STRATEGIES
    scan: SubsetScan | None = None
    default_ef = 10
    n = 0
    M = DEFAULT_M

    def attach_scan(self, scan: SubsetScan) -> None:
        """Give this target the shared exact-scan fallback (kept outside its memory figures)."""
        self.scan = scan

    def _ef(self, params: dict[str, Any], k: int) -> int:
        return max(k, int(params.get("ef", self.default_ef)))

    def strategy_used(self, params: dict[str, Any], allow: np.ndarray, k: int) -> str:
        strategy = _strategy(params)
        if strategy == "auto":
            return "scan" if scan_preferred(len(allow), self.n, self._ef(params, k), self.M) else "graph"
        return strategy

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        if allow is not None and self.strategy_used(params, allow, k) == "scan":
            if self.scan is None:
                raise InvalidArgumentError(f"{self.name}: the scan strategy needs attach_scan() first")
            return self.scan.search(queries, k, allow)
        return self._graph_search(queries, k, params, allow)

    @abc.abstractmethod
    def _graph_search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None) -> np.ndarray:
        """The library's own (filtered) graph search."""


@register
class VecdbHNSW(IndexChurn, Target):
    name = "vecdb-hnsw"
    params_kind = "hnsw"
    search_knobs = ("ef", "filter_mode")
    recall_knobs = ("ef",)
    supports_filter = True
    filter_strategies = GRAPH_STRATEGIES
    filter_paths = {"graph": "graph: filtered traversal, uint8 mask (Numba)",
                    "scan": "scan: exact scan of the allowed rows (Numba scan_subset)",
                    "auto": "auto: vecdb's own filter_mode=auto (prefers_exact)"}

    churn_writes = "linked"
    churn_note = ("HNSW.begin_add places rows with searches held off; finish_add links them while searches "
                  "run (as a collection's indexer does); remove holds searches off")

    def build(self, base: F32Matrix) -> None:
        M, efc = _build_knobs(self.build_params)
        self.index = HNSW(self.dim, self.metric, M=M, ef_construction=efc, seed=SEED, progress=False)
        self.index.add(base)

    def insert_linked(self, rows: F32Matrix, ids: np.ndarray, exclusive: Any) -> None:
        with exclusive():
            slots = self.index.begin_add(rows, ids)
        self.index.finish_add(slots)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        knobs = {key: params[key] for key in self.search_knobs if key in params}
        if allow is not None and "filter_strategy" in params:
            knobs["filter_mode"] = _strategy(params)
        return self.index.search(queries, k, allow=None if allow is None else self._allow_set(allow), **knobs).ids

    def _allow_set(self, allow: np.ndarray) -> AllowSet:
        return self.reused(allow, AllowSet.from_ids)

    def strategy_used(self, params: dict[str, Any], allow: np.ndarray, k: int) -> str:
        mode = params.get("filter_mode") or _strategy(params)
        if mode == "auto":
            ef = max(k, int(params.get("ef", DEFAULT_EF)))
            return "scan" if self.index.prefers_exact(len(allow), ef) else "graph"
        return mode

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()


@register
class Hnswlib(_ReferenceHNSW):
    """hnswlib with its native spaces; its graph filter is its per-label Python callable."""

    name = "hnswlib"
    memory_source = "formula"
    supports_churn = True
    churn_note = ("hnswlib's searches are not safe beside add_items / mark_deleted (its maintainers: "
                  "nmslib/hnswlib#29, #100, #562): each write batch holds searches off")
    filter_paths = {"graph": "graph: Python callable per visited node, under the GIL (hnswlib's only filter API)",
                    "scan": SubsetScan.path, "auto": "auto: vecdb's rule picks graph or the shared scan"}

    def build(self, base: F32Matrix) -> None:
        import hnswlib

        M, efc = _build_knobs(self.build_params)
        space = {Metric.L2: "l2", Metric.IP: "ip", Metric.COSINE: "cosine"}[self.metric]
        self.n, self.M = len(base), M
        self.index = hnswlib.Index(space=space, dim=self.dim)
        self.index.init_index(max_elements=max(len(base), self.capacity or 0), M=M, ef_construction=efc,
                              random_seed=SEED)
        self.index.add_items(base, np.arange(len(base)), num_threads=getattr(self, "threads", 1))

    def insert(self, rows: F32Matrix, ids: np.ndarray) -> None:
        """hnswlib's ``add_items`` (the index grows when its capacity is reached)."""
        need = self.index.get_current_count() + len(rows)
        if need > self.index.get_max_elements():
            self.index.resize_index(need)
        self.index.add_items(rows, ids, num_threads=getattr(self, "threads", 1))

    def delete(self, ids: np.ndarray) -> None:
        """hnswlib's ``mark_deleted`` per id (deleted nodes stay in the graph, never returned)."""
        for i in np.asarray(ids).tolist():
            self.index.mark_deleted(int(i))

    def _filter(self, allow: np.ndarray) -> Any:
        return self.reused(allow, self._make_filter)

    def _make_filter(self, allow: np.ndarray) -> Any:
        mask = np.zeros(max(self.index.get_max_elements(), int(allow.max()) + 1 if len(allow) else 0), bool)
        mask[allow] = True
        return mask.__getitem__

    def _graph_search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None) -> np.ndarray:
        self.index.set_ef(self._ef(params, k))
        flt = None if allow is None else self._filter(allow)
        ids, _ = self.index.knn_query(queries, k=k, num_threads=getattr(self, "threads", 1), filter=flt)
        return ids.astype(np.int64)

    def memory_bytes(self) -> int:
        """hnswlib exposes no byte count; this is a formula from its layout (hnswalg.h): per element the level-0 block (count + 2M links +
        vector + 8-byte label), a link-list pointer, its level (int), a std::mutex (40 B) and a
        label-map entry (~40 B); upper-level blocks of (M + 1) ints per level; 65,536 label
        mutexes; one uint16 visited list."""
        n, M = self.n, self.M
        upper_levels = n / (M - 1)  # levels are not exposed; E[level] = 1 / (M - 1) for mL = 1 / ln M
        per_element = (2 * M + 1) * 4 + self.dim * 4 + 8 + 8 + 4 + 40 + 40 + 2
        return int(n * per_element + upper_levels * (M + 1) * 4 + 65536 * 40)


@register
class FaissHNSW(_ReferenceHNSW):
    """faiss IndexHNSWFlat; cosine runs as inner product on unit rows; filters via IDSelector."""

    name = "faiss-hnsw"
    default_ef = 16
    memory_source = "formula"
    filter_paths = {"graph": "graph: IDSelectorBatch checked per visited node (C++)",
                    "scan": SubsetScan.path, "auto": "auto: vecdb's rule picks graph or the shared scan"}

    def build(self, base: F32Matrix) -> None:
        import faiss

        M, efc = _build_knobs(self.build_params)
        self.n, self.M = len(base), M
        self.index = faiss.IndexHNSWFlat(self.dim, M, faiss_metric(self.metric))
        self.index.hnsw.efConstruction = efc
        self.index.add(prepare_for_metric(base, self.metric))

    def _selector(self, allow: np.ndarray) -> Any:
        return self.reused(allow, self._make_selector)[0]

    @staticmethod
    def _make_selector(allow: np.ndarray) -> tuple[Any, np.ndarray]:
        import faiss

        ids = np.ascontiguousarray(allow, np.int64)
        return faiss.IDSelectorBatch(ids), ids  # the selector points into ids: keep them together

    def _graph_search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None) -> np.ndarray:
        import faiss

        sp = faiss.SearchParametersHNSW()
        sp.efSearch = self._ef(params, k)
        if allow is not None:
            sp.sel = self._selector(allow)
        return self.index.search(prepare_for_metric(queries, self.metric), k, params=sp)[1]

    def memory_bytes(self) -> int:
        """From faiss' layout: vectors, per-node neighbour slots (2M on level 0, M per upper
        level, int32), offsets (int64), levels (int32)."""
        n, M = self.n, self.M
        neighbors = int(self.index.hnsw.neighbors.size())
        return int(n * self.dim * 4 + neighbors * 4 + (n + 1) * 8 + n * 4)
