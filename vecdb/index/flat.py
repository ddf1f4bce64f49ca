"""FlatIndex: exact brute-force search — the correctness oracle for every approximate index."""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

from vecdb.index.base import BaseIndex
from vecdb.kernels import topk
from vecdb.kernels.distances import normalize_rows
from vecdb.types import F32Matrix, I64Vector, Metric

# Below this many queries a direct SIMD scan wins; above it a BLAS matrix product does (faiss uses 20).
BLAS_MIN_QUERIES = 16
_QUERY_BLOCK = 4096
_ROW_BLOCK = 1024  # blocks sized as faiss sizes its BLAS path (4096 queries x 1024 rows)
_BLAS_MAX_DIM_FEW_QUERIES = 96     # measured: BLAS wins for few queries on glove (d=50), loses on d>=128
_BLAS_MIN_ROWS_FEW_QUERIES = 32768
_MIN_ROWS_PER_CHUNK = 16384  # below this a thread launch costs more than it saves


class VectorStore:
    """A growable, dense float32 row store with cached squared norms (amortised O(1) append)."""

    def __init__(self, dim: int, rows: F32Matrix | None = None) -> None:
        self.dim = dim
        self._rows = np.zeros((0, dim), np.float32) if rows is None else np.ascontiguousarray(rows, np.float32)
        self.n = len(self._rows)
        self._sqnorms = np.einsum("ij,ij->i", self._rows, self._rows).astype(np.float32)

    @property
    def rows(self) -> F32Matrix:
        return self._rows[: self.n]

    @property
    def sqnorms(self) -> np.ndarray:
        return self._sqnorms[: self.n]

    def reserve(self, need: int) -> None:
        """Grow the backing arrays to hold ``need`` rows (geometrically, by copying)."""
        if need > len(self._rows):
            cap = max(need, int(len(self._rows) * 1.5), 64)
            grown = np.empty((cap, self.dim), np.float32)
            grown[: self.n] = self._rows[: self.n]
            norms = np.empty(cap, np.float32)
            norms[: self.n] = self._sqnorms[: self.n]
            self._rows, self._sqnorms = grown, norms

    def append(self, x: F32Matrix) -> None:
        need = self.n + len(x)
        self.reserve(need)
        self._rows[self.n : need] = x
        self._sqnorms[self.n : need] = np.einsum("ij,ij->i", x, x)
        self.n = need

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        self._rows[dst] = self._rows[src]
        self._sqnorms[dst] = self._sqnorms[src]

    def nbytes(self) -> int:
        return int(self._rows.nbytes + self._sqnorms.nbytes)


