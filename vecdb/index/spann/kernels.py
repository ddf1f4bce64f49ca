"""Numba kernels of SPANN: the replica choice (closure + RNG rule), the grouped nearest-head
search and the posting scan (the records' checksums and checks: ``records``)."""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import ARITH, kernel
from vecdb.kernels.distances import dot, l2_sq
from vecdb.kernels.heaps import after, heap_push, heap_sort, max_sift_down
from vecdb.kernels.dot_sums import dot_sums
from vecdb.kernels.int_dot import dot_u7_i8, dot_u8_i16
from vecdb.kernels.select import smallest_k
from vecdb.kernels.views import view_as


# ---- posting records (see vecdb.index.spann.postings for the layout) -------------------
HEADER_BYTES = 24
MAGIC = (83, 80, 78, 80)   # b"SPNP"


@kernel
def select_replicas(x, cand, cand_d, rows, centroids, eps, limit, rng_factor, out):
    """Heads each row of ``x`` is stored under, into ``out`` (n, limit) padded with -1.

    ``cand``/``cand_d`` (n, c): candidate heads sorted by routing distance (-1 padded);
    ``rows`` (n, c): each candidate's row in ``centroids``. Head j is kept while
    d_j - d_1 <= eps * |d_1| (the closure rule, (1 + eps) d_1 for non-negative distances),
    unless a head already kept is closer to c_j than x is, scaled by ``rng_factor`` (the RNG
    rule, in squared L2 whatever the metric: replicas should sit in different directions).
    """
    n, c = cand.shape
    chosen = np.empty(limit, np.int64)
    for i in range(n):
        if c == 0 or cand[i, 0] < 0:
            continue
        d1 = cand_d[i, 0]
        bound = d1 + eps * abs(d1)
        m = 0
        for j in range(c):
            h = cand[i, j]
            if h < 0 or cand_d[i, j] > bound:
                break
            keep = True
            if m > 0:
                dxj = l2_sq(x[i], centroids[rows[i, j]])
                for t in range(m):
                    if rng_factor * l2_sq(centroids[chosen[t]], centroids[rows[i, j]]) < dxj:
                        keep = False
                        break
            if keep:
                out[i, m] = h
                chosen[m] = rows[i, j]
                m += 1
                if m == limit:
                    break


@kernel(inline=True)
def _take_nearest(gd):
    """The index of the smallest of ``gd`` not taken yet (lowest index on ties), then marked
    taken (NaN; distances are never NaN, +inf ones included). A route takes a few groups of
    hundreds: a pass per group taken is ~5x cheaper than sorting them all (``np.argsort`` of
    220 group distances: ~13 us, most of a route)."""
    best = -1
    for g in range(gd.shape[0]):
        v = gd[g]
        if v == v and (best < 0 or v < gd[best]):
            best = g
    gd[best] = np.nan
    return best


@kernel(inline=True)
def groups_to_scan(gd, offsets, min_groups, min_heads, taken):
    """The groups a grouped route scans, nearest centroid first (``gd``: the centroids'
    distances, consumed): until at least ``min_groups`` groups and ``min_heads`` member
    entries were taken (all groups when there are fewer), into ``taken``; returns how many."""
    scanned = 0
    n = 0
    for t in range(gd.shape[0]):
        if t >= min_groups and scanned >= min_heads:
            break
        g = _take_nearest(gd)
        taken[n] = g
        n += 1
        scanned += offsets[g + 1] - offsets[g]
    return n


@kernel
def route_query(q, member_rows, centroids, offsets, members, metric, min_groups, min_heads, hd, hs):
    """Nearest heads of one query by groups (``vecdb.index.spann.routing``): the group
    centroids are ranked, then the heads of the nearest groups are scanned exactly, group by
    group, until at least ``min_groups`` groups and ``min_heads`` heads were scanned. Group g
    holds the head slots ``members[offsets[g]:offsets[g+1]]``, their rows laid out in the
    same order in ``member_rows`` (a group is one sequential read, not a row gathered from
    the whole head table per member; a head may be in several groups, it enters the heap
    once). Fills the top-k heap ``hd``/``hs`` (sorted on return). ``metric`` 0: squared L2,
    else -<q, x>."""
    n_groups = centroids.shape[0]
    gd = np.empty(n_groups, np.float32)
    for g in range(n_groups):
        gd[g] = l2_sq(q, centroids[g]) if metric == 0 else -dot(q, centroids[g])
    taken = np.empty(n_groups, np.int64)
    for t in range(groups_to_scan(gd, offsets, min_groups, min_heads, taken)):
        g = taken[t]
        for r in range(offsets[g], offsets[g + 1]):
            d = l2_sq(q, member_rows[r]) if metric == 0 else -dot(q, member_rows[r])
            offer_unique(hd, hs, d, members[r])   # a head may be a member of several groups
    heap_sort(hd, hs)


