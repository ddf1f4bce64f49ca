"""A tiny version of bench/grpc_load.py (same code): concurrent searches over gRPC while
one writer upserts, against a real server process; no errors, every acknowledged write
readable afterwards."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest

import vecdb
from vecdb.server.process import ServerProcess, start_server_process

ROOT = Path(__file__).resolve().parents[1]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpc_load", ROOT / "bench" / "grpc_load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["grpc_load"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("load")
    proc = start_server_process(root / "data", root / "server.log", args=["--no-metrics"])
    yield proc
    assert proc.stop() == 0


@pytest.mark.parametrize("threads", [1, 4])
def test_searches_under_concurrent_writes(server: ServerProcess, threads: int) -> None:
    bench = load_bench()
    rng = np.random.default_rng(threads)
    with vecdb.connect(server.address, timeout=60) as db:
        coll = db.create_collection(f"load{threads}", 16, metric="l2", index="flat")
        bench.load_points(coll, rng.standard_normal((500, 16)).astype(np.float32))
        queries = rng.standard_normal((50, 16)).astype(np.float32)
        res = bench.run_phase(coll, queries, threads, 1.0, 5, {}, 1_000_000)
        assert res.errors == 0
        assert res.searches > 0 and res.p99_ms >= res.p50_ms > 0
        assert res.writes_acked > 0 and res.writes_readable == res.writes_acked
        assert coll.count() == 500 + res.writes_acked
