r"""Binary codes: sign bits after centring (and an optional random rotation), plus more
bit-planes by recurrent residual binarisation.

With :math:`z = (x - \mu) R` (``R`` identity unless ``rotate``), plane 0 stores
:math:`a_0 = \mathrm{sign}(z)` with scale :math:`\alpha_0 = \mathrm{mean}|z|`; plane p stores the
sign of what the earlier planes left, :math:`r_p = z - \sum_{i<p} \alpha_i a_i`, with
:math:`\alpha_p = \mathrm{mean}|r_p|` (the scale that minimises the squared error of a sign
code, so each plane removes :math:`\alpha_p^2` of the mean squared error on the training data).
Decoding is :math:`\hat x = \mu + (\sum_p \alpha_p a_p) R^\top`.

Codes are uint64 rows of ``bits_per_dim * n_words`` words (plane p in words
``[p*n_words, (p+1)*n_words)``, ``n_words = ceil(dim / 64)``, padding bits 0). A random rotation
spreads variance evenly over dimensions, so each sign bit carries similar information.
Distances between codes are popcount-only (see ``vecdb.kernels.binary_codes``): one plane is
plain Hamming distance, several planes weight their popcounts by the plane scales.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.errors import InvalidArgumentError
from vecdb.kernels import binary_codes as bk
from vecdb.kernels.hamming import pack_bits, unpack_bits
from vecdb.quant.base import BaseCodec, random_rotation
from vecdb.types import F32Matrix, Metric
from vecdb.validation import as_positive_int

__all__ = ["Binary", "pack_bits", "pack_planes", "unpack_bits", "unpack_planes"]


def pack_planes(bits: np.ndarray) -> np.ndarray:
    """Pack 0/1 planes (n, n_planes, dim) into uint64 codes (n, n_planes * ceil(dim/64))."""
    bits = np.asarray(bits)
    n, n_planes, _ = bits.shape
    words = [pack_bits(bits[:, p, :]) for p in range(n_planes)]
    return np.ascontiguousarray(np.concatenate(words, axis=1)) if words else np.zeros((n, 0), np.uint64)


def unpack_planes(codes: np.ndarray, n_planes: int, dim: int) -> np.ndarray:
    """Inverse of ``pack_planes``: uint64 (n, n_planes * n_words) -> uint8 0/1 (n, n_planes, dim)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    n_words = (dim + 63) // 64
    if codes.ndim != 2 or codes.shape[1] != n_planes * n_words:
        raise InvalidArgumentError(f"codes must have shape (n, {n_planes * n_words}), got {codes.shape}")
    planes = [unpack_bits(codes[:, p * n_words : (p + 1) * n_words], dim) for p in range(n_planes)]
    return np.stack(planes, axis=1)


