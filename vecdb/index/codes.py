"""Shared machinery of the flat code indexes (``PQIndex``, ``BinaryIndex``, ``SQ8Index``).

A code index keeps one compact code per vector (scanned for every query) and, optionally, the
float32 vector beside it for exact re-ranking. Search scans the codes for the best
``max(k, rerank)`` candidates; with ``rerank > 0`` those are re-scored exactly on the float
vectors and the best ``k`` returned with exact distances. Codes and vectors stay dense: removal
moves the last rows into the holes (as ``FlatIndex`` does).

Training is explicit: ``index.train(sample)`` before the first ``add``; adding to an untrained
index raises ``FailedPreconditionError`` (a silent auto-train on a small first batch would
freeze a poor quantizer into the index).
"""
from __future__ import annotations

import abc
from typing import Any

import numba
import numpy as np

from vecdb.errors import FailedPreconditionError
from vecdb.index.base import BaseIndex
from vecdb.index.flat import VectorStore
from vecdb.kernels.distances import normalize_rows
from vecdb.kernels.pq import rerank_topk
from vecdb.quant.base import BaseCodec
from vecdb.types import F32Matrix, I64Vector, Metric
from vecdb.validation import as_matrix, as_positive_int

_MIN_ROWS_PER_CHUNK = 4096
_EMPTY_SUBSET = np.zeros(0, np.int64)


class CodeStore:
    """A growable dense array of fixed-width code rows (any dtype), amortised O(1) append."""

    def __init__(self, width: int, dtype: np.dtype, rows: np.ndarray | None = None) -> None:
        self.width = width
        self.dtype = np.dtype(dtype)
        self._rows = np.zeros((0, width), self.dtype) if rows is None else np.ascontiguousarray(rows, self.dtype)
        self.n = len(self._rows)

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: self.n]

    def append(self, codes: np.ndarray) -> None:
        need = self.n + len(codes)
        if need > len(self._rows):
            cap = max(need, int(len(self._rows) * 1.5), 64)
            grown = np.empty((cap, self.width), self.dtype)
            grown[: self.n] = self._rows[: self.n]
            self._rows = grown
        self._rows[self.n : need] = codes
        self.n = need

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        self._rows[dst] = self._rows[src]

    def nbytes(self) -> int:
        """Bytes of the live code rows (spare capacity excluded)."""
        return int(self.n * self.width * self.dtype.itemsize)