@kernel
def route_groups_serial(queries, member_rows, centroids, offsets, members, metric, min_groups, min_heads, out_s,
                        out_d):
    """``route_query`` for every query on the calling thread (a few queries), into rows of
    ``out_s``/``out_d`` (filled with -1 / +inf by the caller)."""
    for qi in range(queries.shape[0]):
        route_query(queries[qi], member_rows, centroids, offsets, members, metric, min_groups, min_heads,
                    out_d[qi], out_s[qi])


@kernel(parallel=True)
def route_groups(queries, member_rows, centroids, offsets, members, metric, min_groups, min_heads, out_s, out_d):
    """``route_groups_serial`` in parallel over the queries (insert batches, query batches)."""
    for qi in numba.prange(queries.shape[0]):
        route_query(queries[qi], member_rows, centroids, offsets, members, metric, min_groups, min_heads,
                    out_d[qi], out_s[qi])


@kernel
def route_codes_query(ints, mode, centroid_codes, centroid_norms, member_codes, member_norms, offsets, members,
                      min_groups, min_heads, hd, hs):
    """``route_query`` on SQ8 copies of the group centroids and member rows (flat codes,
    ``dim`` a row, with their centred norms): each row ranked by one integer dot
    (``code_int``) with the query's terms ``ints`` (``fold_int_query`` for the copies'
    codec, ``mode`` 0: squared L2, 1: -ip). A quarter of the float route's bytes, and a
    third of its arithmetic: what a one-query search routes by."""
    u, usum, scale, base = ints
    dim = u.shape[0]
    n_groups = centroid_norms.shape[0]
    gd = np.empty(n_groups, np.float32)
    for g in range(n_groups):
        gd[g] = code_int(u, usum, scale, base, mode, centroid_codes, g * dim, centroid_norms[g])
    taken = np.empty(n_groups, np.int64)
    for t in range(groups_to_scan(gd, offsets, min_groups, min_heads, taken)):
        g = taken[t]
        for r in range(offsets[g], offsets[g + 1]):
            d = code_int(u, usum, scale, base, mode, member_codes, r * dim, member_norms[r])
            offer_unique(hd, hs, d, members[r])   # a head may be a member of several groups
    heap_sort(hd, hs)


@kernel(parallel=True)
def route_codes(queries, mode, vmin, step, centroid_codes, centroid_norms, member_codes, member_norms, offsets,
                members, min_groups, min_heads, out_s, out_d):
    """``route_codes_query`` for every query, in parallel, into rows of ``out_s``/``out_d``
    (filled with -1 / +inf by the caller): the grouped route of batched searches. The
    arrays from ``vmin`` to ``members`` are ``HeadGroups.code_route``, as in ``route_plan``."""
    for qi in numba.prange(queries.shape[0]):
        ints = fold_int_query(queries[qi], vmin, step, mode)
        route_codes_query(ints, mode, centroid_codes, centroid_norms, member_codes, member_norms, offsets, members,
                          min_groups, min_heads, out_d[qi], out_s[qi])


@kernel
def route_heads(query, mode, vmin, step, centroid_codes, centroid_norms, member_codes, member_norms, offsets, members,
                slot_ids, min_groups, min_heads, hd, hs):
    """``route_codes_query`` for one query into the heap ``hd``/``hs`` (+inf / -1), its graph
    slots then mapped to head ids by ``slot_ids``."""
    ints = fold_int_query(query, vmin, step, mode)
    route_codes_query(ints, mode, centroid_codes, centroid_norms, member_codes, member_norms, offsets, members,
                      min_groups, min_heads, hd, hs)
    for j in range(hs.shape[0]):
        if hs[j] >= 0:
            hs[j] = slot_ids[hs[j]]


@kernel
def route_plan(queries, mode, vmin, step, centroid_codes, centroid_norms, member_codes, member_norms, offsets, members,
               slot_ids, min_groups, min_heads, n_heads, count, eps2, k):
    """``route_heads`` for the ``n_heads`` nearest heads of a few queries, then ``plan_reads``
    on them: their postings to read in one call. ``eps2`` is a Python float, made float32
    here (an ``np.float32`` argument costs a one-query search ~1 us of Numba's slower type
    lookup)."""
    nq = queries.shape[0]
    hs = np.full((nq, n_heads), -1, np.int64)
    hd = np.full((nq, n_heads), np.inf, np.float32)
    for qi in range(nq):
        route_heads(queries[qi], mode, vmin, step, centroid_codes, centroid_norms, member_codes, member_norms, offsets,
                    members, slot_ids, min_groups, min_heads, hd[qi], hs[qi])
    return plan_reads(hs, hd, count, np.float32(eps2), k)


