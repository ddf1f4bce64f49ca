"""Dataset readers, synthetic generators, registry, ground truth and recall."""
from __future__ import annotations

import numpy as np
import pytest

from vecdb.data import Dataset, load_dataset
from vecdb.data.formats import (read_ann_hdf5, read_npy_folder, read_vecs, read_vecs_folder, write_ann_hdf5,
                                write_npy_folder, write_vecs)
from vecdb.data.synthetic import gaussian_mixture, synthetic_dataset, tenant_labels
from vecdb.errors import DataLossError, InvalidArgumentError, NotFoundError
from vecdb.eval import ground_truth, recall_at_k
from vecdb.types import Metric


@pytest.mark.parametrize("suffix, dtype", [(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)])
def test_vecs_round_trip(tmp_path, rng, suffix, dtype):
    x = (rng.random((7, 5)) * 100).astype(dtype)
    write_vecs(tmp_path / f"a{suffix}", x)
    np.testing.assert_array_equal(read_vecs(tmp_path / f"a{suffix}"), x)


def test_truncated_vecs_file_is_data_loss(tmp_path, rng):
    write_vecs(tmp_path / "a.fvecs", rng.random((3, 4)))
    raw = (tmp_path / "a.fvecs").read_bytes()
    (tmp_path / "a.fvecs").write_bytes(raw[:-3])
    with pytest.raises(DataLossError, match="not a multiple"):
        read_vecs(tmp_path / "a.fvecs")
    with pytest.raises(InvalidArgumentError):
        read_vecs(tmp_path / "a.txt")


def test_texmex_folder(tmp_path, rng):
    base, queries = rng.random((20, 4)), rng.random((3, 4))
    write_vecs(tmp_path / "sift_base.fvecs", base)
    write_vecs(tmp_path / "sift_query.fvecs", queries)
    write_vecs(tmp_path / "sift_groundtruth.ivecs", np.zeros((3, 2), np.int32))
    ds = read_vecs_folder(tmp_path)
    assert ds.base.shape == (20, 4) and ds.queries.shape == (3, 4) and ds.gt_ids.shape == (3, 2)
    assert load_dataset(str(tmp_path)).base.shape == (20, 4)


def test_hdf5_and_npy_folder_round_trip(tmp_path):
    ds = synthetic_dataset(300, 8, n_queries=10, metric=Metric.COSINE, n_tenants=5).with_ground_truth(10)
    write_ann_hdf5(tmp_path / "x.hdf5", ds)
    back = read_ann_hdf5(tmp_path / "x.hdf5")
    assert back.metric is Metric.COSINE
    np.testing.assert_array_equal(back.base, ds.base)
    np.testing.assert_array_equal(back.gt_ids, ds.gt_ids)
    write_npy_folder(tmp_path / "npy", ds)
    back = read_npy_folder(tmp_path / "npy")
    np.testing.assert_array_equal(back.labels_indices, ds.labels_indices)
    assert back.metric is Metric.COSINE and load_dataset(str(tmp_path / "npy")).queries.shape == (10, 8)


