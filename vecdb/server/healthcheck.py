"""Exit 0 if a vecdb server answers the standard gRPC health check with SERVING, else 1.

    python -m vecdb.server.healthcheck [ADDRESS] [--timeout S] [--tls-ca PEM]

Used by the container's HEALTHCHECK; needs no API key (health is not behind auth).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, timeout: float = 3.0, tls_ca: Path | None = None, service: str = "") -> bool:
    """Whether ``address`` reports ``service`` ("" = the whole server) as SERVING."""
    channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca.read_bytes())) if tls_ca
               else grpc.insecure_channel(address))
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vecdb.server.healthcheck", description=__doc__.splitlines()[0])
    p.add_argument("address", nargs="?", default="127.0.0.1:50051")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--tls-ca", type=Path, default=None, help="CA certificate (PEM) when the server uses TLS")
    args = p.parse_args(argv)
    return 0 if check(args.address, args.timeout, args.tls_ca) else 1


if __name__ == "__main__":
    sys.exit(main())
