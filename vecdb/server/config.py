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
    max_k, max_result_cells: limits on a search's k and on queries*k per request.
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
    max_result_cells: int = 50_000_000

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
    def snapshot_root(self) -> Path:
        """The directory Snapshot RPCs write under."""
        if self.snapshot_dir is not None:
            return Path(self.snapshot_dir)
        data = Path(self.data_dir).resolve()
        return data.parent / f"{data.name}-snapshots"
