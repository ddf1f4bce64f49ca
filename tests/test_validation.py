"""Bad input raises a vecdb error that names the problem, and changes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

import vecdb
from vecdb.errors import AlreadyExistsError, DataLossError, DimensionMismatchError, InvalidArgumentError
from vecdb.index.flat import FlatIndex
from vecdb.types import Metric


@pytest.fixture
def index(rng) -> FlatIndex:
    ix = FlatIndex(4)
    ix.add(rng.standard_normal((10, 4)))
    return ix


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 5)), "dim 5, expected 4"),
    (np.array([[1, 2, np.nan, 4]]), "NaN or inf"),
    (np.array([[1, 2, np.inf, 4]]), "NaN or inf"),
    (np.array([["a", "b", "c", "d"]]), "numeric dtype"),
    (np.array([[1 + 1j, 2, 3, 4]]), "numeric dtype"),
    (np.zeros((2, 2, 4)), "1-D or 2-D"),
    ([[1, 2], [3]], "numeric"),
])
def test_bad_vectors_are_rejected_and_nothing_is_added(index, bad, message):
    with pytest.raises(InvalidArgumentError, match=message):
        index.add(bad)
    assert len(index) == 10


def test_wrong_dimension_is_a_dimension_mismatch(index):
    with pytest.raises(DimensionMismatchError):
        index.search(np.zeros(3), 1)


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True, None])
def test_bad_k_is_rejected(index, k):
    with pytest.raises(InvalidArgumentError, match="k must"):
        index.search(np.zeros(4), k)


def test_nan_query_is_rejected(index):
    with pytest.raises(InvalidArgumentError, match="queries contain NaN"):
        index.search(np.array([0, np.nan, 0, 0]), 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(4,), (1, 4), (3, 4)])
def test_non_finite_float32_queries_are_rejected_on_the_fast_path(index, bad, shape):
    q = np.zeros(shape, np.float32)
    q.reshape(-1)[-1] = bad
    with pytest.raises(InvalidArgumentError, match="queries contain NaN or inf"):
        index.search(q, 1)
    with pytest.raises(InvalidArgumentError, match="vectors contain NaN or inf"):
        index.add(q)
    assert len(index) == 10


@pytest.mark.parametrize("nq, dim", [(1, 4), (1, 500), (1, 501), (2, 384), (1, 1536), (1, 4000), (1, 4001), (30, 384)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_search_boundary_finds_any_non_finite_value_at_any_size(nq, dim, bad):
    """``checked_queries`` sums small queries in chunks (numpy keeps the GIL for each): a bad
    value in any chunk, the last partial one included, is found; finite ones, however large, pass."""
    from vecdb.validation import checked_queries
    size = nq * dim
    for at in sorted({0, 499, 500, size // 2, size - 1} & set(range(size))):
        q = np.full((nq, dim), 3e38, np.float32)
        assert checked_queries(q, dim) is q
        q.reshape(-1)[at] = bad
        with pytest.raises(InvalidArgumentError, match="queries contain NaN or inf"):
            checked_queries(q, dim)


def test_huge_finite_values_are_accepted(index):
    """A sum of squares that overflows float32 is no reason to reject finite input."""
    big = np.full((1, 4), 3e38, np.float32)
    index.add(big, ids=[500])
    assert index.search(big, 1).ids[0, 0] == 500
    assert index.search(big.astype(np.float64), 1).ids[0, 0] == 500


@pytest.mark.parametrize("tenant", [-1, 1.0, "t", True, None, 2**63])
def test_bad_tenant_numbers_are_rejected(index, rng, tenant):
    from vecdb.validation import as_tenant

    with pytest.raises(InvalidArgumentError, match="tenant"):
        as_tenant(tenant)
    if tenant is not None:
        with pytest.raises(InvalidArgumentError, match="tenant"):
            index.add(rng.standard_normal((1, 4)), ids=[600], tenant=tenant)
        assert 600 not in index


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(InvalidArgumentError, match="l2, ip, cosine"):
        FlatIndex(4, "manhattan")
    assert Metric.parse("COSINE") is Metric.COSINE


def test_metric_unsupported_by_the_index_is_rejected():
    with pytest.raises(InvalidArgumentError, match="does not support metric 'hamming'"):
        FlatIndex(4, "hamming")


@pytest.mark.parametrize("dim", [0, -3, 2.0])
def test_bad_dim_is_rejected(dim):
    with pytest.raises(InvalidArgumentError, match="dim"):
        FlatIndex(dim)


def test_duplicate_ids_within_a_call(index, rng):
    with pytest.raises(InvalidArgumentError, match="duplicate ids"):
        index.add(rng.standard_normal((2, 4)), ids=[50, 50])
    assert len(index) == 10


def test_ids_already_stored(index, rng):
    with pytest.raises(AlreadyExistsError, match=r"\[3\]"):
        index.add(rng.standard_normal((2, 4)), ids=[3, 99])
    assert 99 not in index and len(index) == 10


@pytest.mark.parametrize("ids, message", [([1, 2, 3], "got 3 ids for 2"), ([-1, 5], "non-negative"),
                                          (["a", "b"], "integers"), ([1.5, 2.5], "integers")])
def test_bad_ids(index, rng, ids, message):
    with pytest.raises(InvalidArgumentError, match=message):
        index.add(rng.standard_normal((2, 4)), ids=ids)


def test_unknown_search_parameter(index):
    with pytest.raises(InvalidArgumentError, match="unknown search parameter"):
        index.search(np.zeros(4), 1, ef=10)


def test_integer_vectors_are_accepted_as_float32(index):
    index.add(np.ones((1, 4), dtype=np.int64), ids=[77])
    assert index.search(np.ones(4), 1).ids[0, 0] == 77


def test_corrupt_or_missing_saved_index_is_data_loss(tmp_path, index):
    with pytest.raises(DataLossError, match="meta.json missing"):
        vecdb.load_index(tmp_path / "nothing")
    index.save(tmp_path / "ix")
    (tmp_path / "ix" / "vectors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataLossError, match="corrupt"):
        vecdb.load_index(tmp_path / "ix")
    index.save(tmp_path / "ix2")
    meta = json.loads((tmp_path / "ix2" / "meta.json").read_text())
    (tmp_path / "ix2" / "meta.json").write_text(json.dumps(dict(meta, version=99)))
    with pytest.raises(DataLossError, match="version 99"):
        vecdb.load_index(tmp_path / "ix2")
    (tmp_path / "ix2" / "meta.json").write_text("{not json")
    with pytest.raises(DataLossError, match="corrupt index metadata"):
        vecdb.load_index(tmp_path / "ix2")


def test_truncated_vectors_array_is_data_loss(tmp_path, index):
    index.save(tmp_path / "ix")
    np.save(tmp_path / "ix" / "vectors.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataLossError, match="shape"):
        vecdb.load_index(tmp_path / "ix")


def test_every_error_knows_its_grpc_status():
    classes = vecdb.errors.error_classes()
    assert classes["DimensionMismatchError"].grpc_code == "INVALID_ARGUMENT"
    assert classes["CollectionNotFoundError"].grpc_code == "NOT_FOUND"
    assert all(isinstance(c.grpc_code, str) for c in classes.values())
    assert issubclass(classes["InvalidArgumentError"], ValueError)


def test_positive_int_upper_bound():
    from vecdb.validation import as_positive_int

    assert as_positive_int(100_000, "ef", maximum=100_000) == 100_000
    for huge in (100_001, 2 ** 62, 10 ** 30):
        with pytest.raises(InvalidArgumentError, match="ef must be <= 100000"):
            as_positive_int(huge, "ef", maximum=100_000)


@pytest.mark.parametrize("path, message", [
    ("", "empty"), ("a\0b", "NUL"), ("x" * 5000, "4096"), ("d/" + "y" * 300, "component"),
    ("bad\ud800", "surrogate"), (b"bytes", "string path"), (7, "string path"),
])
def test_file_system_paths_are_checked_before_use(path, message):
    from vecdb.validation import as_fs_path

    with pytest.raises(InvalidArgumentError, match=message):
        as_fs_path(path, what="snapshot path")
    assert as_fs_path("snapshots/2026-11-29") == "snapshots/2026-11-29"
