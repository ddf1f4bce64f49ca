"""Binary heaps over parallel ``(dists, ids)`` arrays: the one heap implementation of the kernels.

Every heap orders its entries by the pair ``(dist, id)``, so ties on distance go to the
smaller id whatever order entries arrive in (scan chunks, threads, graph walk order).

- Max-heaps keep the worst entry at the root. Top-k heaps are max-heaps of fixed size k filled
  with ``(+inf, -1)`` sentinels (``new_heaps``, ``heap_push``, ``heap_sort``); the ef-best result
  set of a beam search is a max-heap that grows up to ef (``max_push``, ``max_replace``).
- Min-heaps keep the best entry at the root: the candidate queue of a beam search
  (``min_push``, ``min_push_grow``, ``min_pop``).

Both orders share one ``sift_up`` and one ``sift_down``, given the order as a predicate.

Ids may be int32 (graph nodes) or int64 (slots); each helper compiles once per id type.
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import F32, I64, kernel

F32_OUT = numba.float32[::1]
I64_OUT = numba.int64[::1]


@kernel
def after(d1, s1, d2, s2):
    """True when ``(d1, s1)`` ranks after ``(d2, s2)``: farther, or as far with a larger id."""
    return d1 > d2 or (d1 == d2 and s1 > s2)


# ---- sifting, shared by both heap orders ---------------------------------------------------
# ``above(a, b)`` is the heap order: true when entry a belongs nearer the root than entry b
# (``after`` for max-heaps, ``before`` for min-heaps). The heap helpers below pass a global
# jitted predicate, so Numba compiles each sift once per order with it inlined (an A/B of the
# HNSW and scan kernels showed no change) and no cached kernel takes a function argument.
@kernel
def before(d1, s1, d2, s2):
    """True when ``(d1, s1)`` ranks before ``(d2, s2)``: nearer, or as near with a smaller id."""
    return after(d2, s2, d1, s1)


@kernel
def sift_down(dists, ids, size, d, s, above):
    """Place ``(d, s)`` at the root of the heap ``[:size]`` and sift it down to its place."""
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        right = child + 1
        if right < size and above(dists[right], ids[right], dists[child], ids[child]):
            child = right
        if not above(dists[child], ids[child], d, s):
            break
        dists[i] = dists[child]
        ids[i] = ids[child]
        i = child
    dists[i] = d
    ids[i] = s


@kernel
def sift_up(dists, ids, size, d, s, above):
    """Add ``(d, s)`` at position ``size`` of the heap and sift it up (the caller guarantees room)."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if not above(d, s, dists[parent], ids[parent]):
            break
        dists[i] = dists[parent]
        ids[i] = ids[parent]
        i = parent
    dists[i] = d
    ids[i] = s


# ---- max-heaps ---------------------------------------------------------------------------
@kernel
def max_sift_down(dists, ids, size, d, s):
    """Place ``(d, s)`` at the root of the max-heap ``[:size]`` and sift it down to its place."""
    sift_down(dists, ids, size, d, s, after)


@kernel
def max_push(dists, ids, size, d, s):
    """Add ``(d, s)`` to the max-heap of ``size`` entries (the caller guarantees room)."""
    sift_up(dists, ids, size, d, s, after)


@kernel
def max_replace(dists, ids, size, d, s):
    """Replace the root (the worst entry) of the max-heap of ``size`` entries by ``(d, s)``."""
    max_sift_down(dists, ids, size, d, s)


@kernel
def max_pop(dists, ids, size):
    """Remove the root of the max-heap of ``size >= 1`` entries."""
    if size > 1:
        max_sift_down(dists, ids, size - 1, dists[size - 1], ids[size - 1])


@kernel
def max_sort(dists, ids, size):
    """Sort the max-heap of ``size`` entries in place, ascending by ``(dist, id)``."""
    for end in range(size - 1, 0, -1):
        d = dists[end]
        s = ids[end]
        dists[end] = dists[0]
        ids[end] = ids[0]
        max_sift_down(dists, ids, end, d, s)


# ---- fixed-size top-k heaps ----------------------------------------------------------------
@kernel(numba.boolean(F32_OUT, I64_OUT, F32, I64))
def heap_push(dists, slots, d, s):
    """Offer ``(d, s)`` to a full top-k heap; keep it when it beats the root. True if kept."""
    if not after(dists[0], slots[0], d, s):
        return False
    max_sift_down(dists, slots, dists.shape[0], d, s)
    return True


@kernel(numba.void(F32_OUT, I64_OUT))
def heap_sort(dists, slots):
    """Sort a top-k heap in place, ascending by ``(dist, slot)``; sentinels end up last."""
    max_sort(dists, slots, dists.shape[0])


@kernel
def new_heaps(n, k):
    """n empty top-k heaps: (dists float32 (n, k) = +inf, slots int64 (n, k) = -1)."""
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


# ---- min-heaps -------------------------------------------------------------------------------
@kernel
def min_push(dists, ids, size, d, s):
    """Add ``(d, s)`` to the min-heap of ``size`` entries (the caller guarantees room)."""
    sift_up(dists, ids, size, d, s, before)


@kernel
def min_push_grow(dists, ids, size, d, s):
    """``min_push`` that doubles the arrays when they are full; returns the (possibly new) arrays."""
    if size == dists.shape[0]:
        dists = np.concatenate((dists, np.empty_like(dists)))
        ids = np.concatenate((ids, np.empty_like(ids)))
    min_push(dists, ids, size, d, s)
    return dists, ids


@kernel
def min_pop(dists, ids, size):
    """Remove the root of the min-heap of ``size >= 1`` entries."""
    if size > 1:
        sift_down(dists, ids, size - 1, dists[size - 1], ids[size - 1], before)
