"""SQ8Index: flat scan of per-dimension int8 codes, optional exact re-ranking."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.index.codes import CodeIndex, scan_chunks, subset_args
from vecdb.kernels.sq8 import sq8_topk
from vecdb.quant.sq8 import SQ8
from vecdb.types import F32Matrix, I64Vector, Metric


class SQ8Index(CodeIndex):
    """Exhaustive search over scalar int8 codes (faiss ``IndexScalarQuantizer`` QT_8bit).

    Distances without re-ranking are exact distances to the decoded vectors (l2 squared,
    -ip, or 1 - ip for cosine on unit vectors). ``rerank``/``keep_vectors`` as in ``PQIndex``.
    """

    kind = "sq8"

    def __init__(self, dim: int, metric: Metric | str = Metric.L2, *, rerank: int = 0,
                 keep_vectors: bool = True, codec: SQ8 | None = None) -> None:
        super().__init__(dim, metric, codec if codec is not None else SQ8(dim), rerank=rerank, keep_vectors=keep_vectors)

    def _scan(self, queries: F32Matrix, depth: int, allowed: I64Vector | None) -> tuple[np.ndarray, np.ndarray]:
        codec: SQ8 = self.codec  # type: ignore[assignment]
        qt, weights, bias, mode = codec.fold_queries(queries, Metric.L2 if self.metric is Metric.L2 else Metric.IP)
        subset, use_subset = subset_args(allowed)
        n_items = len(subset) if use_subset else self._codes.n
        slots, dists = sq8_topk(qt, weights, bias, self._codes.rows, mode, subset, use_subset, depth,
                                scan_chunks(len(queries), n_items))
        return slots, dists

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> SQ8Index:
        codec = SQ8.from_state(params["codec"], cls._codec_arrays(arrays))
        index = cls(dim, metric, rerank=params["rerank"], keep_vectors=params["keep_vectors"], codec=codec)  # type: ignore[arg-type]
        return cls._restore(index, arrays)  # type: ignore[return-value]
