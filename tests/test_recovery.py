"""Committed data never becomes unreachable (issue 9, items 1-2).

Failures are injected into the step that applies a committed batch to memory: in process by
replacing an index method for the test (fault injection, the shipped code is what runs),
and in a real server process through a ``sitecustomize`` module that does the same when a
flag file exists. Every acknowledged point must stay readable, embedded and over gRPC,
before and after a reopen / server restart. Compressed-index collections (which need
training that collections do not do yet) are refused at creation, and one that already
exists on disk opens and serves by exact scan instead of bricking. And a server loading one
collection keeps answering calls about the others (issue 9, item 11).
"""
from __future__ import annotations

import json
import os
import shutil
import textwrap
import threading
from pathlib import Path
from typing import Any, Iterator

import lmdb
import numpy as np
import pytest

import vecdb
from vecdb.errors import InvalidArgumentError
from vecdb.filters import PayloadIndex
from vecdb.index.hnsw import HNSW
from vecdb.server.process import ServerProcess, start_server_process
from vecdb.collection.memory import ExactScan

DIM = 8


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def exact_top1(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row of ``x`` nearest (l2) to each query row."""
    return ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1).argmin(1)


def check_all(col: Any, ids: np.ndarray, x: np.ndarray, payloads: list[Any]) -> None:
    """Every point readable by id with its vector and payload, counted, and found by search."""
    assert col.count() == len(ids)
    got = col.get(ids)
    np.testing.assert_array_equal(got.vectors, x)
    assert got.payloads == payloads
    probe = np.arange(0, len(ids), max(1, len(ids) // 12))
    res = col.search(x[probe], k=1)
    np.testing.assert_array_equal(res.ids[:, 0], ids[probe])


class Fault:
    """Makes linking new rows into an HNSW graph (``HNSW._link``: every add, and the background
    indexer's moves) raise once (``once``) or every time (``always``) while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.once = False
        self.always = False
        self.fired = 0
        original = HNSW._link

        def _link(index: HNSW, slots: Any, pace: Any = None) -> None:
            if self.once or self.always:
                self.once = False
                self.fired += 1
                raise RuntimeError("injected failure while adding to the index")
            original(index, slots, pace)

        monkeypatch.setattr(HNSW, "_link", _link)


def points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, int]]]:
    """Seeded vectors, ids 0..n-1 and one small payload per point."""
    return vectors(n, seed), np.arange(n), [{"i": i} for i in range(n)]


# ---- embedded ------------------------------------------------------------------------------
def test_apply_failure_once_keeps_the_batch_and_acknowledges_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, ids, pays = points(300, 1)
    fault = Fault(monkeypatch)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(ids[:200], x[:200], pays[:200])
        fault.once = True
        col.upsert(ids[200:], x[200:], pays[200:])  # committed; indexing it fails once; memory is rebuilt
        check_all(col, ids, x, pays)             # served from staging meanwhile
        assert col.wait_indexed() and fault.fired == 1
        check_all(col, ids, x, pays)
        assert col._mem.degraded is None and not isinstance(col._mem.index, ExactScan)
        col.upsert([5], x[:1], [{"again": True}])  # the collection keeps taking writes
        pays[5] = {"again": True}
        x = x.copy()
        x[5] = x[0]
        ids_after = ids
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("c")
        assert col.get(ids_after).payloads == pays
        np.testing.assert_array_equal(col.get(ids_after).vectors, x)
        assert col.count() == 300


def test_index_that_never_takes_the_points_serves_by_exact_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, ids, pays = points(120, 2)
    fault = Fault(monkeypatch)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(ids[:60], x[:60], pays[:60])
        fault.always = True
        col.upsert(ids[60:], x[60:], pays[60:])  # the rebuild cannot use HNSW either: exact scan
        assert col.wait_indexed()
        assert isinstance(col._mem.index, ExactScan) and "hnsw" in col._mem.degraded
        check_all(col, ids, x, pays)
        res = col.search(x[:5] + 0.01, k=3, params={"ef": 50})  # HNSW's knobs are still accepted
        np.testing.assert_array_equal(res.ids[:, 0], exact_top1(x, x[:5] + 0.01))
        np.testing.assert_array_equal(col.search(x[:4], k=2, filter={"i": {"gte": 100}}).ids[:, 0] >= 100, True)
    with vecdb.open(tmp_path / "db") as db:  # the index still fails: reopening works all the same
        col = db.get_collection("c")
        assert isinstance(col._mem.index, ExactScan)
        check_all(col, ids, x, pays)
    monkeypatch.undo()
    with vecdb.open(tmp_path / "db") as db:  # once the index works again, it is used again
        col = db.get_collection("c")
        assert isinstance(col._mem.index, HNSW) and col._mem.degraded is None
        check_all(col, ids, x, pays)


