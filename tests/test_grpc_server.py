"""End-to-end tests of the server process: every status code (with the vecdb class in the
trailing metadata), health, reflection, metrics, structured logs, graceful shutdown, TLS,
retries and the asyncio client. (Auth codes are in test_grpc_auth.py.)"""
from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

import vecdb
from vecdb import aio_client
from vecdb.client import RemoteDatabase
from vecdb.errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    DimensionMismatchError,
    FailedPreconditionError,
    IdNotFoundError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    VecdbTimeoutError,
)
from vecdb.server import healthcheck
from vecdb.server.app import create_server
from vecdb.server.metrics import ServerMetrics
from vecdb.server.process import ServerProcess, start_server_process
from vecdb.v1 import types_pb2, vecdb_pb2, vecdb_pb2_grpc

DIM = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server")
    proc = start_server_process(root / "data", root / "server.log", args=["--max-message-mb", "1", "--max-k", "1000"])
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[RemoteDatabase]:
    with vecdb.connect(server.address, timeout=30, max_message_mb=8) as conn:
        coll = conn.create_collection("pts", DIM, metric="l2", index="flat")
        coll.upsert(np.arange(100), np.random.default_rng(1).standard_normal((100, DIM)))
        yield conn


def raw_status(server: ServerProcess, method: str, request: object) -> tuple[grpc.StatusCode, str | None, str]:
    """Call an RPC with the generated stub; return (code, vecdb-error header, details)."""
    with grpc.insecure_channel(server.address) as channel:
        stubs = [vecdb_pb2_grpc.SearchServiceStub(channel), vecdb_pb2_grpc.PointServiceStub(channel),
                 vecdb_pb2_grpc.CollectionServiceStub(channel)]
        fn = next(getattr(s, method) for s in stubs if hasattr(s, method))
        try:
            fn(request, timeout=10)
        except grpc.RpcError as exc:
            header = dict(exc.trailing_metadata() or ()).get("vecdb-error")
            return exc.code(), header, exc.details()
    return grpc.StatusCode.OK, None, ""