def scan_chunks(n_queries: int, n_items: int) -> int:
    """How many row chunks a scan splits into so that few queries still use every thread."""
    n_threads = numba.get_num_threads()
    return max(1, min(-(-n_threads // max(1, n_queries)), n_items // _MIN_ROWS_PER_CHUNK))


def subset_args(allowed: I64Vector | None) -> tuple[np.ndarray, bool]:
    """Kernel arguments (subset, use_subset) for an optional allow-list of slots."""
    return (_EMPTY_SUBSET, False) if allowed is None else (np.ascontiguousarray(allowed, np.int64), True)


class CodeIndex(BaseIndex):
    """Base of flat code indexes. Subclasses set ``kind``, build ``self.codec`` and implement
    ``_scan(queries, depth, allowed) -> (slots, approximate distances)`` over ``self._codes``.

    ``rerank`` (constructor default, overridable per ``search`` call): number of candidates
    re-scored exactly with the stored float vectors; 0 returns approximate distances.
    ``keep_vectors``: store the float vectors (needed for ``rerank > 0``).
    """

    search_params = frozenset({"rerank"})

    def __init__(self, dim: int, metric: Metric | str, codec: BaseCodec, *, rerank: int = 0,
                 keep_vectors: bool = True) -> None:
        super().__init__(dim, metric)
        self.codec = codec
        self.rerank = as_positive_int(rerank, "rerank", minimum=0)
        self.keep_vectors = bool(keep_vectors)
        self._codes = CodeStore(codec.code_width, codec.code_dtype)
        self._store = VectorStore(self.dim)

    # ---- training -------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        """True once the codec is trained; ``add`` requires it."""
        return self.codec.is_trained

    def train(self, vectors: Any) -> None:
        """Train the codec on sample ``vectors`` (n, dim). Only allowed while the index is empty,
        since stored codes would not match a new codec."""
        if len(self._codes.rows):
            raise FailedPreconditionError(f"{type(self).__name__} already holds {len(self)} codes; train before adding")
        self.codec.train(self._prepare(as_matrix(vectors, self.dim, what="training vectors")))

    @property
    def codes(self) -> np.ndarray:
        """The stored code rows in slot order (a view; do not modify)."""
        return self._codes.rows

    # ---- memory ---------------------------------------------------------------------
    def memory_breakdown(self) -> dict[str, int]:
        """Bytes in memory by part: ``codes`` (scanned per query), ``rerank_vectors`` (float32
        rows and norms for re-ranking), ``codec`` (trained tables), ``ids`` (id map)."""
        return {"codes": self._codes.nbytes(), "rerank_vectors": self._store.nbytes(),
                "codec": self.codec.memory_bytes(), "ids": self._ids.memory_bytes()}

    def _memory_bytes(self) -> int:
        parts = self.memory_breakdown()
        return parts["codes"] + parts["rerank_vectors"] + parts["codec"]

    # ---- hooks ----------------------------------------------------------------------
    @property
    def _kernel_metric(self) -> int:
        return Metric.L2.code if self.metric is Metric.L2 else Metric.IP.code

    def _prepare(self, x: F32Matrix) -> F32Matrix:
        return normalize_rows(x) if self.metric is Metric.COSINE else x

    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None:
        if not self.codec.is_trained:
            raise FailedPreconditionError(f"{type(self).__name__} is not trained; call train(vectors) before add")
        x = self._prepare(vectors)
        codes = self.codec.encode(x)
        self._codes.append(codes)
        if self.keep_vectors:
            self._store.append(x)
        self._ids.append(ids)

    def _search(self, queries: F32Matrix, k: int, allowed: I64Vector | None, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        rerank = self.rerank if params.get("rerank") is None else as_positive_int(params["rerank"], "rerank", minimum=0)
        if rerank and not self.keep_vectors:
            raise FailedPreconditionError(f"{type(self).__name__} was built with keep_vectors=False; rerank must be 0")
        q = self._prepare(queries)
        if not rerank:
            return self._scan(q, k, allowed)
        cand, _ = self._scan(q, max(k, rerank), allowed)
        slots, dists = rerank_topk(q, self._store.rows, cand, self._kernel_metric, k)
        if self.metric is Metric.COSINE:
            dists = dists + np.float32(1.0)
        return slots, dists

    @abc.abstractmethod
    def _scan(self, queries: F32Matrix, depth: int, allowed: I64Vector | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``depth`` slots per prepared query by code distance, with approximate distances
        in the index's metric convention, sorted, padded with -1/+inf."""

    def _remove(self, slots: I64Vector) -> None:
        self._make_writable()
        n_live = len(self._ids)
        holes = np.sort(slots[slots < n_live])
        tail = np.arange(n_live, self._codes.n, dtype=np.int64)
        movers = tail[self._ids.slot_ids[tail] >= 0]
        self._codes.move(movers, holes)
        if self.keep_vectors:
            self._store.move(movers, holes)
            self._store.n = n_live
        for src, dst in zip(movers.tolist(), holes.tolist()):
            self._ids.move(src, dst)
        self._codes.n = n_live
        self._ids.truncate(n_live)

    def _make_writable(self) -> None:
        """Copy arrays memory-mapped read-only by ``load_index(mmap=True)`` before editing them."""
        if not self._codes.rows.flags.writeable:
            self._codes = CodeStore(self._codes.width, self._codes.dtype, np.array(self._codes.rows))
        if self.keep_vectors and not self._store.rows.flags.writeable:
            self._store = VectorStore(self.dim, np.array(self._store.rows))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        codec_params, codec_arrays = self.codec.state()
        params = {"rerank": self.rerank, "keep_vectors": self.keep_vectors, "codec": codec_params}
        arrays = {"codes": self._codes.rows, **{f"codec_{k}": v for k, v in codec_arrays.items()}}
        if self.keep_vectors:
            arrays["vectors"] = self._store.rows
        return params, arrays

    @classmethod
    def _restore(cls, index: CodeIndex, arrays: dict[str, np.ndarray]) -> CodeIndex:
        """Fill a freshly built index (its codec already restored) with saved codes and vectors."""
        n = len(arrays["slot_ids"])
        codes = arrays["codes"]
        if codes.shape != (n, index.codec.code_width) or codes.dtype != index.codec.code_dtype:
            raise ValueError(f"codes array has shape {codes.shape} {codes.dtype}, expected ({n}, {index.codec.code_width}) {index.codec.code_dtype}")
        index._codes = CodeStore(index.codec.code_width, index.codec.code_dtype, codes)
        if index.keep_vectors:
            rows = arrays["vectors"]
            if rows.shape != (n, index.dim):
                raise ValueError(f"vectors array has shape {rows.shape}, expected ({n}, {index.dim})")
            index._store = VectorStore(index.dim, rows)
        return index

    @staticmethod
    def _codec_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k[len("codec_"):]: v for k, v in arrays.items() if k.startswith("codec_")}
