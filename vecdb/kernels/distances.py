r"""Float32 distance kernels: one query against many rows, and blocks of queries against rows.

Distances follow one convention (smaller is closer): ``l2`` is :math:`\sum_i (x_i-y_i)^2`,
``ip`` is :math:`-\langle x, y\rangle`, ``cosine`` is :math:`1 - \cos(x, y)` (0 for a zero vector).
"""
from __future__ import annotations

import numba
import numpy as np

from vecdb.kernels._jit import ARITH, F32, F32_MAT, F32_ROW, I64, METRIC_COSINE, METRIC_IP, METRIC_L2, kernel


@kernel(F32(F32_ROW, F32_ROW), fastmath=ARITH)
def l2_sq(x, y):
    r"""Squared Euclidean distance, :math:`\sum_i (x_i - y_i)^2`."""
    acc = np.float32(0.0)
    for i in range(x.shape[0]):
        d = x[i] - y[i]
        acc += d * d
    return acc


@kernel(F32(F32_ROW, F32_ROW), fastmath=ARITH)
def dot(x, y):
    r"""Inner product, :math:`\sum_i x_i y_i`."""
    acc = np.float32(0.0)
    for i in range(x.shape[0]):
        acc += x[i] * y[i]
    return acc


@kernel(F32(F32_ROW, F32_ROW), fastmath=ARITH)
def cosine_distance(x, y):
    r"""Cosine distance, :math:`1 - \frac{\langle x,y\rangle}{\|x\|\|y\|}`; 1 when either is zero."""
    xy = np.float32(0.0)
    xx = np.float32(0.0)
    yy = np.float32(0.0)
    for i in range(x.shape[0]):
        xy += x[i] * y[i]
        xx += x[i] * x[i]
        yy += y[i] * y[i]
    if xx == 0.0 or yy == 0.0:
        return np.float32(1.0)
    return np.float32(1.0) - xy / (np.sqrt(xx) * np.sqrt(yy))


@kernel(F32(F32_ROW, F32_ROW, I64), inline=True)
def distance(x, y, metric):
    """Distance between two rows under the metric code (0 l2, 1 ip, 2 cosine). Inlined into
    jitted callers: called through a function boundary, a row loop ran 4x slower (glove 99k x 50)."""
    if metric == METRIC_L2:
        return l2_sq(x, y)
    if metric == METRIC_IP:
        return -dot(x, y)
    return cosine_distance(x, y)


@kernel(numba.float32[::1](F32_ROW, F32_MAT, I64))
def one_to_many(q, rows, metric):
    """Distances from one query to every row: float32 (n,)."""
    n = rows.shape[0]
    out = np.empty(n, np.float32)
    for j in range(n):
        out[j] = distance(q, rows[j], metric)
    return out


@kernel(numba.float32[:, ::1](F32_MAT, F32_MAT, I64), parallel=True)
def many_to_many(queries, rows, metric):
    """Distance matrix between a block of queries and rows: float32 (n_queries, n_rows)."""
    nq = queries.shape[0]
    n = rows.shape[0]
    out = np.empty((nq, n), np.float32)
    for i in numba.prange(nq):
        for j in range(n):
            out[i, j] = distance(queries[i], rows[j], metric)
    return out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit L2 norm; zero rows stay zero (cosine 0 to everything)."""
    out = np.empty(x.shape, np.float32)   # allocated here: boxing a kernel's returned array costs ~1 us
    _unit_rows(x, out)
    return out


@kernel
def _unit_rows(x, out):
    """``normalize_rows`` in one pass into ``out``: a 1-row query costs ~1 us instead of the
    ~5 numpy calls' ~10 us."""
    for i in range(x.shape[0]):
        unit_row(x[i], out[i])


@kernel
def unit_row(x, out):
    """One row of ``normalize_rows`` into ``out`` (norm summed in float64, the row divided by
    the float32 norm; a zero row stays zero). Four partial sums: one float64 chain over a
    384-d row is ~0.5 us of add latency. Shared by every kernel that normalises a query."""
    d = x.shape[0]
    d4 = d - d % 4
    a0 = a1 = a2 = a3 = 0.0
    for j in range(0, d4, 4):
        v0 = np.float64(x[j])
        v1 = np.float64(x[j + 1])
        v2 = np.float64(x[j + 2])
        v3 = np.float64(x[j + 3])
        a0 += v0 * v0
        a1 += v1 * v1
        a2 += v2 * v2
        a3 += v3 * v3
    for j in range(d4, d):
        v = np.float64(x[j])
        a0 += v * v
    acc = (a0 + a1) + (a2 + a3)
    norm = np.float32(np.sqrt(acc))
    if norm == 0:
        norm = np.float32(1.0)
    for j in range(d):
        out[j] = np.float32(x[j]) / norm
