"""Timing primitives of the harness: one timed pass over all queries, the passes of one
setting (best or median reported), and small helpers (duplicate rows, folder sizes)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from vecdb.bench.adapters.base import Target


@dataclass
class Timing:
    """Raw outcome of one pass of one search configuration over all queries."""

    ids: np.ndarray            # (nq, k) row numbers
    latencies_s: np.ndarray    # seconds per call
    total_s: float             # wall time of all calls
    batch: int                 # queries per call
    starts_s: np.ndarray | None = None  # perf_counter at the start of each call (churn scores by it)

    @property
    def qps(self) -> float:
        return len(self.ids) / self.total_s if self.total_s > 0 else float("inf")

    def percentile_ms(self, p: float) -> float:
        return float(np.percentile(self.latencies_s, p) * 1e3)


@dataclass
class Passes:
    """All timed passes of one target at one setting."""

    timings: list[Timing] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.timings.append(timing)

    def pick(self, stat: str) -> Timing:
        """The fastest pass ("best") or the median one by total time ("median"; the lower
        middle for an even count, so it is always a pass that ran)."""
        order = sorted(self.timings, key=lambda t: t.total_s)
        return order[0] if stat == "best" else order[(len(order) - 1) // 2]

    def qps_list(self) -> list[float]:
        return [t.qps for t in self.timings]

    def percentile_ms(self, p: float) -> float:
        """Latency percentile over the calls of every pass."""
        return float(np.percentile(np.concatenate([t.latencies_s for t in self.timings]), p) * 1e3)


def time_calls(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, k: int, batch: int = 1) -> Timing:
    """Search all ``queries`` in calls of ``batch`` rows through ``search`` (a (b, dim) block ->
    its (b, <= k) ids), timing each call with ``perf_counter``."""
    nq = len(queries)
    batch = max(1, min(batch, nq))
    ids = np.full((nq, k), -1, np.int64)
    lat, starts = [], []
    t_all = time.perf_counter()
    for start in range(0, nq, batch):
        t0 = time.perf_counter()
        got = search(queries[start : start + batch])
        lat.append(time.perf_counter() - t0)
        starts.append(t0)
        ids[start : start + batch, : min(k, got.shape[1])] = got[:, :k]
    return Timing(ids, np.asarray(lat), time.perf_counter() - t_all, batch, np.asarray(starts))


def time_passes(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, k: int, repeats: int,
                batch: int = 1) -> Passes:
    """One untimed warm-up call (JIT, caches), then ``repeats`` timed passes of ``time_calls``."""
    search(queries[: min(batch, len(queries))])
    passes = Passes()
    for _ in range(repeats):
        passes.add(time_calls(search, queries, k, batch))
    return passes


def time_pass(target: Target, queries: np.ndarray, k: int, params: dict[str, Any], batch: int,
              allow: np.ndarray | None = None) -> Timing:
    """Search all ``queries`` through a harness target in calls of ``batch`` rows."""
    return time_calls(lambda block: target.search(block, k, params, allow), queries, k, batch)


def time_tenant_pass(target: Target, queries: np.ndarray, tenants: np.ndarray, members: list[np.ndarray], k: int,
                     params: dict[str, Any], batch: int) -> Timing:
    """Search every query within its own tenant (``tenants[i]``, whose rows are ``members[t]``) in
    calls of ``batch`` queries; a block holding several tenants makes one call per tenant."""

    def block_search(idx: np.ndarray) -> np.ndarray:
        s, e = int(idx[0]), int(idx[-1]) + 1
        ts = tenants[s:e]
        if (ts == ts[0]).all():
            return target.search_tenant(queries[s:e], k, params, int(ts[0]), members[ts[0]])
        out = np.full((e - s, k), -1, np.int64)
        for t in np.unique(ts):
            sel = np.flatnonzero(ts == t)
            got = target.search_tenant(np.ascontiguousarray(queries[s:e][sel]), k, params, int(t), members[t])
            out[sel, : min(k, got.shape[1])] = got[:, :k]
        return out

    return time_calls(block_search, np.arange(len(queries)), k, batch)


def duplicate_rows(ids: np.ndarray) -> int:
    """Number of result rows that list some id twice (a broken index; ann-benchmarks checks it)."""
    bad = 0
    for row in ids:
        valid = row[row >= 0]
        bad += int(len(np.unique(valid)) != len(valid))
    return bad


def dir_bytes(path: Path) -> int:
    """Bytes of all files below ``path`` (0 when it does not exist)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0
