"""One test-suite, three backends: every test here runs against the embedded database
(``vecdb.open``), against the gRPC client talking to a real ``python -m vecdb.server``
process on 127.0.0.1 (``vecdb.connect``) and against a local Ray cluster of 3 shards x 2
replicas (``vecdb.cluster.connect``), proving all have one API shape: same methods,
same results, same exception classes for the same mistakes."""
from __future__ import annotations

import inspect
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import vecdb
from vecdb.api import CollectionAPI, CollectionInfo, CollectionStats, DatabaseAPI, GetResult, QueryResult
from vecdb.client import RemoteCollection, RemoteDatabase
from vecdb.collection import Collection
from vecdb.database import Database
from vecdb.errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    FailedPreconditionError,
    IdNotFoundError,
    InvalidArgumentError,
    TenantNotFoundError,
)
from vecdb.server.process import ServerProcess, start_server_process

DIM = 16
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """One real server process for the module, with its own data and snapshot directories."""
    root = tmp_path_factory.mktemp("congruence-server")
    proc = start_server_process(root / "data", root / "server.log",
                                args=["--snapshot-dir", str(root / "snapshots"), "--no-metrics"])
    yield proc, root / "snapshots"
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, Path]]:
    root = tmp_path_factory.mktemp("congruence-embedded")
    db = vecdb.open(str(root / "data"))
    yield db, root / "snapshots"
    db.close()


@pytest.fixture(scope="module")
def remote(server: tuple[ServerProcess, Path]) -> Iterator[tuple[RemoteDatabase, Path]]:
    proc, snapshots = server
    with vecdb.connect(proc.address, timeout=60) as db:
        yield db, snapshots


@pytest.fixture(scope="module")
def cluster(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DatabaseAPI, Path]]:
    """A 3-shard x 2-replica cluster on the session's local Ray (``conftest.local_ray``), once per module."""
    from vecdb.cluster import connect
    root = tmp_path_factory.mktemp("congruence-cluster")
    db = connect(root=str(root / "cluster"), shards=3, replicas=2)
    yield db, root / "snapshots"
    db.close()


