"""HNSW graph kernels over flat arrays: layer search, neighbour selection and query entry points.

Graph layout (all numpy, no per-node objects):

- ``vecs`` float32 (cap, dim): one row per slot.
- ``adj0`` int32 (cap, 2M + 1): layer-0 adjacency; column 0 is the neighbour count, so one
  cache line brings the count and the first neighbours (hnswlib stores its lists the same way).
- ``adjU`` int32 (rows, M + 1): upper-layer adjacency for nodes with level > 0 only; the row of
  node ``x`` at layer ``l >= 1`` is ``uoff[x] + l - 1``.
- ``vis`` uint16 (cap,): visited marks compared against a per-search tag, so clearing is O(1)
  except once every 65,535 searches.

Distances are computed by ``vecdb.kernels.distances.distance`` with a metric code; cosine
callers store unit rows and pass the inner-product code. Candidate and result sets are the
heaps of ``vecdb.kernels.heaps`` (ordered by (distance, node), so equal distances resolve to
the smaller node id, as in the exact scans).

Query kernels count their work in an int64 row per query, ``work[WORK_DISTANCES]`` (distance
computations) and ``work[WORK_EXPANDED]`` (nodes whose neighbour list was read): one add per
node expanded, so the count is free next to the distances it counts, and it shows that a
search is a graph walk rather than a scan.

The walk is bound by memory latency (each neighbour is a random row), so it overlaps loads:
the first lines of every fresh neighbour's vector are prefetched before any distance of the
list is computed, the rest of each vector a couple of distances ahead, and the adjacency row of
each node that becomes a candidate as soon as it is one (hnswlib gets that row with the vector,
which it stores next to it).
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.atomics import atomic_add
from vecdb.kernels.distances import distance, unit_row
from vecdb.kernels.heaps import max_push, max_replace, max_sort, min_pop, min_push, min_push_grow
from vecdb.kernels.merge import merge_rows
from vecdb.kernels.prefetch import prefetch
from vecdb.kernels.rows import dims, finish_answer, prefetch_row, row_of

#: cache lines (16 floats each) of every fresh neighbour's vector prefetched as soon as the
#: neighbour is found, before any distance of the node's list is computed
PREFETCH_HEAD_LINES = 2
#: the rest of a neighbour's vector is prefetched this many distance computations before its
#: own (the first ones' at once), so a 384-d row's 24 lines are not all requested together;
#: head 2 / ahead 2 measured best of 1-8 head lines and 0-2 ahead on arxiv-384 and glove-50
PREFETCH_AHEAD = 2
#: columns of the per-query work counters
WORK_DISTANCES, WORK_EXPANDED = 0, 1


@kernel
def adj_row(adj0, adjU, uoff, node, layer):
    """Adjacency row of ``node`` at ``layer``: [count, n_1, ..., n_count, ...]."""
    if layer == 0:
        return adj0[node]
    return adjU[uoff[node] + layer - 1]


@kernel
def next_tag(vis, tags, t):
    """Fresh visited tag for scratch row ``t``; wipes the row when the uint16 tag wraps."""
    v = np.int64(tags[t]) + 1
    if v > 65535:
        vis[:] = 0
        v = 1
    tags[t] = v
    return v


@kernel
def prefetch_head(vecs, node):
    """Start loading the first ``PREFETCH_HEAD_LINES`` cache lines of row ``node``."""
    for c in range(0, min(dims(vecs), 16 * PREFETCH_HEAD_LINES), 16):
        prefetch_row(vecs, node, c)


@kernel
def prefetch_tail(vecs, node):
    """Start loading the cache lines of row ``node`` that ``prefetch_head`` left out."""
    for c in range(16 * PREFETCH_HEAD_LINES, dims(vecs), 16):
        prefetch_row(vecs, node, c)


@kernel
def prefetch_list(adj, row):
    """Start loading adjacency row ``row`` (count and neighbours) before it is expanded."""
    for c in range(0, adj.shape[1], 16):
        prefetch(adj, row, c)


@kernel
def greedy_descent(q, ep, ep_d, top, stop, vecs, adj0, adjU, uoff, metric):
    """Greedy walk (ef = 1) through layers ``top`` down to ``stop + 1``; returns (node, dist)."""
    return counted_descent(q, ep, ep_d, top, stop, vecs, adj0, adjU, uoff, metric, np.zeros(2, np.int64))


@kernel
def counted_descent(q, ep, ep_d, top, stop, vecs, adj0, adjU, uoff, metric, work):
    """``greedy_descent`` that adds its distance computations and expanded nodes to ``work``."""
    for layer in range(top, stop, -1):
        changed = True
        while changed:
            changed = False
            row = adj_row(adj0, adjU, uoff, ep, layer)
            count = row[0]
            work[WORK_EXPANDED] += 1
            work[WORK_DISTANCES] += count
            for t in range(1, count + 1):
                prefetch_head(vecs, row[t])
            for t in range(1, min(count, PREFETCH_AHEAD) + 1):
                prefetch_tail(vecs, row[t])
            for t in range(1, count + 1):
                if t + PREFETCH_AHEAD <= count:
                    prefetch_tail(vecs, row[t + PREFETCH_AHEAD])
                nb = row[t]
                d = distance(q, row_of(vecs, nb), metric)
                if d < ep_d:
                    ep_d = d
                    ep = nb
                    changed = True
    return ep, ep_d


@kernel
def beam_search(q, ep, ep_d, layer, ef, vecs, adj0, adjU, uoff, metric, vis, tag, out_d, out_i):
    """Best-first search at one layer keeping the ``ef`` closest nodes (paper Alg. 2).

    Candidates are a min-heap, results a max-heap of at most ef held in ``out_d``/``out_i``
    (length >= ef); the search stops when the closest candidate is farther than the worst
    of ef results. Results are returned sorted ascending; returns their count.
    """
    return counted_beam_search(q, ep, ep_d, layer, ef, vecs, adj0, adjU, uoff, metric, vis, tag, out_d, out_i,
                               np.zeros(2, np.int64))


@kernel
def counted_beam_search(q, ep, ep_d, layer, ef, vecs, adj0, adjU, uoff, metric, vis, tag, out_d, out_i, work):
    """``beam_search`` that adds its distance computations and expanded nodes to ``work``."""
    todo = np.empty(adj0.shape[1], np.int32)
    cd = np.empty(2 * ef + 64, np.float32)
    ci = np.empty(2 * ef + 64, np.int32)
    min_push(cd, ci, 0, ep_d, ep)
    cn = 1
    max_push(out_d, out_i, 0, ep_d, ep)
    rn = 1
    vis[ep] = tag
    while cn > 0:
        if rn == ef and cd[0] > out_d[0]:
            break
        node = ci[0]
        min_pop(cd, ci, cn)
        cn -= 1
        row = adj_row(adj0, adjU, uoff, node, layer)
        fresh = 0
        for t in range(1, row[0] + 1):
            nb = row[t]
            if vis[nb] != tag:
                vis[nb] = tag
                todo[fresh] = nb
                fresh += 1
                prefetch_head(vecs, nb)
        for t in range(min(fresh, PREFETCH_AHEAD)):
            prefetch_tail(vecs, todo[t])
        work[WORK_EXPANDED] += 1
        work[WORK_DISTANCES] += fresh
        for t in range(fresh):
            if t + PREFETCH_AHEAD < fresh:
                prefetch_tail(vecs, todo[t + PREFETCH_AHEAD])
            nb = todo[t]
            d = distance(q, row_of(vecs, nb), metric)
            if rn == ef and d >= out_d[0]:
                continue
            cd, ci = min_push_grow(cd, ci, cn, d, nb)
            cn += 1
            if layer == 0:              # a candidate's list is read when it is expanded
                prefetch_list(adj0, nb)
            if rn < ef:
                max_push(out_d, out_i, rn, d, nb)
                rn += 1
            else:
                max_replace(out_d, out_i, rn, d, nb)
    max_sort(out_d, out_i, rn)
    return rn


@kernel
def select_neighbors(cand_d, cand_i, n_cand, max_n, vecs, metric, out_i, out_d):
    """The paper's heuristic (Alg. 4): walk candidates closest first and keep one only if it
    is closer to the base node than to every neighbour already kept. Keeps bridges between
    clusters that plain "closest M" would drop. Candidates must be sorted ascending."""
    kept = 0
    for a in range(n_cand):
        c = cand_i[a]
        dc = cand_d[a]
        good = True
        for b in range(kept):
            if distance(row_of(vecs, c), row_of(vecs, out_i[b]), metric) < dc:
                good = False
                break
        if good:
            out_i[kept] = c
            out_d[kept] = dc
            kept += 1
            if kept == max_n:
                break
    return kept


@kernel
def filtered_search0(q, ep, ep_d, ef, mask, vecs, adj0, metric, vis, tag, res_d, res_i, work):
    """Layer-0 search whose result set only admits nodes with ``mask[node] != 0``.

    Traversal still expands through non-allowed nodes (they are candidates, never results),
    so the graph stays connected under any filter; stops once the closest unexpanded
    candidate is farther than the worst of ef allowed results. Returns the result count;
    adds its distance computations and expanded nodes to ``work``.
    """
    todo = np.empty(adj0.shape[1], np.int32)
    hd = np.empty(4 * ef + 64, np.float32)
    hi = np.empty(4 * ef + 64, np.int32)
    hsize = 0
    min_push(hd, hi, hsize, ep_d, ep)
    hsize = 1
    vis[ep] = tag
    nres = 0
    if mask[ep]:
        res_d[0] = ep_d
        res_i[0] = ep
        nres = 1
    while hsize > 0:
        d0 = hd[0]
        node = hi[0]
        if nres == ef and d0 > res_d[ef - 1]:
            break
        min_pop(hd, hi, hsize)
        hsize -= 1
        row = adj0[node]
        work[WORK_EXPANDED] += 1
        fresh = 0
        for t in range(1, row[0] + 1):
            nb = row[t]
            if vis[nb] != tag:
                vis[nb] = tag
                todo[fresh] = nb
                fresh += 1
                prefetch_head(vecs, nb)
        for t in range(min(fresh, PREFETCH_AHEAD)):
            prefetch_tail(vecs, todo[t])
        work[WORK_DISTANCES] += fresh
        for t in range(fresh):
            if t + PREFETCH_AHEAD < fresh:
                prefetch_tail(vecs, todo[t + PREFETCH_AHEAD])
            nb = todo[t]
            d = distance(q, row_of(vecs, nb), metric)
            if nres == ef and d >= res_d[ef - 1]:
                continue
            hd, hi = min_push_grow(hd, hi, hsize, d, nb)
            hsize += 1
            prefetch_list(adj0, nb)
            if mask[nb]:
                j = nres if nres < ef else ef - 1
                while j > 0 and res_d[j - 1] > d:
                    res_d[j] = res_d[j - 1]
                    res_i[j] = res_i[j - 1]
                    j -= 1
                res_d[j] = d
                res_i[j] = nb
                if nres < ef:
                    nres += 1
    return nres


@kernel
def search_one(q, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, t, mask, filtered,
               out_s, out_d, work):
    """k nearest slots of one query: greedy descent, then an ef-wide search at layer 0
    (filtered by ``mask`` when ``filtered``). Writes sorted results into out_s/out_d and
    the query's distance computations and expanded nodes into ``work`` (zeroed first)."""
    work[WORK_DISTANCES] = 1
    work[WORK_EXPANDED] = 0
    ep_d = distance(q, row_of(vecs, entry), metric)
    ep, ep_d = counted_descent(q, np.int64(entry), ep_d, max_level, 0, vecs, adj0, adjU, uoff, metric, work)
    tag = next_tag(vis[t], tags, t)
    res_d = np.empty(ef, np.float32)
    res_i = np.empty(ef, np.int32)
    if filtered:
        n = filtered_search0(q, ep, ep_d, ef, mask, vecs, adj0, metric, vis[t], tag, res_d, res_i, work)
    else:
        n = counted_beam_search(q, ep, ep_d, 0, ef, vecs, adj0, adjU, uoff, metric, vis[t], tag, res_d, res_i,
                                work)
    m = min(n, k)
    for j in range(m):
        out_s[j] = res_i[j]
        out_d[j] = res_d[j]
    for j in range(m, k):
        out_s[j] = -1
        out_d[j] = np.inf


