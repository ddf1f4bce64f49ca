"""Nearest-head search of SPANN: which postings a vector is stored in and a query reads.

Heads are posting centroids, and on clustered data they are not spread like the vectors
HNSW is built for: a Gaussian mixture with more components than heads gives heads between
components, and the graph over them splits into islands a greedy search does not leave
(128-d mixture, 1,304 heads: the graph's first head was the nearest one for ~50 % of the
vectors, even at ef = 1,500). A vector stored under a far head and a query reading far
postings then cap recall whatever ``max_postings`` is. Up to ``exact_heads`` heads the search
is an exact scan of the centroids (a graph search with ef = 64 computes about as many
distances), past it the HNSW over the heads, which has the same weakness: on that mixture
(500k rows, grouped by component) handing over to the graph at 2,048 heads left recall at
0.37, against 0.98 exact. Size ``exact_heads`` to the heads the data will grow to there.
"""
from __future__ import annotations

import numpy as np

from vecdb.index.hnsw import HNSW
from vecdb.kernels import topk

#: default ``exact_heads``: heads up to which nearest-head search is an exact scan
EXACT_HEADS = 4096
#: queries from which the exact scan runs in parallel over queries
PARALLEL_QUERIES = 16
#: rows from which the exact scan is matrix products (inserts come in batches)
BLAS_ROWS = 256
#: distances per block of the blocked scan (rows x heads; 64 MB of float32)
BLOCK_CELLS = 1 << 24


def nearest_heads(graph: HNSW, x: np.ndarray, k: int, ef: int, exact_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest heads of each row of ``x`` (C-contiguous float32): (ids (n, k) int64,
    routing distances (n, k) float32, squared L2 or -ip), sorted, -1 / +inf padded. An exact
    scan when the graph holds at most ``exact_heads`` heads, else an HNSW search with beam ``ef``."""
    n_heads = len(graph)
    if n_heads == 0:
        return np.full((len(x), k), -1, np.int64), np.full((len(x), k), np.inf, np.float32)
    if n_heads > exact_heads:
        found = graph.search_trusted(x, k, None, None, graph.resolve_params({"ef": max(ef, k)}))
        return found.ids, found.distances
    slot_ids = graph._ids.slot_ids
    rows = graph._vecs[: len(slot_ids)]
    metric = graph._metric_code
    if n_heads < len(slot_ids):             # freed graph slots (SPANN frees none; a guard)
        slots, dists = topk.scan_subset(x, rows, np.flatnonzero(slot_ids >= 0).astype(np.int64), metric, k)
    elif len(x) >= BLAS_ROWS:
        slots, dists = _blocked(x, rows, metric == 0, k)
    elif len(x) < PARALLEL_QUERIES:
        slots, dists = topk.scan_topk(x, rows, metric, k)
    else:
        slots, dists = topk.scan_topk_chunked(x, rows, metric, k, 1)
    ids = np.where(slots >= 0, slot_ids[np.maximum(slots, 0)], -1).astype(np.int64, copy=False)
    return ids, dists


def _blocked(x: np.ndarray, rows: np.ndarray, l2: bool, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of many rows by blocks of matrix products (squared L2 from norms, or -ip),
    each block's top-k taken by a parallel heap kernel (numpy's argpartition cost 5-30x the
    product at 38k heads): (slots, dists) sorted, -1 / +inf padded."""
    n, m = len(x), len(rows)
    slots = np.empty((n, k), np.int64)
    dists = np.empty((n, k), np.float32)
    row_sq = np.einsum("ij,ij->i", rows, rows) if l2 else None
    block = max(16, BLOCK_CELLS // max(m, 1))
    for lo in range(0, n, block):
        xb = x[lo : lo + block]
        d = xb @ rows.T
        if l2:
            d *= -2.0
            d += row_sq[None, :]
            d += np.einsum("ij,ij->i", xb, xb)[:, None]
            np.maximum(d, 0.0, out=d)
        else:
            np.negative(d, out=d)
        slots[lo : lo + len(xb)], dists[lo : lo + len(xb)] = topk.topk_rows(d, k)
    return slots, dists