def test_payload_the_payload_index_rejects_stays_stored_and_readable(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    original = PayloadIndex.add

    def add(index: PayloadIndex, iid: int, payload: Any) -> None:
        original(index, iid, payload)
        if payload and "poison" in payload:
            raise OverflowError("injected: the payload index cannot take this value")

    monkeypatch.setattr(PayloadIndex, "add", add)
    x = vectors(20, 3)
    pays: list[Any] = [{"i": i} for i in range(20)]
    pays[7] = {"i": 7, "poison": 1}
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="flat")
        col.upsert(np.arange(20), x, pays)
        assert "could not be indexed" in col._mem.degraded
        check_all(col, np.arange(20), x, pays)
        hits = col.search(x[7], k=20, filter={"i": {"gte": 0}}).ids[0]
        assert 7 not in hits.tolist() and sorted(hits[hits >= 0].tolist()) == [i for i in range(20) if i != 7]
    with vecdb.open(tmp_path / "db") as db:
        check_all(db.get_collection("c"), np.arange(20), x, pays)


def put_raw(path: Path, name: str, key: bytes, value: bytes) -> None:
    """Write one record into sub-database ``name`` of a closed database's LMDB environment, as
    an older vecdb (or a disk written before a validation existed) could have left it."""
    env = lmdb.open(str(path / "lmdb"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value, db=env.open_db(name.encode(), txn=txn))
    finally:
        env.close()


def test_log_records_of_older_versions_replay(tmp_path: Path) -> None:
    """A log record as vecdb wrote it before tenants were logged (bare u64 LE internal ids of the
    touched points) is still replayed over the checkpoint on open."""
    x = vectors(11, 9)
    with vecdb.open(tmp_path / "db") as db:
        db.create_collection("c", DIM, metric="l2", index="hnsw").upsert(np.arange(10), x[:10])
    # point 10 written by an older version: its records, the counters, and a bare-id log record
    db_path = tmp_path / "db"
    put_raw(db_path, "c00000000.ids", b"i" + (10).to_bytes(8, "big"), (10).to_bytes(8, "big"))
    put_raw(db_path, "c00000000.rev", (10).to_bytes(8, "big"), b"i" + (10).to_bytes(8, "big"))
    put_raw(db_path, "c00000000.vec", (10).to_bytes(8, "big"), x[10].astype("<f4").tobytes())
    put_raw(db_path, "c00000000.log", (2).to_bytes(8, "big"), np.array([10], "<u8").tobytes())
    put_raw(db_path, "c00000000.ctr", b"seq", (2).to_bytes(8, "big"))
    put_raw(db_path, "c00000000.ctr", b"next_iid", (11).to_bytes(8, "big"))
    with vecdb.open(db_path) as db:
        col = db.get_collection("c")
        assert col._mem.ckpt_seq == 1  # served by checkpoint + replay, not by a rebuild
        assert col.count() == 11
        np.testing.assert_array_equal(col.search(x, k=1).ids[:, 0], np.arange(11))


def test_op_log_records_round_trip_and_corrupt_ones_are_data_loss() -> None:
    from vecdb.collection import oplog
    from vecdb.errors import DataLossError

    ops = [oplog.Op(oplog.POINTS, 0, np.array([3, 1, 2])), oplog.Op(oplog.GRANT, 7, np.array([1])),
           oplog.Op(oplog.CREATE, 9), oplog.Op(oplog.REVOKE, 2**32 - 1, np.arange(5))]
    raw = oplog.encode(ops)
    assert len(raw) % 8  # never mistaken for an older bare-id record
    back = oplog.decode(raw)
    assert [(o.tag, o.tenant, o.ids.tolist()) for o in back] == [(o.tag, o.tenant, list(o.ids)) for o in ops]
    for bad in (raw[:-3], b"\x02" + raw[1:], raw[:20]):
        with pytest.raises(DataLossError):
            oplog.decode(bad)


def test_stored_payload_that_cannot_be_indexed_does_not_brick(tmp_path: Path) -> None:
    """Issue 9's reproduction: a committed payload number far outside float64 (stored by a
    version that did not validate it) must not make the collection unopenable."""
    x = vectors(10, 4)
    with vecdb.open(tmp_path / "db") as db:
        db.create_collection("c", DIM, metric="l2", index="flat").upsert(np.arange(10), x, [{"n": i} for i in range(10)])
    huge = b'{"n": ' + b"9" * 400 + b"}"
    put_raw(tmp_path / "db", "c00000000.pay", (3).to_bytes(8, "big"), huge)
    shutil.rmtree(tmp_path / "db" / "index")  # no checkpoint: opening indexes every stored payload
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("c")
        got = col.get([3, 4])
        assert got.payloads == [{"n": int("9" * 400)}, {"n": 4}]
        assert col.count() == 10
        np.testing.assert_array_equal(col.search(x[:3], k=1).ids[:, 0], [0, 1, 2])


@pytest.mark.parametrize("kind, params", [("pq", {"m": 4}), ("binary", {}), ("sq8", {})])
def test_compressed_index_is_accepted_at_create_and_bad_params_are_not(tmp_path: Path, kind: str, params: dict) -> None:
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, index=kind, index_params=params)
        assert col.count() == 0 and col.stats().trained is False  # exact scan until trained
        with pytest.raises(InvalidArgumentError, match=f"index {kind!r} rejects index_params"):
            db.create_collection("d", DIM, index=kind, index_params={**params, "no_such_knob": 1})
        assert [c.name for c in db.list_collections()] == ["c"]