def metric_samples(server: ServerProcess) -> list[tuple[str, dict[str, str], float]]:
    """Every sample on the server's /metrics page as (name, labels, value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def search_outcomes(server: ServerProcess) -> tuple[dict[str, float], float]:
    """(finished Search RPCs by status code, how many of them took at most 0.1 s)."""
    samples = metric_samples(server)
    codes = {labels["code"]: value for name, labels, value in samples
             if name == "vecdb_requests_total" and labels.get("method") == "Search"}
    quick = next((value for name, labels, value in samples if name == "vecdb_request_duration_seconds_bucket"
                  and labels.get("method") == "Search" and float(labels["le"]) == 0.1), 0.0)
    return codes, quick


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` until true (a safety bound, not a timing assumption: a test that
    hits it has found a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def f32(rows: int, cols: int = DIM) -> types_pb2.Matrix:
    return types_pb2.Matrix(n_rows=rows, n_cols=cols, dtype=types_pb2.FLOAT32, data=bytes(4 * rows * cols))


@pytest.mark.parametrize("method, request_, code, name", [
    ("Search", vecdb_pb2.SearchRequest(collection="pts", queries=f32(1), k=0), "INVALID_ARGUMENT", "InvalidArgumentError"),
    ("Search", vecdb_pb2.SearchRequest(collection="pts", queries=f32(1, 3), k=1), "INVALID_ARGUMENT",
     "DimensionMismatchError"),
    ("Search", vecdb_pb2.SearchRequest(collection="nope", queries=f32(1), k=1), "NOT_FOUND", "CollectionNotFoundError"),
    ("Get", vecdb_pb2.GetRequest(collection="pts", ids=types_pb2.Ids(int64=np.int64([999]).tobytes())), "NOT_FOUND",
     "IdNotFoundError"),
    ("CreateCollection", vecdb_pb2.CreateCollectionRequest(name="pts", dim=DIM), "ALREADY_EXISTS", "AlreadyExistsError"),
    ("Search", vecdb_pb2.SearchRequest(collection="pts", queries=f32(1), k=10**9), "RESOURCE_EXHAUSTED",
     "ResourceExhaustedError"),
])
def test_status_codes_and_error_header(server: ServerProcess, db: RemoteDatabase, method: str, request_: object,
                                       code: str, name: str) -> None:
    got_code, header, details = raw_status(server, method, request_)
    assert (got_code.name, header) == (code, name)
    assert details  # a message a user can act on


def test_errors_rehydrate_as_vecdb_classes(db: RemoteDatabase) -> None:
    coll = db.get_collection("pts")
    with pytest.raises(InvalidArgumentError, match="k must be"):
        coll.search(np.ones(DIM), k=-1)
    with pytest.raises(DimensionMismatchError):
        coll.search(np.ones(DIM + 1), k=1)
    with pytest.raises(CollectionNotFoundError, match="nope"):
        db.get_collection("nope")
    with pytest.raises(IdNotFoundError):
        coll.get([12345])
    with pytest.raises(AlreadyExistsError):
        db.create_collection("pts", DIM)
    with pytest.raises(ResourceExhaustedError, match="limit of 1000"):
        coll.search(np.ones(DIM), k=5000)


def test_oversize_message_is_resource_exhausted(db: RemoteDatabase) -> None:
    coll = db.get_collection("pts")
    big = np.ones((50_000, DIM), np.float32)  # 1.6 MB > the server's 1 MiB limit
    with pytest.raises(ResourceExhaustedError):
        coll.upsert(np.arange(1000, 51_000), big)
    assert coll.count() == 100


def test_deadline_exceeded_is_timeout(server: ServerProcess, db: RemoteDatabase) -> None:
    """A search still running at its deadline raises VecdbTimeoutError, and the server shows
    it had started that search: it ran it (code OK, the answer found no caller) or stopped
    it mid-way, after more than 0.1 s; not a call turned away before it began."""
    rng = np.random.default_rng(8)
    coll = db.create_collection("deadline", 64, metric="l2", index="flat")
    for start in range(0, 60_000, 3000):  # requests stay under the server's 1 MiB limit
        coll.upsert(np.arange(start, start + 3000), rng.standard_normal((3000, 64)).astype(np.float32))
    queries = rng.standard_normal((3500, 64)).astype(np.float32)  # ~1.5 s of exact search here
    before, quick_before = search_outcomes(server)
    with vecdb.connect(server.address, timeout=0.4, retries=0) as hurried:
        hurried_coll = hurried.get_collection("deadline")
        with pytest.raises(VecdbTimeoutError):
            hurried_coll.search(queries, k=10)
    wait_for(lambda: sum(search_outcomes(server)[0].values()) > sum(before.values()), "the server to finish the search")
    after, quick_after = search_outcomes(server)
    new = {code: n - before.get(code, 0) for code, n in after.items() if n > before.get(code, 0)}
    assert new == {"OK": 1} or (new in ({"DEADLINE_EXCEEDED": 1}, {"CANCELLED": 1}) and quick_after == quick_before), new
    assert isinstance(VecdbTimeoutError("x"), TimeoutError)


def retry_pauses(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The pauses (seconds) the client logged before each retry."""
    return [float(r.args[3]) for r in caplog.records  # type: ignore[index]
            if r.name == "vecdb.client" and "retry" in r.msg and isinstance(r.args, tuple)]