def test_broken_hdf5_is_data_loss(tmp_path):
    (tmp_path / "x.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DataLossError):
        read_ann_hdf5(tmp_path / "x.hdf5")


def test_gaussian_mixture_is_deterministic_and_clustered():
    a = gaussian_mixture(500, 16, n_clusters=5, seed=3)
    np.testing.assert_array_equal(a, gaussian_mixture(500, 16, n_clusters=5, seed=3))
    assert a.dtype == np.float32 and a.shape == (500, 16)
    # clustered: nearest-neighbour distances are far below the mean pairwise distance
    d = ((a[:50, None] - a[None]) ** 2).sum(-1)
    np.fill_diagonal(d[:, :50], np.inf)
    assert np.median(d.min(1)) < 0.2 * np.median(d[np.isfinite(d)])


def test_tenant_labels_are_zipf_sized_and_shared():
    indptr, indices = tenant_labels(20000, 50, zipf_a=1.2, shared_fraction=0.3, seed=1)
    sizes = np.bincount(indices, minlength=50)
    assert sizes[0] > 5 * sizes[-1]                         # head tenants are much larger than tail ones
    per_row = np.diff(indptr)
    assert per_row.min() == 1 and (per_row > 1).mean() > 0.2  # every vector has an owner, many are shared
    for r in range(100):                                      # no tenant listed twice for one row
        row = indices[indptr[r] : indptr[r + 1]]
        assert len(set(row.tolist())) == len(row)


def test_registry_names():
    ds = load_dataset("synthetic-2k-16-cosine")
    assert ds.base.shape == (2000, 16) and ds.metric is Metric.COSINE
    digits = load_dataset("digits-64-euclidean")          # bundled in datasets/
    assert digits.base.shape == (1697, 64) and digits.gt_ids.shape == (100, 100)
    with pytest.raises(NotFoundError, match="unknown dataset"):
        load_dataset("no-such-set")
    with pytest.raises(NotFoundError, match="ann-benchmarks"):
        load_dataset("ann:not-a-set")


def test_ground_truth_matches_bundled_and_recall():
    digits = load_dataset("digits-64-euclidean")
    ids, _ = ground_truth(digits.base, digits.queries, 10, digits.metric)
    assert recall_at_k(ids, digits.gt_ids, 10) == 1.0
    fake = ids.copy()
    fake[:, 5:] = -1
    assert recall_at_k(fake, digits.gt_ids, 10) == pytest.approx(0.5)
    assert recall_at_k(ids[:, ::-1], digits.gt_ids, 10) == 1.0


def test_dataset_ground_truth_is_computed_when_missing():
    ds = Dataset("t", Metric.L2, np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)[:2])
    ds.with_ground_truth(2)
    np.testing.assert_array_equal(ds.gt_ids[:, 0], [0, 1])


def test_texmex_folder_metric_and_bvecs_base(tmp_path, rng):
    folder = tmp_path / "bytes-angular"
    folder.mkdir()
    write_vecs(folder / "b_base.bvecs", rng.integers(0, 255, (30, 8)).astype(np.uint8))
    write_vecs(folder / "b_query.fvecs", rng.random((4, 8)))
    ds = read_vecs_folder(folder)
    assert ds.metric is Metric.COSINE and ds.base.dtype == np.float32 and ds.base.shape == (30, 8) and ds.gt_ids is None
    (folder / "info.json").write_text('{"metric": "euclidean"}')  # info.json names it: that wins
    assert read_vecs_folder(folder).metric is Metric.L2
    assert read_vecs_folder(folder, "ip").metric is Metric.IP


def test_npy_folder_labels_and_query_labels(tmp_path, rng):
    base, queries = rng.random((6, 4)).astype(np.float32), rng.random((3, 4)).astype(np.float32)
    folder = tmp_path / "one"
    write_npy_folder(folder, Dataset("one", Metric.L2, base, queries))
    np.save(folder / "labels.npy", np.array([2, 0, 1, 2, 2, 0], np.int32))
    np.save(folder / "query_labels.npy", np.array([1, 2, 0], np.int32))
    ds = read_npy_folder(folder)  # one label per row becomes a CSR of one entry each
    assert ds.labels_indptr.tolist() == list(range(7)) and ds.labels_indices.tolist() == [2, 0, 1, 2, 2, 0]
    assert ds.query_labels.tolist() == [1, 2, 0]
    (folder / "query_labels.npy").unlink()  # the queries' CSR: their first label is the primary one
    np.save(folder / "query_labels_indptr.npy", np.array([0, 2, 2, 3], np.int64))
    np.save(folder / "query_labels_indices.npy", np.array([4, 1, 3], np.int32))
    assert read_npy_folder(folder).query_labels.tolist() == [4, -1, 3]
    np.save(folder / "labels.npy", np.zeros(5, np.int32))  # not one per base row
    with pytest.raises(DataLossError):
        read_npy_folder(folder)
