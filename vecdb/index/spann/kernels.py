"""Numba kernels of SPANN: the replica choice (closure + RNG rule), the grouped nearest-head
search and the posting scan."""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import ARITH, kernel
from vecdb.kernels.distances import dot, l2_sq
from vecdb.kernels.heaps import after, heap_sort, max_sift_down


# ---- posting records (see vecdb.index.spann.postings for the layout) -------------------
HEADER_BYTES = 24
MAGIC = (83, 80, 78, 80)   # b"SPNP"
OK, TRUNCATED, FOREIGN, WRONG_DIM, BAD_CHECKSUM = 0, 1, 2, 3, 4


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


@kernel
def route_query(q, rows, centroids, offsets, members, metric, min_groups, min_heads, hd, hs):
    """Nearest heads of one query by groups (``vecdb.index.spann.routing``): the group
    centroids are ranked, then the heads of the nearest groups are scanned exactly, group by
    group, until at least ``min_groups`` groups and ``min_heads`` heads were scanned. Group g
    holds the head slots ``members[offsets[g]:offsets[g+1]]`` (rows of ``rows``; a head may
    be in several groups, it enters the heap once). Fills the top-k heap ``hd``/``hs``
    (sorted on return). ``metric`` 0: squared L2, else -<q, x>."""
    n_groups = centroids.shape[0]
    gd = np.empty(n_groups, np.float32)
    for g in range(n_groups):
        gd[g] = l2_sq(q, centroids[g]) if metric == 0 else -dot(q, centroids[g])
    order = np.argsort(gd)
    scanned = 0
    for t in range(n_groups):
        if t >= min_groups and scanned >= min_heads:
            break
        g = order[t]
        for r in range(offsets[g], offsets[g + 1]):
            s = members[r]
            d = l2_sq(q, rows[s]) if metric == 0 else -dot(q, rows[s])
            offer_unique(hd, hs, d, s)           # a head may be a member of several groups
        scanned += offsets[g + 1] - offsets[g]
    heap_sort(hd, hs)


@kernel
def route_groups_serial(queries, rows, centroids, offsets, members, metric, min_groups, min_heads, out_s, out_d):
    """``route_query`` for every query on the calling thread (a few queries), into rows of
    ``out_s``/``out_d`` (filled with -1 / +inf by the caller)."""
    for qi in range(queries.shape[0]):
        route_query(queries[qi], rows, centroids, offsets, members, metric, min_groups, min_heads,
                    out_d[qi], out_s[qi])


@kernel(parallel=True)
def route_groups(queries, rows, centroids, offsets, members, metric, min_groups, min_heads, out_s, out_d):
    """``route_groups_serial`` in parallel over the queries (insert batches, query batches)."""
    for qi in numba.prange(queries.shape[0]):
        route_query(queries[qi], rows, centroids, offsets, members, metric, min_groups, min_heads,
                    out_d[qi], out_s[qi])


@kernel
def route_plan(queries, rows, slot_ids, centroids, offsets, members, metric, min_groups, min_heads, n_heads,
               count, eps2, k):
    """``route_groups_serial`` for the ``n_heads`` nearest heads (slots mapped to head ids by
    ``slot_ids``), then ``plan_reads`` on them: a few queries' postings to read in one call."""
    nq = queries.shape[0]
    hs = np.full((nq, n_heads), -1, np.int64)
    hd = np.full((nq, n_heads), np.inf, np.float32)
    for qi in range(nq):
        route_query(queries[qi], rows, centroids, offsets, members, metric, min_groups, min_heads, hd[qi], hs[qi])
        for j in range(n_heads):
            if hs[qi, j] >= 0:
                hs[qi, j] = slot_ids[hs[qi, j]]
    return plan_reads(hs, hd, count, eps2, k)


@kernel(inline=True)
def offer_unique(hd, hs, d, s):
    """Offer slot ``s`` at distance ``d`` to the top-k max-heap ``hd``/``hs``: kept when it
    ranks before the root and is not in the heap yet (a replicated slot enters once)."""
    k = hs.shape[0]
    if not after(hd[0], hs[0], d, s):
        return
    for j in range(k):
        if hs[j] == s:
            return
    max_sift_down(hd, hs, k, d, s)


@kernel(inline=True)
def offer_entries(rec, a, c, dim, q, live, allow, use_allow, metric, hd, hs):
    """Offer the ``c`` entries of the posting record whose entries start at byte ``a`` of
    ``rec`` (``c`` int64 slots, then ``c`` float32 rows) to the top-k heap ``hd``/``hs`` of
    query ``q``, skipping dead and (with ``use_allow``) disallowed slots (see ``scan_query``)."""
    n_live = live.shape[0]
    n_allow = allow.shape[0]
    slots = rec[a : a + 8 * c].view(np.int64)
    vectors = rec[a + 8 * c : a + 8 * c + 4 * c * dim].view(np.float32)
    for r in range(c):
        s = slots[r]
        if s < 0 or s >= n_live or live[s] < 0:
            continue
        if use_allow and (s >= n_allow or allow[s] == 0):
            continue
        row = vectors[r * dim : (r + 1) * dim]
        if metric == 0:
            d = l2_sq(q, row)
        else:
            d = -dot(q, row)
        offer_unique(hd, hs, d, s)


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


