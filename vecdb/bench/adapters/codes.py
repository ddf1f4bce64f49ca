"""Compressed-code targets: vecdb PQIndex / BinaryIndex / SQ8Index and their faiss counterparts
(IndexPQ, IndexLSH, IndexScalarQuantizer), each with optional exact re-ranking.

Shared build params: ``m`` and ``nbits`` (PQ), ``opq`` (0/1, PQ), ``bits`` (binary bit-planes
per dimension), ``rotate`` (0/1, binary), ``train`` (training sample size, default all rows).
Search knob: ``rerank`` (candidates re-scored exactly; faiss uses ``IndexRefineFlat`` with
``k_factor = rerank / k``).
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from vecdb.bench.adapters.base import IndexChurn, Target, faiss_metric, prepare_for_metric, register
from vecdb.errors import InvalidArgumentError
from vecdb.index.allow import AllowSet
from vecdb.index.binary import BinaryIndex
from vecdb.index.codes import CodeIndex
from vecdb.index.pq import PQIndex
from vecdb.index.sq8 import SQ8Index
from vecdb.types import F32Matrix


def _train_rows(base: F32Matrix, params: dict[str, Any]) -> F32Matrix:
    n = int(params.get("train", len(base)))
    if n >= len(base):
        return base
    rng = np.random.default_rng(1338)
    return base[np.sort(rng.choice(len(base), n, replace=False))]


def _pq_shape(dim: int, params: dict[str, Any]) -> tuple[int, int]:
    if "m" not in params and dim % 8:
        raise InvalidArgumentError(f"give --build m=... (a divisor of dim {dim})")
    return int(params.get("m", dim // 8)), int(params.get("nbits", 8))


class _VecdbCodes(IndexChurn, Target):
    search_knobs = ("rerank",)
    supports_filter = True
    filter_paths = {"scan": "scan: code scan of the allowed rows"}
    index: CodeIndex

    @abc.abstractmethod
    def _make(self) -> CodeIndex:
        """A fresh, untrained index built from ``build_params``."""

    def build(self, base: F32Matrix) -> None:
        self.index = self._make()
        self.index.train(_train_rows(base, self.build_params))
        self.index.add(base)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        allowed = None if allow is None else self.reused(allow, AllowSet.from_ids)
        return self.index.search(queries, k, allow=allowed, rerank=int(params.get("rerank", 0))).ids

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()

    def code_bytes(self) -> int:
        """Bytes of the scanned codes alone (re-rank vectors excluded)."""
        return self.index.memory_breakdown()["codes"]


@register
class VecdbPQ(_VecdbCodes):
    name = "vecdb-pq"
    params_kind = "pq"

    def _make(self) -> CodeIndex:
        m, nbits = _pq_shape(self.dim, self.build_params)
        return PQIndex(self.dim, self.metric, m=m, nbits=nbits, opq=bool(int(self.build_params.get("opq", 0))))


@register
class VecdbBinary(_VecdbCodes):
    name = "vecdb-binary"
    params_kind = "binary"

    def _make(self) -> CodeIndex:
        return BinaryIndex(self.dim, self.metric, bits_per_dim=int(self.build_params.get("bits", 1)),
                           rotate=bool(int(self.build_params.get("rotate", 1))))


@register
class VecdbSQ8(_VecdbCodes):
    name = "vecdb-sq8"
    params_kind = "sq8"

    def _make(self) -> CodeIndex:
        return SQ8Index(self.dim, self.metric)


class _FaissCodes(Target):
    """A faiss code index wrapped in ``IndexRefineFlat`` (which keeps the float vectors)."""

    search_knobs = ("rerank",)
    memory_source = "formula"

    @abc.abstractmethod
    def _make(self) -> Any:
        """A fresh, untrained faiss code index built from ``build_params``."""

    def build(self, base: F32Matrix) -> None:
        import faiss

        x = prepare_for_metric(base, self.metric)
        self.codes_index = self._make()
        self.codes_index.train(prepare_for_metric(_train_rows(base, self.build_params), self.metric))
        self.index = faiss.IndexRefineFlat(self.codes_index)
        self.index.add(x)
        self.n = len(base)

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        q = prepare_for_metric(queries, self.metric)
        rerank = int(params.get("rerank", 0))
        if rerank <= 0:
            return self.codes_index.search(q, k)[1]
        self.index.k_factor = max(1.0, rerank / k)
        return self.index.search(q, k)[1]

    def memory_bytes(self) -> int:
        return int(self.n * (self.codes_index.sa_code_size() + 4 * self.dim))

    def code_bytes(self) -> int:
        return int(self.n * self.codes_index.sa_code_size())


@register
class FaissPQ(_FaissCodes):
    name = "faiss-pq"

    def _make(self) -> Any:
        import faiss

        m, nbits = _pq_shape(self.dim, self.build_params)
        return faiss.IndexPQ(self.dim, m, nbits, faiss_metric(self.metric))


@register
class FaissBinary(_FaissCodes):
    """faiss's float-to-binary index: IndexLSH (random rotation, trained thresholds, sign bits)
    with ``bits * dim`` bits, searched by Hamming distance."""

    name = "faiss-binary"

    def _make(self) -> Any:
        import faiss

        nbits = int(self.build_params.get("bits", 1)) * self.dim
        return faiss.IndexLSH(self.dim, nbits, bool(int(self.build_params.get("rotate", 1))), True)


@register
class FaissSQ8(_FaissCodes):
    name = "faiss-sq8"

    def _make(self) -> Any:
        import faiss

        return faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, faiss_metric(self.metric))
