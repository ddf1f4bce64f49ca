"""Curator search kernels: a best-first walk of one tenant's sub-tree by centroid distance,
scanning each shortlist it reaches until ``budget`` candidates were scanned, into a top-k heap.

Only nodes of the tenant's ``View`` are entered (its exact summary), whose shortlists hold
only its members; every slot of the answer is checked against the exact membership chains
(tenant >= 0) and dropped if it is no member, so a search never returns a vector the tenant
cannot access. (The check runs on the k answers, not on each of the ``budget`` candidates: a
chain walk per candidate is two dependent random reads.) ``allow`` (a slot bitmap) restricts
candidates further; only allowed candidates count towards the budget.

``scan_members`` serves a tenant whose members all fit the budget: one pass over its member
slots (checked members once per change of the tenant, not per search) and the whole answer
(ids, final distances) in one kernel call, no walk. ``graph_members`` does the same for a
promoted tenant: its graph walk, the membership check of the answer, ids and distances.

With ``use_codes`` the scan reads SQ8 code rows (``vecdb.kernels.sq8``: a quarter of the bytes
of a float row, and the scan is bound by those random reads) into a heap of ``rerank``
candidates, whose float rows then give the exact top k.
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.index.curator.members import chain_has
from vecdb.kernels._jit import kernel
from vecdb.kernels.distances import distance, unit_row
from vecdb.kernels.graph import prefetch_head, prefetch_tail, search_one as graph_search_one
from vecdb.kernels.heaps import heap_push, heap_sort, min_pop, min_push
from vecdb.kernels.prefetch import prefetch
from vecdb.kernels.rows import finish_answer
from vecdb.kernels.sq8 import sq8_distance

#: candidates ahead of the one being scanned whose rows are prefetched
PREFETCH_AHEAD = 4
#: ``keep_members``'s mark of a slot whose chain holds the tenant (cells are >= 0, -1 ends a chain)
_FOUND = -2


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
    folded into ``qt``/``weights``/``bias``, ``mode``) instead of their float rows. Should the
    answer hold a slot that is no member (a wrong shortlist entry), the walk runs again
    checking every candidate, so the answer is still the members' top k."""
    scanned = _walk(q, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind, v_ptr,
                    v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, heap_d, heap_s, node_d,
                    node_n, codes, qt, weights, bias, mode, use_codes, False)
    if tenant >= 0 and keep_members(heap_d, heap_s, tenant, head, cell_tenant, cell_next):
        heap_d[:] = np.inf
        heap_s[:] = -1
        scanned = _walk(q, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind,
                        v_ptr, v_slots, rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, heap_d, heap_s,
                        node_d, node_n, codes, qt, weights, bias, mode, use_codes, True)
    return scanned


@kernel
def _walk(q, budget, centroids, first_child, n_children, tree_metric, scan_metric, v_nodes, v_kind, v_ptr, v_slots,
          rows, tenant, head, cell_tenant, cell_next, bitmap, use_allow, heap_d, heap_s, node_d, node_n, codes, qt,
          weights, bias, mode, use_codes, check_each):
    """``search_one``'s walk and scan into the sorted heap; with ``check_each`` every candidate
    is checked against the membership chains before it is scored."""
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
                if check_each and not chain_has(head, cell_tenant, cell_next, s, tenant):
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
def keep_members(heap_d, heap_s, tenant, head, cell_tenant, cell_next):
    """Drop from a sorted answer every slot that is no member of ``tenant`` (the rest moved
    up in order, the tail padded with (+inf, -1)); returns how many were dropped. The answer's
    membership chains are walked in lock-step, one cell of each per round with the next cells
    prefetched, so their cache misses overlap instead of following one another."""
    filled = 0
    while filled < heap_s.shape[0] and heap_s[filled] >= 0:
        filled += 1
    cell = np.empty(filled, np.int64)                  # next cell to read; _FOUND / -1 when settled
    for j in range(filled):
        if heap_s[j] < head.shape[0]:
            prefetch(head, heap_s[j], 0)
    walking = False
    for j in range(filled):
        cell[j] = head[heap_s[j]] if heap_s[j] < head.shape[0] else -1
        if cell[j] >= 0:
            prefetch(cell_tenant, cell[j], 0)
            prefetch(cell_next, cell[j], 0)
            walking = True
    while walking:
        walking = False
        for j in range(filled):
            c = cell[j]
            if c < 0:
                continue
            if cell_tenant[c] == tenant:
                cell[j] = _FOUND
            else:
                c = cell_next[c]
                cell[j] = c
                if c >= 0:
                    prefetch(cell_tenant, c, 0)
                    prefetch(cell_next, c, 0)
                    walking = True
    kept = 0
    for j in range(filled):
        if cell[j] == _FOUND:
            heap_d[kept] = heap_d[j]
            heap_s[kept] = heap_s[j]
            kept += 1
    for j in range(kept, filled):
        heap_d[j] = np.inf
        heap_s[j] = -1
    return filled - kept


