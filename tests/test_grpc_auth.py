"""End-to-end auth and tenant isolation against a real server process with API keys.

Keys are random per run and reach the server through environment variables named in its
key file (``key_env``) or as SHA-256 digests, never as literals in code or files."""
from __future__ import annotations

import json
import os
import secrets
from typing import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import vecdb
from vecdb.client import RemoteDatabase
from vecdb.errors import (
    AlreadyExistsError,
    IdNotFoundError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from vecdb.server.auth import hash_key
from vecdb.server.process import ServerProcess, start_server_process
from vecdb.v1 import types_pb2, vecdb_pb2, vecdb_pb2_grpc

DIM = 8
KEYS = {name: secrets.token_urlsafe(24) for name in ("admin", "acme", "beta", "both")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("auth-server")
    auth = {"keys": [
        {"name": "ops", "role": "admin", "sha256": hash_key(KEYS["admin"])},
        {"name": "acme-app", "tenants": ["acme"], "key_env": "TEST_ACME_KEY"},
        {"name": "beta-app", "tenants": ["beta"], "key_env": "TEST_BETA_KEY"},
        {"name": "both-app", "tenants": ["acme", "beta"], "sha256": hash_key(KEYS["both"])},
    ]}
    (root / "auth.json").write_text(json.dumps(auth))
    env = {**os.environ, "TEST_ACME_KEY": KEYS["acme"], "TEST_BETA_KEY": KEYS["beta"]}
    proc = start_server_process(root / "data", root / "server.log", env=env,
                                args=["--auth-file", str(root / "auth.json"), "--no-metrics"])
    admin = vecdb.connect(proc.address, api_key=KEYS["admin"], timeout=60)
    docs = admin.create_collection("docs", DIM, metric="l2", index="flat")
    for tenant in ("acme", "beta"):
        docs.create_tenant(tenant)
    x = np.random.default_rng(3).standard_normal((40, DIM)).astype(np.float32)
    docs.upsert(np.arange(20), x[:20], [{"owner": "acme"}] * 20, tenant="acme")
    docs.upsert(np.arange(20, 40), x[20:], [{"owner": "beta"}] * 20, tenant="beta")
    admin.close()
    yield proc
    assert proc.stop() == 0
    # keys never reach the log
    log = proc.log_path.read_text()
    assert not any(key in log for key in KEYS.values())


def client(server: ServerProcess, who: str | None) -> RemoteDatabase:
    key = None if who is None else KEYS.get(who, who)
    return vecdb.connect(server.address, api_key=key, timeout=30)


def test_missing_key_is_unauthenticated(server: ServerProcess) -> None:
    with client(server, None) as db:
        with pytest.raises(UnauthenticatedError, match="missing API key"):
            db.list_collections()


def test_wrong_key_is_unauthenticated(server: ServerProcess) -> None:
    with client(server, "not-a-key-" + secrets.token_hex(8)) as db:
        with pytest.raises(UnauthenticatedError, match="unknown API key"):
            db.get_collection("docs")
    # a near miss (one character changed) is just as unknown
    near = KEYS["admin"][:-1] + ("a" if KEYS["admin"][-1] != "a" else "b")
    with client(server, near) as db, pytest.raises(UnauthenticatedError):
        db.list_collections()


def test_bearer_header_is_accepted(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = vecdb_pb2_grpc.CollectionServiceStub(channel)
        answer = stub.ListCollections(vecdb_pb2.ListCollectionsRequest(), timeout=10,
                                      metadata=(("authorization", f"Bearer {KEYS['admin']}"),))
        assert [c.name for c in answer.collections] == ["docs"]


def test_admin_key_can_do_everything(server: ServerProcess) -> None:
    with client(server, "admin") as db:
        coll = db.create_collection("scratch", DIM, index="flat")
        coll.create_tenant("x")
        coll.upsert([1], np.ones((1, DIM)), tenant="x")
        coll.grant("x", [1])
        coll.revoke("x", [1])
        assert coll.stats().count == 1
        docs = db.get_collection("docs")
        assert docs.count() == 40
        assert docs.count(tenant="beta") == 20
        assert sorted(docs.list_tenants()) == ["acme", "beta"]
        assert docs.get([25]).payloads == [{"owner": "beta"}]
        db.drop_collection("scratch")


def test_tenant_key_sees_only_its_own_points(server: ServerProcess) -> None:
    with client(server, "acme") as db:
        docs = db.get_collection("docs")
        assert docs.count() == 20
        assert docs.list_tenants() == ["acme"]
        q = np.random.default_rng(5).standard_normal((5, DIM))
        res = docs.search(q, k=40, with_payloads=True)
        hits = res.ids[res.ids >= 0]
        assert len(hits) == 5 * 20 and (hits < 20).all()
        assert all(p == {"owner": "acme"} for row in res.payloads for p in row if p is not None)
        # a filter cannot widen the scope
        res = docs.search(q, k=40, filter={"owner": "beta"})
        assert (res.ids == -1).all()
        assert docs.get([3]).payloads == [{"owner": "acme"}]   # its own points are readable by id


def test_tenant_key_reading_another_tenant_fails(server: ServerProcess) -> None:
    with client(server, "acme") as db:
        docs = db.get_collection("docs")
        with pytest.raises(PermissionDeniedError, match="may not access tenant 'beta'"):
            docs.search(np.ones(DIM), k=3, tenant="beta")
        with pytest.raises(PermissionDeniedError):
            docs.count(tenant="beta")
        with pytest.raises(PermissionDeniedError):
            docs.delete([25], tenant="beta")
        with pytest.raises(IdNotFoundError, match=r"1 id\(s\) not found in collection 'docs': \[25\]"):
            docs.get([25])                    # beta's point answers NOT_FOUND, like a missing one
        with pytest.raises(PermissionDeniedError):
            docs.get([25], tenant="beta")


def test_tenant_key_cannot_write_into_other_tenants(server: ServerProcess) -> None:
    with client(server, "acme") as db:
        docs = db.get_collection("docs")
        with pytest.raises(PermissionDeniedError):
            docs.upsert([100], np.ones((1, DIM)), tenant="beta")
        with pytest.raises(AlreadyExistsError, match="not available to tenant 'acme'"):
            docs.upsert([25], np.zeros((1, DIM)))  # id 25 is beta's point
        assert docs.delete([25]) == 0  # scoped to acme: beta's point is untouched
        docs.upsert([100], np.ones((1, DIM)), [{"owner": "acme"}])  # new id: lands in acme
        assert docs.count() == 21
    with client(server, "admin") as db:
        docs = db.get_collection("docs")
        got = docs.get([25])
        assert got.payloads == [{"owner": "beta"}] and not (got.vectors == 0).all()
        assert docs.count(tenant="acme") == 21 and docs.count(tenant="beta") == 20
        assert docs.delete([100]) == 1


def test_tenant_key_cannot_manage(server: ServerProcess) -> None:
    with client(server, "beta") as db:
        docs = db.get_collection("docs")
        for action in (lambda: db.create_collection("mine", DIM), lambda: db.drop_collection("docs"),
                       lambda: docs.create_tenant("gamma"), lambda: docs.grant("beta", [1]),
                       lambda: docs.revoke("acme", [1]), lambda: docs.stats(), lambda: docs.train(),
                       lambda: db.snapshot("s")):
            with pytest.raises(PermissionDeniedError, match="admin API key"):
                action()


def test_multi_tenant_key_must_choose(server: ServerProcess) -> None:
    with client(server, "both") as db:
        docs = db.get_collection("docs")
        with pytest.raises(InvalidArgumentError, match="pass tenant="):
            docs.count()
        assert docs.count(tenant="acme") == 20 and docs.count(tenant="beta") == 20
        assert sorted(docs.list_tenants()) == ["acme", "beta"]


def test_a_search_over_several_tenants_needs_a_key_serving_each(server: ServerProcess) -> None:
    """tenant=[...] searches the union of the named tenants' points: a key serving both may
    name both; a key serving one may not add another."""
    q = np.random.default_rng(6).standard_normal((3, DIM))
    with client(server, "both") as db:
        res = db.get_collection("docs").search(q, k=40, tenant=["acme", "beta"])
        assert sorted(res.ids[0].tolist()) == list(range(40))
    with client(server, "acme") as db:
        docs = db.get_collection("docs")
        with pytest.raises(PermissionDeniedError, match="may not access tenant 'beta'"):
            docs.search(q, k=3, tenant=["acme", "beta"])
        res = docs.search(q, k=40, tenant=["acme"])
        assert sorted(res.ids[0][res.ids[0] >= 0].tolist()) == list(range(20))


@pytest.mark.parametrize("key, code, name", [
    (None, "UNAUTHENTICATED", "UnauthenticatedError"),
    ("wrong", "UNAUTHENTICATED", "UnauthenticatedError"),
    ("beta", "PERMISSION_DENIED", "PermissionDeniedError"),
])
def test_auth_status_codes_on_the_wire(server: ServerProcess, key: str | None, code: str, name: str) -> None:
    metadata = () if key is None else (("x-api-key", KEYS.get(key, key)),)
    request = vecdb_pb2.CountRequest(collection="docs", tenant="acme")
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            vecdb_pb2_grpc.PointServiceStub(channel).Count(request, timeout=10, metadata=metadata)
    assert info.value.code().name == code
    assert dict(info.value.trailing_metadata())["vecdb-error"] == name


def test_health_needs_no_key(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_rows_without_ids_and_newline_names_are_refused_over_the_wire(server: ServerProcess) -> None:
    """Issue 9 item 10: an (2**32 - 1, 0) vectors matrix with no ids was acknowledged as
    "upserted 4294967295"; a name ending in a newline was accepted."""
    with client(server, "admin") as db:
        docs = db.get_collection("docs")
        before = docs.count()
        with pytest.raises(InvalidArgumentError, match="got 4294967295 vectors but no ids"):
            docs.upsert([], np.zeros((2**32 - 1, 0), np.float32))
        with pytest.raises(InvalidArgumentError, match="collection name"):
            db.create_collection("ok\n", DIM)
        assert "ok\n" not in [c.name for c in db.list_collections()]
        assert docs.count() == before
    request = vecdb_pb2.UpsertRequest(collection="docs", ids=types_pb2.Ids(int64=b""), vectors=types_pb2.Matrix(
        n_rows=2**32 - 1, n_cols=0, dtype=types_pb2.FLOAT32))
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            vecdb_pb2_grpc.PointServiceStub(channel).Upsert(request, timeout=10, metadata=(("x-api-key", KEYS["admin"]),))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "got 4294967295 vectors but no ids" in info.value.details()


def test_upsert_checks_the_request_before_ownership(server: ServerProcess) -> None:
    """Issue 9 item 4: a wrong-dimension upsert naming another tenant's ids answers exactly as
    one naming free ids (INVALID_ARGUMENT), and a hidden id reads exactly as a missing one."""
    with client(server, "acme") as db:
        docs = db.get_collection("docs")
        errors = []
        for ids in ([25, 26], [5000, 5001]):  # beta's ids, free ids
            with pytest.raises(InvalidArgumentError) as info:
                docs.upsert(ids, np.ones((2, DIM + 1)))
            errors.append(str(info.value))
        assert errors[0] == errors[1]
        messages = []
        for one in (25, 5000):
            with pytest.raises(IdNotFoundError) as found:
                docs.get([one])
            messages.append(str(found.value).replace(str(one), "ID"))
        assert messages[0] == messages[1] == "1 id(s) not found in collection 'docs': [ID]"
