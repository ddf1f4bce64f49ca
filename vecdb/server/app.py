"""Build and run the vecdb gRPC server.

``create_server(db, address, config)`` wires a server (vecdb.v1 services, standard gRPC
health checking and reflection) and binds it, returning ``(server, port)`` so tests can
bind port 0. ``serve(config)`` is the process: open the database, start the server and
the Prometheus endpoint, and on SIGTERM/SIGINT shut down gracefully:

1. health flips to NOT_SERVING and new RPCs are refused (UNAVAILABLE, which clients retry),
2. in-flight RPCs get ``config.grace_seconds`` to finish (then they are cancelled),
3. the metrics endpoint stops and the database (LMDB) is closed, after the last RPC.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import vecdb
from vecdb.index.warmup import DEFAULT_KINDS, Warmer
from vecdb.api import DatabaseAPI
from vecdb.server.config import ServerConfig
from vecdb.server.metrics import ServerMetrics
from vecdb.server.service import SERVICE_NAMES, VecdbServicer, add_to_server

logger = logging.getLogger(__name__)


def bare_server(config: ServerConfig) -> grpc.Server:
    """The gRPC server shape ``vecdb serve`` uses, with no service registered: the sync server
    with ``config.workers`` threads, the message and concurrency limits. On 2 cores it spent
    less CPU per call than a ``grpc.aio`` server, for an echo and for vecdb's Search alike, and
    served more calls at 16 client threads; ``bench/grpc_small.py`` times an echo on this same
    shape as the floor that vecdb's own work adds to."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="vecdb-rpc"),
        options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )


def create_server(db: DatabaseAPI, address: str, config: ServerConfig | None = None, *,
                  servicer: VecdbServicer | None = None,
                  health_servicer: health.HealthServicer | None = None) -> tuple[grpc.Server, int]:
    """A bound, not yet started, server for ``db`` on ``address`` (``host:0`` picks a port).

    Registers the vecdb.v1 services, ``grpc.health.v1.Health`` (all services SERVING) and
    server reflection. TLS is used when ``config`` names a certificate and key. ``serve``
    passes its own ``servicer`` (with metrics) and ``health_servicer`` to drain them later.
    """
    cfg = config or ServerConfig()
    server = bare_server(cfg)
    add_to_server(servicer or VecdbServicer(db, cfg), server)
    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if cfg.tls_cert and cfg.tls_key:
        credentials = grpc.ssl_server_credentials([(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {address}")
    return server, port


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send logs to stderr, as JSON lines (``fmt="json"``) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _open_database(config: ServerConfig) -> DatabaseAPI:
    """The embedded database in ``config.data_dir``, or the Ray cluster rooted there."""
    if config.cluster is None:
        return vecdb.open(str(config.data_dir))
    from vecdb.cluster import connect  # the optional extra: imported only when asked for
    return connect(None if config.cluster == "local" else config.cluster, root=str(config.data_dir))


#: how long a stopping server waits for the warm-up's kernel call in progress (a first
#: compile can take seconds); past it the process exits anyway
WARM_UP_JOIN_SECONDS = 20.0


def serve(config: ServerConfig, db: DatabaseAPI | None = None, stop: threading.Event | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set); returns an exit code.

    Opens ``config.data_dir`` with ``vecdb.open`` unless ``db`` is given (then the caller
    closes it). Signal handlers are installed only when called from the main thread.
    """
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: shutting down", signum, extra={"event": "signal", "signal": signum})
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    if config.keys is None:
        logger.warning("no API keys configured: the server is OPEN, every caller is admin "
                       "(pass --auth-file or set VECDB_API_KEYS)", extra={"event": "auth_open"})
    if config.switch_interval_ms is not None:   # process-wide: the server's own choice (ServerConfig)
        sys.setswitchinterval(config.switch_interval_ms / 1000)
    if db is None:
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    database = _open_database(config) if db is None else db
    try:
        metrics = ServerMetrics(database)
        warmer = Warmer()
        servicer = VecdbServicer(database, config, metrics, warmer)
        health_servicer = health.HealthServicer()
        server, port = create_server(database, config.address, config, servicer=servicer,
                                     health_servicer=health_servicer)
        metrics_port = metrics.serve_http(config.metrics_host, config.metrics_port) \
            if config.metrics_port is not None else None
        server.start()
        # compile kernels now, off the request path (Numba caches them for the next start): the
        # default kinds', then those of the collections there (and later of each one made);
        # joined before exit: a native kernel still running at interpreter exit aborts the process
        warmer.want([*DEFAULT_KINDS, *(info.index for info in database.list_collections())])
        logger.info("serving", extra={
            "event": "serving", "host": config.host, "port": port, "metrics_host": config.metrics_host,
            "metrics_port": metrics_port,
            "data_dir": str(config.data_dir), "workers": config.workers,
            "tls": bool(config.tls_cert and config.tls_key), "auth": config.keys is not None,
            "max_message_mb": config.max_message_mb, "switch_interval_ms": sys.getswitchinterval() * 1000})
        while not stop.wait(0.5):
            pass
        started = time.perf_counter()
        health_servicer.enter_graceful_shutdown()
        servicer.drain()
        server.stop(config.grace_seconds).wait()
        metrics.stop_http()
        warmer.stop(WARM_UP_JOIN_SECONDS)
        logger.info("stopped", extra={"event": "stopped", "seconds": round(time.perf_counter() - started, 3)})
    finally:
        if db is None:
            database.close()
    return 0
