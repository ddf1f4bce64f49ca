r"""Kernels for multi-plane binary codes: Hamming scans and plane-weighted symmetric distances.

A code of ``b`` bit-planes over ``w`` words per plane is one uint64 row of ``b * w`` words,
plane ``p`` in words ``[p*w, (p+1)*w)``. A set bit means +1, a clear bit -1, so a plane is a
sign vector :math:`a_p \in \{\pm 1\}^D` and a code reconstructs :math:`\hat x = \sum_p
\alpha_p a_p` (per-plane scales :math:`\alpha`). Distances between two codes (query ``a``,
stored ``b``) come from popcounts only:

- mode 0 (l2), exact :math:`\|\hat a - \hat b\|^2` with :math:`u_p = a_p \oplus b_p`:
  :math:`\sum_p 4\alpha_p^2 |u_p| + \sum_{p<q} 8\alpha_p\alpha_q
  (|u_p \wedge u_q| - 2|u_p \wedge u_q \wedge (a_p \oplus a_q)|)`;
- mode 1 (ip), :math:`-\langle \hat a, \hat b\rangle = -D(\sum_p\alpha_p)^2 +
  \sum_{p,q} 2\alpha_p\alpha_q |a_p \oplus b_q|`.

The caller passes the weights ``W`` (``W[p,p] = 4α_p²``, ``W[p,q] = 8α_pα_q`` for l2;
``W[p,q] = 2α_pα_q`` for ip) and the constant. With one plane both modes are increasing in the
plain Hamming distance, so the one-plane scan ranks by popcount alone and maps at the end.

The plane kernels are compiled without fast-math on purpose: with re-association LLVM
vectorised the popcount reductions into a byte-shuffle emulation that measured ~3x slower
than scalar POPCNT in a micro-benchmark.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from vecdb.kernels._jit import F32, F32_MAT, I64, U64_MAT, U64_ROW, kernel
from vecdb.kernels.hamming import _ctpop_u64, hamming_scan_topk
from vecdb.kernels.heaps import heap_push
from vecdb.kernels.scan import row_scanner, topk_scan

__all__ = ["plane_distance", "plane_distances", "hamming_scan_topk", "plane_scan_topk", "PlaneQueries"]


@kernel(F32(U64_ROW, U64_ROW, I64, I64, F32_MAT, F32, I64))
def plane_distance(a, b, n_planes, n_words, weights, const, mode):
    """Plane-weighted symmetric distance between two codes (see the module docstring)."""
    acc = np.float32(0.0)
    if mode == 0:
        for w in range(n_words):
            for p in range(n_planes):
                ap = a[p * n_words + w]
                up = ap ^ b[p * n_words + w]
                acc += weights[p, p] * np.float32(_ctpop_u64(up))
                for q in range(p + 1, n_planes):
                    aq = a[q * n_words + w]
                    both = up & (aq ^ b[q * n_words + w])
                    agree = np.float32(_ctpop_u64(both)) - np.float32(2.0) * np.float32(_ctpop_u64(both & (ap ^ aq)))
                    acc += weights[p, q] * agree
    else:
        for w in range(n_words):
            for p in range(n_planes):
                ap = a[p * n_words + w]
                for q in range(n_planes):
                    acc += weights[p, q] * np.float32(_ctpop_u64(ap ^ b[q * n_words + w]))
    return const + acc


@kernel(numba.float32[::1](U64_ROW, U64_MAT, I64, I64, F32_MAT, F32, I64))
def plane_distances(a, codes, n_planes, n_words, weights, const, mode):
    """``plane_distance`` from one query code to every code row: float32 (n,)."""
    n = codes.shape[0]
    out = np.empty(n, np.float32)
    for j in range(n):
        out[j] = plane_distance(a, codes[j], n_planes, n_words, weights, const, mode)
    return out


@kernel
def _plane_row_distance(q, codes, j, n_planes, n_words, weights, const, mode):
    """``plane_distance`` of query ``q`` to row ``j`` of ``codes``, indexing the 2-D array
    directly (no per-row view) so the scan loop stays cheap."""
    acc = np.float32(0.0)
    if mode == 0:
        for w in range(n_words):
            for p in range(n_planes):
                ap = q[p * n_words + w]
                up = ap ^ codes[j, p * n_words + w]
                acc += weights[p, p] * np.float32(_ctpop_u64(up))
                for r in range(p + 1, n_planes):
                    aq = q[r * n_words + w]
                    both = up & (aq ^ codes[j, r * n_words + w])
                    agree = np.float32(_ctpop_u64(both)) - np.float32(2.0) * np.float32(_ctpop_u64(both & (ap ^ aq)))
                    acc += weights[p, r] * agree
    else:
        for w in range(n_words):
            for p in range(n_planes):
                ap = q[p * n_words + w]
                for r in range(n_planes):
                    acc += weights[p, r] * np.float32(_ctpop_u64(ap ^ codes[j, r * n_words + w]))
    return const + acc


@kernel
def _two_plane_rows(q, codes, subset, use_subset, lo, hi, n_words, weights, const, mode, dh, sh):
    """Two-plane scan with the pair counts unrolled into scalars (about 3x faster than the
    generic plane loops, measured; two planes is the common 2-bits-per-dimension case)."""
    w00 = weights[0, 0]
    w11 = weights[1, 1]
    w01 = weights[0, 1]
    w10 = weights[1, 0]
    for r in range(lo, hi):
        j = subset[r] if use_subset else r
        c00 = np.uint64(0)
        c11 = np.uint64(0)
        c01 = np.uint64(0)
        c10 = np.uint64(0)
        for w in range(n_words):
            a0 = q[w]
            a1 = q[n_words + w]
            b0 = codes[j, w]
            b1 = codes[j, n_words + w]
            if mode == 0:
                u0 = a0 ^ b0
                u1 = a1 ^ b1
                both = u0 & u1
                c00 += _ctpop_u64(u0)
                c11 += _ctpop_u64(u1)
                c01 += _ctpop_u64(both)
                c10 += _ctpop_u64(both & (a0 ^ a1))
            else:
                c00 += _ctpop_u64(a0 ^ b0)
                c11 += _ctpop_u64(a1 ^ b1)
                c01 += _ctpop_u64(a0 ^ b1)
                c10 += _ctpop_u64(a1 ^ b0)
        if mode == 0:
            cross = w01 * np.float32(np.int64(c01) - 2 * np.int64(c10))
        else:
            cross = w01 * np.float32(np.int64(c01)) + w10 * np.float32(np.int64(c10))
        d = const + w00 * np.float32(np.int64(c00)) + w11 * np.float32(np.int64(c11)) + cross
        if d < dh[0]:
            heap_push(dh, sh, d, j)


@kernel
def _pc(x):
    """Popcount of one uint64 word as int64 (keeps integer sums out of float64 promotion)."""
    return np.int64(_ctpop_u64(x))


@kernel
def _pair(ap, ar, bp, br, mode):
    """Pair term of planes p < r on one word: l2 ``|u_p∧u_r| - 2|u_p∧u_r∧(a_p⊕a_r)|``,
    ip ``|a_p⊕b_r| + |a_r⊕b_p|`` (both orders, the ip weights being symmetric)."""
    if mode == 0:
        both = (ap ^ bp) & (ar ^ br)
        return _pc(both) - 2 * _pc(both & (ap ^ ar))
    return _pc(ap ^ br) + _pc(ar ^ bp)


@kernel
def _four_plane_rows(q, codes, subset, use_subset, lo, hi, n_words, weights, const, mode, dh, sh):
    """Four-plane scan with the ten plane-pair counts unrolled into scalars (the generic
    loops measured ~5x slower)."""
    for r in range(lo, hi):
        j = subset[r] if use_subset else r
        c0 = c1 = c2 = c3 = np.int64(0)
        c01 = c02 = c03 = c12 = c13 = c23 = np.int64(0)
        for w in range(n_words):
            a0 = q[w]
            a1 = q[n_words + w]
            a2 = q[2 * n_words + w]
            a3 = q[3 * n_words + w]
            b0 = codes[j, w]
            b1 = codes[j, n_words + w]
            b2 = codes[j, 2 * n_words + w]
            b3 = codes[j, 3 * n_words + w]
            c0 += _pc(a0 ^ b0)
            c1 += _pc(a1 ^ b1)
            c2 += _pc(a2 ^ b2)
            c3 += _pc(a3 ^ b3)
            c01 += _pair(a0, a1, b0, b1, mode)
            c02 += _pair(a0, a2, b0, b2, mode)
            c03 += _pair(a0, a3, b0, b3, mode)
            c12 += _pair(a1, a2, b1, b2, mode)
            c13 += _pair(a1, a3, b1, b3, mode)
            c23 += _pair(a2, a3, b2, b3, mode)
        d = (const + weights[0, 0] * np.float32(c0) + weights[1, 1] * np.float32(c1)
             + weights[2, 2] * np.float32(c2) + weights[3, 3] * np.float32(c3)
             + weights[0, 1] * np.float32(c01) + weights[0, 2] * np.float32(c02) + weights[0, 3] * np.float32(c03)
             + weights[1, 2] * np.float32(c12) + weights[1, 3] * np.float32(c13) + weights[2, 3] * np.float32(c23))
        if d < dh[0]:
            heap_push(dh, sh, d, j)


class PlaneQueries(NamedTuple):
    """Scan context of multi-plane codes: query codes (nq, planes * words) and the distance
    parameters of ``plane_distance``."""

    codes: np.ndarray
    n_planes: int
    n_words: int
    weights: np.ndarray
    const: float
    mode: int


@row_scanner(PlaneQueries)
@kernel
def _plane_rows(ctx, qi, codes, subset, use_subset, lo, hi, dh, sh):
    """Offer code rows to one heap by ``plane_distance``, with unrolled 2- and 4-plane loops."""
    q = ctx.codes[qi]
    n_planes = ctx.n_planes
    n_words = ctx.n_words
    weights = ctx.weights
    const = np.float32(ctx.const)
    mode = ctx.mode
    if n_planes == 2:
        _two_plane_rows(q, codes, subset, use_subset, lo, hi, n_words, weights, const, mode, dh, sh)
    elif n_planes == 4:
        _four_plane_rows(q, codes, subset, use_subset, lo, hi, n_words, weights, const, mode, dh, sh)
    elif use_subset:
        for r in range(lo, hi):
            j = subset[r]
            d = _plane_row_distance(q, codes, j, n_planes, n_words, weights, const, mode)
            if d < dh[0]:
                heap_push(dh, sh, d, j)
    else:
        for j in range(lo, hi):
            d = _plane_row_distance(q, codes, j, n_planes, n_words, weights, const, mode)
            if d < dh[0]:
                heap_push(dh, sh, d, j)


@kernel
def plane_scan_topk(queries, codes, n_planes, n_words, weights, const, mode, subset, use_subset, k, n_chunks):
    """Top-k rows per query code by ``plane_distance``: (slots int64 (nq, k), dists float32
    (nq, k)), sorted by (distance, slot), padded with -1/+inf; ``subset`` as in ``hamming_scan_topk``."""
    ctx = PlaneQueries(queries, n_planes, n_words, weights, const, mode)
    return topk_scan(ctx, queries.shape[0], codes, subset, use_subset, k, n_chunks)
