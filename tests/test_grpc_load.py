"""A tiny version of bench/grpc_load.py (same code): concurrent searches over gRPC while
one writer upserts, against a real server process, with a flat and an HNSW collection; no
errors, every search answer checked against an exact oracle, every acknowledged write
readable afterwards."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import pytest

import vecdb
from vecdb.api import CollectionAPI, QueryResult
from vecdb.server.process import ServerProcess, start_server_process

ROOT = Path(__file__).resolve().parents[1]
N, DIM, K = 500, 16, 5


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


class RecordingCollection:
    """Passes every call to the real remote collection and keeps each search's query and
    answer, so the test can check what the load run's searchers were told."""

    def __init__(self, coll: CollectionAPI) -> None:
        self._coll = coll
        self.answers: list[tuple[np.ndarray, QueryResult]] = []

    def search(self, queries: Any, **kwargs: Any) -> QueryResult:
        res = self._coll.search(queries, **kwargs)
        self.answers.append((np.asarray(queries, np.float32), res))  # list.append is atomic
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coll, name)


def written_vectors(bench: ModuleType, first_id: int, n_ids: int) -> np.ndarray:
    """The vectors bench.write_loop upserts under ids first_id, first_id + 1, ... (it draws
    one (WRITE_BATCH, dim) block per batch from default_rng(first_id))."""
    rng = np.random.default_rng(first_id)
    batches = -(-n_ids // bench.WRITE_BATCH)
    return np.vstack([rng.standard_normal((bench.WRITE_BATCH, DIM)).astype(np.float32) for _ in range(batches)])


def check_answers(answers: list[tuple[np.ndarray, QueryResult]], base: np.ndarray, written: np.ndarray,
                  first_id: int) -> float:
    """Every answer: known ids, no repeats, sorted exact distances. Returns the recall of the
    base points: the share of base points closer than an answer's k-th hit that it returned
    (writes only add points, so base points are visible to every search)."""
    hits = misses = 0
    for q, res in answers:
        ids, dists = res.ids[0], res.distances[0]
        assert (ids >= 0).all() and len(set(ids.tolist())) == K
        vectors = np.array([base[i] if i < N else written[i - first_id] for i in ids.tolist()], np.float64)
        assert ((ids < N) | ((ids >= first_id) & (ids < first_id + len(written)))).all()
        np.testing.assert_allclose(dists, ((vectors - q) ** 2).sum(1), rtol=1e-4, atol=1e-4)
        assert (np.diff(dists) >= 0).all()
        base_d = ((base.astype(np.float64) - q) ** 2).sum(1)
        closer = set(np.flatnonzero(base_d < dists[-1] - 1e-4).tolist())
        hits += len(closer & set(ids.tolist()))
        misses += len(closer - set(ids.tolist()))
    return hits / max(hits + misses, 1)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
@pytest.mark.parametrize("threads", [1, 4])
def test_searches_under_concurrent_writes(server: ServerProcess, threads: int, index: str) -> None:
    bench = load_bench()
    rng = np.random.default_rng(threads)
    base = rng.standard_normal((N, DIM)).astype(np.float32)
    params = {"ef": 64} if index == "hnsw" else {}
    with vecdb.connect(server.address, timeout=60) as db:
        coll = db.create_collection(f"load{threads}{index}", DIM, metric="l2", index=index)
        bench.load_points(coll, base)
        queries = rng.standard_normal((50, DIM)).astype(np.float32)
        recorder = RecordingCollection(coll)
        first_id = 1_000_000
        res = bench.run_phase(recorder, queries, threads, 1.0, K, params, first_id)
        assert res.errors == 0
        assert res.searches > 0 and res.p99_ms >= res.p50_ms > 0
        assert res.writes_acked > 0 and res.writes_readable == res.writes_acked
        assert coll.count() == N + res.writes_acked
        assert len(recorder.answers) == res.searches
        # a search may see a batch committed just before its writer recorded the ack
        recall = check_answers(recorder.answers, base, written_vectors(bench, first_id, res.writes_acked + 100),
                               first_id)
        # flat is exact; HNSW measured 1.0 (500 points, ef=64)
        assert recall == 1.0 if index == "flat" else recall >= 0.95
        probe = coll.search(base[:20], k=1, params=params)  # and the stored points are found again
        np.testing.assert_array_equal(probe.ids[:, 0], np.arange(20))
