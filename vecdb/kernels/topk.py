"""Fixed-size top-k heaps and the exact scans built on them.

A heap is two parallel arrays ``(dists, slots)`` of length k, a max-heap on ``(dist, slot)``
with ``(+inf, -1)`` sentinels, so the root is the current k-th best. Ordering by the pair
makes ties go to the smaller slot whatever order rows are scanned in.
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import ARITH, F32, F32_MAT, F32_ROW, I64, METRIC_COSINE, METRIC_IP, METRIC_L2, kernel
from vecdb.kernels.distances import distance

F32_OUT = numba.float32[::1]
I64_OUT = numba.int64[::1]


@kernel
def _worse(d1, s1, d2, s2):
    """True when (d1, s1) ranks after (d2, s2)."""
    return d1 > d2 or (d1 == d2 and s1 > s2)


@kernel
def _sift_down(dists, slots, d, s, end):
    """Place (d, s) at the root of the heap ``[:end]`` and sift it down to its place."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= end:
            break
        child = left
        right = left + 1
        if right < end and _worse(dists[right], slots[right], dists[left], slots[left]):
            child = right
        if _worse(d, s, dists[child], slots[child]):
            break
        dists[i] = dists[child]
        slots[i] = slots[child]
        i = child
    dists[i] = d
    slots[i] = s


@kernel(numba.boolean(F32_OUT, I64_OUT, F32, I64))
def heap_push(dists, slots, d, s):
    """Offer (d, s) to the heap; keep it when it beats the root. Returns True if kept."""
    if not _worse(dists[0], slots[0], d, s):
        return False
    _sift_down(dists, slots, d, s, dists.shape[0])
    return True


@kernel(numba.void(F32_OUT, I64_OUT))
def heap_sort(dists, slots):
    """Sort a heap in place, ascending by (dist, slot); sentinels end up last."""
    for end in range(dists.shape[0] - 1, 0, -1):
        d, s = dists[end], slots[end]
        dists[end], slots[end] = dists[0], slots[0]
        _sift_down(dists, slots, d, s, end)


@kernel
def new_heaps(n, k):
    """n empty heaps of size k: (dists float32 (n, k) = +inf, slots int64 (n, k) = -1)."""
    return np.full((n, k), np.inf, np.float32), np.full((n, k), -1, np.int64)


@kernel
def merge_chunk_heaps(hd, hs, nq, n_chunks, k):
    """Merge the ``n_chunks`` heaps of each query (rows ``q*n_chunks + c``) into sorted top-k.

    Returns (slots int64 (nq, k), dists float32 (nq, k)), padded with -1/+inf.
    """
    out_d, out_s = new_heaps(nq, k)
    for qi in range(nq):
        for c in range(n_chunks):
            t = qi * n_chunks + c
            for j in range(k):
                if hs[t, j] >= 0:
                    heap_push(out_d[qi], out_s[qi], hd[t, j], hs[t, j])
        heap_sort(out_d[qi], out_s[qi])
    return out_s, out_d


@kernel(parallel=True)
def topk_rows(dist_matrix, k):
    """Top-k of every row of a (n, m) distance matrix: (slots (n, k), dists (n, k)), sorted."""
    n, m = dist_matrix.shape
    hd, hs = new_heaps(n, k)
    for i in numba.prange(n):
        for j in range(m):
            heap_push(hd[i], hs[i], dist_matrix[i, j], j)
        heap_sort(hd[i], hs[i])
    return hs, hd


@kernel
def scan_topk(queries, rows, metric, k):
    """Exact top-k of each query over all rows, computing distances directly (one thread).

    The low-overhead path for a few queries: no thread launch, one heap per query.
    """
    nq = queries.shape[0]
    hd, hs = new_heaps(nq, k)
    for qi in range(nq):
        q = queries[qi]
        d_heap = hd[qi]
        s_heap = hs[qi]
        bound = d_heap[0]
        for j in range(rows.shape[0]):
            d = distance(q, rows[j], metric)
            if d < bound:               # rows are scanned in slot order: ties keep the earlier slot
                heap_push(d_heap, s_heap, d, j)
                bound = d_heap[0]
        heap_sort(d_heap, s_heap)
    return hs, hd


@kernel(parallel=True)
def scan_topk_chunked(queries, rows, metric, k, n_chunks):
    """``scan_topk`` split into (query, chunk of rows) tasks, so one query uses every thread;
    each task fills its own heap, then the chunk heaps of a query are merged."""
    nq = queries.shape[0]
    n = rows.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks if n > 0 else 1
    hd, hs = new_heaps(nq * n_chunks, k)
    for t in numba.prange(nq * n_chunks):
        qi = t // n_chunks
        c = t % n_chunks
        q = queries[qi]
        for j in range(c * chunk, min(n, (c + 1) * chunk)):
            d = distance(q, rows[j], metric)
            if d < hd[t, 0]:
                heap_push(hd[t], hs[t], d, j)
    return merge_chunk_heaps(hd, hs, nq, n_chunks, k)


@kernel
def scan_topk_subset(queries, rows, subset, metric, k):
    """Exact top-k of each query over ``rows[subset]``; returns row numbers (slots), sorted.
    One thread: called for small allow-sets and few queries, where a launch costs more."""
    nq = queries.shape[0]
    hd, hs = new_heaps(nq, k)
    for qi in range(nq):
        _subset_into_heap(queries[qi], rows, subset, metric, hd[qi], hs[qi])
    return hs, hd


@kernel(parallel=True)
def scan_topk_subset_batch(queries, rows, subset, metric, k):
    """``scan_topk_subset`` parallel over queries, for batches."""
    nq = queries.shape[0]
    hd, hs = new_heaps(nq, k)
    for qi in numba.prange(nq):
        _subset_into_heap(queries[qi], rows, subset, metric, hd[qi], hs[qi])
    return hs, hd


@kernel
def _subset_into_heap(q, rows, subset, metric, heap_d, heap_s):
    for t in range(subset.shape[0]):
        j = subset[t]
        d = distance(q, rows[j], metric)
        if d < heap_d[0] or (d == heap_d[0] and j < heap_s[0]):
            heap_push(heap_d, heap_s, d, j)
    heap_sort(heap_d, heap_s)


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
