"""The Dataset record every reader and generator returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecdb.types import F32Matrix, Metric

# Dataset metric names (ann-benchmarks vocabulary) -> the vecdb metric that ranks the same way.
METRIC_OF = {"euclidean": Metric.L2, "l2": Metric.L2, "angular": Metric.COSINE, "cosine": Metric.COSINE,
             "ip": Metric.IP, "dot": Metric.IP, "inner_product": Metric.IP, "hamming": Metric.HAMMING}


@dataclass
class Dataset:
    """Base vectors, held-out queries and (optionally) exact ground truth and tenant labels.

    gt_ids : int (n_queries, k_gt) rows of ``base``, nearest first (None until computed).
    labels_indptr / labels_indices : CSR of labels per base row (tenants, categories).
    query_labels : primary label per query (same label numbers), when the dataset has them.
    """

    name: str
    metric: Metric
    base: F32Matrix
    queries: F32Matrix
    gt_ids: np.ndarray | None = None
    gt_dists: np.ndarray | None = None
    labels_indptr: np.ndarray | None = None
    labels_indices: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: int (n_queries,) primary label of each query (a tenant the query belongs to), if known
    query_labels: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def with_ground_truth(self, k: int = 100) -> "Dataset":
        """Compute exact ground truth when missing or shallower than ``k``."""
        if self.gt_ids is None or self.gt_ids.shape[1] < min(k, len(self.base)):
            from vecdb.eval import ground_truth

            self.gt_ids, self.gt_dists = ground_truth(self.base, self.queries, k, self.metric)
        return self

    def describe(self) -> str:
        return f"{self.name}: {len(self.base)} x {self.dim} base, {len(self.queries)} queries, {self.metric.value}"


def metric_from_name(name: str) -> Metric:
    """vecdb metric for a dataset metric name such as 'euclidean' or 'angular'."""
    from vecdb.errors import InvalidArgumentError

    try:
        return METRIC_OF[name.lower()]
    except KeyError:
        raise InvalidArgumentError(f"unknown dataset metric {name!r}; expected one of {sorted(METRIC_OF)}") from None
