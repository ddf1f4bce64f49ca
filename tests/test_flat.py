"""FlatIndex equals a numpy brute force exactly, on random and real data, on both search paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import vecdb
from vecdb.data.formats import read_npy_folder
from vecdb.eval import tie_aware_equal
from vecdb.index.flat import BLAS_MIN_QUERIES, FlatIndex

DIGITS = Path(__file__).resolve().parents[1] / "datasets" / "digits-64-euclidean"


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 numpy oracle: (ids, distances) with ties to the smaller id."""
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "l2":
        d = (q * q).sum(1)[:, None] - 2 * q @ b.T + (b * b).sum(1)[None, :]
        d = np.maximum(d, 0)
    elif metric == "ip":
        d = -(q @ b.T)
    else:
        bn = np.linalg.norm(b, axis=1)
        qn = np.linalg.norm(q, axis=1)
        bn[bn == 0] = 1
        qn[qn == 0] = 1
        d = 1 - (q / qn[:, None]) @ (b / bn[:, None]).T
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(d, order, 1).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("n_queries", [3, BLAS_MIN_QUERIES + 20])
def test_flat_equals_numpy_on_random_data(metric, n_queries, rng):
    base = rng.standard_normal((2500, 48)).astype(np.float32)
    queries = rng.standard_normal((n_queries, 48)).astype(np.float32)
    index = FlatIndex(48, metric)
    index.add(base)
    ids, dist = index.search(queries, 10)
    ref_ids, ref_dist = brute_force(base, queries, 10, metric)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_few_queries_on_many_short_rows_use_blas_and_stay_exact(metric, rng):
    base = rng.standard_normal((40000, 12)).astype(np.float32)    # n and dim select the BLAS path
    queries = rng.standard_normal((3, 12)).astype(np.float32)
    index = FlatIndex(12, metric)
    index.add(base)
    ids, dist = index.search(queries, 10)
    ref_ids, ref_dist = brute_force(base, queries, 10, metric)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_flat_equals_numpy_on_real_digits(metric):
    ds = read_npy_folder(DIGITS)
    index = FlatIndex(ds.dim, metric)
    index.add(ds.base)
    for queries in (ds.queries[:5], ds.queries):   # direct scan and BLAS path
        ids, dist = index.search(queries, 10)
        ref_ids, ref_dist = brute_force(ds.base, queries, 10, metric)
        # digits are small integers: exact distance ties are common, so compare tie-aware
        assert tie_aware_equal(ids, dist, ref_ids, ref_dist, rtol=1e-5, atol=1e-3)
    if metric == "l2":
        ids, _ = index.search(ds.queries, 10)
        # the shipped ground truth uses plain L2 (same ranking) with ties to the smaller id
        np.testing.assert_allclose(np.sqrt(index.search(ds.queries, 10).distances), ds.gt_dists[:, :10], rtol=1e-5, atol=1e-4)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), k=st.integers(1, 80), nq=st.sampled_from([1, 2, 40]))
def test_flat_property_against_oracle_with_duplicates(seed, n, k, nq):
    rng = np.random.default_rng(seed)
    base = np.round(rng.standard_normal((n, 5)) * 2).astype(np.float32)   # many ties and duplicates
    queries = np.round(rng.standard_normal((nq, 5)) * 2).astype(np.float32)
    index = FlatIndex(5, "l2")
    index.add(base)
    ids, dist = index.search(queries, k)
    kk = min(k, n)
    ref_ids, ref_dist = brute_force(base, queries, kk, "l2")
    np.testing.assert_allclose(dist[:, :kk], ref_dist, rtol=1e-5, atol=1e-4)
    assert tie_aware_equal(ids[:, :kk], dist[:, :kk], ref_ids, ref_dist, atol=1e-4)
    assert (ids[:, kk:] == -1).all() and np.isinf(dist[:, kk:]).all()


def test_search_pads_with_minus_one_and_inf_when_k_exceeds_size(rng):
    index = FlatIndex(4)
    index.add(rng.standard_normal((3, 4)))
    ids, dist = index.search(rng.standard_normal(4), 5)
    assert ids.shape == (1, 5) and dist.dtype == np.float32 and ids.dtype == np.int64
    assert (ids[0, 3:] == -1).all() and np.isinf(dist[0, 3:]).all()
    assert np.all(np.diff(dist[0, :3]) >= 0)


def test_empty_index_returns_padded_rows(rng):
    ids, dist = FlatIndex(4).search(rng.standard_normal((2, 4)), 3)
    assert (ids == -1).all() and np.isinf(dist).all()


def test_custom_ids_remove_and_readd(rng):
    base = rng.standard_normal((100, 8)).astype(np.float32)
    index = FlatIndex(8)
    index.add(base, ids=np.arange(1000, 1100))
    assert index.remove([1000, 1001, 5]) == 2
    assert len(index) == 98 and 1000 not in index
    ids, _ = index.search(base[:2], 1)
    assert ids[0, 0] != 1000 and ids[1, 0] != 1001
    index.add(base[:1], ids=[1000])
    assert index.search(base[0], 1).ids[0, 0] == 1000
    # the remaining ids still find their own vectors after the compaction moved rows
    ids, dist = index.search(base[2:], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(1002, 1100))


def test_default_ids_continue_after_the_largest(rng):
    index = FlatIndex(3)
    index.add(rng.standard_normal((2, 3)), ids=[10, 20])
    index.add(rng.standard_normal((2, 3)))
    assert sorted(index.ids.tolist()) == [10, 20, 21, 22]


@pytest.mark.parametrize("n_queries", [2, 40])
def test_allow_restricts_results_exactly(n_queries, rng):
    base = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((n_queries, 16)).astype(np.float32)
    index = FlatIndex(16, "cosine")
    index.add(base)
    allow = np.arange(3, 500, 7)
    ids, dist = index.search(queries, 5, allow=allow)
    ref_ids, ref_dist = brute_force(base[allow], queries, 5, "cosine")
    np.testing.assert_array_equal(ids, allow[ref_ids])
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    ids, _ = index.search(queries, 5, allow={7, 99999})
    assert (ids[:, 0] == 7).all() and (ids[:, 1:] == -1).all()
    assert (index.search(queries, 5, allow=[]).ids == -1).all()


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip_gives_identical_results(tmp_path, rng, mmap):
    base = rng.standard_normal((300, 12)).astype(np.float32)
    index = FlatIndex(12, "ip")
    index.add(base, ids=np.arange(300) * 3)
    index.remove([0, 3])
    index.save(tmp_path / "idx")
    loaded = vecdb.load_index(tmp_path / "idx", mmap=mmap)
    assert isinstance(loaded, FlatIndex) and len(loaded) == 298 and loaded.metric.value == "ip"
    q = rng.standard_normal((20, 12))
    a, b = index.search(q, 7), loaded.search(q, 7)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.distances, b.distances)
    loaded.add(base[:1], ids=[1])                 # a loaded (even memory-mapped) index stays writable
    assert 1 in loaded
    index.save(tmp_path / "idx")                  # overwriting an existing save works
    assert len(vecdb.load_index(tmp_path / "idx")) == 298


def test_memory_bytes_counts_vectors(rng):
    index = FlatIndex(64)
    index.add(rng.standard_normal((1000, 64)))
    assert index.memory_bytes() >= 1000 * 64 * 4