@kernel
def check_scan_record(rec, dim, version, q, live, allow, use_allow, metric, hd, hs):
    """Check one float32 posting record ``rec`` (a whole LMDB value, read in place: no copy)
    and, when it is sound, offer its entries to the top-k heap ``hd``/``hs`` of query ``q``
    (the rules of ``scan_query``). The checksum pass leaves the record in cache for the scan,
    so its bytes come from memory once. Returns (problem code, entry count); nothing is
    offered from a bad record."""
    n = rec.shape[0]
    if n < HEADER_BYTES:
        return TRUNCATED, 0
    if (rec[0] != MAGIC[0] or rec[1] != MAGIC[1] or rec[2] != MAGIC[2] or rec[3] != MAGIC[3]
            or rec[4] + 256 * rec[5] != version or rec[6] + 256 * rec[7] != 0):
        return FOREIGN, 0
    c = np.int64(rec[8:12].view(np.uint32)[0])
    if np.int64(rec[12:16].view(np.uint32)[0]) != dim:
        return WRONG_DIM, 0
    if n != HEADER_BYTES + (c * (8 + 4 * dim) + 7) // 8 * 8:
        return TRUNCATED, 0
    if checksum(rec, HEADER_BYTES, n) != rec[16:24].view(np.uint64)[0]:
        return BAD_CHECKSUM, 0
    offer_entries(rec, HEADER_BYTES, c, dim, q, live, allow, use_allow, metric, hd, hs)
    return OK, c


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
def checksum(buf, lo, hi):
    """64-bit checksum of ``buf[lo:hi]`` (a multiple of 8 bytes): four independent
    multiply-xorshift lanes over the 8-byte words (so the multiplies overlap), then mixed."""
    m = np.uint64(0xFF51AFD7ED558CCD)
    s31 = np.uint64(31)
    h0 = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(hi - lo)
    h1 = np.uint64(0xC2B2AE3D27D4EB4F)
    h2 = np.uint64(0x165667B19E3779F9)
    h3 = np.uint64(0x27D4EB2F165667C5)
    words = buf[lo:hi].view(np.uint64)
    n = words.shape[0]
    n4 = n - n % 4
    for i in range(0, n4, 4):
        h0 = (h0 ^ words[i]) * m
        h1 = (h1 ^ words[i + 1]) * m
        h2 = (h2 ^ words[i + 2]) * m
        h3 = (h3 ^ words[i + 3]) * m
        h0 ^= h0 >> s31
        h1 ^= h1 >> s31
        h2 ^= h2 >> s31
        h3 ^= h3 >> s31
    for i in range(n4, n):
        h0 = (h0 ^ words[i]) * m
        h0 ^= h0 >> s31
    for h in (h1, h2, h3):
        h0 = (h0 ^ h) * m
        h0 ^= h0 >> s31
    return h0


@kernel
def check_records(buf, starts, ends, dim, version, width, flags, counts):
    """Check the posting records ``buf[starts[i]:ends[i]]`` (``width`` bytes per vector
    component: 4 float32, 1 SQ8 codes, named by the header's ``flags``) and write their entry
    counts to ``counts``; returns (index of the first bad record or -1, its problem code)."""
    for i in range(starts.shape[0]):
        a = starts[i]
        b = ends[i]
        if b - a < HEADER_BYTES:
            return i, TRUNCATED
        if (buf[a] != MAGIC[0] or buf[a + 1] != MAGIC[1] or buf[a + 2] != MAGIC[2] or buf[a + 3] != MAGIC[3]
                or buf[a + 4] + 256 * buf[a + 5] != version or buf[a + 6] + 256 * buf[a + 7] != flags):
            return i, FOREIGN
        count = np.int64(buf[a + 8 : a + 12].view(np.uint32)[0])
        if np.int64(buf[a + 12 : a + 16].view(np.uint32)[0]) != dim:
            return i, WRONG_DIM
        body = count * (8 + width * dim)
        if b - a != HEADER_BYTES + (body + 7) // 8 * 8:
            return i, TRUNCATED
        if checksum(buf, a + HEADER_BYTES, b) != buf[a + 16 : a + 24].view(np.uint64)[0]:
            return i, BAD_CHECKSUM
        counts[i] = count
    return -1, OK


@kernel
def gather_records(buf, starts, counts, offsets, dim, slots_out, vectors_out):
    """Copy the checked records' slots and vectors into ``slots_out`` (total,) and the flat
    ``vectors_out`` (total * dim,), record i at rows ``offsets[i]:offsets[i+1]``."""
    for i in range(starts.shape[0]):
        a = starts[i] + HEADER_BYTES
        c = counts[i]
        o = offsets[i]
        slots_out[o : o + c] = buf[a : a + 8 * c].view(np.int64)
        vectors_out[o * dim : (o + c) * dim] = buf[a + 8 * c : a + 8 * c + 4 * c * dim].view(np.float32)


