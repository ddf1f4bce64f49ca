"""The merge kernels: folding scanned rows into an answer (``merge_rows``) gives exactly what a
top-k of the rows merged by ``merge_sorted`` gives, ties, dead rows and ids already in the
answer included."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.kernels.merge import merge_rows, merge_sorted

DIM = 4


def rows_topk(queries: np.ndarray, rows: np.ndarray, ids: np.ndarray, dead: np.ndarray, metric: int,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k of the live rows, closest first, earlier rows first on ties."""
    out_ids = np.full((len(queries), k), -1, np.int64)
    out_d = np.full((len(queries), k), np.inf, np.float32)
    live = np.flatnonzero(~dead)
    for i, q in enumerate(queries):
        if metric == 0:
            d = ((rows[live] - q) ** 2).sum(axis=1, dtype=np.float32)
        else:
            d = -(rows[live] @ q)
        order = np.argsort(d, kind="stable")[:k]
        out_ids[i, :len(order)] = ids[live][order]
        out_d[i, :len(order)] = d[order]
    return out_ids, out_d


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31), metric=st.sampled_from([0, 1]), k=st.integers(1, 8), n_index=st.integers(0, 8),
       n_rows=st.integers(0, 30), n_queries=st.integers(1, 3), shared=st.integers(0, 4))
def test_folding_rows_in_equals_merging_their_top_k(seed: int, metric: int, k: int, n_index: int, n_rows: int,
                                                    n_queries: int, shared: int) -> None:
    rng = np.random.default_rng(seed)
    # small integer coordinates: many exactly equal distances
    rows = rng.integers(-2, 3, (n_rows, DIM)).astype(np.float32)
    queries = rng.integers(-2, 3, (n_queries, DIM)).astype(np.float32)
    row_ids = rng.permutation(1000)[:n_rows].astype(np.int64)
    dead = rng.random(n_rows) < 0.2
    # the index's answer: other points, plus some of the rows' ids (a row being moved is in both)
    pool = np.concatenate([np.arange(1000, 1000 + n_index), row_ids[:shared]]).astype(np.int64)
    pool_vecs = np.concatenate([rng.integers(-2, 3, (n_index, DIM)).astype(np.float32), rows[:shared]])
    index_ids, index_d = rows_topk(queries, pool_vecs, pool, np.zeros(len(pool), bool), metric, k)
    scan_ids, scan_d = rows_topk(queries, rows, row_ids, dead, metric, k)
    want_ids, want_d = np.empty_like(index_ids), np.empty_like(index_d)
    merge_sorted(index_ids, index_d, scan_ids, scan_d, want_ids, want_d)
    got_ids, got_d = index_ids.copy(), index_d.copy()
    merge_rows(queries, rows, row_ids, dead, metric, got_ids, got_d)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_ids, want_ids)
