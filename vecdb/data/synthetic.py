"""Synthetic data: clustered Gaussian mixtures and Zipf-sized, overlapping tenant labels."""
from __future__ import annotations

import numpy as np

from vecdb.data.dataset import Dataset
from vecdb.types import F32Matrix, Metric


def gaussian_mixture(n: int, dim: int, *, n_clusters: int = 64, spread: float = 0.35,
                     seed: int = 1338) -> F32Matrix:
    """``n`` float32 points around ``n_clusters`` random unit-scale centres.

    Cluster sizes vary (Dirichlet weights) and each cluster has its own scale, so the data
    has dense and sparse regions like real embeddings; ``spread`` is the within-cluster
    standard deviation relative to the centre distribution.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    assignment = rng.choice(n_clusters, size=n, p=weights)
    scales = (spread * rng.uniform(0.5, 1.5, n_clusters)).astype(np.float32)
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(centres[assignment] + noise * scales[assignment, None])


def tenant_labels(n: int, n_tenants: int, *, zipf_a: float = 1.2, shared_fraction: float = 0.2,
                  max_extra: int = 3, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Multi-tenant access lists as a CSR (indptr int64 (n+1,), indices int32).

    Every vector gets one owner tenant drawn with Zipf-distributed popularity (tenant t has
    weight 1 / (t+1)**zipf_a), and ``shared_fraction`` of vectors are also shared with 1 to
    ``max_extra`` more tenants (drawn the same way), as documents shared across teams are.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_tenants + 1) ** zipf_a
    weights /= weights.sum()
    owner = rng.choice(n_tenants, size=n, p=weights)
    extra_count = np.where(rng.random(n) < shared_fraction, rng.integers(1, max_extra + 1, n), 0)
    extras = rng.choice(n_tenants, size=int(extra_count.sum()), p=weights)
    rows: list[np.ndarray] = []
    pos = 0
    for i in range(n):
        c = int(extra_count[i])
        rows.append(np.unique(np.concatenate(([owner[i]], extras[pos : pos + c]))))
        pos += c
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return indptr, indices


def synthetic_dataset(n: int, dim: int, *, n_queries: int = 1000, metric: Metric = Metric.L2,
                      n_tenants: int = 0, seed: int = 1338) -> Dataset:
    """A clustered dataset with held-out queries from the same distribution (and tenants)."""
    x = gaussian_mixture(n + n_queries, dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(x))
    base, queries = x[order[:n]], x[order[n:]]
    ds = Dataset(f"synthetic-{n}-{dim}", metric, np.ascontiguousarray(base), np.ascontiguousarray(queries))
    if n_tenants:
        ds.labels_indptr, ds.labels_indices = tenant_labels(n, n_tenants, seed=seed + 2)
    return ds