@kernel
def route_plan_one(query, mode, vmin, step, centroid_codes, centroid_norms, member_codes, member_norms, offsets,
                   members, slot_ids, min_groups, min_heads, n_heads, count, eps2, k, out):
    """``route_plan`` for one query, its postings to read written to ``out`` nearest first
    (``keep_heads``); returns how many. No array is returned: Numba boxes each returned
    array at ~0.8 us, most of a one-query route's fixed cost."""
    hs = np.full(n_heads, -1, np.int64)
    hd = np.full(n_heads, np.inf, np.float32)
    route_heads(query, mode, vmin, step, centroid_codes, centroid_norms, member_codes, member_norms, offsets, members,
                slot_ids, min_groups, min_heads, hd, hs)
    return keep_heads(hs, hd, count, np.float32(eps2), k, out)


@kernel(fastmath=ARITH)
def route_dists(q, rows, metric, out):
    """The routing distance of ``q`` to every head row (``metric`` 0: squared L2, else
    -<q, x>) into ``out``, four rows at a time: ranked one by one, a short row (glove's 50
    floats) costs a call and a reduction of its own (1,314 heads: 21 us against 7)."""
    n, dim = rows.shape
    n4 = n - n % 4
    if metric == 0:
        for r in range(0, n4, 4):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for i in range(dim):
                x = q[i]
                d0 = x - rows[r, i]
                d1 = x - rows[r + 1, i]
                d2 = x - rows[r + 2, i]
                d3 = x - rows[r + 3, i]
                a0 += d0 * d0
                a1 += d1 * d1
                a2 += d2 * d2
                a3 += d3 * d3
            out[r], out[r + 1], out[r + 2], out[r + 3] = a0, a1, a2, a3
        for r in range(n4, n):
            out[r] = l2_sq(q, rows[r])
    else:
        for r in range(0, n4, 4):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for i in range(dim):
                x = q[i]
                a0 += x * rows[r, i]
                a1 += x * rows[r + 1, i]
                a2 += x * rows[r + 2, i]
                a3 += x * rows[r + 3, i]
            out[r], out[r + 1], out[r + 2], out[r + 3] = -a0, -a1, -a2, -a3
        for r in range(n4, n):
            out[r] = -dot(q, rows[r])


#: rows of at most this many floats a float posting scan ranks ``SHORT_BLOCK`` at a time,
#: four distances together (``row_dists``): one at a time, a 50-float row costs a call and
#: a reduction (glove, mp 32 in situ: 100 -> 84 us a query); longer rows gain nothing (384
#: floats: slower, the four streams defeat the hardware prefetcher)
SHORT_ROW = 64
SHORT_BLOCK = 8


