"""Shared value types: the metric enum and the one search-result shape every index returns."""
from __future__ import annotations

import enum
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

F32Matrix: TypeAlias = npt.NDArray[np.float32]
I64Vector: TypeAlias = npt.NDArray[np.int64]
I64Matrix: TypeAlias = npt.NDArray[np.int64]


class Metric(str, enum.Enum):
    """Distance metrics. Smaller is always closer.

    - ``l2``: squared Euclidean distance, ``sum((x - y)**2)``.
    - ``ip``: negated inner product, ``-<x, y>`` (so the largest product ranks first).
    - ``cosine``: ``1 - cos(x, y)``; a zero vector has cosine 0 with everything.
    - ``hamming``: number of differing bits between packed binary codes.
    """

    L2 = "l2"
    IP = "ip"
    COSINE = "cosine"
    HAMMING = "hamming"

    @classmethod
    def parse(cls, value: "Metric | str") -> "Metric":
        """Return the Metric named by ``value``; raise InvalidArgumentError listing valid names."""
        from vecdb.errors import InvalidArgumentError

        if isinstance(value, Metric):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise InvalidArgumentError(f"unknown metric {value!r}; expected one of: {valid}") from None

    @property
    def code(self) -> int:
        """Small integer used to pick a branch inside Numba kernels."""
        return _METRIC_CODES[self]


_METRIC_CODES = {Metric.L2: 0, Metric.IP: 1, Metric.COSINE: 2, Metric.HAMMING: 3}


class SearchResult(NamedTuple):
    """k nearest neighbours of each query, closest first.

    ids : int64 array of shape (n_queries, k); -1 where fewer than k results exist.
    distances : float32 array of shape (n_queries, k); +inf where ids == -1.
    Unpacks as ``ids, distances = index.search(q, k)``.
    """

    ids: I64Matrix
    distances: F32Matrix

    @classmethod
    def empty(cls, n_queries: int, k: int) -> "SearchResult":
        """A result with every row fully padded (-1 ids, +inf distances)."""
        return cls(np.full((n_queries, k), -1, np.int64), np.full((n_queries, k), np.inf, np.float32))
