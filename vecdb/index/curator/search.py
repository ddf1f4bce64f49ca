"""Curator search kernels: a best-first walk of one tenant's sub-tree by centroid distance,
scanning each shortlist it reaches until ``budget`` candidates were scanned, into a top-k heap.

Only nodes of the tenant's ``View`` are entered (its exact summary), and every candidate is
checked against the exact membership chains before its distance is computed (tenant >= 0),
so a search never returns a vector the tenant cannot access. ``allow`` (a slot bitmap)
restricts candidates further; only allowed candidates count towards the budget.

With ``use_codes`` the scan reads SQ8 code rows (``vecdb.kernels.sq8``: a quarter of the bytes
of a float row, and the scan is bound by those random reads) into a heap of ``rerank``
candidates, whose float rows then give the exact top k.
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.index.curator.members import chain_has
from vecdb.kernels._jit import kernel
from vecdb.kernels.distances import distance
from vecdb.kernels.graph import prefetch_head, prefetch_tail
from vecdb.kernels.heaps import heap_push, heap_sort, min_pop, min_push
from vecdb.kernels.prefetch import prefetch
from vecdb.kernels.sq8 import sq8_distance

#: candidates ahead of the one being scanned whose rows are prefetched
PREFETCH_AHEAD = 4


@kernel
def _find(nodes, node):
    """Position of ``node`` in the sorted int32 array ``nodes``, -1 when absent."""
    lo = 0
    hi = nodes.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if nodes[mid] < node:
            lo = mid + 1
        else:
            hi = mid
    if lo < nodes.shape[0] and nodes[lo] == node:
        return lo
    return -1


@kernel
def _prefetch_code(codes, s):
    """Start loading every cache line of code row ``s`` (64 bytes each)."""
    for c in range(0, codes.shape[1], 64):
        prefetch(codes, s, c)


@kernel
def search_one(q, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind, v_ptr,
               v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, heap_d, heap_s, node_d, node_n,
               codes, qt, weights, bias, mode, use_codes):
    """Fill the top-k heap ``(heap_d, heap_s)`` (sorted on return) for query ``q``; returns
    the number of candidates scanned. ``node_d``/``node_n`` are the walk's min-heap (room
    for every node). With ``use_codes`` candidates are scored on their SQ8 ``codes`` (query
    folded into ``qt``/``weights``/``bias``, ``mode``) instead of their float rows."""
    root = _find(v_nodes, 0)
    if root < 0:
        heap_sort(heap_d, heap_s)
        return 0
    size = 0
    min_push(node_d, node_n, size, np.float32(0.0), np.int64(0))
    size += 1
    scanned = 0
    n_bits = bitmap.shape[0]
    while size > 0 and scanned < budget:
        node = node_n[0]
        min_pop(node_d, node_n, size)
        size -= 1
        kind = v_kind[_find(v_nodes, node)]
        if kind >= 0:
            end = v_ptr[kind + 1]
            for p in range(v_ptr[kind], min(end, v_ptr[kind] + PREFETCH_AHEAD)):
                if use_codes:
                    _prefetch_code(codes, v_slots[p])
                else:
                    prefetch_head(rows, v_slots[p])
            for p in range(v_ptr[kind], end):
                if p + PREFETCH_AHEAD < end:                # rows are random: start the next loads early
                    if use_codes:
                        _prefetch_code(codes, v_slots[p + PREFETCH_AHEAD])
                    else:
                        prefetch_head(rows, v_slots[p + PREFETCH_AHEAD])
                        prefetch_tail(rows, v_slots[p + PREFETCH_AHEAD])
                s = np.int64(v_slots[p])
                if use_allow and (s >= n_bits or bitmap[s] == 0):
                    continue
                if tenant >= 0 and not chain_has(head, cell_tenant, cell_next, s, tenant):
                    continue
                scanned += 1
                if use_codes:
                    d = bias + sq8_distance(qt, weights, codes[s], mode)
                else:
                    d = distance(q, rows[s], scan_metric)
                if d <= heap_d[0]:
                    heap_push(heap_d, heap_s, d, s)
        else:
            start = first_child[node]
            for c in range(start, start + n_children[node]):
                if _find(v_nodes, c) >= 0:
                    min_push(node_d, node_n, size, distance(q, centroids[c], tree_metric), np.int64(c))
                    size += 1
    heap_sort(heap_d, heap_s)
    return scanned


@kernel
def _query(i, queries, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind, v_ptr,
           v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, out_s, out_d, scanned, node_d,
           node_n, codes, qt, weights, bias, mode, use_codes, rerank):
    """Query ``i`` into row ``i`` of the outputs; with codes, the ``rerank`` best by code are
    scored again on their float rows."""
    out_d[i, :] = np.inf
    out_s[i, :] = -1
    if not use_codes:
        scanned[i] = search_one(queries[i], budget, centroids, first_child, n_children, tree_metric, scan_metric,
                                v_nodes, v_kind, v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap,
                                use_allow, out_d[i], out_s[i], node_d, node_n, codes, qt[0], weights, np.float32(0.0),
                                mode, False)
        return
    cand_d = np.full(rerank, np.inf, np.float32)
    cand_s = np.full(rerank, -1, np.int64)
    scanned[i] = search_one(queries[i], budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes,
                            v_kind, v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow,
                            cand_d, cand_s, node_d, node_n, codes, qt[i], weights, bias[i], mode, True)
    for j in range(min(rerank, PREFETCH_AHEAD)):
        if cand_s[j] >= 0:
            prefetch_head(rows, cand_s[j])
    for j in range(rerank):
        s = cand_s[j]
        if s < 0:
            break
        if j + PREFETCH_AHEAD < rerank and cand_s[j + PREFETCH_AHEAD] >= 0:
            prefetch_head(rows, cand_s[j + PREFETCH_AHEAD])
            prefetch_tail(rows, cand_s[j + PREFETCH_AHEAD])
        d = distance(queries[i], rows[s], scan_metric)
        if d <= out_d[i, 0]:
            heap_push(out_d[i], out_s[i], d, s)
    heap_sort(out_d[i], out_s[i])


@kernel
def search_serial(queries, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind,
                  v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, out_s, out_d,
                  scanned, codes, qt, weights, bias, mode, use_codes, rerank):
    """``search_one`` for each query on the calling thread; results into ``out_s``/``out_d``."""
    n_nodes = centroids.shape[0]
    node_d = np.empty(n_nodes, np.float32)
    node_n = np.empty(n_nodes, np.int64)
    for i in range(queries.shape[0]):
        _query(i, queries, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind,
               v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, out_s, out_d, scanned,
               node_d, node_n, codes, qt, weights, bias, mode, use_codes, rerank)


@kernel(parallel=True)
def search_batch(queries, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind,
                 v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, out_s, out_d,
                 scanned, codes, qt, weights, bias, mode, use_codes, rerank):
    """``search_serial`` parallel over queries (one walk heap per query)."""
    n_nodes = centroids.shape[0]
    for i in numba.prange(queries.shape[0]):
        node_d = np.empty(n_nodes, np.float32)
        node_n = np.empty(n_nodes, np.int64)
        _query(i, queries, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind,
               v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, out_s, out_d, scanned,
               node_d, node_n, codes, qt, weights, bias, mode, use_codes, rerank)
