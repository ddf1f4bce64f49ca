r"""Scalar int8 quantization: each dimension mapped linearly onto 256 levels.

Training records the per-dimension range :math:`[v_i, v_i + 255 s_i]` of the sample. A value
is stored as :math:`c_i = \mathrm{round}((x_i - v_i)/s_i)` clipped to 0..255 and decoded as
:math:`v_i + c_i s_i`, so inside the trained range the error is at most :math:`s_i/2` per
dimension. Four times smaller than float32, usually accurate enough to rank without re-scoring.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.errors import InvalidArgumentError
from vecdb.kernels.sq8 import fold_l2
from vecdb.quant.base import BaseCodec
from vecdb.types import F32Matrix, Metric
from vecdb.validation import as_matrix


def scalar_ranges(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (vmin, step) mapping the range of the rows ``x`` onto ``levels`` steps
    (float32; step computed in float64)."""
    lo = x.min(axis=0)
    hi = x.max(axis=0)
    return lo.astype(np.float32), ((hi.astype(np.float64) - lo) / float(levels)).astype(np.float32)


def scalar_codes(x: np.ndarray, vmin: np.ndarray, step: np.ndarray, levels: int) -> np.ndarray:
    """Rows ``x`` as codes round((x - vmin) / step) clipped to 0..``levels`` (uint8; a
    constant dimension, step 0, codes 0)."""
    safe = np.where(step > 0, step, np.float32(1.0))
    return np.clip(np.rint((x - vmin) / safe), 0, levels).astype(np.uint8)


def centred_norms(codes: np.ndarray, step64: np.ndarray, centre: float) -> np.ndarray:
    """|step (c - centre)|^2 of each row of ``codes`` (float32, summed in float64): the norm
    a squared L2 in integer form needs (``SQ8.centred_norms``)."""
    centred = (np.asarray(codes, np.float64) - centre) * step64
    return np.einsum("ij,ij->i", centred, centred).astype(np.float32)


class SQ8(BaseCodec):
    """Per-dimension uint8 scalar quantizer (``dim`` bytes per vector)."""

    code_dtype = np.dtype(np.uint8)

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._set(np.zeros(self.dim, np.float32), np.zeros(self.dim, np.float32))

    def _set(self, vmin: np.ndarray, step: np.ndarray) -> None:
        """Take the trained ``vmin``/``step`` and the float64 forms the query folding uses
        (computed once here, not per search)."""
        self.vmin = vmin
        self.step = step
        step64 = step.astype(np.float64)
        live = step64 > 0
        self._vmin64 = vmin.astype(np.float64)
        self._step64 = step64
        self._safe64 = np.where(live, step64, 1.0)
        self._live = None if live.all() else live        # None: no constant dimension
        self._weights = (step64 * step64).astype(np.float32)

    @property
    def code_width(self) -> int:
        return self.dim

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vmin": self.vmin, "step": self.step}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        vmin = np.ascontiguousarray(arrays["vmin"], np.float32)
        step = np.ascontiguousarray(arrays["step"], np.float32)
        if vmin.shape != (self.dim,) or step.shape != (self.dim,):
            raise ValueError(f"sq8 arrays have shapes {vmin.shape}, {step.shape}, expected ({self.dim},)")
        self._set(vmin, step)

    def _train(self, x: F32Matrix) -> None:
        self._set(*scalar_ranges(x, 255))

    def max_error(self) -> np.ndarray:
        """Largest per-dimension decoding error for values inside the trained range: step / 2."""
        self.require_trained()
        return self.step / 2

    def _encode(self, x: F32Matrix) -> np.ndarray:
        return scalar_codes(x, self.vmin, self.step, 255)

    def centred_norms(self, codes: np.ndarray) -> np.ndarray:
        """|s (c - 128)|^2 of each row of ``codes`` (float32, summed in float64): the norm a
        distance in integer form needs (squared L2 from a query to the decoded rows as
        |a|^2 + norm - 2 sum a_i s_i (c_i - 128), with a = q - v - 128 s)."""
        return centred_norms(codes, self._step64, 128.0)

    def _decode(self, codes: np.ndarray) -> F32Matrix:
        return np.ascontiguousarray(self.vmin + codes.astype(np.float32) * self.step, dtype=np.float32)

    def fold_queries(self, queries: Any, metric: Metric | str = Metric.L2) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Queries in code units for ``vecdb.kernels.sq8``: (qt, weights, bias, mode).

        l2: ``qt = (q - v)/s``, ``weights = s²``; a constant dimension (s = 0) decodes to ``v``
        in every row, so its term ``(q - v)²`` goes into ``bias``. ip: ``qt = q·s``,
        ``bias = -<q, v>``.
        """
        self.require_trained()
        metric = Metric.parse(metric)
        if metric is not Metric.L2 and metric is not Metric.IP:
            raise InvalidArgumentError(
                f"SQ8 distances support l2 and ip (cosine = ip on unit vectors), got {metric.value!r}")
        return self.fold_queries_trusted(as_matrix(queries, self.dim, what="queries"), metric)

    def fold_queries_trusted(self, queries: F32Matrix,
                             metric: Metric) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``fold_queries`` without its checks, for an index that checked its queries at its
        public boundary (a one-query search pays for every microsecond): the codec is trained,
        ``queries`` finite float32 (n, dim), ``metric`` ``Metric.L2`` or ``Metric.IP``. The
        same values as ``fold_queries``."""
        live = self._live
        if metric is Metric.L2 and live is None:   # no constant dimension: the common case, one kernel call
            return fold_l2(queries, self._vmin64, self._safe64), self._weights.copy(), np.zeros(len(queries), np.float32), 0
        q = queries.astype(np.float64)
        if metric is Metric.L2:   # a constant dimension's term (q - v)^2 goes into the bias
            qt = (q - self._vmin64) / self._safe64
            qt[:, ~live] = 0.0
            bias = np.where(live, 0.0, (q - self._vmin64) ** 2).sum(axis=1).astype(np.float32)
            return qt.astype(np.float32), self._weights.copy(), bias, 0
        bias = (-(q @ self._vmin64)).astype(np.float32)
        return (q * self._step64).astype(np.float32), np.zeros(self.dim, np.float32), bias, 1
