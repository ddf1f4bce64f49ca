"""Hostile and malformed requests against a real server process: each must be answered
with an error status (never INTERNAL or a crash), the server must keep serving, and the
stored data must be unchanged afterwards. Bounded: a fixed list plus a seeded, fixed
number of random mutations."""
from __future__ import annotations

from typing import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import vecdb
from vecdb.client import RemoteDatabase
from vecdb.errors import IdNotFoundError
from vecdb.server.process import ServerProcess, start_server_process
from vecdb.v1 import types_pb2 as t
from vecdb.v1 import vecdb_pb2 as pb

DIM = 8
N = 64
ERROR_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "ALREADY_EXISTS",
               "FAILED_PRECONDITION"}
PATHS = {name: f"/{service.full_name}/{name}" for service in pb.DESCRIPTOR.services_by_name.values()
         for name in service.methods_by_name}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    proc = start_server_process(root / "data", root / "server.log",
                                args=["--max-message-mb", "1", "--max-k", "1000", "--no-metrics"])
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[RemoteDatabase]:
    with vecdb.connect(server.address, timeout=30) as conn:
        coll = conn.create_collection("fz", DIM, metric="l2", index="flat")
        rng = np.random.default_rng(11)
        coll.upsert(np.arange(N), rng.standard_normal((N, DIM)), [{"i": i} for i in range(N)])
        coll.create_tenant("t")
        coll.grant("t", [1, 2, 3])
        yield conn


def state(db: RemoteDatabase) -> tuple:
    """Everything observable about the stored data (every stored point: exact flat search)."""
    coll = db.get_collection("fz")
    everything = coll.search(np.zeros(DIM), k=1000).ids[0]
    stored = np.sort(everything[everything >= 0])
    got = coll.get(stored)
    hits = coll.search(np.eye(DIM), k=5)
    return (coll.count(), coll.count(tenant="t"), stored.tobytes(), got.vectors.tobytes(), got.payloads,
            hits.ids.tobytes(), [c.name for c in db.list_collections()], coll.list_tenants(),
            coll.search(np.eye(DIM), k=N, tenant="t").ids.tobytes())


def send(server: ServerProcess, method: str, payload: bytes | list[bytes]) -> str:
    """Send raw request bytes (a list for the streaming RPC); return the status code name."""
    return answer(server, method, payload)[0]


def f32(rows: int, cols: int, data: bytes | None = None, dtype: int = t.FLOAT32) -> t.Matrix:
    return t.Matrix(n_rows=rows, n_cols=cols, dtype=dtype, data=bytes(4 * rows * cols) if data is None else data)


def int_ids(*values: int) -> t.Ids:
    return t.Ids(int64=np.array(values, "<i8").tobytes())


def search(**kw: object) -> bytes:
    base = {"collection": "fz", "queries": f32(1, DIM), "k": 3}
    return pb.SearchRequest(**{**base, **kw}).SerializeToString()


def upsert(**kw: object) -> bytes:
    base = {"collection": "fz", "ids": int_ids(1), "vectors": f32(1, DIM)}
    return pb.UpsertRequest(**{**base, **kw}).SerializeToString()


UNKNOWN_FIELD = b"\xf8\x06\x01"  # field 111, varint 1: unknown to every vecdb.v1 message

