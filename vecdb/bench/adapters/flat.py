"""Exact-search targets: vecdb FlatIndex and faiss IndexFlat."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.bench.adapters.base import IndexChurn, Target, faiss_metric, prepare_for_metric, register
from vecdb.index.allow import AllowSet
from vecdb.index.flat import FlatIndex
from vecdb.types import F32Matrix


@register
class VecdbFlat(IndexChurn, Target):
    name = "vecdb-flat"
    params_kind = "flat"
    supports_filter = True
    algorithm = "exact"
    filter_paths = {"scan": "scan: FlatIndex over the allowed rows"}

    def build(self, base: F32Matrix) -> None:
        self.index = FlatIndex(self.dim, self.metric)
        self.index.add(base)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        allowed = None if allow is None else self.reused(allow, AllowSet.from_ids)
        return self.index.search(queries, k, allow=allowed).ids

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()


@register
class FaissFlat(Target):
    name = "faiss-flat"
    supports_filter = True
    algorithm = "exact"
    memory_source = "formula"
    filter_paths = {"scan": "scan: IndexFlat over all rows with IDSelectorBatch"}

    def build(self, base: F32Matrix) -> None:
        import faiss

        self.index = faiss.IndexFlat(self.dim, faiss_metric(self.metric))
        self.index.add(prepare_for_metric(base, self.metric))

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        q = prepare_for_metric(queries, self.metric)
        if allow is None:
            return self.index.search(q, k)[1]
        params = self.reused(allow, self._make_params)[0]
        return self.index.search(q, k, params=params)[1]

    @staticmethod
    def _make_params(allow: np.ndarray) -> tuple[Any, Any, np.ndarray]:
        import faiss

        ids = np.ascontiguousarray(allow, np.int64)
        sel = faiss.IDSelectorBatch(ids)
        return faiss.SearchParameters(sel=sel), sel, ids  # params -> sel -> ids: kept alive together

    def memory_bytes(self) -> int:
        return int(self.index.ntotal * self.dim * 4)
