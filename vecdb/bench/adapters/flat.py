"""Exact-search targets: vecdb FlatIndex and faiss IndexFlat."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.bench.adapters.base import Target, faiss_metric, prepare_for_metric, register
from vecdb.index.flat import FlatIndex
from vecdb.types import F32Matrix


@register
class VecdbFlat(Target):
    name = "vecdb-flat"
    supports_filter = True
    algorithm = "exact"
    filter_paths = {"scan": "scan: FlatIndex over the allowed rows"}

    def build(self, base: F32Matrix) -> None:
        self.index = FlatIndex(self.dim, self.metric)
        self.index.add(base)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        return self.index.search(queries, k, allow=allow).ids

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
        import faiss

        q = prepare_for_metric(queries, self.metric)
        if allow is None:
            return self.index.search(q, k)[1]
        sel = faiss.IDSelectorBatch(allow.astype(np.int64))
        return self.index.search(q, k, params=faiss.SearchParameters(sel=sel))[1]

    def memory_bytes(self) -> int:
        return int(self.index.ntotal * self.dim * 4)
