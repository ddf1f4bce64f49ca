"""Scalar int8 quantizer: error bound, distances equal to decoded, argument checks."""
from __future__ import annotations

import numpy as np
import pytest

from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.kernels.sq8 import sq8_distances
from vecdb.quant import SQ8
from vecdb.types import Metric


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((600, 19)) * rng.random(19) * 10
    x[:, 4] = 2.5  # a constant dimension
    return x.astype(np.float32)


def test_error_is_at_most_half_a_step_inside_the_range(data: np.ndarray) -> None:
    sq = SQ8(19)
    sq.train(data)
    err = np.abs(sq.decode(sq.encode(data)) - data)
    assert (err <= sq.max_error() * (1 + 1e-5) + 1e-6).all()
    assert err[:, 4].max() == 0.0


def test_values_outside_the_range_are_clipped(data: np.ndarray) -> None:
    sq = SQ8(19)
    sq.train(data)
    far = data[:2] + 1000.0
    codes = sq.encode(far)
    assert (codes[:, np.flatnonzero(sq.step > 0)] == 255).all()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_distances_equal_brute_force_to_decoded(data: np.ndarray, metric: str) -> None:
    sq = SQ8(19)
    sq.train(data)
    codes = sq.encode(data)
    dec = sq.decode(codes).astype(np.float64)
    q = data[7] * 0.5 + 1.0
    qt, w, bias, mode = sq.fold_queries(q, metric)
    got = sq8_distances(qt[0], w, bias[0], codes, mode)
    want = ((dec - q) ** 2).sum(1) if metric == "l2" else -(dec @ q)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_checks(data: np.ndarray) -> None:
    sq = SQ8(19)
    with pytest.raises(FailedPreconditionError, match="not trained"):
        sq.encode(data)
    sq.train(data)
    with pytest.raises(InvalidArgumentError, match="codes must be uint8, got float32"):
        sq.decode(data)
    with pytest.raises(InvalidArgumentError, match="l2 and ip"):
        sq.fold_queries(data[:1], "hamming")
    params, arrays = sq.state()
    np.testing.assert_array_equal(SQ8.from_state(params, arrays).encode(data), sq.encode(data))


def test_the_trusted_path_matches_the_checked_one(data: np.ndarray) -> None:
    """``train_trusted``/``encode_trusted``/``decode_trusted``/``restore`` (what SPANN's postings
    use) give what ``train``/``encode``/``decode``/``from_state`` give."""
    checked, trusted = SQ8(19), SQ8(19)
    checked.train(data)
    trusted.train_trusted(data)
    assert trusted.is_trained
    np.testing.assert_array_equal(trusted.vmin, checked.vmin)
    np.testing.assert_array_equal(trusted.step, checked.step)
    codes = checked.encode(data)
    np.testing.assert_array_equal(trusted.encode_trusted(data), codes)
    np.testing.assert_array_equal(trusted.decode_trusted(codes), checked.decode(codes))
    restored = SQ8(19)
    restored.restore(checked.arrays())
    assert restored.is_trained
    np.testing.assert_array_equal(restored.encode(data), codes)
    with pytest.raises(ValueError, match="expected"):
        SQ8(19).restore({"vmin": np.zeros(3, np.float32), "step": np.zeros(3, np.float32)})


def test_the_l2_fold_without_constant_dimensions_is_the_stated_formula(data: np.ndarray) -> None:
    """With every dimension live, the l2 fold runs as one kernel (``fold_l2``): the same
    float64 formula rounded to float32, a zero bias, and the weights as a copy the caller may
    change without changing the codec."""
    live_data = np.delete(data, 4, axis=1)                     # no constant dimension
    sq = SQ8(18)
    sq.train(live_data)
    q = live_data[:7] * 1.5 - 0.25
    qt, w, bias, mode = sq.fold_queries_trusted(q, Metric.L2)
    v, s = sq.vmin.astype(np.float64), sq.step.astype(np.float64)
    assert mode == 0 and (s > 0).all()
    np.testing.assert_array_equal(qt, ((q.astype(np.float64) - v) / s).astype(np.float32))
    np.testing.assert_array_equal(w, (s * s).astype(np.float32))
    np.testing.assert_array_equal(bias, np.zeros(7, np.float32))
    w[:] = -1.0
    np.testing.assert_array_equal(sq.fold_queries_trusted(q, Metric.L2)[1], (s * s).astype(np.float32))


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_the_trusted_fold_is_the_stated_formula_after_train_and_restore(data: np.ndarray, metric: str) -> None:
    """``fold_queries_trusted`` (a one-query search's fold, its float64 forms computed at
    training) gives the values of the documented formula, constant dimension included, for
    the arrays of the last ``train_trusted`` or ``restore``, and what ``fold_queries`` gives."""
    sq = SQ8(19)
    sq.train_trusted(data[::-1] * 3)                           # replaced below: the cache must follow
    other = SQ8(19)
    other.train(data)
    sq.restore(other.arrays())
    q = data[3:6] * 0.5 + 1.0
    qt, w, bias, mode = sq.fold_queries_trusted(q, Metric.parse(metric))
    v, s, q64 = sq.vmin.astype(np.float64), sq.step.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        live = s > 0
        want_qt = np.where(live, (q64 - v) / np.where(live, s, 1.0), 0.0)
        want_w, want_b = s * s, np.where(live, 0.0, (q64 - v) ** 2).sum(1)
        assert mode == 0 and not live.all()
    else:
        want_qt, want_w, want_b = q64 * s, np.zeros(19), -(q64 @ v)
        assert mode == 1
    np.testing.assert_array_equal(qt, want_qt.astype(np.float32))
    np.testing.assert_array_equal(w, want_w.astype(np.float32))
    np.testing.assert_array_equal(bias, want_b.astype(np.float32))
    for got, want in zip(sq.fold_queries(q, metric), (qt, w, bias, mode)):
        np.testing.assert_array_equal(got, want)