class Binary(BaseCodec):
    """Binary codec with ``bits_per_dim`` sign planes per dimension (1..4).

    Parameters
    ----------
    dim : vector dimension.
    bits_per_dim : bit-planes per dimension, 1..4; code size ``8 * bits_per_dim * ceil(dim/64)``
        bytes. More planes: smaller reconstruction error, proportionally larger codes.
    rotate : apply a seeded random orthogonal rotation after centring (evens out dimensions).
    center : subtract the training mean first (on by default; indexes searching by inner
        product turn it off, since the inner product is not translation invariant).
    seed : seeds the rotation.
    """

    code_dtype = np.dtype(np.uint64)

    def __init__(self, dim: int, bits_per_dim: int = 1, *, rotate: bool = False, center: bool = True,
                 seed: int = 1234) -> None:
        super().__init__(dim)
        bits = as_positive_int(bits_per_dim, "bits_per_dim", minimum=0)
        if not 1 <= bits <= 4:
            raise InvalidArgumentError(f"bits_per_dim must be in 1..4, got {bits}")
        self.bits_per_dim = bits
        self.rotate = bool(rotate)
        self.center = bool(center)
        self.seed = int(seed)
        self.n_words = (self.dim + 63) // 64
        self.mean = np.zeros(self.dim, np.float32)
        self.scales = np.zeros(bits, np.float32)
        self.rotation: F32Matrix | None = None
        self._weights: dict[Metric, tuple[np.ndarray, np.float32, int]] = {}

    # ---- codec ----------------------------------------------------------------------
    @property
    def code_width(self) -> int:
        return self.bits_per_dim * self.n_words

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "bits_per_dim": self.bits_per_dim, "rotate": self.rotate,
                "center": self.center, "seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "scales": self.scales}
        if self.rotation is not None:
            out["rotation"] = self.rotation
        return out

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.mean = np.ascontiguousarray(arrays["mean"], np.float32)
        self.scales = np.ascontiguousarray(arrays["scales"], np.float32)
        if self.mean.shape != (self.dim,) or self.scales.shape != (self.bits_per_dim,):
            raise ValueError(f"binary codec arrays have shapes {self.mean.shape}, {self.scales.shape}")
        rot = arrays.get("rotation")
        self.rotation = None if rot is None else np.ascontiguousarray(rot, np.float32)
        self._weights = {}

    def _train(self, x: F32Matrix) -> None:
        self.mean = x.mean(axis=0).astype(np.float32) if self.center else np.zeros(self.dim, np.float32)
        self.rotation = random_rotation(self.dim, self.seed) if self.rotate else None
        r = self.transform(x).astype(np.float64)
        scales = np.empty(self.bits_per_dim, np.float32)
        for p in range(self.bits_per_dim):
            scales[p] = np.abs(r).mean()
            r -= scales[p] * np.where(r >= 0, 1.0, -1.0)
        if not (scales > 0).all():
            scales = np.maximum(scales, np.float32(np.finfo(np.float32).tiny))
        self.scales = scales
        self._weights = {}

    def _encode(self, x: F32Matrix) -> np.ndarray:
        r = self.transform(x)
        planes = np.empty((len(x), self.bits_per_dim, self.dim), np.uint8)
        for p in range(self.bits_per_dim):
            pos = r >= 0
            planes[:, p, :] = pos
            r = r - self.scales[p] * np.where(pos, np.float32(1.0), np.float32(-1.0))
        return pack_planes(planes)

    def _decode(self, codes: np.ndarray) -> F32Matrix:
        planes = unpack_planes(codes, self.bits_per_dim, self.dim).astype(np.float32) * 2.0 - 1.0
        z = np.einsum("p,npd->nd", self.scales, planes).astype(np.float32)
        if self.rotation is not None:
            z = z @ self.rotation.T
        return np.ascontiguousarray(z + self.mean, dtype=np.float32)

    # ---- distances ------------------------------------------------------------------
    def transform(self, x: F32Matrix) -> F32Matrix:
        """Centred (and rotated) float32 rows, the space the sign planes live in."""
        z = x - self.mean if self.center else x
        if self.rotation is not None:
            z = z @ self.rotation
        return np.ascontiguousarray(z, dtype=np.float32)

    def plane_weights(self, metric: Metric | str = Metric.L2) -> tuple[np.ndarray, np.float32, int]:
        """(weights (bits, bits) float32, constant, kernel mode) for ``binary_codes`` kernels.

        l2 (and cosine on unit vectors): the exact squared distance between the two codes'
        reconstructions. ip: minus the inner product of the reconstructions in the centred
        space (exactly ``-<x̂, ŷ>`` when ``center`` is off).
        """
        self.require_trained()
        metric = Metric.parse(metric)
        known = self._weights.get(metric)
        if known is not None:
            return known
        a = self.scales.astype(np.float64)
        outer = np.outer(a, a)
        if metric is Metric.IP:
            out = (2.0 * outer).astype(np.float32), np.float32(-self.dim * a.sum() ** 2), 1
        elif metric in (Metric.L2, Metric.COSINE):
            w = np.triu(8.0 * outer, 1)
            np.fill_diagonal(w, 4.0 * a * a)
            out = w.astype(np.float32), np.float32(0.0), 0
        else:
            raise InvalidArgumentError(f"binary distances support l2, ip and cosine, got {metric.value!r}")
        out[0].flags.writeable = False           # cached per metric (cleared by training): shared, read-only
        self._weights[metric] = out
        return out

    def code_distances(self, query_code: Any, codes: Any, metric: Metric | str = Metric.L2) -> np.ndarray:
        """Symmetric distances from one code to every code row: float32 (n,).

        With one plane this is an increasing function of the Hamming distance ``h``:
        ``4 α² h`` (l2/cosine) or ``-α²(dim - 2h)`` (ip).
        """
        weights, const, mode = self.plane_weights(metric)
        q = self.check_codes(query_code)[0]
        return bk.plane_distances(q, self.check_codes(codes), self.bits_per_dim, self.n_words, weights, const, mode)
