r"""Kernels for scanning uint8 codes with per-query lookup tables (PQ's asymmetric distance).

A code row holds ``m`` bytes; byte ``s`` selects entry ``tables[q, s, code[s]]`` and the
approximate distance of query ``q`` to the row is the sum of the selected entries,
:math:`\hat d(q, x) = \sum_s T_q[s, c_s(x)]`. Product quantization builds ``T`` from
sub-codebooks (8-bit codes: one sub-quantizer per byte; 4-bit codes: two per byte with a
256-entry pair table, which halves the lookups). Top-k work is split into (query, chunk)
tasks so a single query also uses every thread; the chunk heaps are merged at the end.

Also here: exact re-ranking of candidate slots against float rows, shared by every code index.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types as nt

from vecdb.kernels._jit import ARITH, F32_MAT, kernel
from vecdb.kernels.distances import distance
from vecdb.kernels.topk import heap_push, heap_sort, merge_chunk_heaps, new_heaps

U8_MAT = nt.Array(nt.uint8, 2, "C", readonly=True)
F32_3D = nt.Array(nt.float32, 3, "C", readonly=True)
I64_ROW = nt.Array(nt.int64, 1, "C", readonly=True)


@kernel(numba.float32[::1](F32_MAT, U8_MAT), fastmath=ARITH)
def adc_distances(table, codes):
    """Table-lookup distance of one query (``table`` (m, T)) to every code row: float32 (n,)."""
    n, m = codes.shape
    out = np.empty(n, np.float32)
    for j in range(n):
        row = codes[j]
        acc = np.float32(0.0)
        for s in range(m):
            acc += table[s, row[s]]
        out[j] = acc
    return out


@kernel(parallel=True, fastmath=ARITH)
def adc_topk(tables, codes, subset, use_subset, k, n_chunks):
    """Top-k code rows per query by summed table lookups.

    tables : float32 (nq, m, T); codes : uint8 (n, m); subset : sorted int64 slots to scan
    when ``use_subset`` (else every row). Returns (slots (nq, k), dists (nq, k)), sorted by
    (distance, slot), padded with -1/+inf.
    """
    nq = tables.shape[0]
    m = codes.shape[1]
    n_items = subset.shape[0] if use_subset else codes.shape[0]
    chunk = (n_items + n_chunks - 1) // n_chunks if n_items > 0 else 1
    hd, hs = new_heaps(nq * n_chunks, k)
    for t in numba.prange(nq * n_chunks):
        qi = t // n_chunks
        c = t % n_chunks
        tab = tables[qi]
        dh = hd[t]
        sh = hs[t]
        lo = c * chunk
        hi = min(n_items, lo + chunk)
        for r in range(lo, hi):
            j = subset[r] if use_subset else r
            row = codes[j]
            acc = np.float32(0.0)
            for s in range(m):
                acc += tab[s, row[s]]
            if acc < dh[0]:
                heap_push(dh, sh, acc, j)
    return merge_chunk_heaps(hd, hs, nq, n_chunks, k)


@kernel(parallel=True)
def rerank_topk(queries, rows, candidates, metric, k):
    """Exact top-k among candidate slots: distances recomputed on float ``rows``.

    candidates : int64 (nq, c), -1 entries skipped. Uses the same ``distance`` kernel as the
    exact scans, so a candidate list covering every row reproduces exact search bit for bit.
    """
    nq = candidates.shape[0]
    hd, hs = new_heaps(nq, k)
    for i in numba.prange(nq):
        q = queries[i]
        for j in range(candidates.shape[1]):
            s = candidates[i, j]
            if s >= 0:
                heap_push(hd[i], hs[i], distance(q, rows[s], metric), s)
        heap_sort(hd[i], hs[i])
    return hs, hd


@kernel(parallel=True, fastmath=ARITH)
def pq_tables(queries, codebooks, metric):
    r"""Per-query lookup tables, float32 (nq, m, ksub).

    ``codebooks`` (m, ksub, dsub); sub-vector s of a query covers dims ``[s*dsub, (s+1)*dsub)``.
    metric 0 (l2): :math:`T[s, c] = \|q_s - C_{s,c}\|^2`, computed directly (not by the
    :math:`|q|^2 - 2\langle q, c\rangle + |c|^2` expansion, which cancels for near neighbours);
    metric 1 (ip): :math:`T[s, c] = -\langle q_s, C_{s,c}\rangle`.
    """
    nq = queries.shape[0]
    m, ksub, dsub = codebooks.shape
    out = np.empty((nq, m, ksub), np.float32)
    for i in numba.prange(nq):
        q = queries[i]
        for s in range(m):
            base = s * dsub
            for c in range(ksub):
                cent = codebooks[s, c]
                acc = np.float32(0.0)
                if metric == 0:
                    for t in range(dsub):
                        diff = q[base + t] - cent[t]
                        acc += diff * diff
                else:
                    for t in range(dsub):
                        acc -= q[base + t] * cent[t]
                out[i, s, c] = acc
    return out
