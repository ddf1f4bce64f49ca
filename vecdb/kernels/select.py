"""The k smallest entries of a distance array, sorted, without a heap fed the whole array.

A top-k heap fed n distances pushes about k (1 + ln(n / k)) of them, each a sift of log2 k
levels whose branches the CPU cannot predict: ~50 ns a push (the 32 nearest of a query's
1,314 route distances: 8.5 us). ``smallest_k`` finds the bucket of a 256-bucket histogram
over [min, max] that holds the k-th smallest, gathers the entries up to it (a few more than
k) and places each by counting the entries that order before it: loops without
unpredictable branches (the same 32 of 1,314: 4.4 us). The bucket numbers are float32 and
made in a loop of their own, counted in the next (911 route distances: 3.7 -> 2.9 us). The
answer is a top-k heap's: the k smallest by (distance, index), +inf / -1 past the finite
entries.
"""
from __future__ import annotations

import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.heaps import heap_push, heap_sort

#: buckets of the histogram that finds the k-th smallest distance's neighbourhood
BUCKETS = 256
#: candidates placed by counting (m * m comparisons) at most; past it (many ties, or a
#: histogram a few outliers stretch) they go through a heap
RANK_MAX = 256


@kernel
def smallest_k(d, ids, hd, hs):
    """The ``len(hd)`` smallest finite entries of ``d`` by (distance, id), ascending, into
    ``hd`` (distances) and ``hs`` (ids), +inf / -1 where ``d`` has fewer; what a top-k heap
    of (distance, id) fed ``d`` gives (``heap_push`` then ``heap_sort``). An entry's id is
    ``ids[j]`` (distinct, >= 0), or its index ``j`` when ``ids`` is None."""
    k = hd.shape[0]
    n = d.shape[0]
    for j in range(k):
        hd[j] = np.inf
        hs[j] = -1
    if k == 0 or n == 0:
        return
    lo = np.inf
    hi = -np.inf
    for j in range(n):
        x = d[j]
        if x < np.inf:                         # +inf and NaN never rank (nor do they in a heap)
            lo = min(lo, x)
            hi = max(hi, x)
    if not hi >= lo:                           # nothing finite
        return
    width = np.float64(hi) - np.float64(lo)
    scale = np.float32(BUCKETS / width if width > 0.0 else 0.0)
    low = np.float32(lo)
    bucket = np.empty(n, np.int32)
    for j in range(n):                         # bucket numbers, in a loop without branches
        x = d[j]
        t = (x - low) * scale                  # >= 0 and monotone in x (NaN when lo is -inf: the last bucket)
        b = np.int32(t) if t < BUCKETS - 1 else np.int32(BUCKETS - 1)
        bucket[j] = b if x < np.inf else np.int32(BUCKETS)    # +inf, NaN: a bucket past the histogram
    counts = np.zeros(BUCKETS + 1, np.int64)
    for j in range(n):                         # counted apart from the loop above (see the module doc)
        counts[bucket[j]] += 1
    top = BUCKETS - 1
    seen = 0
    for b in range(BUCKETS):
        seen += counts[b]
        if seen >= k:
            top = b
            break
    cd = np.empty(n, np.float32)
    cs = np.empty(n, np.int64)
    m = 0
    for j in range(n):                         # gathered without a branch
        cd[m] = d[j]
        cs[m] = j if ids is None else ids[j]
        m += bucket[j] <= top
    if m > RANK_MAX:
        for i in range(m):
            heap_push(hd, hs, cd[i], cs[i])
        heap_sort(hd, hs)
        return
    for i in range(m):
        di = cd[i]
        si = cs[i]
        rank = 0
        for j in range(m):
            rank += (cd[j] < di) | ((cd[j] == di) & (cs[j] < si))
        if rank < k:
            hd[rank] = di
            hs[rank] = si
