r"""Kernels for scanning uint8 codes with per-query lookup tables (PQ's asymmetric distance).

A code row holds ``m`` bytes; byte ``s`` selects entry ``tables[q, s, code[s]]`` and the
approximate distance of query ``q`` to the row is the sum of the selected entries,
:math:`\hat d(q, x) = \sum_s T_q[s, c_s(x)]`. Product quantization builds ``T`` from
sub-codebooks (8-bit codes: one sub-quantizer per byte; 4-bit codes: two per byte with a
256-entry pair table, which halves the lookups). Top-k scans run on the skeleton of
``vecdb.kernels.scan`` (query x chunk tasks, chunk heaps merged at the end).

Also here: exact re-ranking of candidate slots against float rows, shared by every code index.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import types as nt

from vecdb.kernels._jit import ARITH, F32_MAT, kernel
from vecdb.kernels.distances import distance
from vecdb.kernels.heaps import heap_push, heap_sort, new_heaps
from vecdb.kernels.scan import row_scanner, topk_scan

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


class ADCTables(NamedTuple):
    """Scan context of PQ codes: per-query lookup tables float32 (nq, m, T)."""

    tables: np.ndarray


@row_scanner(ADCTables)
@kernel(fastmath=ARITH)
def _adc_rows(ctx, qi, codes, subset, use_subset, lo, hi, heap_d, heap_s):
    """Offer code rows to one heap by summed table lookups (see ``vecdb.kernels.scan``)."""
    tab = ctx.tables[qi]
    m = codes.shape[1]
    for r in range(lo, hi):
        j = subset[r] if use_subset else r
        row = codes[j]
        acc = np.float32(0.0)
        for s in range(m):
            acc += tab[s, row[s]]
        if acc < heap_d[0]:
            heap_push(heap_d, heap_s, acc, j)


@kernel
def adc_topk(tables, codes, subset, use_subset, k, n_chunks):
    """Top-k code rows per query by summed table lookups.

    tables : float32 (nq, m, T); codes : uint8 (n, m); subset : sorted int64 slots to scan
    when ``use_subset`` (else every row). Returns (slots (nq, k), dists (nq, k)), sorted by
    (distance, slot), padded with -1/+inf.
    """
    return topk_scan(ADCTables(tables), tables.shape[0], codes, subset, use_subset, k, n_chunks)


@kernel
def _rerank_one(q, rows, cand, metric, heap_d, heap_s):
    """Offer candidate slots ``cand`` (-1 skipped) to one heap by exact distance, then sort it."""
    for j in range(cand.shape[0]):
        s = cand[j]
        if s >= 0:
            heap_push(heap_d, heap_s, distance(q, rows[s], metric), s)
    heap_sort(heap_d, heap_s)


@kernel(parallel=True)
def _rerank_batch(queries, rows, candidates, metric, hd, hs):
    for i in numba.prange(candidates.shape[0]):
        _rerank_one(queries[i], rows, candidates[i], metric, hd[i], hs[i])


@kernel
def rerank_topk(queries, rows, candidates, metric, k):
    """Exact top-k among candidate slots: distances recomputed on float ``rows``.

    candidates : int64 (nq, c), -1 entries skipped. Uses the same ``distance`` kernel as the
    exact scans, so a candidate list covering every row reproduces exact search bit for bit.
    One query runs on the calling thread (no parallel-region launch), a batch in parallel.
    """
    nq = candidates.shape[0]
    hd, hs = new_heaps(nq, k)
    if nq == 1:
        _rerank_one(queries[0], rows, candidates[0], metric, hd[0], hs[0])
    else:
        _rerank_batch(queries, rows, candidates, metric, hd, hs)
    return hs, hd


@kernel(fastmath=ARITH)
def _query_tables(q, codebooks, metric, out):
    """Lookup tables of one query into ``out`` (m, ksub) (see ``pq_tables``)."""
    m, ksub, dsub = codebooks.shape
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
            out[s, c] = acc


@kernel(parallel=True)
def _tables_batch(queries, codebooks, metric, out):
    for i in numba.prange(queries.shape[0]):
        _query_tables(queries[i], codebooks, metric, out[i])


@kernel
def pq_tables(queries, codebooks, metric):
    r"""Per-query lookup tables, float32 (nq, m, ksub).

    ``codebooks`` (m, ksub, dsub); sub-vector s of a query covers dims ``[s*dsub, (s+1)*dsub)``.
    metric 0 (l2): :math:`T[s, c] = \|q_s - C_{s,c}\|^2`, computed directly (not by the
    :math:`|q|^2 - 2\langle q, c\rangle + |c|^2` expansion, which cancels for near neighbours);
    metric 1 (ip): :math:`T[s, c] = -\langle q_s, C_{s,c}\rangle`. One query runs on the
    calling thread, a batch in parallel.
    """
    nq = queries.shape[0]
    m, ksub, _ = codebooks.shape
    out = np.empty((nq, m, ksub), np.float32)
    if nq == 1:
        _query_tables(queries[0], codebooks, metric, out[0])
    else:
        _tables_batch(queries, codebooks, metric, out)
    return out
