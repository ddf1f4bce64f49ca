"""Shared machinery of the flat code indexes (``PQIndex``, ``BinaryIndex``, ``SQ8Index``).

A code index keeps one compact code per vector (scanned for every query) and, optionally, the
float32 vector beside it for exact re-ranking. Search scans the codes for the best
``max(k, rerank)`` candidates; with ``rerank > 0`` those are re-scored exactly on the float
vectors and the best ``k`` returned with exact distances. Codes and vectors stay dense: removal
moves the last rows into the holes (as ``FlatIndex`` does).

Training is explicit: ``index.train(sample)`` before the first ``add``; adding to an untrained
index raises ``FailedPreconditionError`` (a silent auto-train on a small first batch would
freeze a poor quantizer into the index). ``needs_training`` is True and ``min_train_points``
says how many points a collection gathers before it trains the index automatically (the
codec's ``recommended_train_size``: see ``vecdb.quant``).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
import numpy as np

from vecdb.errors import FailedPreconditionError
from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex, SearchParams
from vecdb.index.rows import RowStore
from vecdb.kernels.pq import rerank_topk
from vecdb.quant.base import BaseCodec
from vecdb.types import F32Matrix, I64Vector, Metric
from vecdb.validation import as_positive_int

_MIN_ROWS_PER_CHUNK = 4096
_EMPTY_SUBSET = np.zeros(0, np.int64)


def scan_chunks(n_queries: int, n_items: int) -> int:
    """How many row chunks a scan splits into so that few queries still use every thread."""
    n_threads = numba.get_num_threads()
    return max(1, min(-(-n_threads // max(1, n_queries)), n_items // _MIN_ROWS_PER_CHUNK))


def subset_args(allowed: I64Vector | None) -> tuple[np.ndarray, bool]:
    """Kernel arguments (subset, use_subset) for an optional sorted array of allowed slots."""
    return (_EMPTY_SUBSET, False) if allowed is None else (np.ascontiguousarray(allowed, np.int64), True)


@dataclass(frozen=True)
class CodeParams(SearchParams):
    """Code index search knobs: ``rerank`` (candidates re-scored exactly on the stored float
    vectors; None = the index's default, 0 = return code distances)."""

    rerank: int | None = None

    def __post_init__(self) -> None:
        if self.rerank is not None:
            object.__setattr__(self, "rerank", as_positive_int(self.rerank, "rerank", minimum=0))


class CodeIndex(BaseIndex):
    """Base of flat code indexes. Subclasses set ``kind``, build ``self.codec`` and implement
    ``_scan(queries, depth, allowed) -> (slots, distances)`` over ``self._codes``.

    ``rerank`` (constructor default, overridable per ``search`` call): number of candidates
    re-scored exactly with the stored float vectors; 0 returns approximate distances.
    ``keep_vectors``: store the float vectors (needed for ``rerank > 0``).
    Cosine is handled by the base: rows and queries arrive unit-normalised, scans rank by
    inner product and return ``-<q, x>``-style distances, to which the base adds 1.
    """

    params_type = CodeParams
    needs_training: ClassVar[bool] = True

    def __init__(self, dim: int, metric: Metric | str, codec: BaseCodec, *, rerank: int = 0,
                 keep_vectors: bool = True) -> None:
        super().__init__(dim, metric)
        self.codec = codec
        self.rerank = as_positive_int(rerank, "rerank", minimum=0)
        self.keep_vectors = bool(keep_vectors)
        self._kernel_metric = Metric.L2.code if self.metric is Metric.L2 else Metric.IP.code
        self._codes = RowStore(codec.code_width, codec.code_dtype)
        self._vectors = RowStore(self.dim, np.float32)

    # ---- training -------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        """True once the codec is trained; ``add`` requires it."""
        return self.codec.is_trained

    @property
    def min_train_points(self) -> int:
        """Points a collection gathers before training this index automatically: the codec's
        ``recommended_train_size`` (PQ: max(1000, 40 * 2**nbits); SQ8, binary: 1000)."""
        return int(max(self.codec.recommended_train_size, self.codec.min_train_size))

    def _train(self, sample: F32Matrix) -> None:
        """Train the codec on prepared sample rows. Only while the index is empty: stored codes
        would not match a new codec (a collection retrains by building a fresh index)."""
        if self._codes.n:
            raise FailedPreconditionError(f"{type(self).__name__} already holds {len(self)} codes; train before adding")
        self.codec.train(sample)

    @property
    def codes(self) -> np.ndarray:
        """The stored code rows in slot order (a view; do not modify)."""
        return self._codes.rows

    # ---- memory ---------------------------------------------------------------------
    def memory_breakdown(self) -> dict[str, int]:
        """Bytes in memory by part: ``codes`` (scanned per query), ``rerank_vectors`` (float32
        rows for re-ranking), ``codec`` (trained tables), ``ids`` (id map)."""
        return {"codes": self._codes.nbytes(), "rerank_vectors": self._vectors.nbytes(),
                "codec": self.codec.memory_bytes(), "ids": self._ids.memory_bytes()}

    def _memory_bytes(self) -> int:
        parts = self.memory_breakdown()
        return parts["codes"] + parts["rerank_vectors"] + parts["codec"]

    def reserve(self, n: int) -> None:
        """Grow the code (and re-rank vector) stores to ``n`` rows now (see ``BaseIndex.reserve``)."""
        self._codes.reserve(n)
        if self.keep_vectors:
            self._vectors.reserve(n)

    # ---- hooks ----------------------------------------------------------------------
    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None:
        if not self.codec.is_trained:
            raise FailedPreconditionError(f"{type(self).__name__} is not trained; call train(vectors) before add")
        codes = self.codec.encode(vectors)
        self._codes.append(codes)
        if self.keep_vectors:
            self._vectors.append(vectors)
        self._ids.append(ids)

    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        rerank = getattr(params, "rerank", None)
        rerank = self.rerank if rerank is None else rerank
        if rerank and not self.keep_vectors:
            raise FailedPreconditionError(f"{type(self).__name__} was built with keep_vectors=False; rerank must be 0")
        allowed = None if allow is None else allow.ids
        if not rerank:
            return self._scan(queries, k, allowed)
        cand, _ = self._scan(queries, max(k, rerank), allowed)
        return rerank_topk(queries, self._vectors.rows, cand, self._kernel_metric, k)

    @abc.abstractmethod
    def _scan(self, queries: F32Matrix, depth: int, allowed: I64Vector | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``depth`` slots per prepared query by code distance, sorted, padded with -1/+inf;
        distances in the kernels' convention (l2 squared, ip and cosine ``-<q, x>``-like)."""

    def _remove(self, slots: I64Vector) -> None:
        n_live = len(self._ids)
        holes = np.sort(slots[slots < n_live])
        tail = np.arange(n_live, self._codes.n, dtype=np.int64)
        movers = tail[self._ids.slot_ids[tail] >= 0]
        self._codes.move(movers, holes)
        self._codes.truncate(n_live)
        if self.keep_vectors:
            self._vectors.move(movers, holes)
            self._vectors.truncate(n_live)
        self._ids.move_many(movers, holes)
        self._ids.truncate(n_live)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        codec_params, codec_arrays = self.codec.state()
        params = {"rerank": self.rerank, "keep_vectors": self.keep_vectors, "codec": codec_params}
        arrays = {"codes": self._codes.rows, **{f"codec_{k}": v for k, v in codec_arrays.items()}}
        if self.keep_vectors:
            arrays["vectors"] = self._vectors.rows
        return params, arrays

    @classmethod
    def _restore(cls, index: CodeIndex, arrays: dict[str, np.ndarray]) -> CodeIndex:
        """Fill a freshly built index (its codec already restored) with saved codes and vectors
        (memory-mapped arrays are read in place and copied on the first write)."""
        n = len(arrays["slot_ids"])
        codes = arrays["codes"]
        if len(codes) != n:
            raise ValueError(f"codes array has {len(codes)} rows, expected {n}")
        index._codes = RowStore(index.codec.code_width, index.codec.code_dtype, codes)
        if index.keep_vectors:
            rows = arrays["vectors"]
            if len(rows) != n:
                raise ValueError(f"vectors array has {len(rows)} rows, expected {n}")
            index._vectors = RowStore(index.dim, np.float32, rows)
        return index

    @staticmethod
    def _codec_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k[len("codec_"):]: v for k, v in arrays.items() if k.startswith("codec_")}
