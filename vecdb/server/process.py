"""Run ``python -m vecdb.server`` as a child process and wait until it serves.

Used by the end-to-end tests and ``bench/grpc_load.py``, which must talk to a real server
process over loopback rather than to an in-process object. The child logs JSON lines to a
file; readiness is its ``"event": "serving"`` line, which carries the bound ports (so the
child can bind port 0 and the parent still learns the address).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from vecdb.errors import UnavailableError


@dataclass
class ServerProcess:
    """A running server child: its address, metrics port, log file and process handle."""

    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    metrics_port: int | None
    host: str = "127.0.0.1"
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far."""
        return _read_events(self.log_path)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown) and wait; SIGKILL if it does not exit in ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def start_server_process(data_dir: str | os.PathLike[str], log_path: str | os.PathLike[str], *,
                         args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                         host: str = "127.0.0.1", timeout: float = 120.0) -> ServerProcess:
    """Start a server on ``host`` with a free gRPC and metrics port; return once it serves.

    ``args`` are extra ``vecdb serve`` flags; ``env`` replaces the child's environment
    (default: this process's). Raises UnavailableError, with the log tail, if the child
    exits or does not serve within ``timeout`` seconds (first start compiles kernels).
    """
    log = Path(log_path)
    cmd = [sys.executable, "-m", "vecdb.server", "--data", str(data_dir), "--host", host, "--port", "0",
           "--metrics-port", "0", *args]
    with open(log, "ab") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=dict(env) if env is not None else None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in _read_events(log):
            if event.get("event") == "serving":
                return ServerProcess(proc, log, int(event["port"]), event.get("metrics_port"), host)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else ""
    raise UnavailableError(f"vecdb server did not start (exit code {proc.returncode}); log tail:\n{tail}")
