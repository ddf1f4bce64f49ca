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
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class ServerMetrics:
    """Request counters, latency histograms and collection sizes of one server."""

    def __init__(self, db: DatabaseAPI) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("vecdb_requests", "Finished RPCs", ["method", "code"], registry=self.registry)
        self._latency = Histogram("vecdb_request_duration_seconds", "RPC latency", ["method"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._in_flight = Gauge("vecdb_requests_in_flight", "RPCs being served", registry=self.registry)
        self.registry.register(_CollectionSizes(db))
        self.registry.register(_LockHolds())
        record_cpu_time(True)   # the "cpu" clock of the lock holds exported here
        self._http = None
        self.port: int | None = None
        # labelled children by (method, code): looking labels up costs more than recording
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def started(self) -> None:
        """Count an RPC as in flight."""
        self._in_flight.inc()

    def finished(self, method: str, code: str, seconds: float) -> None:
        """Record a finished RPC."""
        self._in_flight.dec()
        children = self._children.get((method, code))
        if children is None:
            children = self._children.setdefault((method, code), (self._requests.labels(method, code),
                                                                  self._latency.labels(method)))
        children[0].inc()
        children[1].observe(seconds)

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