def make_legacy_pq(path: Path, n: int = 40) -> tuple[np.ndarray, list[Any]]:
    """A database holding collection "legacy" with index "pq" (m=4) and ``n`` points, as a
    version that accepted such collections left it; returns its vectors and payloads."""
    x = vectors(n, 5)
    pays = [{"i": i} for i in range(n)]
    with vecdb.open(path) as db:
        db.create_collection("legacy", DIM, metric="l2", index="flat").upsert(np.arange(n), x, pays)
    env = lmdb.open(str(path / "lmdb"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            catalog = env.open_db(b"collections", txn=txn)
            record = json.loads(txn.get(b"legacy", db=catalog))
            record.update(index="pq", index_params={"m": 4})
            txn.put(b"legacy", json.dumps(record).encode(), db=catalog)
    finally:
        env.close()
    return x, pays


def test_existing_compressed_collection_opens_and_serves(tmp_path: Path) -> None:
    x, pays = make_legacy_pq(tmp_path / "db")
    ids = np.arange(len(x))
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("legacy")
        # too few points to train PQ: served by the exact-scan stand-in, which is not a degradation
        assert col.info.index == "pq" and isinstance(col._mem.index, ExactScan)
        assert col._mem.degraded is None and col.stats().trained is False
        check_all(col, ids, x, pays)
        more = vectors(10, 6)
        col.upsert(np.arange(40, 50), more, [{"i": i} for i in range(40, 50)])  # writes work too
        x, pays, ids = np.vstack([x, more]), pays + [{"i": i} for i in range(40, 50)], np.arange(50)
        check_all(col, ids, x, pays)
        assert col.stats().count == 50
    with vecdb.open(tmp_path / "db") as db:
        check_all(db.get_collection("legacy"), ids, x, pays)


# ---- over gRPC, against a real server process -----------------------------------------------
SITECUSTOMIZE = '''
"""Test-only fault injection, loaded by the server process through PYTHONPATH."""
import os

_flag = os.environ.get("VECDB_TEST_APPLY_FAULT")
if _flag:
    from vecdb.index.hnsw import HNSW

    _original = HNSW._link

    def _link(index, slots):
        if os.path.exists(_flag + ".once"):
            os.remove(_flag + ".once")
            raise RuntimeError("injected failure while adding to the index (once)")
        if os.path.exists(_flag + ".always"):
            raise RuntimeError("injected failure while adding to the index (always)")
        _original(index, slots)

    HNSW._link = _link

_hold = os.environ.get("VECDB_TEST_HOLD_LOAD")
if _hold:
    from vecdb.collection import Collection

    _init = Collection.__init__

    def _held_init(self, host, info, cid):
        # named pipes: the test reads "entered" once the load started, then opens "release"
        if info.name == "slow":
            with open(_hold + ".entered", "w") as pipe:
                pipe.write("loading")
            with open(_hold + ".release") as pipe:
                pipe.read()
        _init(self, host, info, cid)

    Collection.__init__ = _held_init
'''


@pytest.fixture
def faulty_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers over one data directory whose HNSW adds fail while flag files exist."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    flag = tmp_path / "fault"
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "VECDB_TEST_APPLY_FAULT": str(flag)}
    running: list[ServerProcess] = []

    def start() -> ServerProcess:
        proc = start_server_process(tmp_path / "data", tmp_path / f"server{len(running)}.log", env=env,
                                    args=["--no-metrics"])
        running.append(proc)
        return proc

    yield start, flag
    for proc in running:
        proc.stop()


def test_apply_failures_over_grpc_lose_nothing_across_restarts(faulty_server: Any) -> None:
    start, flag = faulty_server
    x = vectors(150, 7)
    ids = np.arange(150)
    pays = [{"i": i} for i in range(150)]
    server = start()
    with vecdb.connect(server.address, timeout=60) as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(ids[:50], x[:50], pays[:50])
        Path(str(flag) + ".once").touch()
        col.upsert(ids[50:100], x[50:100], pays[50:100])  # acknowledged although indexing fails once
        check_all(col, ids[:100], x[:100], pays[:100])     # served staged meanwhile
        assert col.wait_indexed(timeout=30)
        assert not Path(str(flag) + ".once").exists(), "the injected failure did not fire"
        check_all(col, ids[:100], x[:100], pays[:100])
        Path(str(flag) + ".always").touch()
        col.upsert(ids[100:], x[100:], pays[100:])  # the index never takes them: exact scan
        check_all(col, ids, x, pays)
        assert col.wait_indexed(timeout=30)
        check_all(col, ids, x, pays)
    assert server.stop() == 0
    server = start()  # the index still fails after the restart: the collection opens anyway
    with vecdb.connect(server.address, timeout=60) as db:
        col = db.get_collection("c")
        check_all(col, ids, x, pays)
        res = col.search(x[:3], k=2, params={"ef": 32})
        np.testing.assert_array_equal(res.ids[:, 0], ids[:3])
    assert server.stop() == 0
    os.remove(str(flag) + ".always")
    server = start()
    with vecdb.connect(server.address, timeout=60) as db:
        check_all(db.get_collection("c"), ids, x, pays)


def test_compressed_collections_over_grpc(tmp_path: Path) -> None:
    x, pays = make_legacy_pq(tmp_path / "data")
    ids = np.arange(len(x))
    for restart in range(2):
        server = start_server_process(tmp_path / "data", tmp_path / f"server{restart}.log", args=["--no-metrics"])
        try:
            with vecdb.connect(server.address, timeout=60) as db:
                assert db.create_collection(f"new{restart}", DIM, index="sq8").count() == 0
                col = db.get_collection("legacy")
                assert col.info.index == "pq"
                check_all(col, ids, x, pays)
                if restart == 0:
                    more = vectors(5, 8)
                    col.upsert(np.arange(40, 45), more, [{"i": i} for i in range(40, 45)])
                    x, pays, ids = np.vstack([x, more]), pays + [{"i": i} for i in range(40, 45)], np.arange(45)
                    check_all(col, ids, x, pays)
                assert sorted(c.name for c in db.list_collections()) == ["legacy"] + [f"new{i}" for i in range(restart + 1)]
        finally:
            assert server.stop() == 0


def test_server_answers_other_calls_while_a_collection_loads(tmp_path: Path) -> None:
    """The server process holds the load of collection "slow" (named pipes: explicit sync, no
    sleeps); GetCollection of another collection, ListCollections and Count still answer."""
    data = tmp_path / "data"
    with vecdb.open(data) as db:
        db.create_collection("slow", DIM, metric="l2", index="flat").upsert([1], vectors(1, 9))
        db.create_collection("other", DIM, metric="l2", index="flat").upsert([1, 2], vectors(2, 9))
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    hold = str(tmp_path / "hold")
    os.mkfifo(hold + ".entered")
    os.mkfifo(hold + ".release")
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
    server = start_server_process(data, tmp_path / "server.log", args=["--no-metrics"],
                                  env={**os.environ, "PYTHONPATH": path, "VECDB_TEST_HOLD_LOAD": hold})
    try:
        with vecdb.connect(server.address, timeout=60) as db:
            got: dict[str, Any] = {}
            loader = threading.Thread(target=lambda: got.setdefault("slow", db.get_collection("slow").count()))
            loader.start()
            with open(hold + ".entered") as pipe:  # returns once the server is inside the load
                assert pipe.read() == "loading"
            try:
                other = db.get_collection("other")  # before the fix: waits for the load (timeout)
                assert other.count() == 2
                assert sorted(c.name for c in db.list_collections()) == ["other", "slow"]
            finally:
                with open(hold + ".release", "w"):
                    pass
                loader.join()
            assert got["slow"] == 1
    finally:
        assert server.stop() == 0
