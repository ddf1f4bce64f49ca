"""BinaryIndex: flat Hamming / plane-weighted scan of binary codes, optional exact re-ranking."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.index.codes import CodeIndex, scan_chunks, subset_args
from vecdb.kernels.binary_codes import hamming_scan_topk, plane_scan_topk
from vecdb.quant.binary import Binary
from vecdb.types import F32Matrix, I64Vector, Metric


class BinaryIndex(CodeIndex):
    """Exhaustive search over ``vecdb.quant.Binary`` codes; queries are encoded too (symmetric).

    Without re-ranking the returned distances are code-space estimates, not exact ones:
    l2, the squared distance between the two codes' reconstructions (one plane:
    ``4 α² · hamming``); cosine, half of that on unit vectors (≈ 1 - cos); ip, minus the inner
    product of the reconstructions (codes are not centred for ip). With ``rerank > 0`` the
    returned distances are exact.

    Parameters
    ----------
    bits_per_dim : bit-planes per dimension, 1..4 (code size ``8 * bits * ceil(dim/64)`` bytes).
    rotate : random orthogonal rotation before binarising (evens out dimensions).
    rerank, keep_vectors : as in ``PQIndex``.
    """

    kind = "binary"

    def __init__(self, dim: int, metric: Metric | str = Metric.L2, *, bits_per_dim: int = 1, rotate: bool = False,
                 rerank: int = 0, keep_vectors: bool = True, seed: int = 1234, codec: Binary | None = None) -> None:
        if codec is None:
            codec = Binary(dim, bits_per_dim, rotate=rotate, center=Metric.parse(metric) is not Metric.IP, seed=seed)
        super().__init__(dim, metric, codec, rerank=rerank, keep_vectors=keep_vectors)

    def _scan(self, queries: F32Matrix, depth: int, allowed: I64Vector | None) -> tuple[np.ndarray, np.ndarray]:
        codec: Binary = self.codec  # type: ignore[assignment]
        qcodes = codec.encode(queries)
        weights, const, mode = codec.plane_weights(self.metric)
        subset, use_subset = subset_args(allowed)
        n_items = len(subset) if use_subset else self._codes.n
        chunks = scan_chunks(len(queries), n_items)
        if codec.bits_per_dim == 1:
            slots, ham = hamming_scan_topk(qcodes, self._codes.rows, subset, use_subset, depth, chunks)
            dists = (const + weights[0, 0] * ham).astype(np.float32)
        else:
            slots, dists = plane_scan_topk(qcodes, self._codes.rows, codec.bits_per_dim, codec.n_words, weights,
                                           const, mode, subset, use_subset, depth, chunks)
        if self.metric is Metric.COSINE:
            # half the squared distance of unit reconstructions ~ 1 - cos; the base adds the 1
            dists = dists * np.float32(0.5) - np.float32(1.0)
        return slots, np.where(slots >= 0, dists, np.float32(np.inf)).astype(np.float32)

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinaryIndex:
        codec = Binary.from_state(params["codec"], cls._codec_arrays(arrays))
        index = cls(dim, metric, rerank=params["rerank"], keep_vectors=params["keep_vectors"], codec=codec)  # type: ignore[arg-type]
        return cls._restore(index, arrays)  # type: ignore[return-value]
