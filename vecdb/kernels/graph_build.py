"""HNSW construction and repair kernels: concurrent insertion and unlinking of removed nodes.

Insertion follows hnswlib's concurrency model: worker threads pull nodes from a shared
counter and insert them independently; each adjacency list is changed only under its node's
spin lock, searches read lists without locking. There is one parallel region per call and
no barrier per node, which matters on a loaded 2-core machine. Array layout: see ``graph``.

A layer-0 list chosen from candidates (a new node's own, or one re-selected after removals)
holds at least min(M, candidates) links: the heuristic's picks, topped up with the nearest
candidates it pruned. On clustered data (k-means centroids of a well-separated mixture: nearly
equidistant points, those merging several components closer to all others) the heuristic
alone kept one or two links for half the nodes and nodes no list kept were unreachable (2,000
components in 128-d, 1,333 heads, M=16: 174 left after repair; nearest head found for 50 % of
queries at ef = 10, 90 % at ef = 1,500; now 0, 72 % and 100 %). On glove and arxiv the floor
costs 1-4 % more distances per search and raises recall at the same ef. Lists overflowing on
a back-link keep the heuristic's choice alone, as in hnswlib (a floor there added distances
per search for no recall).
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.atomics import atomic_add, lock, unlock
from vecdb.kernels.distances import distance
from vecdb.kernels.graph import adj_row, beam_search, greedy_descent, next_tag, select_neighbors
from vecdb.kernels.rows import row_of


@kernel
def top_up(cand_d, cand_i, n_cand, kept, floor, out_i, out_d):
    """Add the nearest of the sorted candidates the heuristic did not keep to its ``kept``
    picks in out_i/out_d until they number ``floor`` (or the candidates run out); returns
    the new count. The paper's keepPrunedConnections, up to a floor."""
    a = 0
    while kept < floor and a < n_cand:
        c = cand_i[a]
        taken = False
        for b in range(kept):
            if out_i[b] == c:
                taken = True
                break
        if not taken:
            out_i[kept] = c
            out_d[kept] = cand_d[a]
            kept += 1
        a += 1
    return kept


@kernel
def _prune_into(row, buf_d, buf_i, n, max_n, floor, vecs, metric):
    """Sort n candidates by distance to the row's node and keep the heuristic's choice in
    ``row``, topped up to ``floor`` links with the nearest pruned ones (0: none)."""
    order = np.argsort(buf_d[:n])
    sd = buf_d[:n][order]
    si = buf_i[:n][order]
    out_i = np.empty(max_n, np.int32)
    out_d = np.empty(max_n, np.float32)
    kept = select_neighbors(sd, si, n, max_n, vecs, metric, out_i, out_d)
    kept = top_up(sd, si, n, kept, min(floor, max_n), out_i, out_d)
    if kept < row[0]:
        row[0] = kept          # a lock-free reader never counts past the entries written
    for j in range(kept):
        row[1 + j] = out_i[j]
    row[0] = kept


@kernel
def find_neighbors(x, vecs, levels, adj0, adjU, uoff, metric, entry, max_level, M, ef_c, vis, tags, t,
                   sel_i, sel_d, sel_n):
    """Search the graph for new node ``x`` and choose its neighbours on every layer it shares
    with the graph (read-only on the graph): the heuristic's picks, at layer 0 topped up to M
    (see the module docstring). Fills sel_i/sel_d (layers, M) and sel_n (layers,)."""
    q = row_of(vecs, x)
    L = min(np.int64(levels[x]), max_level)
    ep_d = distance(q, row_of(vecs, entry), metric)
    ep, ep_d = greedy_descent(q, np.int64(entry), ep_d, max_level, L, vecs, adj0, adjU, uoff, metric)
    res_d = np.empty(ef_c, np.float32)
    res_i = np.empty(ef_c, np.int32)
    for layer in range(L, -1, -1):
        tag = next_tag(vis[t], tags, t)
        n = beam_search(q, ep, ep_d, layer, ef_c, vecs, adj0, adjU, uoff, metric, vis[t], tag, res_d, res_i)
        kept = select_neighbors(res_d, res_i, n, M, vecs, metric, sel_i[layer], sel_d[layer])
        if layer == 0:
            kept = top_up(res_d, res_i, n, kept, M, sel_i[layer], sel_d[layer])
        sel_n[layer] = kept
        ep = res_i[0]
        ep_d = res_d[0]


