"""Merging two sorted top-k answers of the same queries into one (a staged scan's and an
index's), in one pass per row instead of several numpy calls holding the GIL; or folding
scanned rows straight into an answer (``merge_rows``)."""
from __future__ import annotations

import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.distances import dot, l2_sq


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


@kernel
def merge_rows(queries, rows, row_ids, dead, metric, out_ids, out_d):
    """Fold exactly scanned ``rows`` (ids ``row_ids``; ``dead[r]`` rows skipped) into each
    query's sorted top-k answer ``out_ids``/``out_d`` in place (padded with -1 / +inf): the
    staged rows of a few queries merged with the index's answer in one pass, without a
    top-k of their own. ``metric`` 0: squared L2, else -<q, x>. A row enters when strictly
    closer than the k-th (so on equal distances what is there stays first, and earlier rows
    before later ones: ``merge_sorted``'s order); an id already there keeps its smaller
    distance."""
    k = out_ids.shape[1]
    for i in range(queries.shape[0]):
        q = queries[i]
        ids = out_ids[i]
        dists = out_d[i]
        for r in range(rows.shape[0]):
            if dead[r]:
                continue
            d = l2_sq(q, rows[r]) if metric == 0 else -dot(q, rows[r])
            if not d < dists[k - 1]:
                continue
            ident = row_ids[r]
            at = k - 1                       # where the row goes: after every entry <= d
            while at > 0 and not dists[at - 1] <= d:
                at -= 1
            seen = -1
            for m in range(k):
                if ids[m] == ident:
                    seen = m
                    break
            if seen >= 0:
                if seen < at:                # already there, as close or closer
                    continue
                last = seen                  # moves up from its old place
            else:
                last = k - 1                 # the k-th drops out
            for m in range(last, at, -1):
                ids[m] = ids[m - 1]
                dists[m] = dists[m - 1]
            ids[at] = ident
            dists[at] = d
