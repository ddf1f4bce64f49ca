"""Server settings as one frozen dataclass; ``vecdb/server/__main__.py`` builds it from flags."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vecdb.server.auth import KeyRing

MIB = 1 << 20


def default_workers() -> int:
    """Threads serving RPCs: four per core (search kernels release the GIL, and a thread
    waiting on LMDB or the network costs little), at least 4 and at most 32."""
    return max(4, min(32, 4 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class ServerConfig:
    """How ``vecdb serve`` runs.

    data_dir: database directory (opened with ``vecdb.open``).
    host, port: gRPC listen address; port 0 picks a free port.
    metrics_port: Prometheus ``/metrics`` port on ``metrics_host`` (0 picks a free port,
        None disables the endpoint).
    max_message_mb: largest request or response, in MiB; bigger ones get RESOURCE_EXHAUSTED.
    workers: RPC threads; max_concurrent_rpcs: RPCs accepted at once (queued beyond the
        workers), further ones get RESOURCE_EXHAUSTED.
    grace_seconds: on SIGTERM/SIGINT, how long in-flight RPCs may run before they are
        cancelled; the database is closed after that.
    keys: API keys; None runs the server open (every caller is admin) with a warning.
    tls_cert, tls_key: PEM files; both set enables TLS.
    snapshot_dir: where Snapshot RPCs may write (default: ``<data_dir>-snapshots`` beside
        the data directory).
    Limits of one request, each checked before the server allocates for it (over a limit:
    RESOURCE_EXHAUSTED, with a message naming the flag):
    max_k: largest k of a search (--max-k).
    max_queries: query rows per Search, summed over a SearchBatch (--max-queries).
    max_result_cells: queries x k per request, summed over a SearchBatch (--max-result-cells);
        each cell costs about 60 bytes while the answer is built and sent.
    max_response_payload_mb: stored payload bytes one answer (Search with_payloads, Get) may
        read, in MiB (--max-response-payload-mb); payloads are decoded only within it.
    max_filter_bytes, max_filter_conditions, max_filter_values: size of a search filter's
        JSON, its number of conditions (dict keys) and of listed values (``in`` lists), which
        bound how long it is evaluated under the collection's lock.
    switch_interval_ms: the interpreter's thread switch interval for the server process
        (``sys.setswitchinterval``; None keeps Python's 5 ms): the longest a thread waiting
        for the GIL waits while another runs Python. A search re-takes the GIL after each
        kernel, so a shorter one cuts search tail latency beside a writer's or indexer's
        Python steps. Process-wide: set by ``vecdb serve`` only, never by the library.
    cluster: serve a vecdb cluster on Ray (``vecdb.cluster.connect``) at this address instead
        of an embedded database ("local" starts a local Ray); ``data_dir`` is then its root.
    metrics_host: where ``/metrics`` listens; 127.0.0.1 by default whatever ``host`` is, as it
        has no authentication (names and sizes of every collection). Expose it on purpose with
        ``--metrics-host 0.0.0.0`` behind a firewall or a scraping proxy.
    """

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464
    max_message_mb: int = 64
    workers: int = default_workers()
    max_concurrent_rpcs: int = 256
    grace_seconds: float = 10.0
    keys: KeyRing | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    snapshot_dir: Path | None = None
    max_k: int = 10_000
    max_queries: int = 10_000
    max_result_cells: int = 1_000_000
    max_response_payload_mb: int = 8
    max_filter_bytes: int = 256 * 1024
    max_filter_conditions: int = 1_000
    max_filter_values: int = 10_000
    switch_interval_ms: float | None = None
    cluster: str | None = None   # Ray address ("local", "auto", "ray://...", host:port): data_dir is the cluster root

    @property
    def address(self) -> str:
        """The gRPC listen address, ``host:port`` (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def max_message_bytes(self) -> int:
        """``max_message_mb`` in bytes."""
        return self.max_message_mb * MIB

    @property
    def max_response_payload_bytes(self) -> int:
        """``max_response_payload_mb`` in bytes."""
        return self.max_response_payload_mb * MIB

    @property
    def snapshot_root(self) -> Path:
        """The directory Snapshot RPCs write under."""
        if self.snapshot_dir is not None:
            return Path(self.snapshot_dir)
        data = Path(self.data_dir).resolve()
        return data.parent / f"{data.name}-snapshots"
