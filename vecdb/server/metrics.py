"""Prometheus metrics of the gRPC server, served on their own HTTP port.

- ``vecdb_requests_total{method, code}``: finished RPCs by status code.
- ``vecdb_request_duration_seconds{method}``: latency histogram per RPC.
- ``vecdb_requests_in_flight``: RPCs being served now.
- ``vecdb_collection_points{collection}``: points per collection, read at scrape time.

Each server owns its registry (not the process-global one) so several servers, as in
tests, never clash over metric names.
"""
from __future__ import annotations

import logging
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vecdb.api import DatabaseAPI
from vecdb.errors import VecdbError

logger = logging.getLogger(__name__)

# From 100 µs (a cached count) to 10 s (a large bulk upsert).
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _CollectionSizes(Collector):
    """Reads each collection's point count when Prometheus scrapes."""

    def __init__(self, db: DatabaseAPI) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("vecdb_collection_points", "Points stored per collection", labels=["collection"])
        try:
            for info in self._db.list_collections():
                family.add_metric([info.name], float(self._db.get_collection(info.name).count()))
        except VecdbError as exc:  # e.g. the database is closing, or a collection was just dropped
            logger.debug("collection sizes unavailable: %s", exc)
        yield family


class ServerMetrics:
    """Request counters, latency histograms and collection sizes of one server."""

    def __init__(self, db: DatabaseAPI) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("vecdb_requests", "Finished RPCs", ["method", "code"], registry=self.registry)
        self._latency = Histogram("vecdb_request_duration_seconds", "RPC latency", ["method"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._in_flight = Gauge("vecdb_requests_in_flight", "RPCs being served", registry=self.registry)
        self.registry.register(_CollectionSizes(db))
        self._http = None
        self.port: int | None = None

    def started(self) -> None:
        """Count an RPC as in flight."""
        self._in_flight.inc()

    def finished(self, method: str, code: str, seconds: float) -> None:
        """Record a finished RPC."""
        self._in_flight.dec()
        self._requests.labels(method, code).inc()
        self._latency.labels(method).observe(seconds)

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