def test_unavailable_is_retried_within_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """UNAVAILABLE is retried exactly ``retries`` times; with a short deadline the client gives
    up before its retries are used, never planning a pause past the deadline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="vecdb.client")
    with vecdb.connect(f"127.0.0.1:{port}", timeout=60, retries=3) as nowhere:
        with pytest.raises(UnavailableError):
            nowhere.list_collections()
    assert len(retry_pauses(caplog)) == 3
    caplog.clear()
    with vecdb.connect(f"127.0.0.1:{port}", timeout=0.3, retries=100) as nowhere:
        with pytest.raises((UnavailableError, VecdbTimeoutError)):
            nowhere.list_collections()
    pauses = retry_pauses(caplog)
    assert len(pauses) < 100 and sum(pauses) < 0.3, pauses


def test_asyncio_client_follows_the_same_transport_policy(caplog: pytest.LogCaptureFixture) -> None:
    """The asyncio client retries UNAVAILABLE by the sync client's policy (one
    ``TransportPolicy``, logging its retries the same way) and gives up inside its deadline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="vecdb.client")

    async def call(timeout: float, retries: int) -> None:
        async with aio_client.connect(f"127.0.0.1:{port}", timeout=timeout, retries=retries) as nowhere:
            await nowhere.list_collections()

    with pytest.raises(UnavailableError):
        asyncio.run(call(60, 2))
    assert len(retry_pauses(caplog)) == 2
    caplog.clear()
    with pytest.raises((UnavailableError, VecdbTimeoutError)):
        asyncio.run(call(0.3, 100))
    pauses = retry_pauses(caplog)
    assert len(pauses) < 100 and sum(pauses) < 0.3, pauses


