"""Prometheus metrics of the gRPC server, served on their own HTTP port.

- ``vecdb_requests_total{method, code}``: finished RPCs by status code.
- ``vecdb_request_duration_seconds{method}``: latency histogram per RPC.
- ``vecdb_requests_in_flight``: RPCs being served now.
- ``vecdb_collection_points{collection}``: points per collection, read at scrape time from
  LMDB's entry counts (``Database.point_counts``): a scrape never loads a collection.
- ``vecdb_lock_hold_seconds{lock, mode, clock}``: how long locks were held (histogram), and
  ``vecdb_lock_hold_max_seconds{lock, mode, clock}`` the longest hold, since the process
  started; ``lock="collection"`` is each collection's readers-writer lock, ``clock`` is
  "wall" (what others waited) or "cpu" (work done by the holder; see ``vecdb.storage.locks``).

The endpoint has no authentication, so ``vecdb serve`` binds it to 127.0.0.1 unless
``--metrics-host`` says otherwise (see ``vecdb serve --help``).

Each server owns its registry (not the process-global one) so several servers, as in
tests, never clash over metric names.

The request figures are recorded on every RPC, so recording takes no lock: each serving
thread counts into its own tally, and a scrape adds the tallies up (``_Requests``).
"""
from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from typing import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from vecdb.api import DatabaseAPI
from vecdb.errors import VecdbError
from vecdb.storage.locks import HOLD_BUCKETS, hold_stats, record_cpu_time

logger = logging.getLogger(__name__)

# From 100 µs (a cached count) to 10 s (a large bulk upsert).
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _CollectionSizes(Collector):
    """Reads each collection's point count when Prometheus scrapes, without loading any."""

    def __init__(self, db: DatabaseAPI) -> None:
        self._counts = getattr(db, "point_counts", None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("vecdb_collection_points", "Points stored per collection", labels=["collection"])
        try:
            if self._counts is not None:
                for name, count in sorted(self._counts().items()):
                    family.add_metric([name], float(count))
        except VecdbError as exc:  # e.g. the database is closing
            logger.debug("collection sizes unavailable: %s", exc)
        yield family


class _LockHolds(Collector):
    """Lock hold times of this process (``vecdb.storage.locks.hold_stats``) at scrape time."""

    def collect(self) -> Iterator[Metric]:
        stats = hold_stats()
        labels = ["lock", "mode", "clock"]
        hist = HistogramMetricFamily("vecdb_lock_hold_seconds", "How long locks were held", labels=labels)
        longest = GaugeMetricFamily("vecdb_lock_hold_max_seconds", "Longest hold of a lock", labels=labels)
        for key, st in sorted(stats.items()):
            buckets = [(repr(bound), float(n)) for bound, n in zip(HOLD_BUCKETS, st.buckets)]
            hist.add_metric(list(key), buckets + [("+Inf", float(st.count))], sum_value=st.total)
            longest.add_metric(list(key), st.longest)
        yield hist
        yield longest


class _Tally:
    """One thread's request figures. Only its own thread writes them (no lock); a scrape
    reads them from another thread, each number whole."""

    __slots__ = ("started", "finished", "calls")

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        #: (method, code) -> [count per latency bucket (the last one past every bound)..., sum of seconds]
        self.calls: dict[tuple[str, str], list[float]] = {}


class _Requests(Collector):
    """The request figures of every thread's tally, added up at scrape time."""

    def __init__(self, tallies: list[_Tally], lock: threading.Lock) -> None:
        self._tallies = tallies
        self._lock = lock

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            tallies = list(self._tallies)
        in_flight = 0
        by_call: dict[tuple[str, str], list[float]] = {}
        for tally in tallies:
            in_flight += tally.started - tally.finished
            for key, row in list(tally.calls.items()):  # list(): one step, while the owner may add keys
                total = by_call.setdefault(key, [0.0] * len(row))
                for i, value in enumerate(list(row)):
                    total[i] += value
        requests = CounterMetricFamily("vecdb_requests", "Finished RPCs", labels=["method", "code"])
        latency = HistogramMetricFamily("vecdb_request_duration_seconds", "RPC latency", labels=["method"])
        by_method: dict[str, list[float]] = {}
        for (method, code), row in sorted(by_call.items()):
            requests.add_metric([method, code], sum(row[:-1]))
            total = by_method.setdefault(method, [0.0] * len(row))
            for i, value in enumerate(row):
                total[i] += value
        for method, row in sorted(by_method.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip(LATENCY_BUCKETS, row):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            buckets.append(("+Inf", sum(row[:-1])))
            latency.add_metric([method], buckets, sum_value=row[-1])
        yield requests
        yield latency
        yield GaugeMetricFamily("vecdb_requests_in_flight", "RPCs being served", value=max(in_flight, 0))


class ServerMetrics:
    """Request counters, latency histograms and collection sizes of one server."""

    def __init__(self, db: DatabaseAPI) -> None:
        self.registry = CollectorRegistry()
        self._tallies: list[_Tally] = []
        self._tallies_lock = threading.Lock()
        self._local = threading.local()
        self.registry.register(_Requests(self._tallies, self._tallies_lock))
        self.registry.register(_CollectionSizes(db))
        self.registry.register(_LockHolds())
        record_cpu_time(True)   # the "cpu" clock of the lock holds exported here
        self._http = None
        self.port: int | None = None

    def _tally(self) -> _Tally:
        """This thread's tally (made on its first RPC)."""
        try:
            return self._local.tally  # type: ignore[no-any-return]
        except AttributeError:
            tally = self._local.tally = _Tally()
            with self._tallies_lock:
                self._tallies.append(tally)
            return tally

    def started(self) -> None:
        """Count an RPC as in flight (``finished`` must follow on the same thread)."""
        self._tally().started += 1

    def finished(self, method: str, code: str, seconds: float) -> None:
        """Record a finished RPC."""
        tally = self._tally()
        tally.finished += 1
        row = tally.calls.get((method, code))
        if row is None:
            row = tally.calls[(method, code)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        row[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def serve_http(self, host: str, port: int) -> int:
        """Start the ``/metrics`` endpoint in a daemon thread; returns the bound port."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._http.server_port)
        return self.port

    def stop_http(self) -> None:
        """Stop the ``/metrics`` endpoint if it runs."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
