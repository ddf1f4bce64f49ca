"""Exact top-k scans over float32 rows, and top-k of distance matrices and BLAS blocks.

Heaps come from ``vecdb.kernels.heaps`` (max-heaps on ``(dist, slot)`` with ``(+inf, -1)``
sentinels, so ties go to the smaller slot whatever order rows are scanned in); the row scans
are the float-vector instance of the skeleton in ``vecdb.kernels.scan``.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from vecdb.kernels._jit import ARITH, METRIC_IP, METRIC_L2, kernel
from vecdb.kernels.distances import cosine_distance, distance, dot, l2_sq
from vecdb.kernels.heaps import heap_push, heap_sort, merge_chunk_heaps, new_heaps
from vecdb.kernels.scan import no_subset, row_scanner, serial_topk, topk_scan
from vecdb.kernels.select import smallest_k

__all__ = ["heap_push", "heap_sort", "merge_chunk_heaps", "new_heaps", "FloatQueries", "topk_rows", "scan_topk",
           "scan_topk_chunked", "scan_topk_subset", "scan_topk_subset_batch", "merge_gram_block", "rescore",
           "scan_subset"]


class FloatQueries(NamedTuple):
    """Scan context of float32 queries (nq, dim) against float32 rows under a metric code."""

    queries: np.ndarray
    metric: int


@row_scanner(FloatQueries)
@kernel
def _float_rows(ctx, qi, rows, subset, use_subset, lo, hi, heap_d, heap_s):
    """Offer float rows to one heap by the metric's distance (see ``vecdb.kernels.scan``).
    One loop per metric: a metric test inside the row loop (``distance``) ran it at half speed."""
    q = ctx.queries[qi]
    metric = ctx.metric
    bound = heap_d[0]
    # slots grow along the scan: ties keep the earlier slot, so strict < suffices
    if metric == METRIC_L2:
        for r in range(lo, hi):
            j = subset[r] if use_subset else r
            d = l2_sq(q, rows[j])
            if d < bound:
                heap_push(heap_d, heap_s, d, j)
                bound = heap_d[0]
    elif metric == METRIC_IP:
        for r in range(lo, hi):
            j = subset[r] if use_subset else r
            d = -dot(q, rows[j])
            if d < bound:
                heap_push(heap_d, heap_s, d, j)
                bound = heap_d[0]
    else:
        for r in range(lo, hi):
            j = subset[r] if use_subset else r
            d = cosine_distance(q, rows[j])
            if d < bound:
                heap_push(heap_d, heap_s, d, j)
                bound = heap_d[0]


@kernel(parallel=True)
def topk_rows(dist_matrix, k):
    """Top-k of every row of a (n, m) distance matrix: (slots (n, k), dists (n, k)), sorted."""
    n = dist_matrix.shape[0]
    hd, hs = new_heaps(n, k)
    for i in numba.prange(n):
        smallest_k(dist_matrix[i], None, hd[i], hs[i])
    return hs, hd


@kernel
def scan_topk(queries, rows, metric, k):
    """Exact top-k of each query over all rows on the calling thread (one heap per query):
    the low-overhead path for a few queries. Returns (slots (nq, k), dists (nq, k)), sorted."""
    return serial_topk(FloatQueries(queries, metric), queries.shape[0], rows, no_subset(), False, k)


@kernel
def scan_topk_chunked(queries, rows, metric, k, n_chunks):
    """``scan_topk`` split into (query, chunk of rows) tasks, so one query uses every thread."""
    return topk_scan(FloatQueries(queries, metric), queries.shape[0], rows, no_subset(), False, k, n_chunks)


@kernel
def scan_topk_subset(queries, rows, subset, metric, k):
    """Exact top-k of each query over ``rows[subset]`` (sorted slots); returns slots, sorted.
    One thread: called for small allow-sets and few queries, where a launch costs more."""
    return serial_topk(FloatQueries(queries, metric), queries.shape[0], rows, subset, True, k)


@kernel
def scan_topk_subset_batch(queries, rows, subset, metric, k):
    """``scan_topk_subset`` parallel over queries, for batches."""
    return topk_scan(FloatQueries(queries, metric), queries.shape[0], rows, subset, True, k, 1)


@kernel(fastmath=ARITH)
def merge_gram_block(gram, row_sqnorms, offset, metric, heap_d, heap_s):
    """Fold a block of inner products ``gram = Q @ rows[offset:offset+m].T`` into running heaps.

    The score ranks rows the way the metric does, up to a per-query constant: l2 uses
    ``|x|^2 - 2<q,x>``, ip ``-<q,x>``, cosine on unit rows ``1 - <q,x>``.
    Callers recompute exact distances of the survivors with ``rescore``. Serial on purpose:
    it runs between multi-threaded BLAS calls, and OpenMP workers spinning after a parallel
    region would steal the cores BLAS needs next.
    """
    nq, m = gram.shape
    two = np.float32(2.0)
    one = np.float32(1.0)
    for i in range(nq):
        hd = heap_d[i]
        hs = heap_s[i]
        g = gram[i]
        bound = hd[0]
        # slots grow along the scan, so an equal score never beats the root: strict < suffices
        if metric == METRIC_L2:
            for j in range(m):
                score = row_sqnorms[j] - two * g[j]
                if score < bound:
                    heap_push(hd, hs, score, offset + j)
                    bound = hd[0]
        elif metric == METRIC_IP:
            for j in range(m):
                score = -g[j]
                if score < bound:
                    heap_push(hd, hs, score, offset + j)
                    bound = hd[0]
        else:
            for j in range(m):
                score = one - g[j]
                if score < bound:
                    heap_push(hd, hs, score, offset + j)
                    bound = hd[0]


@kernel
def rescore(queries, rows, slots, metric):
    """Exact distances of ``rows[slots[i]]`` to query i, rows re-sorted; -1 slots stay +inf.
    Serial for the same reason as ``merge_gram_block`` (k distances per query are cheap)."""
    nq, k = slots.shape
    out_d = np.full((nq, k), np.inf, np.float32)
    out_s = slots.copy()
    for i in range(nq):
        for j in range(k):
            s = slots[i, j]
            if s >= 0:
                out_d[i, j] = distance(queries[i], rows[s], metric)
        # insertion sort by (dist, slot): k is small
        for a in range(1, k):
            d, s = out_d[i, a], out_s[i, a]
            b = a - 1
            while b >= 0 and (out_d[i, b] > d or (out_d[i, b] == d and out_s[i, b] > s)):
                out_d[i, b + 1] = out_d[i, b]
                out_s[i, b + 1] = out_s[i, b]
                b -= 1
            out_d[i, b + 1] = d
            out_s[i, b + 1] = s
    return out_s, out_d


def scan_subset(queries, rows, subset, metric, k, parallel_min_queries=16):
    """Exact top-k over ``rows[subset]``: serial for a few queries, parallel over a batch."""
    if queries.shape[0] < parallel_min_queries:
        return scan_topk_subset(queries, rows, subset, metric, k)
    return scan_topk_subset_batch(queries, rows, subset, metric, k)