@kernel
def keep_members_rows(dists, slots, tenant, head, cell_tenant, cell_next):
    """``keep_members`` on each row of a sorted (nq, k) answer, in place."""
    for i in range(slots.shape[0]):
        keep_members(dists[i], slots[i], tenant, head, cell_tenant, cell_next)


@kernel
def scan_members(queries, slots, rows, metric, unit, slot_ids, shift, out_ids, out_d):
    """The whole answer for queries of one tenant whose member ``slots`` (each checked a member
    already: ``Curator._lean_entry``) are all scanned: each query (unit-normalised first when
    ``unit``, as ``normalize_rows`` does) against every slot's float row, the top k written to
    ``out_ids`` as ids (``finish_answer``) and ``out_d`` as final distances (+ ``shift``).
    ``out_ids``/``out_d`` (nq, k) are filled entirely."""
    qbuf = np.empty(queries.shape[1], np.float32)
    for i in range(queries.shape[0]):
        if unit:   # two calls, not one on a reassigned row: unifying the two array types costs the SIMD loops
            unit_row(queries[i], qbuf)
            _scan(qbuf, slots, rows, metric, out_d[i], out_ids[i])
        else:
            _scan(queries[i], slots, rows, metric, out_d[i], out_ids[i])
        finish_answer(out_ids[i], out_d[i], slot_ids, shift)


@kernel
def _scan(q, slots, rows, metric, heap_d, heap_s):
    """Top k of ``q`` over the rows of ``slots`` into the heap (reset first, sorted on return)."""
    heap_d[:] = np.inf
    heap_s[:] = -1
    n = slots.shape[0]
    for p in range(min(n, PREFETCH_AHEAD)):
        prefetch_head(rows, slots[p])
    for p in range(n):
        if p + PREFETCH_AHEAD < n:                  # rows are random: start the next loads early
            prefetch_head(rows, slots[p + PREFETCH_AHEAD])
            prefetch_tail(rows, slots[p + PREFETCH_AHEAD])
        s = np.int64(slots[p])
        d = distance(q, rows[s], metric)
        if d <= heap_d[0]:
            heap_push(heap_d, heap_s, d, s)
    heap_sort(heap_d, heap_s)


@kernel
def graph_members(queries, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, unit, tenant, head,
                  cell_tenant, cell_next, slot_ids, shift, out_ids, out_d, work):
    """A promoted tenant's whole answer in one kernel entry: each query (unit-normalised first
    when ``unit``) walked through the tenant's graph over the mapped rows ``vecs`` = (rows,
    node -> slot), the nodes found turned into slots, those slots checked against the exact
    membership chains (``keep_members``: a slot that is no member is dropped), then ids and
    final distances (``finish_answer``). ``out_ids``/``out_d`` (nq, k), ``work`` (nq, 2)."""
    qbuf = np.empty(queries.shape[1], np.float32)
    node_slot = vecs[1]
    no_mask = np.zeros(1, np.uint8)
    for i in range(queries.shape[0]):
        if unit:
            unit_row(queries[i], qbuf)
            graph_search_one(qbuf, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, 0, no_mask,
                             False, out_ids[i], out_d[i], work[i])
        else:
            graph_search_one(queries[i], k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, 0,
                             no_mask, False, out_ids[i], out_d[i], work[i])
        found = out_ids[i]
        for j in range(k):
            if found[j] < 0:
                break
            found[j] = node_slot[found[j]]
        keep_members(out_d[i], found, tenant, head, cell_tenant, cell_next)
        finish_answer(found, out_d[i], slot_ids, shift)


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
