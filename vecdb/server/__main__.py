"""Command line of the gRPC server: ``python -m vecdb.server --data DIR`` (``vecdb serve``).

The defaults give an embedded local setup: data in ./data, listening on 127.0.0.1:50051,
metrics on 127.0.0.1:9464 (always loopback unless ``--metrics-host`` says otherwise), no TLS, and no API keys (open, with a warning) unless
``--auth-file``, ``VECDB_AUTH_FILE`` or ``VECDB_API_KEYS`` provides them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from vecdb.errors import VecdbError
from vecdb.server.app import configure_logging, serve
from vecdb.server.auth import hash_key, load_keyring
from vecdb.server.config import ServerConfig, default_workers


def _positive(text: str) -> int:
    """argparse type: an integer >= 1 (a limit of 0 would refuse every request)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _switch_ms(text: str) -> float:
    """argparse type: a switch interval in ms, > 0 and at most 1,000."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 1000 ms, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` flags (the lead's ``vecdb serve`` reuses this parser via ``main``)."""
    p = argparse.ArgumentParser(prog="vecdb serve", description="Serve a vecdb database over gRPC.")
    p.add_argument("--data", type=Path, default=Path("data"), help="database directory (default: ./data)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port, 0 picks a free one (default: 50051)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="Prometheus /metrics listen address (default: 127.0.0.1 whatever --host is: /metrics has no "
                        "authentication and lists every collection's name and size; to let a remote Prometheus "
                        "scrape it, pass e.g. --metrics-host 0.0.0.0 and restrict the port with a firewall, "
                        "or keep it local behind an authenticating proxy)")
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics port, 0 picks a free one (default: 9464)")
    p.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    p.add_argument("--max-message-mb", type=int, default=64, help="largest request/response in MiB (default: 64)")
    p.add_argument("--workers", type=int, default=default_workers(), help="RPC threads (default: 4 per core, 4..32)")
    p.add_argument("--max-concurrent-rpcs", type=int, default=256, help="RPCs accepted at once (default: 256)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds in-flight RPCs get on shutdown (default: 10)")
    p.add_argument("--auth-file", type=Path, default=None, help="JSON API-key file (see vecdb/server/auth.py)")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (with --tls-key enables TLS)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    p.add_argument("--snapshot-dir", type=Path, default=None, help="where Snapshot may write (default: <data>-snapshots)")
    p.add_argument("--max-k", type=_positive, default=10_000, help="largest k a search may ask for (default: 10000)")
    p.add_argument("--max-queries", type=_positive, default=10_000,
                   help="query rows per Search, summed over a SearchBatch (default: 10000)")
    p.add_argument("--max-result-cells", type=_positive, default=1_000_000,
                   help="queries x k per Search/SearchBatch request (default: 1000000, ~60 MB while answering)")
    p.add_argument("--max-response-payload-mb", type=_positive, default=8,
                   help="stored payload MiB one Search (with_payloads) or Get answer may read (default: 8); "
                        "each distinct payload is sent once per answer")
    p.add_argument("--max-filter-bytes", type=_positive, default=256 * 1024,
                   help="largest search filter, in bytes of JSON (default: 262144)")
    p.add_argument("--max-filter-conditions", type=_positive, default=1_000,
                   help="most conditions (keys) in one search filter (default: 1000)")
    p.add_argument("--max-filter-values", type=_positive, default=10_000,
                   help="most values listed in one search filter's 'in' lists (default: 10000)")
    p.add_argument("--switch-interval-ms", type=_switch_ms, default=None, metavar="MS",
                   help="the process's GIL switch interval in ms (sys.setswitchinterval; default: Python's 5 ms); "
                        "shorter cuts search tail latency beside writes")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="front a vecdb cluster on Ray at ADDRESS ('local' starts one; 'auto', 'ray://host:port' or "
                        "host:port join one) whose placement lives in --data; needs vecdb[cluster]")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="json", choices=["json", "text"])
    p.add_argument("--hash-key", action="store_true", help="print the sha256 of a key read from stdin, for a key file, and exit")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """A ServerConfig from parsed flags (keys loaded from the file or environment)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("vecdb serve: --tls-cert and --tls-key go together")
    return ServerConfig(
        data_dir=args.data, host=args.host, port=args.port,
        metrics_host=args.metrics_host, metrics_port=None if args.no_metrics else args.metrics_port,
        max_message_mb=args.max_message_mb, workers=args.workers, max_concurrent_rpcs=args.max_concurrent_rpcs,
        grace_seconds=args.grace, keys=load_keyring(args.auth_file), tls_cert=args.tls_cert, tls_key=args.tls_key,
        snapshot_dir=args.snapshot_dir, max_k=args.max_k, max_queries=args.max_queries,
        max_result_cells=args.max_result_cells, max_response_payload_mb=args.max_response_payload_mb,
        max_filter_bytes=args.max_filter_bytes, max_filter_conditions=args.max_filter_conditions,
        max_filter_values=args.max_filter_values, cluster=args.cluster, switch_interval_ms=args.switch_interval_ms,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) and run the server until SIGTERM/SIGINT."""
    args = build_parser().parse_args(argv)
    if args.hash_key:
        sys.stdout.write(hash_key(sys.stdin.readline().rstrip("\n")) + "\n")
        return 0
    configure_logging(args.log_level, args.log_format)
    try:
        return serve(config_from_args(args))
    except (VecdbError, OSError) as exc:  # bad key file, database locked by another process, port taken
        sys.stderr.write(f"vecdb serve: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
