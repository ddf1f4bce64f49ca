"""PQIndex: flat scan of product-quantization codes with asymmetric distances, optional exact
re-ranking on the stored float vectors."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.index.codes import CodeIndex, scan_chunks, subset_args
from vecdb.kernels.pq import adc_topk
from vecdb.quant.pq import PQ
from vecdb.types import F32Matrix, I64Vector, Metric


class PQIndex(CodeIndex):
    """Exhaustive ADC search over PQ codes (faiss ``IndexPQ``), plus ``rerank``.

    Parameters
    ----------
    dim, metric : vector dimension and metric (l2, ip, cosine; cosine codes unit vectors and
        ranks by inner product).
    m, nbits, opq : product quantizer shape (``vecdb.quant.PQ``): ``m`` sub-quantizers of
        ``2**nbits`` centroids, optional OPQ rotation. Code size ``m`` bytes (``m/2`` when
        ``nbits <= 4`` and ``m`` is even).
    rerank : default number of candidates re-scored exactly (0: return ADC distances, which
        are exact distances to the decoded vectors). Overridable per call.
    keep_vectors : keep float32 vectors beside the codes (required for ``rerank > 0``).
    """

    kind = "pq"

    def __init__(self, dim: int, metric: Metric | str = Metric.L2, *, m: int = 8, nbits: int = 8,
                 opq: bool = False, rerank: int = 0, keep_vectors: bool = True, seed: int = 1234,
                 codec: PQ | None = None) -> None:
        codec = codec if codec is not None else PQ(dim, m, nbits, opq=opq, seed=seed)
        super().__init__(dim, metric, codec, rerank=rerank, keep_vectors=keep_vectors)

    def _scan(self, queries: F32Matrix, depth: int, allowed: I64Vector | None) -> tuple[np.ndarray, np.ndarray]:
        codec: PQ = self.codec  # type: ignore[assignment]
        tables = codec.tables(queries, Metric.L2 if self.metric is Metric.L2 else Metric.IP)
        subset, use_subset = subset_args(allowed)
        n_items = len(subset) if use_subset else self._codes.n
        slots, dists = adc_topk(tables, self._codes.rows, subset, use_subset, depth, scan_chunks(len(queries), n_items))
        return slots, dists

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> PQIndex:
        codec = PQ.from_state(params["codec"], cls._codec_arrays(arrays))
        index = cls(dim, metric, rerank=params["rerank"], keep_vectors=params["keep_vectors"], codec=codec)  # type: ignore[arg-type]
        return cls._restore(index, arrays)  # type: ignore[return-value]