@pytest.fixture(params=["embedded", "remote", "cluster"])
def backend(request: pytest.FixtureRequest) -> tuple[DatabaseAPI, Path]:
    """The database under test and where its snapshots may go."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def db(backend: tuple[DatabaseAPI, Path]) -> DatabaseAPI:
    return backend[0]


def fresh(prefix: str = "c") -> str:
    """A collection name no earlier test used (the backends live for the whole module)."""
    return f"{prefix}{next(_names)}"


def data(n: int = 200, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def make(db: DatabaseAPI, *, id_type: str = "int", n: int = 200, index: str = "flat", metric: str = "l2") -> CollectionAPI:
    coll = db.create_collection(fresh(), DIM, metric=metric, index=index, id_type=id_type)
    ids = np.arange(n) if id_type == "int" else [f"p{i}" for i in range(n)]
    payloads = [{"i": i, "lang": "en" if i % 2 else "fr", "tags": ["a", "b"] if i % 3 == 0 else ["c"]} for i in range(n)]
    coll.upsert(ids, data(n), payloads)
    return coll


# ---- one API shape -------------------------------------------------------------------------
def _public(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if not name.startswith("_") and callable(member)}


@pytest.mark.parametrize("protocol, classes", [
    (DatabaseAPI, (Database, RemoteDatabase, "ClusterDatabase")),
    (CollectionAPI, (Collection, RemoteCollection, "ClusterCollection")),
])
def test_signatures_match_the_protocol(protocol: type, classes: tuple[type, ...]) -> None:
    """Every protocol method exists on both implementations with the same parameters and defaults."""
    wanted = _public(protocol)
    for cls in classes:
        if isinstance(cls, str):   # a class of the optional cluster extra
            cls = getattr(pytest.importorskip("vecdb.cluster"), cls)
        for name, sig in wanted.items():
            got = inspect.signature(getattr(cls, name))
            assert [(p.name, p.default, p.kind) for p in got.parameters.values()] == \
                   [(p.name, p.default, p.kind) for p in sig.parameters.values()], f"{cls.__name__}.{name}"


def test_both_satisfy_the_protocols(db: DatabaseAPI) -> None:
    assert isinstance(db, DatabaseAPI)
    coll = make(db, n=10)
    assert isinstance(coll, CollectionAPI)


# ---- collections ----------------------------------------------------------------------------
def test_collection_lifecycle(db: DatabaseAPI) -> None:
    name = fresh()
    coll = db.create_collection(name, DIM, metric="cosine", index="hnsw", index_params={"M": 8}, id_type="str")
    assert coll.name == name
    assert coll.info == CollectionInfo(name, DIM, "cosine", "hnsw", coll.info.index_params, "str")
    assert coll.info.index_params["M"] == 8
    assert db.get_collection(name).info == coll.info
    assert name in [c.name for c in db.list_collections()]
    with pytest.raises(AlreadyExistsError):
        db.create_collection(name, DIM)
    db.drop_collection(name)
    with pytest.raises(CollectionNotFoundError):
        db.get_collection(name)
    with pytest.raises(CollectionNotFoundError):
        db.drop_collection(name)


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"dim": -3}, {"metric": "manhattan"}, {"index": "nope"},
                                    {"id_type": "uuid"}, {"index_params": {"M": "many"}}])
def test_bad_create_arguments_raise_the_same_class(db: DatabaseAPI, kwargs: dict) -> None:
    args = {"name": fresh(), "dim": DIM, **kwargs}
    with pytest.raises(InvalidArgumentError):
        db.create_collection(**args)


# ---- points ---------------------------------------------------------------------------------
def test_upsert_get_count_delete(db: DatabaseAPI) -> None:
    coll = make(db, n=50)
    assert coll.count() == 50
    got = coll.get([3, 1, 3])
    assert isinstance(got, GetResult)
    np.testing.assert_array_equal(got.ids, [3, 1, 3])
    assert got.ids.dtype == np.int64
    np.testing.assert_array_equal(got.vectors, data(50)[[3, 1, 3]])
    assert got.vectors.dtype == np.float32
    assert got.payloads[0] == {"i": 3, "lang": "en", "tags": ["a", "b"]}
    coll.upsert([3], np.ones((1, DIM)), None)
    got = coll.get([3])
    assert got.payloads == [None]
    np.testing.assert_array_equal(got.vectors, np.ones((1, DIM), np.float32))
    assert coll.delete([3, 4, 999]) == 2
    assert coll.count() == 48
    with pytest.raises(IdNotFoundError):
        coll.get([3])
    coll.upsert([], np.zeros((0, DIM)))
    assert coll.count() == 48


def test_string_ids(db: DatabaseAPI) -> None:
    coll = make(db, id_type="str", n=30)
    got = coll.get(["p2", "p0"])
    assert got.ids.dtype == object and list(got.ids) == ["p2", "p0"]
    res = coll.search(data(30)[:2], k=40)
    assert res.ids.dtype == object and res.ids.shape == (2, 40)
    assert res.ids[0, 0] == "p0" and res.ids[1, 0] == "p1"
    assert res.ids[0, -1] is None and np.isinf(res.distances[0, -1])
    with pytest.raises(InvalidArgumentError):
        coll.upsert([1, 2], data(2))


@pytest.mark.parametrize("bad", [
    lambda c: c.upsert([1], np.ones((1, DIM + 1))),
    lambda c: c.upsert([1, 2], np.ones((1, DIM))),
    lambda c: c.upsert([1], np.full((1, DIM), np.nan)),
    lambda c: c.upsert([1, 1], np.ones((2, DIM))),
    lambda c: c.upsert([-1], np.ones((1, DIM))),
    lambda c: c.upsert(["x"], np.ones((1, DIM))),
    lambda c: c.upsert([1], np.ones((1, DIM)), [{"a": 1}, {"b": 2}]),
    lambda c: c.upsert([1], np.ones((1, DIM)), tenant="nobody"),
    lambda c: c.search(np.ones(DIM), k=0),
    lambda c: c.search(np.ones(DIM), k=2.5),
    lambda c: c.search(np.ones(DIM + 2), k=3),
    lambda c: c.search(np.ones(DIM), k=3, filter={"year": {"around": 3}}),
    lambda c: c.search(np.ones(DIM), k=3, params={"no_such_knob": 1}),
    lambda c: c.search(np.ones(DIM), k=3, tenant="nobody"),
    lambda c: c.search(np.ones(DIM), k=3, tenant=[]),
    lambda c: c.search(np.ones(DIM), k=3, tenant=["t", 3]),
    lambda c: c.search(np.ones(DIM), k=3, tenant=["nobody", "nobody-else"]),
    lambda c: c.get([12345]),
    lambda c: c.grant("nobody", [1]),
])
def test_same_mistake_same_exception(embedded: tuple[Database, Path], remote: tuple[RemoteDatabase, Path], bad) -> None:
    """The same mistake raises the same exception class embedded and remote."""
    raised = []
    for db in (embedded[0], remote[0]):
        coll = make(db, n=20)
        with pytest.raises(Exception) as info:
            bad(coll)
        raised.append(type(info.value))
    assert raised[0] is raised[1], raised
    assert issubclass(raised[0], (InvalidArgumentError, IdNotFoundError, TenantNotFoundError))


# ---- search ---------------------------------------------------------------------------------
def test_search_filter_tenant_payloads(db: DatabaseAPI) -> None:
    coll = make(db, n=100)
    q = data(100)[:4]
    res = coll.search(q, k=5)
    assert isinstance(res, QueryResult) and res.payloads is None
    assert res.ids.shape == (4, 5) and res.ids.dtype == np.int64 and res.distances.dtype == np.float32
    np.testing.assert_array_equal(res.ids[:, 0], [0, 1, 2, 3])
    en = coll.search(q, k=5, filter={"lang": "en"}, with_payloads=True)
    assert all(p["lang"] == "en" for row in en.payloads for p in row)
    tagged = coll.search(q, k=100, filter={"$and": [{"tags": "a"}, {"i": {"lt": 30}}]})
    assert set(tagged.ids[0][tagged.ids[0] >= 0].tolist()) == {i for i in range(30) if i % 3 == 0}
    coll.create_tenant("t1")
    coll.grant("t1", [10, 11, 12])
    assert coll.list_tenants() == ["t1"]
    assert coll.count(tenant="t1") == 3
    assert coll.get([10, 12], tenant="t1").ids.tolist() == [10, 12]
    with pytest.raises(IdNotFoundError, match=r"1 id\(s\) not found in collection '\w+': \[13\]"):
        coll.get([10, 13], tenant="t1")  # 13 exists but is not t1's: answered as if missing
    with pytest.raises(TenantNotFoundError):
        coll.get([10], tenant="nobody")
    scoped = coll.search(q, k=10, tenant="t1")
    assert sorted(scoped.ids[0][:3].tolist()) == [10, 11, 12] and (scoped.ids[:, 3:] == -1).all()
    coll.revoke("t1", [12])
    assert coll.count(tenant="t1") == 2
    assert coll.delete([10, 11, 12], tenant="t1") == 2
    coll.drop_tenant("t1")
    assert coll.list_tenants() == []


@pytest.mark.parametrize("index", ["flat", "hnsw", "curator"])
def test_search_over_several_tenants(db: DatabaseAPI, index: str) -> None:
    """tenant=[a, b] searches the union of the tenants' points, each point once, exactly as
    a search over that id set; an unknown name among them is TenantNotFoundError."""
    n = 300
    coll = make(db, n=n, index=index)
    for name in ("a", "b", "c"):
        coll.create_tenant(name)
    coll.grant("a", range(0, 100))
    coll.grant("b", range(80, 160))        # 80..99 shared by a and b
    coll.grant("c", range(160, 300))
    q = data(n, seed=3)[:6]
    res = coll.search(q, k=25, tenant=["b", "a"], params={"ef": 200} if index == "hnsw" else None)
    x = data(n)
    union = np.arange(160)
    for row, query in zip(res.ids, q):
        assert len(set(row.tolist())) == len(row)                      # each point once
        exact = union[np.argsort(((x[union] - query) ** 2).sum(1), kind="stable")[:25]]
        assert set(row.tolist()) == set(exact.tolist())
    assert np.array_equal(coll.search(q, k=5, tenant=["a"]).ids, coll.search(q, k=5, tenant="a").ids)
    filtered = coll.search(q, k=300, tenant=["a", "c"], filter={"lang": "en"})
    got = set(filtered.ids[filtered.ids >= 0].tolist())
    assert got == {i for i in list(range(100)) + list(range(160, 300)) if i % 2}
    with pytest.raises(TenantNotFoundError):
        coll.search(q, k=5, tenant=["a", "nobody"])


def test_multi_tenant_collection_defaults_to_curator(db: DatabaseAPI) -> None:
    name = fresh()
    coll = db.create_collection(name, DIM, metric="l2", multi_tenant=True)
    assert coll.info.multi_tenant and coll.info.index == "curator"
    assert db.get_collection(name).info == coll.info
    assert [c for c in db.list_collections() if c.name == name] == [coll.info]
    plain = db.create_collection(fresh(), DIM)
    assert plain.info.index == "hnsw" and not plain.info.multi_tenant
    explicit = db.create_collection(fresh(), DIM, index="flat", multi_tenant=True)
    assert explicit.info.index == "flat" and explicit.info.multi_tenant
    with pytest.raises(InvalidArgumentError):
        db.create_collection(fresh(), DIM, multi_tenant="yes")


@pytest.mark.parametrize("index", ["sq8", "hnsw"])
def test_train(db: DatabaseAPI, index: str) -> None:
    """train() on an empty collection is a FailedPreconditionError; with points it trains the
    index (sq8 below its automatic threshold: exact scan until then) and searches agree."""
    coll = db.create_collection(fresh(), DIM, metric="l2", index=index)
    with pytest.raises(FailedPreconditionError, match="empty"):
        coll.train()
    x = data(60, seed=3)
    coll.upsert(np.arange(60), x)
    assert coll.stats().trained is (index == "hnsw")
    coll.train()
    assert coll.stats().trained is True
    np.testing.assert_array_equal(coll.search(x[:10], k=1).ids[:, 0], np.arange(10))


def test_wait_indexed(db: DatabaseAPI) -> None:
    """Writes are searchable at once; wait_indexed() returns True once the background indexer
    holds every point (stats then count them all as indexed); bad timeouts raise alike."""
    coll = db.create_collection(fresh(), DIM, metric="l2", index="hnsw")
    assert coll.wait_indexed() is True
    x = data(300, seed=5)
    coll.upsert(np.arange(300), x)
    np.testing.assert_array_equal(coll.search(x[:10], k=1).ids[:, 0], np.arange(10))
    assert coll.wait_indexed(timeout=60) is True
    stats = coll.stats()
    assert (stats.count, stats.indexed, stats.pending) == (300, 300, 0)
    assert coll.wait_indexed(timeout=0) is True
    for bad in (-1.0, float("nan")):
        with pytest.raises(InvalidArgumentError):
            coll.wait_indexed(timeout=bad)


def test_hnsw_search_params(db: DatabaseAPI) -> None:
    coll = make(db, n=300, index="hnsw", metric="cosine")
    res = coll.search(data(300)[:8], k=3, params={"ef": 64})
    np.testing.assert_array_equal(res.ids[:, 0], np.arange(8))


def test_results_are_identical_across_backends(embedded: tuple[Database, Path], remote: tuple[RemoteDatabase, Path]) -> None:
    """Same data, same calls: equal ids, distances, payloads, counts and stats figures."""
    colls = [make(db, n=120) for db in (embedded[0], remote[0])]
    q = data(7, seed=99)
    results = [c.search(q, k=9, filter={"lang": {"in": ["en"]}}, with_payloads=True) for c in colls]
    np.testing.assert_array_equal(results[0].ids, results[1].ids)
    np.testing.assert_array_equal(results[0].distances, results[1].distances)
    assert results[0].payloads == results[1].payloads
    stats = [c.stats() for c in colls]
    assert all(isinstance(s, CollectionStats) for s in stats)
    assert (stats[0].count, stats[0].index, stats[0].n_tenants) == (stats[1].count, stats[1].index, stats[1].n_tenants)
    gets = [c.get([5, 6]) for c in colls]
    np.testing.assert_array_equal(gets[0].vectors, gets[1].vectors)
    assert gets[0].payloads == gets[1].payloads


def test_snapshot(backend: tuple[DatabaseAPI, Path]) -> None:
    """The snapshot opens as a database holding the collection as it was at the call (same
    points, payloads, tenants and search answers); writes after the call are not in it."""
    db, root = backend
    coll = make(db, n=40)
    coll.create_tenant("t")
    coll.grant("t", [1, 2])
    coll.delete([7])
    ids = [i for i in range(40) if i != 7]
    q = data(5, seed=3)
    at_call = coll.get(ids), coll.search(q, k=6, filter={"lang": "en"}, with_payloads=True)
    target = root / fresh("snap")
    db.snapshot(str(target))
    coll.upsert([1000], np.ones((1, DIM)), None)
    coll.delete([3])
    with vecdb.open(str(target)) as copy:
        snap = copy.get_collection(coll.name)
        assert snap.info == coll.info
        assert (snap.count(), snap.count(tenant="t"), snap.list_tenants()) == (39, 2, ["t"])
        got, res = snap.get(ids), snap.search(q, k=6, filter={"lang": "en"}, with_payloads=True)
        np.testing.assert_array_equal(got.vectors, at_call[0].vectors)
        assert got.payloads == at_call[0].payloads
        np.testing.assert_array_equal(res.ids, at_call[1].ids)
        np.testing.assert_array_equal(res.distances, at_call[1].distances)
        assert res.payloads == at_call[1].payloads
        with pytest.raises(IdNotFoundError):
            snap.get([1000])
        assert snap.get([3]).ids.tolist() == [3]
    assert coll.count() == 39 and coll.get([1000]).ids.tolist() == [1000]
