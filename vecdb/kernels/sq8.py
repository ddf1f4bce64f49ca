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

import numba
import numpy as np
from numba import types as nt

from vecdb.kernels._jit import ARITH, F32_ROW, I64, kernel
from vecdb.kernels.pq import U8_MAT
from vecdb.kernels.topk import heap_push, merge_chunk_heaps, new_heaps


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


@kernel(parallel=True, fastmath=ARITH)
def sq8_topk(qt, weights, bias, codes, mode, subset, use_subset, k, n_chunks):
    """Top-k code rows per folded query ``qt`` (nq, dim); ``bias`` (nq,) is added (ip).

    ``subset`` (sorted int64 slots) restricts the scan when ``use_subset``. Returns
    (slots (nq, k), dists (nq, k)) sorted by (distance, slot), padded with -1/+inf.
    """
    nq = qt.shape[0]
    n_items = subset.shape[0] if use_subset else codes.shape[0]
    chunk = (n_items + n_chunks - 1) // n_chunks if n_items > 0 else 1
    hd, hs = new_heaps(nq * n_chunks, k)
    for t in numba.prange(nq * n_chunks):
        qi = t // n_chunks
        c = t % n_chunks
        q = qt[qi]
        b = bias[qi]
        dh = hd[t]
        sh = hs[t]
        lo = c * chunk
        hi = min(n_items, lo + chunk)
        for r in range(lo, hi):
            j = subset[r] if use_subset else r
            d = b + sq8_distance(q, weights, codes[j], mode)
            if d < dh[0]:
                heap_push(dh, sh, d, j)
    return merge_chunk_heaps(hd, hs, nq, n_chunks, k)