@kernel(parallel=True)
def search_batch(queries, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, mask, filtered,
                 out_s, out_d, work, n_workers):
    """Batch entry point, parallel over queries with ``n_workers`` threads, each with its own
    visited row.

    Threads take the next query from a shared counter (dynamic scheduling), so a thread
    that the OS pauses does not leave half the batch waiting behind it.
    Writes each query's results into ``out_s`` int64 (nq, k) / ``out_d`` float32 (nq, k)
    (sorted, padded -1/+inf) and its counters into ``work`` int64 (nq, 2) (see the module
    docstring). The caller allocates the outputs: boxing each array a kernel returns costs
    about 1.5 us, a sizeable part of a one-query call.
    """
    nq = queries.shape[0]
    counter = np.zeros(1, np.int64)
    for w in numba.prange(n_workers):
        t = numba.get_thread_id()
        while True:
            i = atomic_add(counter, 0, 1)
            if i >= nq:
                break
            search_one(queries[i], k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, t,
                       mask, filtered, out_s[i], out_d[i], work[i])


@kernel
def search_serial(queries, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, mask, filtered,
                  out_s, out_d, work):
    """Serial twin of ``search_batch`` for one or a few queries (no parallel-region launch);
    same outputs, written into the caller's arrays."""
    for i in range(queries.shape[0]):
        search_one(queries[i], k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, 0,
                   mask, filtered, out_s[i], out_d[i], work[i])