@kernel
def plan_reads(hid, hd, count, eps2, k):
    """Query-aware pruning of the nearest heads ``hid``/``hd`` (nq, p), sorted by distance:
    query q reads head j while d_j - d_1 <= eps2 * |d_1|, and also while the postings nearer
    than j hold fewer than k entries (``count`` per head; -1 padded ids are skipped).
    Returns (wanted: the distinct heads read, sorted; qptr (nq + 1,); qlist: for each query
    the positions in ``wanted`` of the heads it reads)."""
    nq, p = hid.shape
    keep = np.zeros((nq, p), np.bool_)
    n_keep = 0
    for q in range(nq):
        d1 = hd[q, 0]
        bound = d1 + eps2 * abs(d1)
        seen = 0
        for j in range(p):
            h = hid[q, j]
            if h < 0:
                break
            if hd[q, j] <= bound or seen < k:
                keep[q, j] = True
                n_keep += 1
            c = count[h]
            if c > 0:
                seen += c
    picked = np.empty(n_keep, np.int64)
    t = 0
    for q in range(nq):
        for j in range(p):
            if keep[q, j]:
                picked[t] = hid[q, j]
                t += 1
    wanted = np.unique(picked)
    qptr = np.zeros(nq + 1, np.int64)
    qlist = np.empty(n_keep, np.int64)
    t = 0
    for q in range(nq):
        for j in range(p):
            if keep[q, j]:
                qlist[t] = np.searchsorted(wanted, hid[q, j])
                t += 1
        qptr[q + 1] = t
    return wanted, qptr, qlist


@kernel
def capacity_assign(d, cap):
    """Balanced assignment of n points to k parts from their distances ``d`` (n, k): the
    (point, part) pairs are taken nearest first, a point going to the first part that still
    has room (at most ``cap`` points each). Returns labels (n,) int64."""
    n, k = d.shape
    order = np.argsort(d.ravel())
    labels = np.full(n, -1, np.int64)
    used = np.zeros(k, np.int64)
    left = n
    for t in order:
        i = t // k
        j = t % k
        if labels[i] < 0 and used[j] < cap:
            labels[i] = j
            used[j] += 1
            left -= 1
            if left == 0:
                break
    return labels


@kernel(fastmath=ARITH)
def code_l2(q, weights, row):
    """sum_i w_i (q_i - c_i)^2 of one SQ8 code row (vectorised: reassociation allowed)."""
    acc = np.float32(0.0)
    for i in range(row.shape[0]):
        diff = q[i] - np.float32(row[i])
        acc += weights[i] * diff * diff
    return acc


@kernel(fastmath=ARITH)
def code_dot(q, row):
    """sum_i q_i c_i of one SQ8 code row."""
    acc = np.float32(0.0)
    for i in range(row.shape[0]):
        acc += q[i] * np.float32(row[i])
    return acc


@kernel
def scan_codes_query(qi, qt, weights, bias, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow, out_s, out_d):
    """``scan_query`` over postings of SQ8 codes: query ``qi`` folded into code units
    (``qt`` (nq, dim), ``weights`` (dim,), ``bias`` (nq,); mode 0: sum w (qt - c)^2 + bias,
    mode 1: bias - sum qt c), its top candidates into row ``qi`` of ``out_s``/``out_d``."""
    k = out_s.shape[1]
    dim = qt.shape[1]
    n_live = live.shape[0]
    n_allow = allow.shape[0]
    hd = np.full(k, np.inf, np.float32)
    hs = np.full(k, -1, np.int64)
    q = qt[qi]
    b = bias[qi]
    for t in range(qptr[qi], qptr[qi + 1]):
        p = qlist[t]
        c = counts[p]
        a = starts[p] + HEADER_BYTES
        slots = buf[a : a + 8 * c].view(np.int64)
        codes = buf[a + 8 * c : a + 8 * c + c * dim]
        for r in range(c):
            s = slots[r]
            if s < 0 or s >= n_live or live[s] < 0:
                continue
            if use_allow and (s >= n_allow or allow[s] == 0):
                continue
            row = codes[r * dim : (r + 1) * dim]
            if mode == 0:
                d = code_l2(q, weights, row) + b
            else:
                d = b - code_dot(q, row)
            offer_unique(hd, hs, d, s)
    heap_sort(hd, hs)
    out_s[qi] = hs
    out_d[qi] = hd


@kernel(parallel=True)
def scan_codes(qt, weights, bias, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow, out_s, out_d):
    """``scan_codes_query`` for every query, in parallel."""
    for qi in numba.prange(qt.shape[0]):
        scan_codes_query(qi, qt, weights, bias, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow,
                         out_s, out_d)


@kernel
def scan_codes_serial(qt, weights, bias, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow, out_s, out_d):
    """``scan_codes`` on the calling thread."""
    for qi in range(qt.shape[0]):
        scan_codes_query(qi, qt, weights, bias, mode, buf, starts, counts, qptr, qlist, live, allow, use_allow,
                         out_s, out_d)