@kernel
def write_forward(x, levels, adj0, adjU, uoff, max_level, sel_i, sel_n):
    """Store the chosen neighbours of new node ``x`` as its own lists."""
    for layer in range(min(np.int64(levels[x]), max_level) + 1):
        row = adj_row(adj0, adjU, uoff, x, layer)
        c = sel_n[layer]
        row[0] = c
        for j in range(c):
            row[1 + j] = sel_i[layer, j]


@kernel
def link_back(target, layer, srcs, vecs, adj0, adjU, uoff, metric, M):
    """Add links target -> each of ``srcs`` at ``layer``; when the list overflows, re-select
    it with the heuristic over old and new neighbours (paper Alg. 1, shrink connections)."""
    row = adj_row(adj0, adjU, uoff, target, layer)
    max_n = adj0.shape[1] - 1 if layer == 0 else M
    c = row[0]
    for j in range(c):  # a concurrent insert may already have linked target to a source
        for a in range(srcs.shape[0]):
            if row[1 + j] == srcs[a]:
                return
    g = srcs.shape[0]
    if c + g <= max_n:
        for j in range(g):
            row[1 + c + j] = srcs[j]
        row[0] = c + g
        return
    n = c + g
    buf_d = np.empty(n, np.float32)
    buf_i = np.empty(n, np.int32)
    tv = row_of(vecs, target)
    for j in range(c):
        buf_i[j] = row[1 + j]
        buf_d[j] = distance(tv, row_of(vecs, row[1 + j]), metric)
    for j in range(g):
        buf_i[c + j] = srcs[j]
        buf_d[c + j] = distance(tv, row_of(vecs, srcs[j]), metric)
    _prune_into(row, buf_d, buf_i, n, max_n, 0, vecs, metric)


@kernel
def insert_one(x, vecs, levels, adj0, adjU, uoff, metric, state, M, ef_c, vis, tags, t, locks, sel_i, sel_d, sel_n):
    """Insert node ``x`` (paper Alg. 1) into a graph other threads may be changing.

    Searches read lists without locks (a racing reader sees old or new valid ids, never out
    of range); every list write holds that node's lock. A node that raises the top level
    holds the global lock (last lock word) for its whole insertion, as in hnswlib.
    """
    g = locks.shape[0] - 1
    L = np.int64(levels[x])
    lock(locks, g)
    entry = state[0]
    max_level = state[1]
    hold_global = L > max_level
    if not hold_global:
        unlock(locks, g)
    if entry >= 0:
        find_neighbors(x, vecs, levels, adj0, adjU, uoff, metric, entry, max_level, M, ef_c, vis, tags, t,
                       sel_i, sel_d, sel_n)
        lock(locks, x)
        write_forward(x, levels, adj0, adjU, uoff, max_level, sel_i, sel_n)
        unlock(locks, x)
        src = np.empty(1, np.int64)
        src[0] = x
        for layer in range(min(L, max_level) + 1):
            for j in range(sel_n[layer]):
                nb = sel_i[layer, j]
                lock(locks, nb)
                link_back(nb, layer, src, vecs, adj0, adjU, uoff, metric, M)
                unlock(locks, nb)
    if hold_global:
        state[0] = x
        state[1] = L
        unlock(locks, g)


@kernel(parallel=True)
def insert_nodes(nodes, vecs, levels, adj0, adjU, uoff, metric, state, M, ef_c, vis, tags, locks, n_workers):
    """Insert ``nodes`` (vectors, levels and empty rows already in place) with ``n_workers``
    threads that take the next node from a shared counter, so a stalled thread never holds up
    the others. ``state`` = [entry, max_level]. With one worker this is the sequential
    algorithm and fully deterministic."""
    top = 0
    for b in range(nodes.shape[0]):
        top = max(top, np.int64(levels[nodes[b]]))
    counter = np.zeros(1, np.int64)
    n = nodes.shape[0]
    for w in numba.prange(n_workers):
        t = numba.get_thread_id()
        sel_i = np.zeros((top + 1, M), np.int32)
        sel_d = np.zeros((top + 1, M), np.float32)
        sel_n = np.zeros(top + 1, np.int64)
        while True:
            b = atomic_add(counter, 0, 1)
            if b >= n:
                break
            insert_one(nodes[b], vecs, levels, adj0, adjU, uoff, metric, state, M, ef_c, vis, tags, t, locks,
                       sel_i, sel_d, sel_n)