@kernel
def search_serial_ids(queries, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, mask, filtered,
                      unit, slot_ids, shift, out_ids, out_d, work, fold_rows, fold_ids, fold_dead, fold_metric):
    """``search_serial`` with the index's whole per-call arithmetic inside one kernel entry:
    each query unit-normalised first when ``unit`` (cosine), result slots mapped to ids through
    ``slot_ids`` (left as slots when it is empty: the identity layout) and ``shift`` added to
    every found distance (cosine: 1 - cos = -<q, x> + 1); then rows searched beside the index
    (``fold_rows``, ids ``fold_ids``, ``fold_dead`` skipped; none: zero rows) merged in by exact
    ``fold_metric`` distance to the queries as given (``merge.merge_rows``). What a one-query
    call pays for besides the graph walk is then a single dispatch."""
    qbuf = np.empty(queries.shape[1], np.float32)
    for i in range(queries.shape[0]):
        if unit:   # two calls, not one on a reassigned row: unifying the two array types costs the SIMD loops
            unit_row(queries[i], qbuf)
            search_one(qbuf, k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, 0,
                       mask, filtered, out_ids[i], out_d[i], work[i])
        else:
            search_one(queries[i], k, ef, vecs, adj0, adjU, uoff, metric, entry, max_level, vis, tags, 0,
                       mask, filtered, out_ids[i], out_d[i], work[i])
        finish_answer(out_ids[i], out_d[i], slot_ids, shift)
    merge_rows(queries, fold_rows, fold_ids, fold_dead, fold_metric, out_ids, out_d)
