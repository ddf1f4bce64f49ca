r"""Product quantization (Jégou et al. 2011), with an optional learned rotation (OPQ, Ge et al.
2013) and a packed 4-bit layout.

A vector is cut into ``m`` sub-vectors of ``dim / m`` dims; each is replaced by the index of its
nearest centroid in a per-sub-space codebook of :math:`2^{nbits}` entries learnt by k-means.
Distances use asymmetric computation (ADC): the query stays float, a per-query table holds its
distance to every centroid of every sub-space, and the distance to a code is a sum of ``m``
table entries. That sum *is* the distance to the decoded vector (l2: squared distance of the
sub-vectors, which add up; ip: negated sub-products, which add up).

Code layout: one byte per sub-quantizer for ``nbits`` 5..8; for ``nbits <= 4`` with an even
``m`` two sub-codes share a byte (``lo | hi << nbits``) and the scan looks bytes up in a
:math:`2^{2 nbits}`-entry pair table, halving both the code size and the lookups.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.errors import InvalidArgumentError
from vecdb.kernels import pq as pqk
from vecdb.quant.base import BaseCodec, random_rotation, sample_rows
from vecdb.types import F32Matrix, Metric
from vecdb.validation import as_matrix, as_positive_int

_ENCODE_BLOCK = 8192
_OPQ_SAMPLE = 20000


class PQ(BaseCodec):
    """Product quantizer: ``m`` sub-quantizers of ``2**nbits`` centroids each.

    Parameters
    ----------
    dim : vector dimension; must be divisible by ``m``.
    m : number of sub-quantizers (sub-vectors); code size is ``m`` bytes (``m/2`` for packed
        ``nbits <= 4``). More sub-quantizers: larger codes, smaller error.
    nbits : bits per sub-code, 1..8 (``ksub = 2**nbits`` centroids per sub-space).
    opq : learn an orthogonal rotation before quantizing (OPQ, non-parametric), kept only if
        it lowers the training reconstruction error (``uses_rotation``). Costs a (dim, dim)
        matmul per encoded/queried vector; helps when variance is unevenly spread.
    n_iter : k-means iterations per sub-space (faiss's default is 25).
    opq_iters : alternations between codebooks and rotation when ``opq``.
    seed : seeds k-means, sampling and the initial rotation.
    """

    code_dtype = np.dtype(np.uint8)

    def __init__(self, dim: int, m: int, nbits: int = 8, *, opq: bool = False, n_iter: int = 25,
                 opq_iters: int = 10, seed: int = 1234) -> None:
        super().__init__(dim)
        self.m = as_positive_int(m, "m")
        self.nbits = as_positive_int(nbits, "nbits", minimum=0)
        if self.dim % self.m:
            raise InvalidArgumentError(f"dim {self.dim} is not divisible by m={self.m}; choose m among the divisors of dim")
        if not 1 <= self.nbits <= 8:
            raise InvalidArgumentError(f"nbits must be in 1..8 (codes are uint8), got {self.nbits}")
        self.opq = bool(opq)
        self.n_iter = as_positive_int(n_iter, "n_iter")
        self.opq_iters = as_positive_int(opq_iters, "opq_iters")
        self.seed = int(seed)
        self.dsub = self.dim // self.m
        self.ksub = 1 << self.nbits
        self.packed = self.nbits <= 4 and self.m % 2 == 0
        self.codebooks = np.zeros((self.m, self.ksub, self.dsub), np.float32)
        self.rotation: F32Matrix | None = None

    # ---- codec ----------------------------------------------------------------------
    @property
    def code_width(self) -> int:
        return self.m // 2 if self.packed else self.m

    @property
    def min_train_size(self) -> int:
        return self.ksub

    @property
    def recommended_train_size(self) -> int:
        """max(1000, 40 * 2**nbits): k-means in each sub-space wants about 40 points per
        centroid (faiss warns below 39), so 10,240 for 8-bit codes and 1,000 for 4-bit ones."""
        return max(1000, 40 * self.ksub)

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "m": self.m, "nbits": self.nbits, "opq": self.opq, "n_iter": self.n_iter,
                "opq_iters": self.opq_iters, "seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"codebooks": self.codebooks}
        if self.rotation is not None:
            out["rotation"] = self.rotation
        return out

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        books = np.ascontiguousarray(arrays["codebooks"], np.float32)
        if books.shape != (self.m, self.ksub, self.dsub):
            raise ValueError(f"codebooks have shape {books.shape}, expected {(self.m, self.ksub, self.dsub)}")
        self.codebooks = books
        rot = arrays.get("rotation")
        self.rotation = None if rot is None else np.ascontiguousarray(rot, np.float32)

    def _train(self, x: F32Matrix) -> None:
        self.rotation = None
        self.codebooks = self._train_codebooks(x, self.n_iter)
        if not self.opq:
            return
        # OPQ is kept only when it lowers the reconstruction error on the training sample:
        # alternation from a random start can end above plain PQ on already well-split data.
        xs = sample_rows(x, _OPQ_SAMPLE, self.seed)
        plain_err = self._sq_error(xs, self.codebooks)
        rot = self._train_rotation(x)
        xr = np.ascontiguousarray(x @ rot)
        books = self._train_codebooks(xr, self.n_iter)
        if self._sq_error(np.ascontiguousarray(xs @ rot), books) < plain_err:
            self.rotation, self.codebooks = rot, books

    @property
    def uses_rotation(self) -> bool:
        """True when training kept an OPQ rotation (``opq`` on and it lowered the error)."""
        return self.rotation is not None

    def _sq_error(self, x: F32Matrix, books: np.ndarray) -> float:
        sub = self._assign(x, books)
        recon = books[np.arange(self.m)[None, :], sub].reshape(len(x), self.dim)
        return float(((x - recon) ** 2).sum())

    def _encode(self, x: F32Matrix) -> np.ndarray:
        return self._pack(self._assign(self.rotate(x), self.codebooks))

    def _decode(self, codes: np.ndarray) -> F32Matrix:
        sub = self._unpack(codes)
        parts = self.codebooks[np.arange(self.m)[None, :], sub]          # (n, m, dsub)
        y = np.ascontiguousarray(parts.reshape(len(codes), self.dim), dtype=np.float32)
        return y if self.rotation is None else np.ascontiguousarray(y @ self.rotation.T)

    # ---- distances ------------------------------------------------------------------
    def rotate(self, x: F32Matrix) -> F32Matrix:
        """``x`` in the quantizer's space (rotated when OPQ is on)."""
        return x if self.rotation is None else np.ascontiguousarray(x @ self.rotation, dtype=np.float32)

    def tables(self, queries: Any, metric: Metric | str = Metric.L2) -> np.ndarray:
        """ADC lookup tables of ``queries``: float32 (nq, code_width, T), T = ksub or ksub**2.

        ``metric``: l2 (squared distances) or ip (negated inner products). For cosine pass
        unit-normalised queries and data and use ip. Row s of a table is indexed by byte s.
        """
        self.require_trained()
        metric = Metric.parse(metric)
        if metric not in (Metric.L2, Metric.IP):
            raise InvalidArgumentError(f"PQ tables support l2 and ip (cosine = ip on unit vectors), got {metric.value!r}")
        q = self.rotate(as_matrix(queries, self.dim, what="queries"))
        tab = pqk.pq_tables(q, self.codebooks, metric.code)
        if not self.packed:
            return tab
        # pair table: entry lo + hi * ksub of byte s = T[2s, lo] + T[2s+1, hi]
        pair = tab[:, 0::2, None, :] + tab[:, 1::2, :, None]
        return np.ascontiguousarray(pair.reshape(len(q), self.m // 2, self.ksub * self.ksub))

    def adc_distances(self, query: Any, codes: Any, metric: Metric | str = Metric.L2) -> np.ndarray:
        """Asymmetric distances from one query to every code row: float32 (n,)."""
        table = self.tables(np.asarray(query).reshape(1, -1), metric)[0]
        return pqk.adc_distances(table, self.check_codes(codes))

    # ---- internals ------------------------------------------------------------------
    def _pack(self, sub: np.ndarray) -> np.ndarray:
        if not self.packed:
            return sub
        return np.ascontiguousarray(sub[:, 0::2] | (sub[:, 1::2] << self.nbits), dtype=np.uint8)

    def _unpack(self, codes: np.ndarray) -> np.ndarray:
        if not self.packed:
            return codes
        out = np.empty((len(codes), self.m), np.uint8)
        out[:, 0::2] = codes & (self.ksub - 1)
        out[:, 1::2] = codes >> self.nbits
        return out

    def _assign(self, x: F32Matrix, codebooks: np.ndarray) -> np.ndarray:
        """Nearest centroid per sub-space: uint8 (n, m). BLAS distances in row blocks."""
        n = len(x)
        out = np.empty((n, self.m), np.uint8)
        sq = np.einsum("mkd,mkd->mk", codebooks, codebooks)
        for s in range(self.m):
            sub = x[:, s * self.dsub : (s + 1) * self.dsub]
            for r0 in range(0, n, _ENCODE_BLOCK):
                blk = sub[r0 : r0 + _ENCODE_BLOCK]
                out[r0 : r0 + len(blk), s] = np.argmin(sq[s][None, :] - 2.0 * (blk @ codebooks[s].T), axis=1)
        return out

    def _train_codebooks(self, x: F32Matrix, n_iter: int, init: np.ndarray | None = None) -> np.ndarray:
        """k-means (faiss) per sub-space; ``init`` warm-starts from earlier centroids."""
        import faiss

        books = np.empty((self.m, self.ksub, self.dsub), np.float32)
        for s in range(self.m):
            sub = np.ascontiguousarray(x[:, s * self.dsub : (s + 1) * self.dsub])
            km = faiss.Kmeans(self.dsub, self.ksub, niter=n_iter, seed=self.seed + s, verbose=False,
                              max_points_per_centroid=256)
            km.cp.min_points_per_centroid = 1
            if init is None:
                km.train(sub)
            else:
                km.train(sub, init_centroids=np.ascontiguousarray(init[s]))
            books[s] = km.centroids
        return books

    def _train_rotation(self, x: F32Matrix) -> F32Matrix:
        """Non-parametric OPQ: alternate k-means codebooks and the orthogonal Procrustes
        rotation that best maps the data onto its reconstruction."""
        xs = sample_rows(x, _OPQ_SAMPLE, self.seed)
        rot = random_rotation(self.dim, self.seed)
        books = None
        for _ in range(self.opq_iters):
            xr = np.ascontiguousarray(xs @ rot)
            books = self._train_codebooks(xr, 4, init=books)
            sub = self._assign(xr, books)
            recon = books[np.arange(self.m)[None, :], sub].reshape(len(xs), self.dim)
            u, _, vt = np.linalg.svd(xs.T.astype(np.float64) @ recon.astype(np.float64))
            rot = np.ascontiguousarray(u @ vt, dtype=np.float32)
        return rot
