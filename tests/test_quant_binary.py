"""Binary codes: packing, Hamming/plane kernels vs numpy (Hypothesis), residual-plane error."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.kernels.binary_codes import (
    hamming_scan_topk,
    plane_distances,
    plane_scan_topk,
)
from vecdb.quant import Binary, pack_bits, pack_planes, unpack_bits, unpack_planes

NO_SUBSET = np.zeros(0, np.int64)


def reference_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance matrix from unpacked bits: numpy only."""
    bits_a = np.unpackbits(a.view(np.uint8), axis=1)
    bits_b = np.unpackbits(b.view(np.uint8), axis=1)
    return (bits_a[:, None, :] != bits_b[None, :, :]).sum(2)


def reference_topk(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by (distance, slot) with -1/+inf padding."""
    nq, n = dist.shape
    slots = np.full((nq, k), -1, np.int64)
    dists = np.full((nq, k), np.inf, np.float32)
    for i in range(nq):
        order = np.lexsort((np.arange(n), dist[i]))[:k]
        slots[i, : len(order)] = order
        dists[i, : len(order)] = dist[i, order]
    return slots, dists


@st.composite
def word_codes(draw):
    n_words = draw(st.integers(1, 5))
    n = draw(st.integers(1, 60))
    nq = draw(st.integers(1, 4))
    k = draw(st.integers(1, 12))
    chunks = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # few distinct words so that ties are common
    pool = rng.integers(0, 2**64 - 1, size=(8, n_words), dtype=np.uint64, endpoint=True)
    codes = pool[rng.integers(0, 8, n)]
    queries = rng.integers(0, 2**64 - 1, size=(nq, n_words), dtype=np.uint64, endpoint=True)
    return np.ascontiguousarray(queries), np.ascontiguousarray(codes), k, chunks, rng


@settings(max_examples=60, deadline=None)
@given(word_codes())
def test_hamming_scan_topk_equals_numpy_reference(case) -> None:
    queries, codes, k, chunks, rng = case
    slots, dists = hamming_scan_topk(queries, codes, NO_SUBSET, False, k, chunks)
    ref_s, ref_d = reference_topk(reference_hamming(queries, codes).astype(np.float32), k)
    np.testing.assert_array_equal(slots, ref_s)
    np.testing.assert_array_equal(dists, ref_d)
    subset = np.flatnonzero(rng.random(len(codes)) < 0.5).astype(np.int64)
    slots, dists = hamming_scan_topk(queries, codes, subset, True, k, chunks)
    full = np.full((len(queries), len(codes)), np.inf, np.float32)
    full[:, subset] = reference_hamming(queries, codes[subset])
    ref_s, ref_d = reference_topk(full, k)
    ref_s[np.isinf(ref_d)] = -1
    np.testing.assert_array_equal(slots, ref_s)
    np.testing.assert_array_equal(dists, ref_d)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 140), st.integers(0, 2**32 - 1), st.sampled_from(["l2", "ip"]))
def test_plane_distances_equal_numpy_on_reconstructions(bits: int, dim: int, seed: int, metric: str) -> None:
    """The popcount formula equals l2 / -ip between the reconstructions, for any plane count."""
    rng = np.random.default_rng(seed)
    codec = Binary(dim, bits, center=False)
    codec.train(rng.standard_normal((50, dim)).astype(np.float32))
    codes = codec.encode(rng.standard_normal((20, dim)).astype(np.float32))
    recon = codec.decode(codes).astype(np.float64)
    weights, const, mode = codec.plane_weights(metric)
    got = plane_distances(codes[0], codes, bits, codec.n_words, weights, const, mode)
    want = ((recon - recon[0]) ** 2).sum(1) if metric == "l2" else -(recon @ recon[0])
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    _, dists = plane_scan_topk(codes[:2], codes, bits, codec.n_words, weights, const, mode, NO_SUBSET, False, 5, 2)
    for i in range(2):
        ref = plane_distances(codes[i], codes, bits, codec.n_words, weights, const, mode)
        np.testing.assert_allclose(dists[i], np.sort(ref)[:5], rtol=1e-5, atol=1e-5 * scale)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(n: int, planes: int, dim: int, seed: int) -> None:
    bits = np.random.default_rng(seed).integers(0, 2, size=(n, planes, dim), dtype=np.uint8)
    packed = pack_planes(bits)
    assert packed.dtype == np.uint64 and packed.shape == (n, planes * ((dim + 63) // 64))
    np.testing.assert_array_equal(unpack_planes(packed, planes, dim), bits)
    np.testing.assert_array_equal(unpack_bits(pack_bits(bits[:, 0]), dim), bits[:, 0])


@pytest.mark.parametrize("bits", [0, 5])
def test_bits_per_dim_outside_1_to_4_is_rejected(bits: int) -> None:
    with pytest.raises(InvalidArgumentError, match="bits_per_dim must be in 1..4"):
        Binary(16, bits)


def test_untrained_and_wrong_dtype_are_rejected() -> None:
    codec = Binary(16, 2)
    with pytest.raises(FailedPreconditionError, match="not trained"):
        codec.encode(np.zeros((1, 16), np.float32))
    codec.train(np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32))
    with pytest.raises(InvalidArgumentError, match="codes must be uint64, got uint8"):
        codec.decode(np.zeros((1, 2), np.uint8))
    with pytest.raises(InvalidArgumentError, match=r"shape \(n, 2\)"):
        codec.decode(np.zeros((1, 3), np.uint64))


@pytest.mark.parametrize("rotate", [False, True])
def test_each_plane_removes_its_squared_scale_from_the_training_error(rotate: bool) -> None:
    """Error bound: on the training data, MSE = mean(z²) - Σ α_p² exactly, so it falls with bits."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((800, 48)) * rng.random(48) * 3 + 1.0).astype(np.float32)
    errors = []
    for bits in (1, 2, 3, 4):
        codec = Binary(48, bits, rotate=rotate)
        codec.train(x)
        mse = float(((x.astype(np.float64) - codec.decode(codec.encode(x))) ** 2).mean())
        z = codec.transform(x).astype(np.float64)
        assert mse == pytest.approx(float((z**2).mean() - (codec.scales.astype(np.float64) ** 2).sum()), rel=1e-3)
        errors.append(mse / float((z**2).mean()))
    # measured relative MSE: no rotation 0.515, 0.212, 0.124, 0.074; rotation 0.367, 0.133,
    # 0.060, 0.034 (uneven Gaussian dims, seed 5) — the rotation evens dimensions out
    bounds = (0.40, 0.16, 0.08, 0.05) if rotate else (0.56, 0.25, 0.15, 0.09)
    assert all(e < b for e, b in zip(errors, bounds))
    assert errors == sorted(errors, reverse=True)


def test_one_plane_code_distance_is_monotone_in_hamming() -> None:
    rng = np.random.default_rng(9)
    codec = Binary(70, 1)
    codec.train(rng.standard_normal((100, 70)).astype(np.float32))
    codes = codec.encode(rng.standard_normal((30, 70)).astype(np.float32))
    ham = reference_hamming(codes[:1], codes)[0]
    a2 = float(codec.scales[0]) ** 2
    np.testing.assert_allclose(codec.code_distances(codes[0], codes, "l2"), 4 * a2 * ham, rtol=1e-5)
    np.testing.assert_allclose(codec.code_distances(codes[0], codes, "ip"), -a2 * (70 - 2 * ham), rtol=1e-5, atol=1e-4)
