r"""Kernels for scanning int8 scalar-quantized rows (one uint8 per dimension).

A row's value in dimension i is :math:`v_i + c_i s_i` (per-dimension offset ``v`` and step
``s``). The caller folds the query into code units once, so the scan does one multiply-add
(ip) or two (l2) per byte:

- mode 0 (l2): :math:`d = \sum_i w_i (\tilde q_i - c_i)^2`, :math:`\tilde q = (q - v)/s`,
  :math:`w = s^2`;
- mode 1 (ip): :math:`d = b_q - \sum_i \tilde q_i c_i`, :math:`\tilde q = q s`,
  :math:`b_q = -\langle q, v\rangle`.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import types as nt

from vecdb.kernels._jit import ARITH, F32_ROW, I64, kernel
from vecdb.kernels.pq import U8_MAT
from vecdb.kernels.heaps import heap_push
from vecdb.kernels.scan import row_scanner, topk_scan


@kernel(nt.float32(F32_ROW, F32_ROW, nt.Array(nt.uint8, 1, "C", readonly=True), I64), fastmath=ARITH)
def sq8_distance(qt, weights, row, mode):
    """Distance (without the ip bias) of one folded query to one code row."""
    acc = np.float32(0.0)
    if mode == 0:
        for i in range(row.shape[0]):
            diff = qt[i] - np.float32(row[i])
            acc += weights[i] * diff * diff
    else:
        for i in range(row.shape[0]):
            acc -= qt[i] * np.float32(row[i])
    return acc


@kernel(numba.float32[::1](F32_ROW, F32_ROW, nt.float32, U8_MAT, I64), fastmath=ARITH)
def sq8_distances(qt, weights, bias, codes, mode):
    """Distances of one folded query to every code row: float32 (n,)."""
    n = codes.shape[0]
    out = np.empty(n, np.float32)
    for j in range(n):
        out[j] = bias + sq8_distance(qt, weights, codes[j], mode)
    return out


class SQ8Queries(NamedTuple):
    """Scan context of SQ8 codes: folded queries ``qt`` (nq, dim), ``weights`` (dim,), per-query
    ``bias`` (nq,) and the mode (0 l2, 1 ip)."""

    qt: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    mode: int


@row_scanner(SQ8Queries)
@kernel(fastmath=ARITH)
def _sq8_rows(ctx, qi, codes, subset, use_subset, lo, hi, heap_d, heap_s):
    """Offer code rows to one heap by ``sq8_distance`` (see ``vecdb.kernels.scan``)."""
    q = ctx.qt[qi]
    b = ctx.bias[qi]
    weights = ctx.weights
    mode = ctx.mode
    for r in range(lo, hi):
        j = subset[r] if use_subset else r
        d = b + sq8_distance(q, weights, codes[j], mode)
        if d < heap_d[0]:
            heap_push(heap_d, heap_s, d, j)


@kernel
def sq8_topk(qt, weights, bias, codes, mode, subset, use_subset, k, n_chunks):
    """Top-k code rows per folded query ``qt`` (nq, dim); ``bias`` (nq,) is added (ip).

    ``subset`` (sorted int64 slots) restricts the scan when ``use_subset``. Returns
    (slots (nq, k), dists (nq, k)) sorted by (distance, slot), padded with -1/+inf.
    """
    return topk_scan(SQ8Queries(qt, weights, bias, mode), qt.shape[0], codes, subset, use_subset, k, n_chunks)


@kernel
def fold_l2(queries, vmin64, safe64):
    """``(q - v) / s`` of every query in float64, as float32 (n, dim): the l2 fold of
    ``SQ8.fold_queries_trusted`` when no dimension is constant, in one call instead of four
    numpy passes (a one-query search folds once per call)."""
    n, dim = queries.shape
    out = np.empty((n, dim), np.float32)
    for i in range(n):
        for j in range(dim):
            out[i, j] = np.float32((np.float64(queries[i, j]) - vmin64[j]) / safe64[j])
    return out