@kernel(fastmath=ARITH)
def row_dists(q, flat, lo, hi, metric, out):
    """Distances (``metric`` 0: squared L2, else -<q, x>) of ``q`` to the rows ``lo:hi`` of
    ``flat`` (rows of ``len(q)`` floats end to end) into ``out[: hi - lo]``, four rows at a
    time; a last group of fewer takes its last row again, so every row's distance comes out
    of the same instructions wherever it lies (a replicated vector read from two postings
    gets one distance on every path: a search's results do not depend on which replica it
    met first). ``route_dists`` is the head route's: faster, its rounding position-bound."""
    dim = q.shape[0]
    n = hi - lo
    if metric == 0:                            # the metric outside the loops: inside, 2x slower
        for g in range((n + 3) // 4):
            r = 4 * g
            a = (lo + r) * dim
            last = n - 1 - r                   # rows of the group past its first (>= 3: whole)
            b1, b2, b3 = a + dim * min(1, last), a + dim * min(2, last), a + dim * min(3, last)
            r0, r1, r2, r3 = flat[a : a + dim], flat[b1 : b1 + dim], flat[b2 : b2 + dim], flat[b3 : b3 + dim]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for i in range(dim):
                x = q[i]
                d0 = x - r0[i]
                d1 = x - r1[i]
                d2 = x - r2[i]
                d3 = x - r3[i]
                a0 += d0 * d0
                a1 += d1 * d1
                a2 += d2 * d2
                a3 += d3 * d3
            _put_four(out, r, last, a0, a1, a2, a3)
    else:
        for g in range((n + 3) // 4):
            r = 4 * g
            a = (lo + r) * dim
            last = n - 1 - r
            b1, b2, b3 = a + dim * min(1, last), a + dim * min(2, last), a + dim * min(3, last)
            r0, r1, r2, r3 = flat[a : a + dim], flat[b1 : b1 + dim], flat[b2 : b2 + dim], flat[b3 : b3 + dim]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for i in range(dim):
                x = q[i]
                a0 += x * r0[i]
                a1 += x * r1[i]
                a2 += x * r2[i]
                a3 += x * r3[i]
            _put_four(out, r, last, -a0, -a1, -a2, -a3)


@kernel(inline=True)
def _put_four(out, r, last, a0, a1, a2, a3):
    """Store a group's distances at ``out[r:]``: the first and the ``last`` more there are."""
    out[r] = a0
    if last >= 1:
        out[r + 1] = a1
    if last >= 2:
        out[r + 2] = a2
    if last >= 3:
        out[r + 3] = a3


@kernel(inline=True)
def _route_topk(q, rows, metric, dists, hd, hs):
    """The nearest ``len(hd)`` head rows of ``q`` (``route_dists``) into ``hd``/``hs``, sorted;
    ties keep the lower slot (``smallest_k``)."""
    route_dists(q, rows, metric, dists)
    smallest_k(dists, None, hd, hs)


#: a coded exact route ranks this many heads again by their float rows: two times the heads
#: it returns, plus this many (see ``coded_route_topk``)
SHORTLIST_EXTRA = 16


@kernel(inline=True)
def coded_route_topk(q, rows, metric, head_codes, hd, hs):
    """``_route_topk`` over long rows: every head ranked by its 7-bit copy (``head_codes``:
    ``routing.HeadCodes.arrays``; one ``dot_u7_i8`` a row, ``fold_route_query``), the nearest
    2 ``len(hd)`` + ``SHORTLIST_EXTRA`` of them ranked again by their float rows. The same
    heads as the float route unless the codes' error moves one past that shortlist."""
    vmin, step, codes, norms = head_codes
    n = norms.shape[0]
    stride = codes.shape[0] // n
    u, usum, inv, base = fold_route_query(q, vmin, step, stride, metric)
    approx = np.empty(n, np.float32)
    shift = np.float32(64 * usum)
    if metric == 0:
        two = np.float32(2.0 * inv)
        for h in range(n):
            approx[h] = base + norms[h] - two * (np.float32(dot_u7_i8(u, codes, h * stride, stride)) - shift)
    else:
        for h in range(n):
            approx[h] = base - np.float32(inv) * np.float32(dot_u7_i8(u, codes, h * stride, stride))
    m = min(n, 2 * hd.shape[0] + SHORTLIST_EXTRA)
    sd = np.empty(m, np.float32)
    ss = np.empty(m, np.int64)
    smallest_k(approx, None, sd, ss)
    for t in range(m):
        if ss[t] < 0:                          # not finite (never, for finite rows and query)
            sd[t] = np.inf
            ss[t] = n + t
            continue
        row = rows[ss[t]]
        sd[t] = l2_sq(q, row) if metric == 0 else -dot(q, row)
    smallest_k(sd, ss, hd, hs)


@kernel
def fold_route_query(q, vmin, step, stride, metric):
    """The int8 terms ``u`` (``stride`` long, zero past ``len(q)``), their sum, 1 / lam and
    ``base`` by which ``coded_route_topk`` ranks 7-bit rows x = vmin + step c: with a = q - vmin
    - 64 step and u ~ lam a step, squared L2 |q - x|^2 = base + norm - (2 / lam) (u.c - 64
    sum u) (``metric`` 0; base = |a|^2, norm the row's centred norm); -<q, x> = base - (1 /
    lam) u.c (base = -<q, vmin>). lam puts the largest term at 127: a coarse query, which
    the float ranking of the shortlist makes exact."""
    exact, base, top = centred_terms(q, vmin, step, metric, 64.0)
    lam = 127.0 / top if top > 0.0 else 1.0
    u = np.zeros(stride, np.int8)
    total = 0
    for i in range(q.shape[0]):
        t = np.int64(np.round(exact[i] * lam))
        u[i] = t
        total += t
    return u, total, 1.0 / lam, np.float32(base)


@kernel(inline=True)
def centred_terms(q, vmin, step, mode, centre):
    """The exact terms an integer ranking of codes c rounds (float64 (dim,)), its ``base``
    and the largest term's magnitude: rows x = vmin + step c with codes centred on
    ``centre``; mode 0 (squared L2): a = q - vmin - centre step, terms a step, base |a|^2;
    mode 1 (-ip): terms q step, base -<q, vmin>. ``fold_int_query`` and
    ``fold_route_query`` round them to their integer widths."""
    dim = q.shape[0]
    exact = np.empty(dim, np.float64)
    base = 0.0
    top = 0.0
    for i in range(dim):
        s = np.float64(step[i])
        if mode == 0:
            a = np.float64(q[i]) - np.float64(vmin[i]) - centre * s
            exact[i] = a * s
            base += a * a
        else:
            exact[i] = np.float64(q[i]) * s
            base -= np.float64(q[i]) * np.float64(vmin[i])
        top = max(top, abs(exact[i]))
    return exact, base, top


@kernel
def route_exact(queries, rows, metric, k):
    """Exact nearest ``k`` head rows (slots) of each of a few queries: (slots (nq, k), dists
    (nq, k)), sorted, -1 / +inf padded. The exact route of ``exact_plan_one``, for a batch."""
    nq = queries.shape[0]
    hs = np.full((nq, k), -1, np.int64)
    hd = np.full((nq, k), np.inf, np.float32)
    dists = np.empty(rows.shape[0], np.float32)
    for qi in range(nq):
        _route_topk(queries[qi], rows, metric, dists, hd[qi], hs[qi])
    return hs, hd


@kernel
def exact_plan_one(queries, rows, metric, slot_ids, head_codes, n_heads, count, eps2, k, out):
    """The exact route and plan of one query (``queries`` (1, dim)): its ``n_heads`` nearest
    of the head ``rows`` (every slot live; ``metric`` 0: squared L2, 1: -ip; by their 7-bit
    copies first where ``head_codes`` is not None: ``coded_route_topk``), mapped to head ids
    by ``slot_ids`` and pruned (``keep_heads``) into ``out``; returns how many. What
    ``nearest_heads`` then ``plan_reads`` do for it, without their five boxed arrays."""
    hs = np.full(n_heads, -1, np.int64)
    hd = np.full(n_heads, np.inf, np.float32)
    if head_codes is None:
        _route_topk(queries[0], rows, metric, np.empty(rows.shape[0], np.float32), hd, hs)
    else:
        coded_route_topk(queries[0], rows, metric, head_codes, hd, hs)
    for j in range(hs.shape[0]):
        if hs[j] >= 0:
            hs[j] = slot_ids[hs[j]]
    return keep_heads(hs, hd, count, np.float32(eps2), k, out)


#: LIVE_LAST (a rule, not a value): a scan checks an entry's slot against ``live`` (past it,
#: or ``live[slot] < 0``: a tombstone, skipped) only once its distance ranks before the heap's
#: root. ``live`` has a word per slot (40 MB at 5M), so a check per entry scanned was a
#: random read each (2,000+ a query, from DRAM once other work evicts it); only the few dozen
#: entries that would enter a top-k heap need one.


@kernel(inline=True)
def offer_unique(hd, hs, d, s):
    """Offer slot ``s`` at distance ``d`` to the top-k max-heap ``hd``/``hs``: kept when it
    ranks before the root and is not in the heap yet (a replicated slot enters once)."""
    k = hs.shape[0]
    if not after(hd[0], hs[0], d, s):
        return
    seen = False
    for j in range(k):                         # no early exit: the loop vectorises
        seen |= hs[j] == s
    if not seen:
        max_sift_down(hd, hs, k, d, s)


@kernel(inline=True)
def offer_entries(rec, a, c, dim, q, live, allow, use_allow, metric, hd, hs):
    """Offer the ``c`` entries of the posting record whose entries start at byte ``a`` of
    ``rec`` (``c`` int64 slots, then ``c`` float32 rows) to the top-k heap ``hd``/``hs`` of
    query ``q``, skipping dead and (with ``use_allow``) disallowed slots (see ``scan_query``)."""
    n_live = live.shape[0]
    n_allow = allow.shape[0]
    slots = view_as(rec, a, c, np.int64)
    vectors = view_as(rec, a + 8 * c, c * dim, np.float32)
    short = dim <= SHORT_ROW
    dists = np.empty(SHORT_BLOCK, np.float32)
    for r in range(c):
        if short and r % SHORT_BLOCK == 0:
            row_dists(q, vectors, r, min(r + SHORT_BLOCK, c), metric, dists)
        s = slots[r]
        if use_allow and (s < 0 or s >= n_allow or allow[s] == 0):
            continue
        if short:
            d = dists[r % SHORT_BLOCK]
        else:
            row = vectors[r * dim : (r + 1) * dim]
            d = l2_sq(q, row) if metric == 0 else -dot(q, row)
        if after(hd[0], hs[0], d, s) and s >= 0 and s < n_live and live[s] >= 0:   # see LIVE_LAST
            offer_unique(hd, hs, d, s)


@kernel
def rerank_rows(rows, dim, q, slots, metric, hd, hs):
    """Offer the float32 rows ``rows`` (flat, ``len(slots)`` rows of ``dim``: the candidates
    ``slots`` of query ``q``, distinct) at their exact distances (``metric`` 0: squared L2,
    else -<q, x>; the float posting scan's) to the top-k heap ``hd``/``hs``, sorted on
    return: a one-query search's re-rank of its SQ8 candidates."""
    k = hs.shape[0]
    for r in range(slots.shape[0]):
        row = rows[r * dim : (r + 1) * dim]
        d = l2_sq(q, row) if metric == 0 else -dot(q, row)
        s = slots[r]
        if after(hd[0], hs[0], d, s):
            max_sift_down(hd, hs, k, d, s)
    heap_sort(hd, hs)


@kernel
def scan_query(qi, queries, buf, starts, counts, qptr, qlist, live, allow, use_allow, metric, out_s, out_d):
    """Top-k of query ``qi`` over the posting records it reads, into row ``qi`` of
    ``out_s``/``out_d``, straight from the checked records in ``buf`` (no copy).

    Record p starts at ``starts[p]`` and holds ``counts[p]`` entries; query q reads records
    ``qlist[qptr[q]:qptr[q+1]]``. A slot is skipped when it is past ``live`` or
    ``live[slot] < 0`` (a tombstone: removed, not yet purged) or, with ``use_allow``, when
    ``allow[slot]`` is 0; a slot replicated in several postings enters the heap once.
    ``metric`` 0 ranks by squared L2, 1 by -<q, x>.
    """
    k = out_s.shape[1]
    dim = queries.shape[1]
    hd = np.full(k, np.inf, np.float32)
    hs = np.full(k, -1, np.int64)
    q = queries[qi]
    for t in range(qptr[qi], qptr[qi + 1]):
        p = qlist[t]
        c = counts[p]
        a = starts[p] + HEADER_BYTES
        offer_entries(buf, a, c, dim, q, live, allow, use_allow, metric, hd, hs)
    heap_sort(hd, hs)
    out_s[qi] = hs
    out_d[qi] = hd


@kernel(parallel=True)
def scan_postings(queries, buf, starts, counts, qptr, qlist, live, allow, use_allow, metric, out_s, out_d):
    """``scan_query`` for every query, in parallel (a batch of queries)."""
    for qi in numba.prange(queries.shape[0]):
        scan_query(qi, queries, buf, starts, counts, qptr, qlist, live, allow, use_allow, metric, out_s, out_d)


@kernel
def scan_postings_serial(queries, buf, starts, counts, qptr, qlist, live, allow, use_allow, metric, out_s, out_d):
    """``scan_postings`` on the calling thread (a few queries: no parallel region to launch)."""
    for qi in range(queries.shape[0]):
        scan_query(qi, queries, buf, starts, counts, qptr, qlist, live, allow, use_allow, metric, out_s, out_d)


@kernel
def cluster_sums(x, labels, k):
    """Per-cluster sums (k, dim) float64 and sizes (k,) of the rows of ``x`` labelled 0..k-1."""
    sums = np.zeros((k, x.shape[1]), np.float64)
    counts = np.zeros(k, np.int64)
    for i in range(x.shape[0]):
        j = labels[i]
        counts[j] += 1
        for t in range(x.shape[1]):
            sums[j, t] += x[i, t]
    return sums, counts


@kernel
def keep_heads(hid, hd, count, eps2, k, out):
    """Query-aware pruning of one query's nearest heads ``hid``/``hd`` (sorted by distance,
    -1 padded): head j is read while d_j - d_1 <= eps2 * |d_1|, and also while the postings
    nearer than j hold fewer than k entries (``count`` per head). The heads read go to
    ``out`` in that order; returns how many."""
    d1 = hd[0]
    bound = d1 + eps2 * abs(d1)
    seen = 0
    n = 0
    for j in range(hid.shape[0]):
        h = hid[j]
        if h < 0:
            break
        if hd[j] <= bound or seen < k:
            out[n] = h
            n += 1
        c = count[h]
        if c > 0:
            seen += c
    return n


@kernel
def plan_reads(hid, hd, count, eps2, k):
    """``keep_heads`` for each query of ``hid``/``hd`` (nq, p). Returns (wanted: the distinct
    heads read, sorted; qptr (nq + 1,); qlist: for each query the positions in ``wanted`` of
    the heads it reads, nearest first)."""
    nq, p = hid.shape
    kept = np.empty((nq, p), np.int64)
    qptr = np.zeros(nq + 1, np.int64)
    for q in range(nq):
        qptr[q + 1] = qptr[q] + keep_heads(hid[q], hd[q], count, eps2, k, kept[q])
    picked = np.empty(qptr[nq], np.int64)
    for q in range(nq):
        picked[qptr[q] : qptr[q + 1]] = kept[q, : qptr[q + 1] - qptr[q]]
    wanted = np.unique(picked)
    qlist = np.searchsorted(wanted, picked).astype(np.int64)
    return wanted, qptr, qlist


@kernel
def capacity_assign(cand, cand_d, cap):
    """Balanced assignment of n points to parts from their candidate parts ``cand`` (n, c)
    and distances to them ``cand_d`` (n, c): the (point, candidate) pairs are taken nearest
    first, a point going to the first candidate that still has room (at most ``cap`` points
    each); a point whose candidates are all full goes to its nearest. Returns labels (n,)
    int64 (parts numbered as in ``cand``)."""
    n, c = cand.shape
    order = np.argsort(cand_d.ravel())
    labels = np.full(n, -1, np.int64)
    used = np.zeros(cand.max() + 1 if n else 0, np.int64)
    left = n
    for t in order:
        i = t // c
        j = cand[i, t % c]
        if labels[i] < 0 and used[j] < cap:
            labels[i] = j
            used[j] += 1
            left -= 1
            if left == 0:
                break
    if left:
        for i in range(n):
            if labels[i] < 0:
                labels[i] = cand[i, np.argmin(cand_d[i])]
    return labels


@kernel
def pair_sq_dists(x, centroids, cand):
    """Squared L2 distances (n, c) float32 of each row of ``x`` to its candidate centroids
    ``cand`` (n, c)."""
    n, c = cand.shape
    out = np.empty((n, c), np.float32)
    for i in range(n):
        for t in range(c):
            out[i, t] = l2_sq(x[i], centroids[cand[i, t]])
    return out


@kernel(inline=True)
def fold_code_query(q, vmin, step, mode):
    """The terms query ``q`` is ranked with on SQ8 codes (decoded as v_i + c_i s_i from the
    codec's ``vmin`` v and ``step`` s): mode 0 (squared L2): a = q - v, for ``code_l2``;
    mode 1 (-ip): q_i s_i, for ``code_dot``, and the bias -<q, v>. Returns (terms, bias).
    Folded in the scan kernel: a numpy fold per query cost ~3.5 us of a one-query search."""
    dim = q.shape[0]
    terms = np.empty(dim, np.float32)
    b = np.float32(0.0)
    if mode == 0:
        for i in range(dim):
            terms[i] = q[i] - vmin[i]
    else:
        for i in range(dim):
            terms[i] = q[i] * step[i]
            b -= q[i] * vmin[i]
    return terms, b


@kernel(inline=True)
def fold_int_query(q, vmin, step, mode):
    """The terms query ``q`` is ranked with on format-4 SQ8 rows (``code_int``): int16 terms
    ``u`` (rounded to ``lam`` times their exact values), ``usum``, ``scale`` and ``base``.
    Mode 0 (squared L2) centres the codes: with a = q - v - 128 s and x = s (c - 128),
    |a - x|^2 = |a|^2 + |x|^2 - 2 sum a_i s_i (c_i - 128), |x|^2 being the row's stored norm;
    mode 1 (-ip): -<q, v + s c> = -<q, v> - sum q_i s_i c_i. ``lam`` keeps every int32 sum
    of ``code_int`` exact (dim * 255 * max|u| < 2^31): the terms keep 14 bits or more up to
    514 components and 12 at 1,536."""
    dim = q.shape[0]
    exact, base, top = centred_terms(q, vmin, step, mode, 128.0)
    limit = min(16383, (2**31 - 1) // (255 * dim))
    lam = limit / top if top > 0.0 else 1.0
    u = np.empty(dim, np.int16)
    total = 0
    for i in range(dim):
        t = np.int64(np.round(exact[i] * lam))
        u[i] = t
        total += t
    usum = np.int32(128 * total) if mode == 0 else np.int32(0)
    scale = np.float32((2.0 if mode == 0 else 1.0) / lam)
    return u, usum, scale, np.float32(base)


@kernel(inline=True)
def code_int(u, usum, scale, base, mode, codes, start, norm):
    """The distance ``fold_int_query``'s terms rank the format-4 row ``codes[start:start +
    len(u)]`` (stored norm ``norm``) by: one integer dot (``dot_u8_i16``), then
    base + norm - scale (dot - usum) for squared L2, base - scale dot for -ip."""
    dot = np.float32(dot_u8_i16(u, codes, start) - usum)
    if mode == 0:
        return base + norm - scale * dot
    return base - scale * dot


@kernel(inline=True)
def code_int_summed(u, usum, scale, base, mode, codes, start, norm):
    """``code_int`` of a row of a multiple of ``dot_sums.STEP`` codes, with the row's word
    sums (S, T: ``word_sums``) from the same pass over its bytes (``dot_sums``)."""
    raw, total, weighted = dot_sums(u, codes, start, u.shape[0])
    dot = np.float32(raw - usum)
    if mode == 0:
        return base + norm - scale * dot, total, weighted
    return base - scale * dot, total, weighted


@kernel(fastmath=ARITH)
def code_l2(a, step, row):
    """sum_i (a_i - s_i c_i)^2 of one SQ8 code row: the squared L2 from the query to the
    row's decoded vector (``a``: ``fold_code_query``'s terms; two fused multiply-adds per
    component, vectorised: reassociation allowed)."""
    acc = np.float32(0.0)
    for i in range(row.shape[0]):
        diff = a[i] - step[i] * np.float32(row[i])
        acc += diff * diff
    return acc


@kernel(fastmath=ARITH)
def code_dot(q, row):
    """sum_i q_i c_i of one SQ8 code row."""
    acc = np.float32(0.0)
    for i in range(row.shape[0]):
        acc += q[i] * np.float32(row[i])
    return acc


@kernel(inline=True)
def offer_code_rows(slots, codes, lo, hi, dim, q, step, b, mode, live, allow, use_allow, hd, hs):
    """Offer rows ``lo:hi`` of an SQ8 posting (format 2 or 3: ``slots``, then ``codes``,
    ``dim`` a row) to the heap ``hd``/``hs`` of the folded query ``q``, bias ``b``
    (``fold_code_query``), skipping dead and disallowed slots."""
    n_live = live.shape[0]
    n_allow = allow.shape[0]
    for r in range(lo, hi):
        s = slots[r]
        if use_allow and (s < 0 or s >= n_allow or allow[s] == 0):
            continue
        row = codes[r * dim : (r + 1) * dim]
        d = code_l2(q, step, row) if mode == 0 else b - code_dot(q, row)
        if after(hd[0], hs[0], d, s) and s >= 0 and s < n_live and live[s] >= 0:   # see LIVE_LAST
            offer_unique(hd, hs, d, s)


@kernel(inline=True)
def offer_code_rows_v4(slots, norms, rec, at, lo, hi, u, usum, scale, base, mode, live, allow, use_allow, hd, hs):
    """``offer_code_rows`` for a format-4 posting: row r's codes at byte ``at + r * dim``
    of ``rec``, its norm ``norms[r]``, ranked by ``code_int`` with ``fold_int_query``'s
    terms. (The skip and offer lines are written out in each scan: as inline helpers of
    their own they made the one-query search 1.7x slower, 153 -> 265 us at 5M.)"""
    n_live = live.shape[0]
    n_allow = allow.shape[0]
    dim = u.shape[0]
    for r in range(lo, hi):
        s = slots[r]
        if use_allow and (s < 0 or s >= n_allow or allow[s] == 0):
            continue
        d = code_int(u, usum, scale, base, mode, rec, at + r * dim, norms[r])
        if after(hd[0], hs[0], d, s) and s >= 0 and s < n_live and live[s] >= 0:   # see LIVE_LAST
            offer_unique(hd, hs, d, s)


@kernel(inline=True)
def offer_codes(rec, a, c, dim, q, step, b, mode, live, allow, use_allow, hd, hs):
    """Offer the ``c`` entries of the SQ8 posting record whose entries start at byte ``a`` of
    ``rec`` (``c`` int64 slots, then ``c`` rows of ``dim`` codes) to the heap ``hd``/``hs``
    (``offer_code_rows``)."""
    offer_code_rows(view_as(rec, a, c, np.int64), rec[a + 8 * c : a + 8 * c + c * dim], 0, c, dim, q, step, b,
                    mode, live, allow, use_allow, hd, hs)


@kernel(inline=True)
def offer_codes_v4(rec, a, c, u, usum, scale, base, mode, live, allow, use_allow, hd, hs):
    """``offer_codes`` for a format-4 record (``c`` int64 slots, ``c`` float32 norms, then
    the codes; ``offer_code_rows_v4``)."""
    offer_code_rows_v4(view_as(rec, a, c, np.int64), view_as(rec, a + 8 * c, c, np.float32), rec,
                       a + 12 * c, 0, c, u, usum, scale, base, mode, live, allow, use_allow, hd, hs)


@kernel
def scan_codes_query(qi, queries, vmin, step, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow, out_s,
                     out_d):
    """``scan_query`` over postings of SQ8 codes (the codec's ``vmin``/``step``; mode 0:
    squared L2, 1: -ip to the decoded vectors; each record ranked in the form of its format,
    read from its checked header): query ``qi``'s top candidates into row ``qi`` of
    ``out_s``/``out_d``."""
    k = out_s.shape[1]
    dim = queries.shape[1]
    hd = np.full(k, np.inf, np.float32)
    hs = np.full(k, -1, np.int64)
    q, b = fold_code_query(queries[qi], vmin, step, mode)
    u, usum, scale, base = fold_int_query(queries[qi], vmin, step, mode)
    for t in range(qptr[qi], qptr[qi + 1]):
        p = qlist[t]
        if buf[starts[p] + 4] == 4:             # the format (a checked record: 2, 3 or 4)
            offer_codes_v4(buf, starts[p] + HEADER_BYTES, counts[p], u, usum, scale, base, mode, live, allow,
                           use_allow, hd, hs)
        else:
            offer_codes(buf, starts[p] + HEADER_BYTES, counts[p], dim, q, step, b, mode, live, allow, use_allow, hd,
                        hs)
    heap_sort(hd, hs)
    out_s[qi] = hs
    out_d[qi] = hd


@kernel(parallel=True)
def scan_codes(queries, vmin, step, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow, out_s, out_d):
    """``scan_codes_query`` for every query, in parallel."""
    for qi in numba.prange(queries.shape[0]):
        scan_codes_query(qi, queries, vmin, step, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow,
                         out_s, out_d)


@kernel
def scan_codes_serial(queries, vmin, step, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow, out_s,
                      out_d):
    """``scan_codes`` on the calling thread."""
    for qi in range(queries.shape[0]):
        scan_codes_query(qi, queries, vmin, step, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow,
                         out_s, out_d)