@kernel(parallel=True)
def unlink(dead, vecs, levels, adj0, adjU, uoff, metric, M, vis, tags, lo, hi):
    """Take the slots flagged in ``dead`` (uint8 per slot) out of the lists of every live
    node among ``lo:hi`` (all of them: 0 to ``levels.shape[0]``; a caller may go in ranges,
    pausing between them).

    Every live node that links to a dead one re-selects its neighbours (heuristic; at layer 0
    at least M, as a new node's) from its live neighbours plus the live neighbours reached
    through dead ones (two hops at most), so the graph stays navigable after many deletes.
    Each thread rewrites only the lists of the nodes it owns; the dead nodes are only read
    (``drop_nodes`` clears them), so searches may run meanwhile: they reach a dead node only
    through a list not yet rewritten, and its lists still lead on. Returns the number of
    lists rewritten.
    """
    M0 = adj0.shape[1] - 1
    rewritten = np.zeros(hi - lo, np.uint8)
    for i in numba.prange(hi - lo):
        u = lo + i
        if levels[u] < 0 or dead[u]:
            continue
        t = numba.get_thread_id()
        for layer in range(np.int64(levels[u]) + 1):
            row = adj_row(adj0, adjU, uoff, u, layer)
            c = row[0]
            hit = False
            for j in range(1, c + 1):
                if dead[row[j]]:
                    hit = True
                    break
            if not hit:
                continue
            rewritten[i] = 1
            max_n = M0 if layer == 0 else M
            tag = next_tag(vis[t], tags, t)
            vis[t, u] = tag
            limit = max_n * (max_n + 1) * 2
            buf_i = np.empty(limit, np.int32)
            nb_count = 0
            for j in range(1, c + 1):
                v = row[j]
                if vis[t, v] == tag:
                    continue
                vis[t, v] = tag
                if not dead[v]:
                    buf_i[nb_count] = v
                    nb_count += 1
                    continue
                vrow = adj_row(adj0, adjU, uoff, v, layer)
                for a in range(1, vrow[0] + 1):
                    w = vrow[a]
                    if vis[t, w] == tag:
                        continue
                    vis[t, w] = tag
                    if not dead[w]:
                        if nb_count < limit:
                            buf_i[nb_count] = w
                            nb_count += 1
                        continue
                    wrow = adj_row(adj0, adjU, uoff, w, layer)
                    for z in range(1, wrow[0] + 1):
                        y = wrow[z]
                        if vis[t, y] == tag or dead[y]:
                            continue
                        vis[t, y] = tag
                        if nb_count < limit:
                            buf_i[nb_count] = y
                            nb_count += 1
            buf_d = np.empty(nb_count, np.float32)
            uv = row_of(vecs, u)
            for j in range(nb_count):
                buf_d[j] = distance(uv, row_of(vecs, buf_i[j]), metric)
            _prune_into(row, buf_d, buf_i, nb_count, max_n, M if layer == 0 else 0, vecs, metric)
    return int(rewritten.sum())


@kernel
def drop_nodes(slots, levels, adj0, adjU, uoff):
    """Free unlinked ``slots``: their lists emptied and their levels stored as -1 - level (a
    freed slot keeps its upper-layer rows for reuse). O(slots): after ``unlink`` no live list
    leads to them, so this is the only step that must keep searches out."""
    for i in range(slots.shape[0]):
        u = slots[i]
        if levels[u] >= 0:
            for layer in range(np.int64(levels[u]) + 1):
                adj_row(adj0, adjU, uoff, u, layer)[0] = 0
            levels[u] = -1 - levels[u]