def exact_search(rows: F32Matrix, sqnorms: np.ndarray, queries: F32Matrix, k: int, kernel_metric: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k slots/distances of ``queries`` over ``rows`` (metric code 0 l2 / 1 ip).

    Few queries: a direct scan (split across threads on large sets), or for short rows one
    matrix-vector product. Many queries: BLAS inner products in blocks folded into heaps.
    Both BLAS paths re-score the k survivors exactly (|x|^2-2<q,x> loses precision for
    near neighbours).
    """
    n = len(rows)
    nq = len(queries)
    if nq < BLAS_MIN_QUERIES:
        if rows.shape[1] < _BLAS_MAX_DIM_FEW_QUERIES and n >= _BLAS_MIN_ROWS_FEW_QUERIES:
            # short rows: a per-row SIMD reduction wastes lanes, a matrix-vector product does not
            heap_d, heap_s = topk.new_heaps(nq, k)
            topk.merge_gram_block(np.ascontiguousarray((rows @ queries.T).T), sqnorms, 0, kernel_metric, heap_d, heap_s)
            return topk.rescore(queries, rows, heap_s, kernel_metric)
        n_chunks = 1 if n < 2 * _MIN_ROWS_PER_CHUNK else min(-(-numba.get_num_threads() // nq), n // _MIN_ROWS_PER_CHUNK)
        if n_chunks <= 1:
            return topk.scan_topk(queries, rows, kernel_metric, k)
        return topk.scan_topk_chunked(queries, rows, kernel_metric, k, n_chunks)
    out_s = np.empty((nq, k), np.int64)
    out_d = np.empty((nq, k), np.float32)
    for q0 in range(0, nq, _QUERY_BLOCK):
        qb = queries[q0 : q0 + _QUERY_BLOCK]
        heap_d, heap_s = topk.new_heaps(len(qb), k)
        for r0 in range(0, n, _ROW_BLOCK):
            gram = qb @ rows[r0 : r0 + _ROW_BLOCK].T
            topk.merge_gram_block(gram, sqnorms[r0 : r0 + _ROW_BLOCK], r0, kernel_metric, heap_d, heap_s)
        out_s[q0 : q0 + len(qb)], out_d[q0 : q0 + len(qb)] = topk.rescore(qb, rows, heap_s, kernel_metric)
    return out_s, out_d


class FlatIndex(BaseIndex):
    """Exact k-NN by scanning every stored vector. Rows stay dense: remove moves the last
    rows into the holes. Cosine stores unit vectors and ranks by inner product."""

    kind = "flat"

    def __init__(self, dim: int, metric: Metric | str = Metric.L2) -> None:
        super().__init__(dim, metric)
        self._store = VectorStore(self.dim)

    @property
    def _kernel_metric(self) -> int:
        return Metric.L2.code if self.metric is Metric.L2 else Metric.IP.code

    def _prepare(self, x: F32Matrix) -> F32Matrix:
        return normalize_rows(x) if self.metric is Metric.COSINE else x

    def reserve(self, n: int) -> None:
        """Grow the row store to ``n`` rows now (see ``BaseIndex.reserve``)."""
        self._store.reserve(n)

    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None:
        self._store.append(self._prepare(vectors))
        self._ids.append(ids)

    def _search(self, queries: F32Matrix, k: int, allowed: I64Vector | None, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        q = self._prepare(queries)
        store = self._store
        if allowed is None:
            slots, dists = exact_search(store.rows, store.sqnorms, q, k, self._kernel_metric)
        elif len(q) < BLAS_MIN_QUERIES:
            slots, dists = topk.scan_subset(q, store.rows, allowed, self._kernel_metric, k)
        else:
            sub_s, dists = exact_search(store.rows[allowed], store.sqnorms[allowed], q, k, self._kernel_metric)
            slots = np.where(sub_s >= 0, allowed[np.maximum(sub_s, 0)], -1)
        if self.metric is Metric.COSINE:
            dists = dists + np.float32(1.0)
        return slots, dists

    def _remove(self, slots: I64Vector) -> None:
        n_live = len(self._ids)
        holes = np.sort(slots[slots < n_live])
        tail = np.arange(n_live, self._store.n, dtype=np.int64)
        movers = tail[self._ids.slot_ids[tail] >= 0]
        self._store.move(movers, holes)
        for src, dst in zip(movers.tolist(), holes.tolist()):
            self._ids.move(src, dst)
        self._store.n = n_live
        self._ids.truncate(n_live)

    def vectors(self, ids: Any) -> F32Matrix:
        """Stored rows of ``ids`` (unit-normalised for cosine); raises IdNotFoundError if any is missing."""
        from vecdb.errors import IdNotFoundError
        from vecdb.validation import as_id_array

        want = as_id_array(ids)
        slots = self._ids.lookup(want)
        if (slots < 0).any():
            raise IdNotFoundError(f"ids not in the index: {want[slots < 0][:5].tolist()}")
        return self._store.rows[slots].copy()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"vectors": self._store.rows}

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> "FlatIndex":
        index = cls(dim, metric)
        rows = arrays["vectors"]
        if rows.ndim != 2 or rows.shape[1] != dim or len(rows) != len(arrays["slot_ids"]):
            raise ValueError(f"vectors array has shape {rows.shape}, expected (n_slots, {dim})")
        index._store = VectorStore(dim, rows)
        return index

    def _memory_bytes(self) -> int:
        return self._store.nbytes()
