"""Timing primitives of the harness: one query per call, and batched calls."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdb.bench.adapters.base import Target


@dataclass
class Timing:
    """Raw outcome of one search configuration over all queries."""

    ids: np.ndarray            # (nq, k) row numbers
    latencies_s: np.ndarray    # seconds per call
    total_s: float             # wall time of all calls
    batch: int                 # queries per call

    @property
    def qps(self) -> float:
        return len(self.ids) / self.total_s if self.total_s > 0 else float("inf")

    def percentile_ms(self, p: float) -> float:
        return float(np.percentile(self.latencies_s, p) * 1e3)


def time_search(target: Target, queries: np.ndarray, k: int, params: dict[str, Any], batch: int,
                allow: np.ndarray | None = None, repeats: int = 1) -> Timing:
    """Search all ``queries`` in calls of ``batch`` rows; keep the fastest of ``repeats`` passes.

    Uses ``time.perf_counter`` per call. A warm-up call precedes timing so one-off costs
    (lazy compilation, page faults) are not counted.
    """
    nq = len(queries)
    batch = max(1, min(batch, nq))
    target.search(queries[: min(batch, 8)], k, params, allow)
    best: Timing | None = None
    for _ in range(max(1, repeats)):
        ids = np.full((nq, k), -1, np.int64)
        lat = []
        t_all = time.perf_counter()
        for start in range(0, nq, batch):
            t0 = time.perf_counter()
            got = target.search(queries[start : start + batch], k, params, allow)
            lat.append(time.perf_counter() - t0)
            ids[start : start + batch, : got.shape[1]] = got[:, :k]
        total = time.perf_counter() - t_all
        if best is None or total < best.total_s:
            best = Timing(ids, np.asarray(lat), total, batch)
    assert best is not None
    return best


def duplicate_rows(ids: np.ndarray) -> int:
    """Number of result rows that list some id twice (a broken index; ann-benchmarks checks it)."""
    bad = 0
    for row in ids:
        valid = row[row >= 0]
        bad += int(len(np.unique(valid)) != len(valid))
    return bad


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:
        return 0