HOSTILE: list[tuple[str, str, bytes | list[bytes]]] = [
    ("wrong dim", "Search", search(queries=f32(1, DIM + 1))),
    ("rows*cols disagree with data", "Search", search(queries=f32(2, DIM, bytes(4 * DIM)))),
    ("huge rows, no data", "Search", search(queries=f32(2**31, DIM, b""))),
    ("zero columns", "Search", search(queries=f32(3, 0, b""))),
    ("int64 dtype for vectors", "Search", search(queries=f32(1, DIM, bytes(8 * DIM), t.INT64))),
    ("unspecified dtype", "Search", search(queries=t.Matrix(n_rows=1, n_cols=DIM, data=bytes(4 * DIM)))),
    ("NaN query", "Search", search(queries=f32(1, DIM, np.full(DIM, np.nan, "<f4").tobytes()))),
    ("huge k", "Search", search(k=2**62)),
    ("k over limit", "Search", search(k=1001)),
    ("negative k", "Search", search(k=-5)),
    ("many queries x k", "Search", search(queries=f32(20_000, 1, bytes(80_000)), k=1000)),
    ("filter not JSON", "Search", search(filter_json="{lang: en")),
    ("filter not an object", "Search", search(filter_json="[1, 2]")),
    ("filter unknown operator", "Search", search(filter_json='{"a": {"$regex": ".*"}}')),
    ("deeply nested filter", "Search", search(filter_json='{"$not": ' * 5000 + "{}" + "}" * 5000)),
    ("params unknown knob", "Search", search(params_json='{"ef": 10, "rm_rf": 1}')),
    ("unknown tenant", "Search", search(tenant="ghost")),
    ("unknown collection", "Search", search(collection="../../etc")),
    ("unknown field", "Search", search() + UNKNOWN_FIELD),
    ("unknown nested field", "Search",
     pb.SearchRequest(collection="fz", k=3).SerializeToString()
     + b"\x12" + bytes([len(f32(1, DIM).SerializeToString()) + 3]) + f32(1, DIM).SerializeToString() + UNKNOWN_FIELD),
    ("truncated bytes", "Search", search()[:-7]),
    ("garbage bytes", "Search", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    ("bad wire type", "Count", b"\x0f"),
    ("oversize message", "Search", search(queries=f32(40_000, DIM))),
    ("ids not a multiple of 8", "Get", pb.GetRequest(collection="fz", ids=t.Ids(int64=b"\x01\x02\x03")).SerializeToString()),
    ("ids missing", "Get", pb.GetRequest(collection="fz").SerializeToString()),
    ("negative id", "Upsert", upsert(ids=int_ids(-7))),
    ("str id in int collection", "Upsert", upsert(ids=t.Ids(str=t.StringList(values=["x"])))),
    ("ids/vectors count differ", "Upsert", upsert(ids=int_ids(1, 2))),
    ("duplicate ids", "Upsert", upsert(ids=int_ids(5, 5), vectors=f32(2, DIM))),
    ("payloads not JSON", "Upsert", upsert(payloads_json="[{]")),
    ("payloads not a list", "Upsert", upsert(payloads_json='{"a": 1}')),
    ("payload count differs", "Upsert", upsert(payloads_json="[{}, {}]")),
    ("upsert into unknown tenant", "Upsert", upsert(tenants=["ghost"])),
    ("upsert with unknown field", "Upsert", upsert() + UNKNOWN_FIELD),
    ("stream: bad message mid-stream", "UpsertStream",
     [pb.UpsertStreamRequest(batch=pb.UpsertRequest.FromString(upsert(ids=int_ids(1000)))).SerializeToString(),
      b"\x0a\x05garbage"]),
    ("stream: wrong dim", "UpsertStream",
     [pb.UpsertStreamRequest(batch=pb.UpsertRequest.FromString(upsert(vectors=f32(1, DIM + 1)))).SerializeToString()]),
    ("delete with ids missing", "Delete", pb.DeleteRequest(collection="fz").SerializeToString()),
    ("grant unknown ids", "Grant", pb.GrantRequest(collection="fz", tenant="t", ids=int_ids(10**6)).SerializeToString()),
    ("create with bad params", "CreateCollection",
     pb.CreateCollectionRequest(name="x", dim=DIM, index="flat", index_params_json='{"bogus": 1}').SerializeToString()),
    ("create with bad name", "CreateCollection", pb.CreateCollectionRequest(name="../up", dim=DIM).SerializeToString()),
    ("create with huge dim", "CreateCollection", pb.CreateCollectionRequest(name="big", dim=2**40).SerializeToString()),
    ("snapshot outside the snapshot dir", "Snapshot", pb.SnapshotRequest(path="/etc/vecdb-pwned").SerializeToString()),
    ("snapshot escaping with ..", "Snapshot", pb.SnapshotRequest(path="../../outside").SerializeToString()),
    ("empty snapshot path", "Snapshot", pb.SnapshotRequest(path="").SerializeToString()),
]


def test_hostile_requests_get_errors_and_data_is_unchanged(server: ServerProcess, db: RemoteDatabase) -> None:
    before = state(db)
    answers = {name: send(server, method, payload) for name, method, payload in HOSTILE}
    wrong = {name: code for name, code in answers.items() if code not in ERROR_CODES}
    assert not wrong, wrong
    assert answers["oversize message"] == "RESOURCE_EXHAUSTED"
    assert answers["huge k"] == "RESOURCE_EXHAUSTED"
    assert answers["truncated bytes"] == answers["unknown field"] == "INVALID_ARGUMENT"
    assert server.process.poll() is None
    # the first batch of the broken stream was stored (documented); remove it, then compare
    db.get_collection("fz").delete([1000])
    assert state(db) == before


def mutate(rng: np.random.Generator, good: bytes, i: int) -> bytes:
    """Bit flips, a truncation or a splice of random bytes (by ``i % 3``)."""
    data = bytearray(good)
    kind = i % 3
    if kind == 0:
        for _ in range(1 + int(rng.integers(4))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        data = data[: int(rng.integers(len(data)))]
    else:
        at = int(rng.integers(len(data)))
        data = data[:at] + bytearray(rng.bytes(int(rng.integers(1, 16)))) + data[at:]
    return bytes(data)


def test_random_mutations_never_crash_the_server(server: ServerProcess, db: RemoteDatabase) -> None:
    """Seeded bit flips, truncations and splices of valid read requests: each is answered
    (an error, or OK when the mutation happens to stay valid), never INTERNAL/UNKNOWN."""
    before = state(db)
    rng = np.random.default_rng(2024)
    seeds = [("Search", search(k=4, filter_json='{"i": {"lt": 10}}')), ("Count", pb.CountRequest(collection="fz", tenant="t").SerializeToString()),
             ("Get", pb.GetRequest(collection="fz", ids=int_ids(1, 2, 3)).SerializeToString()),
             ("ListTenants", pb.ListTenantsRequest(collection="fz").SerializeToString())]
    codes = [send(server, method, mutate(rng, good, i)) for i, (method, good) in
             ((i, seeds[i % len(seeds)]) for i in range(120))]
    assert not {c for c in codes if c not in ERROR_CODES | {"OK"}}, codes
    with grpc.insecure_channel(server.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert state(db) == before


def test_mutated_writes_change_nothing_when_refused(server: ServerProcess, db: RemoteDatabase) -> None:
    """Seeded mutations of valid write requests (upsert, stream, delete, grant, revoke,
    tenant and collection creation): never INTERNAL/UNKNOWN, and whenever the answer is an
    error the stored state is exactly what it was before the request."""
    rng = np.random.default_rng(77)
    payloads = '[{"i": 5, "tag": "x"}, {"i": 6, "s": "y"}]'
    seeds = [
        ("Upsert", upsert(ids=int_ids(5, 6), vectors=f32(2, DIM, np.arange(2 * DIM, dtype="<f4").tobytes()),
                          payloads_json=payloads, tenants=["t"])),
        ("Delete", pb.DeleteRequest(collection="fz", ids=int_ids(7, 8)).SerializeToString()),
        ("Grant", pb.GrantRequest(collection="fz", tenant="t", ids=int_ids(9, 10)).SerializeToString()),
        ("Revoke", pb.RevokeRequest(collection="fz", tenant="t", ids=int_ids(1)).SerializeToString()),
        ("CreateTenant", pb.CreateTenantRequest(collection="fz", tenant="u").SerializeToString()),
        ("CreateCollection", pb.CreateCollectionRequest(name="made", dim=DIM, index="flat").SerializeToString()),
    ]
    before = state(db)
    codes = []
    for i in range(150):
        method, good = seeds[i % len(seeds)]
        code = send(server, method, mutate(rng, good, i))
        codes.append(code)
        after = state(db)
        if code != "OK":
            assert after == before, (i, method, code)
        before = after
    assert not {c for c in codes if c not in ERROR_CODES | {"OK"}}, codes
    assert codes.count("OK") < len(codes) and server.process.poll() is None


def answer(server: ServerProcess, method: str, payload: bytes | list[bytes]) -> tuple[str, str]:
    """Send raw request bytes (a list for the streaming RPC); return the status code name and
    its details."""
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        try:
            if isinstance(payload, list):
                channel.stream_unary(PATHS[method])(iter(payload), timeout=20)
            else:
                channel.unary_unary(PATHS[method])(payload, timeout=20)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", ""


def test_unknown_fields_are_refused_at_any_depth_and_other_encodings_served(server: ServerProcess,
                                                                             db: RemoteDatabase) -> None:
    """The parser settles most requests by re-encoding them (no unknown field when the bytes come
    back the same); that shortcut must neither let an unknown field through, at any depth or in any
    stream message, nor refuse a valid request that a client encoded differently."""
    queries = f32(1, DIM).SerializeToString()
    nested = (pb.SearchRequest(collection="fz", k=3).SerializeToString()
              + b"\x12" + bytes([len(queries) + len(UNKNOWN_FIELD)]) + queries + UNKNOWN_FIELD)
    code, details = answer(server, "Search", nested)
    assert code == "INVALID_ARGUMENT"
    assert "request.queries has fields this server does not know (field numbers [111])" in details
    code, details = answer(server, "Search", search() + UNKNOWN_FIELD)
    assert code == "INVALID_ARGUMENT" and "request has fields this server does not know" in details
    # the same search encoded otherwise: k sent twice (the last wins), an explicit empty filter_json,
    # the queries matrix split over two occurrences of its field (merged): all valid protobuf
    split = f32(1, DIM)
    head = t.Matrix(n_rows=1, n_cols=DIM).SerializeToString()
    tail = t.Matrix(dtype=split.dtype, data=split.data).SerializeToString()
    other = (pb.SearchRequest(collection="fz", k=7).SerializeToString() + b"\x18\x03" + b"\x22\x00"
             + b"\x12" + bytes([len(head)]) + head + b"\x12" + bytes([len(tail)]) + tail)
    assert pb.SearchRequest.FromString(other) == pb.SearchRequest.FromString(search())
    assert answer(server, "Search", other) == ("OK", "")
    with grpc.insecure_channel(server.address) as channel:
        got = pb.SearchResponse.FromString(channel.unary_unary(PATHS["Search"])(other, timeout=20))
    assert (got.ids.n_rows, got.ids.n_cols) == (1, 3)
    # an unknown field in the second message of a stream: refused, naming that message; the first stays stored
    first = pb.UpsertStreamRequest(batch=pb.UpsertRequest.FromString(upsert(ids=int_ids(2000)))).SerializeToString()
    second = pb.UpsertStreamRequest(batch=pb.UpsertRequest.FromString(upsert(ids=int_ids(2001)))).SerializeToString()
    code, details = answer(server, "UpsertStream", [first, second + UNKNOWN_FIELD])
    assert code == "INVALID_ARGUMENT"
    assert "stream message 1 has fields this server does not know (field numbers [111])" in details
    coll = db.get_collection("fz")
    with pytest.raises(IdNotFoundError):
        coll.get([2001])
    assert coll.delete([2000]) == 1
