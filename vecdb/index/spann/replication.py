"""Boundary replication: which heads a vector is stored under (SPANN's closure over its
nearest heads, capped at a replica limit and pruned by the RNG rule)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from vecdb.index.spann.kernels import select_replicas
from vecdb.types import F32Matrix

#: replicas per vector at most (the reference implementation's default)
DEFAULT_REPLICAS = 8


def assign_heads(x: F32Matrix, cand: np.ndarray, cand_d: np.ndarray, centroid_of: Callable[[np.ndarray], F32Matrix], eps: float,
                 limit: int, rng_factor: float) -> np.ndarray:
    """Heads (n, limit) int64, -1 padded, each row of ``x`` goes to: the nearest candidate
    always, then candidate j when d_j - d_1 <= eps * |d_1| and no head already chosen is
    closer to c_j than x is (times ``rng_factor``). ``cand``/``cand_d`` (n, c) are candidate
    heads sorted by routing distance (-1 / +inf padded); ``centroid_of(heads)`` gives their
    centroids as float32 rows."""
    n = len(x)
    out = np.full((n, max(int(limit), 1)), -1, np.int64)
    if n == 0 or cand.shape[1] == 0:
        return out
    heads, rows = np.unique(np.where(cand >= 0, cand, -1), return_inverse=True)
    rows = rows.reshape(cand.shape).astype(np.int64)
    valid = heads >= 0
    centroids = np.zeros((len(heads), x.shape[1]), np.float32)
    if valid.any():
        centroids[valid] = centroid_of(heads[valid])
    select_replicas(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(cand, np.int64),
                    np.ascontiguousarray(cand_d, np.float32), rows, centroids, np.float32(eps), int(limit),
                    np.float32(rng_factor), out)
    return out


def group_by_head(assigned: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heads, starts, rows): the distinct heads of an (n, limit) assignment, and for head i
    the rows ``rows[starts[i]:starts[i+1]]`` of the vectors stored under it (ascending)."""
    vec_rows = np.repeat(np.arange(len(assigned), dtype=np.int64), assigned.shape[1])
    flat = assigned.ravel()
    keep = flat >= 0
    flat, vec_rows = flat[keep], vec_rows[keep]
    order = np.lexsort((vec_rows, flat))
    flat, vec_rows = flat[order], vec_rows[order]
    heads, starts = np.unique(flat, return_index=True)
    return heads, np.append(starts, len(flat)).astype(np.int64), vec_rows
