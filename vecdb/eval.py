"""Evaluation helpers shared by tests and benchmarks: exact ground truth and recall."""
from __future__ import annotations

import numpy as np

from vecdb.types import F32Matrix, Metric


def ground_truth(base: F32Matrix, queries: F32Matrix, k: int, metric: Metric | str,
                 allow: np.ndarray | None = None, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``base`` per query (rows of base, -1 padded), in query blocks.

    ``allow`` restricts to those base rows (for filtered benchmarks).
    """
    from vecdb.index.flat import FlatIndex

    index = FlatIndex(base.shape[1], metric)
    index.add(base)
    ids = np.empty((len(queries), k), np.int64)
    dists = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), block):
        res = index.search(queries[start : start + block], k, allow=allow)
        ids[start : start + block], dists[start : start + block] = res.ids, res.distances
    return ids, dists


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true k nearest found among the first k results (ids -1 never count)."""
    found = np.asarray(found)[:, :k]
    truth = np.asarray(truth)[:, :k]
    hits = 0
    for f, t in zip(found, truth):
        hits += np.intersect1d(f[f >= 0], t[t >= 0]).size
    denom = sum(int((t >= 0).sum()) for t in truth)
    return hits / denom if denom else 1.0


def tie_aware_equal(ids_a: np.ndarray, dists_a: np.ndarray, ids_b: np.ndarray, dists_b: np.ndarray,
                    rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when two exact results agree: distances match, and ids match except for
    permutations among equal distances (ties may be broken differently)."""
    if ids_a.shape != ids_b.shape or not np.allclose(dists_a, dists_b, rtol=rtol, atol=atol, equal_nan=False):
        return False
    for ra, rb, da in zip(ids_a, ids_b, dists_a):
        if (ra == rb).all():
            continue
        # compare id sets within groups of (nearly) equal distance, ignoring the last group
        # (ties across the k boundary may pick different members)
        boundary = np.isclose(da, da[-1], rtol=rtol, atol=atol)
        if set(ra[~boundary].tolist()) != set(rb[~boundary].tolist()):
            return False
    return True
