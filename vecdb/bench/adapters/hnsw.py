"""HNSW targets: vecdb's HNSW, hnswlib and faiss IndexHNSWFlat, built with the same M and
ef_construction and searched with the same ``ef``."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.bench.adapters.base import Target, faiss_metric, prepare_for_metric, register
from vecdb.index.hnsw import HNSW
from vecdb.types import F32Matrix, Metric

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
SEED = 1


def _build_knobs(params: dict[str, Any]) -> tuple[int, int]:
    return int(params.get("M", DEFAULT_M)), int(params.get("ef_construction", DEFAULT_EF_CONSTRUCTION))


@register
class VecdbHNSW(Target):
    name = "vecdb-hnsw"
    search_knobs = ("ef", "filter_mode")
    supports_filter = True

    def build(self, base: F32Matrix) -> None:
        M, efc = _build_knobs(self.build_params)
        self.index = HNSW(self.dim, self.metric, M=M, ef_construction=efc, seed=SEED, progress=False)
        self.index.add(base)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        knobs = {key: params[key] for key in self.search_knobs if key in params}
        return self.index.search(queries, k, allow=allow, **knobs).ids

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()


@register
class Hnswlib(Target):
    """hnswlib with its native spaces; filters go through its per-label filter callable."""

    name = "hnswlib"
    search_knobs = ("ef",)
    supports_filter = True

    def build(self, base: F32Matrix) -> None:
        import hnswlib

        M, efc = _build_knobs(self.build_params)
        space = {Metric.L2: "l2", Metric.IP: "ip", Metric.COSINE: "cosine"}[self.metric]
        self.n, self.M = len(base), M
        self.index = hnswlib.Index(space=space, dim=self.dim)
        self.index.init_index(max_elements=len(base), M=M, ef_construction=efc, random_seed=SEED)
        self.index.add_items(base, np.arange(len(base)), num_threads=getattr(self, "threads", 1))
        self._filter_for: tuple[np.ndarray, Any] | None = None

    def _filter(self, allow: np.ndarray) -> Any:
        # built once per allow set (the harness reuses the array), as an application would
        if self._filter_for is None or self._filter_for[0] is not allow:
            mask = np.zeros(self.n, bool)
            mask[allow] = True
            self._filter_for = (allow, mask.__getitem__)
        return self._filter_for[1]

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        self.index.set_ef(max(k, int(params.get("ef", 10))))
        flt = None if allow is None else self._filter(allow)
        ids, _ = self.index.knn_query(queries, k=k, num_threads=getattr(self, "threads", 1), filter=flt)
        return ids.astype(np.int64)

    def memory_bytes(self) -> int:
        """From hnswlib's layout (hnswalg.h): per element the level-0 block (count + 2M links +
        vector + 8-byte label), a link-list pointer, its level (int), a std::mutex (40 B) and a
        label-map entry (~40 B); upper-level blocks of (M + 1) ints per level; 65,536 label
        mutexes; one uint16 visited list."""
        n, M = self.n, self.M
        upper_levels = n / (M - 1)  # levels are not exposed; E[level] = 1 / (M - 1) for mL = 1 / ln M
        per_element = (2 * M + 1) * 4 + self.dim * 4 + 8 + 8 + 4 + 40 + 40 + 2
        return int(n * per_element + upper_levels * (M + 1) * 4 + 65536 * 40)


@register
class FaissHNSW(Target):
    """faiss IndexHNSWFlat; cosine runs as inner product on unit rows; filters via IDSelector."""

    name = "faiss-hnsw"
    search_knobs = ("ef",)
    supports_filter = True

    def build(self, base: F32Matrix) -> None:
        import faiss

        M, efc = _build_knobs(self.build_params)
        self.n, self.M = len(base), M
        self.index = faiss.IndexHNSWFlat(self.dim, M, faiss_metric(self.metric))
        self.index.hnsw.efConstruction = efc
        self.index.add(prepare_for_metric(base, self.metric))
        self._sel_for: tuple[np.ndarray, Any] | None = None

    def _selector(self, allow: np.ndarray) -> Any:
        import faiss

        if self._sel_for is None or self._sel_for[0] is not allow:
            ids = np.ascontiguousarray(allow, np.int64)
            self._sel_for = (allow, faiss.IDSelectorBatch(ids), ids)
        return self._sel_for[1]

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        import faiss

        sp = faiss.SearchParametersHNSW()
        sp.efSearch = max(k, int(params.get("ef", 16)))
        if allow is not None:
            sp.sel = self._selector(allow)
        return self.index.search(prepare_for_metric(queries, self.metric), k, params=sp)[1]

    def memory_bytes(self) -> int:
        """From faiss' layout: vectors, per-node neighbour slots (2M on level 0, M per upper
        level, int32), offsets (int64), levels (int32)."""
        n, M = self.n, self.M
        neighbors = int(self.index.hnsw.neighbors.size())
        return int(n * self.dim * 4 + neighbors * 4 + (n + 1) * 8 + n * 4)
