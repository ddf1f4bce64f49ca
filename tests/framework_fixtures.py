"""Fixtures the framework-adapter tests share (test_integrations_*): a guard that fails any
non-loopback connection, and one embedded database and one real ``vecdb serve`` per module,
their collections dropped before closing. Imported by name into those test modules."""
from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest

import vecdb
from vecdb.server.process import ServerProcess, start_server_process


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Python-level connection beyond 127.0.0.1 / ::1 / unix sockets fails the test (no
    model, tokenizer, NLTK or tracing traffic; gRPC's own sockets are C-level and unaffected)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access to {address!r} during a test")
        return real_connect(self, address)
    monkeypatch.setattr(socket.socket, "connect", connect)


def drop_all(db: Any) -> None:
    """Drop the module's collections before closing: cheaper than checkpointing each on close."""
    for info in db.list_collections():
        db.drop_collection(info.name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("framework-server")
    proc = start_server_process(root / "data", root / "server.log", args=["--no-metrics"])
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def embedded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = vecdb.open(str(tmp_path_factory.mktemp("framework-embedded") / "data"))
    yield db
    drop_all(db)
    db.close()


@pytest.fixture(scope="module")
def remote_db(server: ServerProcess) -> Iterator[Any]:
    with vecdb.connect(server.address, timeout=60) as db:
        yield db
        drop_all(db)