def test_retry_reaches_a_server_that_comes_up_late(tmp_path: Path) -> None:
    """A call made while nothing listens is retried (UNAVAILABLE) until the server is up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = vecdb.open(str(tmp_path / "data"))
    server, _ = create_server(db, f"127.0.0.1:{port}")
    failures: list[str] = []

    class StartOnFirstRetry(logging.Handler):
        """Starts the server when the client logs its first retry: the first attempt has
        then provably found nothing listening."""

        def emit(self, record: logging.LogRecord) -> None:
            if "retry" in record.msg and not failures:
                failures.append(str(record.args[1]))  # type: ignore[index]
                server.start()

    handler = StartOnFirstRetry(logging.DEBUG)
    client_log = logging.getLogger("vecdb.client")
    level = client_log.level
    client_log.addHandler(handler)
    client_log.setLevel(logging.DEBUG)
    try:
        with vecdb.connect(f"127.0.0.1:{port}", timeout=60, retries=8) as late:
            assert late.list_collections() == []
        assert failures == ["UnavailableError"]
    finally:
        client_log.removeHandler(handler)
        client_log.setLevel(level)
        server.stop(None).wait()
        db.close()


def test_health_and_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "vecdb.v1.SearchService", "vecdb.v1.PointService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"vecdb.v1.CollectionService", "vecdb.v1.PointService", "vecdb.v1.SearchService",
                "vecdb.v1.TenantService", "vecdb.v1.AdminService", "grpc.health.v1.Health"} <= services
    assert healthcheck.main([server.address]) == 0  # the container HEALTHCHECK command


def test_metrics_endpoint(server: ServerProcess, db: RemoteDatabase) -> None:
    coll = db.get_collection("pts")
    for _ in range(3):
        coll.search(np.ones(DIM), k=2)
    with pytest.raises(IdNotFoundError):
        coll.get([4242])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'vecdb_requests_total{code="OK",method="Search"}' in text
    assert 'vecdb_requests_total{code="NOT_FOUND",method="Get"}' in text
    assert 'vecdb_request_duration_seconds_bucket{le="0.01",method="Search"}' in text
    assert 'vecdb_collection_points{collection="pts"}' in text


def test_request_metrics_add_up_over_threads(tmp_path: Path) -> None:
    """Each serving thread records into its own tally without a lock; a scrape adds them up:
    exact counts per (method, code), cumulative latency buckets, and what is still in flight."""
    with vecdb.open(str(tmp_path / "db")) as database:
        metrics = ServerMetrics(database)
        go = threading.Barrier(4)

        def serve(i: int) -> None:
            go.wait()
            for j in range(500):
                metrics.started()
                metrics.finished("Search", "OK", 0.003 if j % 2 else 0.0002)
            metrics.started()
            metrics.finished("Get", "NOT_FOUND", 0.02)
            if i == 0:
                metrics.started()  # still being served at scrape time

        threads = [threading.Thread(target=serve, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in metrics.registry.collect() for s in family.samples}
    assert samples[("vecdb_requests_total", (("code", "OK"), ("method", "Search")))] == 2000
    assert samples[("vecdb_requests_total", (("code", "NOT_FOUND"), ("method", "Get")))] == 4
    bucket = lambda le, method="Search": samples[("vecdb_request_duration_seconds_bucket",  # noqa: E731
                                                  (("le", le), ("method", method)))]
    assert (bucket("0.0001"), bucket("0.00025"), bucket("0.0025"), bucket("0.005"), bucket("+Inf")) == \
           (0, 1000, 1000, 2000, 2000)
    assert bucket("0.01", "Get") == 0 and bucket("0.025", "Get") == 4
    assert samples[("vecdb_request_duration_seconds_sum", (("method", "Search"),))] == pytest.approx(1000 * 0.0032)
    assert samples[("vecdb_requests_in_flight", ())] == 1


def test_structured_logs(server: ServerProcess, db: RemoteDatabase) -> None:
    events = server.log_events()
    serving = [e for e in events if e.get("event") == "serving"]
    assert serving and serving[0]["port"] == server.port and serving[0]["level"] == "info"
    assert any(e.get("event") == "auth_open" and e["level"] == "warning" for e in events)
    assert any(e.get("event") == "rpc_error" and e.get("code") == "NOT_FOUND" for e in events)


def test_streaming_upsert_in_chunks(server: ServerProcess) -> None:
    with vecdb.connect(server.address, timeout=60) as conn:
        coll = conn.create_collection("bulk", DIM, index="flat")
        coll._chunk_bytes = 10_000  # force many UpsertStream messages
        x = np.random.default_rng(2).standard_normal((3000, DIM)).astype(np.float32)
        coll.upsert(np.arange(3000), x, [{"i": i} for i in range(3000)])
        assert coll.count() == 3000
        got = coll.get([0, 2999])
        np.testing.assert_array_equal(got.vectors, x[[0, 2999]])
        assert got.payloads == [{"i": 0}, {"i": 2999}]


def test_asyncio_client(server: ServerProcess, db: RemoteDatabase) -> None:
    async def scenario() -> None:
        async with aio_client.connect(server.address, timeout=30) as adb:
            coll = await adb.create_collection("aio", DIM, metric="l2", index="flat")
            x = np.random.default_rng(4).standard_normal((20, DIM)).astype(np.float32)
            await coll.upsert(np.arange(20), x, [{"n": i} for i in range(20)])
            assert await coll.count() == 20
            res, got = await asyncio.gather(coll.search(x[:3], k=2, with_payloads=True), coll.get([7]))
            np.testing.assert_array_equal(res.ids[:, 0], [0, 1, 2])
            assert res.payloads[1][0] == {"n": 1} and got.payloads == [{"n": 7}]
            coll._chunk_bytes = 2_000  # the streaming upsert, too
            await coll.upsert(np.arange(100, 400), np.ones((300, DIM)), [{"n": i} for i in range(300)])
            assert await coll.count() == 320
            assert "aio" in [c.name for c in await adb.list_collections()]
            with pytest.raises(CollectionNotFoundError):
                await adb.get_collection("missing")
            await adb.drop_collection("aio")
    asyncio.run(scenario())


def test_train_and_trained_travel_over_the_wire(server: ServerProcess) -> None:
    """A collection whose index needs training reports ``trained=False`` over the wire while an
    exact scan stands in, until ``train()`` (sync and asyncio clients) builds the index; an
    empty collection refuses to train with the embedded class."""
    x = np.random.default_rng(9).standard_normal((50, DIM)).astype(np.float32)
    with vecdb.connect(server.address, timeout=60) as conn:
        coll = conn.create_collection("codes", DIM, metric="l2", index="sq8")
        coll.upsert(np.arange(50), x)
        assert coll.stats().trained is False
        assert coll.search(x[7], k=1).ids.tolist() == [[7]]  # served by the exact scan meanwhile
        coll.train()
        stats = coll.stats()
        assert stats.trained is True and stats.count == 50
        assert coll.search(x[7], k=1).ids.tolist() == [[7]]
        empty = conn.create_collection("codes-empty", DIM, metric="l2", index="sq8")
        with pytest.raises(FailedPreconditionError, match="empty"):
            empty.train()
        conn.drop_collection("codes-empty")
        with pytest.raises(CollectionNotFoundError):
            empty.train()

    async def scenario() -> None:
        async with aio_client.connect(server.address, timeout=60) as adb:
            acoll = await adb.create_collection("codes-aio", DIM, metric="l2", index="sq8")
            await acoll.upsert(np.arange(50), x)
            assert (await acoll.stats()).trained is False
            await acoll.train()
            assert (await acoll.stats()).trained is True
            await adb.drop_collection("codes-aio")
    asyncio.run(scenario())



def in_flight(server: ServerProcess) -> float:
    """RPCs the server is serving now (its ``vecdb_requests_in_flight`` gauge)."""
    return next(v for name, _, v in metric_samples(server) if name == "vecdb_requests_in_flight")



def test_a_long_search_does_not_hold_up_a_short_one(server: ServerProcess, db: RemoteDatabase) -> None:
    """While a long search (10,000 exact queries, run in bounded steps) is being served, a
    one-query search on the same server is answered; the long one, cancelled by its caller
    afterwards, stops at its next step (CANCELLED) instead of running to its end."""
    from vecdb import client

    n = 20_000
    x = np.random.default_rng(13).standard_normal((n, DIM)).astype(np.float32)
    long_coll = db.create_collection("long-flat", DIM, metric="l2", index="flat")
    long_coll.upsert(np.arange(n), x)
    queries = np.random.default_rng(14).standard_normal((10_000, DIM)).astype(np.float32)
    request = client.search_call(long_coll.info, queries, 10, None, None, None, False).request
    short = db.get_collection("pts")
    expected = short.search(np.ones(DIM), k=3)
    wait_for(lambda: in_flight(server) == 0, "the server to go idle")
    before = sum(1 for e in server.log_events() if e.get("event") == "rpc_error" and e.get("code") == "CANCELLED")
    with grpc.insecure_channel(server.address, options=client.channel_options(8)) as channel:
        call = vecdb_pb2_grpc.SearchServiceStub(channel).Search.future(request, timeout=120)
        wait_for(lambda: in_flight(server) >= 1 or call.done(), "the long search to reach the server")
        got = short.search(np.ones(DIM), k=3)
        assert not call.done(), "the long search ended before the short one was answered"
        np.testing.assert_array_equal(got.ids, expected.ids)
        assert call.cancel()
        wait_for(lambda: in_flight(server) == 0, "the cancelled long search to stop on the server")
    cancelled = [e for e in server.log_events() if e.get("event") == "rpc_error" and e.get("code") == "CANCELLED"]
    assert len(cancelled) == before + 1 and cancelled[-1]["method"] == "Search"
    db.drop_collection("long-flat")

def test_cancelled_train_stops_and_keeps_the_index_serving(server: ServerProcess) -> None:
    """A Train RPC whose caller cancels it while the server builds stops at the build's next
    step (the RPC ends CANCELLED and no new index is swapped in); the index in place keeps
    answering, and a later Train completes."""
    n = 16_000  # two build steps (vecdb.collection.training.BUILD_STEP): seconds of HNSW inserts here
    x = np.random.default_rng(12).standard_normal((n, DIM)).astype(np.float32)
    with vecdb.connect(server.address, timeout=120) as conn:
        coll = conn.create_collection("train-cancel", DIM, metric="l2", index="hnsw")
        coll.upsert(np.arange(n), x)
        wait_for(lambda: in_flight(server) == 0, "the server to go idle")
        with grpc.insecure_channel(server.address) as channel:
            stub = vecdb_pb2_grpc.CollectionServiceStub(channel)
            call = stub.Train.future(vecdb_pb2.TrainRequest(collection="train-cancel"), timeout=120)
            wait_for(lambda: in_flight(server) >= 1 or call.done(), "the Train RPC to reach the server")
            assert call.cancel(), "Train finished before it could be cancelled"
            wait_for(lambda: in_flight(server) == 0, "the cancelled Train to stop on the server")

        def train_events() -> list[dict[str, object]]:
            return [e for e in server.log_events()
                    if e.get("collection") == "train-cancel" and e.get("event") == "index_trained"]

        assert train_events() == []  # the build was abandoned, not finished in the background
        errors = [e for e in server.log_events() if e.get("event") == "rpc_error" and e.get("method") == "Train"]
        assert errors and errors[-1]["code"] == "CANCELLED" and errors[-1]["error"] == "VecdbCancelledError"
        assert coll.search(x[123], k=1).ids.tolist() == [[123]]  # the index in place still serves
        coll.train()
        assert len(train_events()) == 1 and coll.count() == n
        assert coll.search(x[4567], k=1).ids.tolist() == [[4567]]
        conn.drop_collection("train-cancel")

def test_graceful_shutdown_finishes_in_flight_and_closes_cleanly(tmp_path: Path) -> None:
    """SIGTERM while a search is in flight (seen on the server's in-flight gauge): the search
    finishes after the signal (the server logs it between "signal" and "stopped") and its
    caller gets the full answer; then the database closes cleanly."""
    proc = start_server_process(tmp_path / "data", tmp_path / "server.log", args=["--log-level", "debug", "--grace", "120"])
    rng = np.random.default_rng(6)
    base = rng.standard_normal((20_000, 64)).astype(np.float32)
    queries = rng.standard_normal((3000, 64)).astype(np.float32)  # ~0.5 s of exact search here
    with vecdb.connect(proc.address, timeout=120, max_message_mb=64) as conn:
        coll = conn.create_collection("slow", 64, metric="l2", index="flat")
        coll.upsert(np.arange(len(base)), base)
        outcome: dict[str, object] = {}

        def long_search() -> None:
            try:
                outcome["result"] = coll.search(queries, k=5)
            except Exception as exc:  # recorded for the assertion below
                outcome["error"] = exc

        def in_flight() -> float:
            return next(v for name, _, v in metric_samples(proc) if name == "vecdb_requests_in_flight")

        assert in_flight() == 0
        worker = threading.Thread(target=long_search)
        worker.start()
        wait_for(lambda: in_flight() >= 1 or not worker.is_alive(), "the search to reach the server")
        assert proc.stop(timeout=60) == 0
        worker.join(60)
    assert healthcheck.main([proc.address, "--timeout", "1"]) == 1  # gone
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].ids.shape == (3000, 5)
    events = proc.log_events()
    order = [e.get("event") for e in events]
    searched = [i for i, e in enumerate(events) if e.get("event") == "rpc" and e.get("method") == "Search"]
    assert len(searched) == 1
    assert order.index("signal") < searched[0] < order.index("stopped"), "the search was not in flight at SIGTERM"
    with vecdb.open(str(tmp_path / "data")) as reopened:  # LMDB closed cleanly: reopens with all points
        assert reopened.get_collection("slow").count() == 20_000


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    proc = start_server_process(tmp_path / "data", tmp_path / "server.log",
                                args=["--tls-cert", str(cert), "--tls-key", str(key), "--no-metrics"])
    try:
        assert healthcheck.main([f"localhost:{proc.port}", "--tls-ca", str(cert)]) == 0
        with vecdb.connect(f"localhost:{proc.port}", tls=True, root_certificates=cert.read_bytes(), timeout=30) as conn:
            assert conn.list_collections() == []
        with vecdb.connect(f"localhost:{proc.port}", timeout=3, retries=0) as plain:
            with pytest.raises((UnavailableError, VecdbTimeoutError)):
                plain.list_collections()
    finally:
        assert proc.stop() == 0
