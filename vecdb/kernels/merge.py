"""Merging two sorted top-k answers of the same queries into one (a staged scan's and an
index's), in one pass per row instead of several numpy calls holding the GIL."""
from __future__ import annotations

import numpy as np

from vecdb.kernels._jit import kernel


@kernel
def merge_sorted(ids_a, d_a, ids_b, d_b, out_ids, out_d):
    """Per row, the ``out_ids.shape[1]`` smallest of two answers sorted by distance (padded
    with -1 / +inf), closest first, each id once at its smallest distance; on equal distances
    ``a`` first. An id seen once is skipped after (rows are short: a linear look-back)."""
    k = out_ids.shape[1]
    for r in range(ids_a.shape[0]):
        i = 0
        j = 0
        n = 0
        na = ids_a.shape[1]
        nb = ids_b.shape[1]
        while n < k and (i < na or j < nb):
            take_a = j >= nb or (i < na and d_a[r, i] <= d_b[r, j])
            if take_a:
                ident = ids_a[r, i]
                dist = d_a[r, i]
                i += 1
            else:
                ident = ids_b[r, j]
                dist = d_b[r, j]
                j += 1
            if ident < 0:
                continue
            seen = False
            for m in range(n):
                if out_ids[r, m] == ident:
                    seen = True
                    break
            if seen:
                continue
            out_ids[r, n] = ident
            out_d[r, n] = dist
            n += 1
        for m in range(n, k):
            out_ids[r, m] = -1
            out_d[r, m] = np.inf
