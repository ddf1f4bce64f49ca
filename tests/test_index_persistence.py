"""Indexes that keep their state in LMDB (persistence "self") inside a collection: the index
writes each batch in the batch's own write transaction, a reopened index loads its state from
its sub-databases (no checkpoint folder, no replay), a SIGKILLed writer leaves exactly the
acknowledged batches (each written once), a failed batch or a failing index write commits
nothing, and drop and snapshot carry the sub-databases.

The index kinds here are test-only (registered only while this module's tests run, since
other tests list the registry): a flat index keeping its rows in its own sub-database,
counting what it loads, adds and writes, and recording the write sequence of every batch it
writes with ``overwrite=False`` (a batch written twice fails the write).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator

import lmdb
import numpy as np
import pytest

import vecdb
from vecdb.errors import (FailedPreconditionError, IdNotFoundError, InternalError, InvalidArgumentError,
                          ResourceExhaustedError)
from vecdb.index import base as index_base
from vecdb.index.base import IndexBatch, index_kinds
from vecdb.index.flat import FlatIndex
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE, rows_to_bytes
from vecdb.storage.env import Store
from vecdb.storage.space import MAX_SPACE_DBS, IndexSpace

DIM = 8
KIND = "test_selfflat"
TRAINED_KIND = "test_selftrained"


class SelfFlat(FlatIndex):
    """Exact search over rows kept in sub-database ``rows`` (iid -> float32 row); ``seqs``
    holds the write sequence of every batch written. ``made`` lists every instance."""

    kind = ""  # unregistered: ``register_kinds`` registers a subclass under ``KIND``
    persistence = "self"
    made: ClassVar[list["SelfFlat"]] = []
    fail_at: ClassVar[int | None] = None  # write sequence at which persist_batch raises

    def __init__(self, dim: int, metric: Any = "l2") -> None:
        super().__init__(dim, metric)
        self.loaded = self.added = self.batches = self.full_writes = 0
        SelfFlat.made.append(self)

    def add(self, vectors: Any, ids: Any = None, *, tenant: int | None = None) -> None:
        self.added += len(np.asarray(vectors).reshape(-1, self.dim))
        super().add(vectors, ids, tenant=tenant)

    def _attach(self, space: IndexSpace) -> None:
        self._rows = space.db("rows")
        self._seqs = space.db("seqs")
        ids, rows = read_rows(space, self._rows, self.dim)
        if len(ids):
            FlatIndex.add(self, rows, ids)
        self.loaded = len(ids)

    def _persist_batch(self, txn: Any, batch: IndexBatch) -> None:
        if type(self).fail_at == batch.seq:
            raise RuntimeError("injected index write failure")
        for key in K.u64_many(batch.removed):
            txn.delete(key, db=self._rows)
        if len(batch.ids):
            txn.cursor(self._rows).putmulti(list(zip(K.u64_many(batch.ids), rows_to_bytes(batch.vectors))))
        if not txn.put(K.u64(batch.seq), b"", db=self._seqs, overwrite=False):
            raise AssertionError(f"batch {batch.seq} written twice")
        self.batches += 1

    def _persist_all(self, txn: Any) -> None:
        ids = np.sort(self.ids)
        if len(ids):
            txn.cursor(self._rows).putmulti(list(zip(K.u64_many(ids), rows_to_bytes(self.vectors(ids)))))
        self.full_writes += 1


class SelfTrained(SelfFlat):
    """The same, needing training (like SPANN): a collection serves it by exact scan until
    it holds ``min_train_points`` points, then builds it and writes it whole."""

    needs_training = True

    def __init__(self, dim: int, metric: Any = "l2") -> None:
        super().__init__(dim, metric)
        self._trained = False

    def _train(self, sample: Any) -> None:
        self._trained = True

    @property
    def is_trained(self) -> bool:
        return self._trained or len(self) > 0

    @property
    def min_train_points(self) -> int:
        return 20


def register_kinds() -> None:
    """Register ``KIND`` / ``TRAINED_KIND`` as subclasses of the classes above (idempotent;
    a forked writer calls it too)."""
    for name, cls in ((KIND, SelfFlat), (TRAINED_KIND, SelfTrained)):
        if name not in index_kinds():
            type(cls.__name__, (cls,), {"kind": name})


@pytest.fixture(autouse=True, scope="module")
def test_kinds() -> Iterator[None]:
    register_kinds()
    yield
    for name in (KIND, TRAINED_KIND):
        index_base._REGISTRY.pop(name, None)  # no public way to unregister a kind


def read_rows(space: IndexSpace, db: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(iids, rows) held in sub-database ``db``."""
    with space.read() as txn:
        items = list(txn.cursor(db).iternext())
    ids = np.frombuffer(b"".join(k for k, _ in items), ">u8").astype(np.int64)
    rows = np.frombuffer(b"".join(v for _, v in items), F32_LE).reshape(-1, dim)
    return ids, rows


def env_names(path: Path) -> list[str]:
    """Names of the sub-databases of the (closed) database at ``path``, read with LMDB itself."""
    env = lmdb.open(str(path / "lmdb"), max_dbs=0, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [bytes(k).decode() for k, _ in txn.cursor().iternext()]
    finally:
        env.close()


def env_records(path: Path, name: str) -> dict[bytes, bytes]:
    """Every record of sub-database ``name`` of the (closed) database at ``path``."""
    env = lmdb.open(str(path / "lmdb"), max_dbs=64, readonly=True, lock=False)
    try:
        db = env.open_db(name.encode())
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor(db).iternext()}
    finally:
        env.close()


def rows_for(ids: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(ids), DIM)).astype(np.float32)


def last(kind: str = KIND) -> SelfFlat:
    """The newest attached index of ``kind`` (the one serving the collection opened last)."""
    return [i for i in SelfFlat.made if i.kind == kind and i.space is not None][-1]


def check_serves(col: Any, oracle: dict[int, np.ndarray]) -> None:
    """The collection answers exactly ``oracle``: count, stored vectors, and an exact search
    returning every point, each point its own nearest neighbour."""
    assert col.count() == len(oracle)
    ids = np.array(sorted(oracle), np.int64)
    if not len(ids):
        return
    x = np.stack([oracle[i] for i in ids.tolist()])
    np.testing.assert_array_equal(col.get(ids).vectors, x)
    everything = col.search(x[0], k=len(ids)).ids[0]
    np.testing.assert_array_equal(np.sort(everything), ids)
    np.testing.assert_array_equal(col.search(x, k=1).ids[:, 0], ids)


def check_subdb(path: Path, gen: int, oracle: dict[int, np.ndarray]) -> None:
    """The closed database's index rows are exactly the oracle's vectors, and its ``seqs``
    are exactly the collection's write sequences 1..seq (each batch written once)."""
    rows = env_records(path, f"c00000000.x{gen:x}.rows")
    want = rows_to_bytes(np.stack(list(oracle.values()))) if oracle else []
    assert sorted(rows.values()) == sorted(want)
    seqs = sorted(K.read_u64(k) for k in env_records(path, f"c00000000.x{gen:x}.seqs"))
    seq = K.read_u64(env_records(path, "c00000000.ctr")[b"seq"])
    assert seqs == list(range(1, seq + 1))


# ---- the storage layer ------------------------------------------------------------------
def test_index_space_names_are_validated_and_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path / "env")
    try:
        space = IndexSpace(store, "c00000001.x1.")
        for bad in ("", "Rows", "a.b", "1st", "x" * 33, 7):
            with pytest.raises(InvalidArgumentError):
                space.db(bad)  # type: ignore[arg-type]
        handles = [space.db(f"d{i}") for i in range(MAX_SPACE_DBS)]
        assert space.db("d0") is handles[0]
        with pytest.raises(ResourceExhaustedError):
            space.db("one_more")
        assert space.names() == [f"c00000001.x1.d{i}" for i in range(MAX_SPACE_DBS)]
        assert IndexSpace(store, "c00000001.x2.").names() == []
        space.write(lambda txn: txn.put(b"k", b"v", db=handles[1]))
        with space.read() as txn:
            assert txn.get(b"k", db=handles[1]) == b"v"
    finally:
        store.close()


def test_no_transaction_opens_inside_a_write(tmp_path: Path) -> None:
    """Opening a sub-database, a read or a second write inside a write transaction of the
    same thread would deadlock LMDB; the store refuses them (and the outer write aborts)."""
    store = Store(tmp_path / "env")
    try:
        db = store.db("a")
        space = IndexSpace(store, "p.")
        for inner in (lambda: space.db("late"), lambda: store.write(lambda t: None), lambda: store.read().__enter__()):
            def batch(txn: Any, inner: Any = inner) -> None:
                txn.put(b"k", b"v", db=db)
                inner()

            with pytest.raises(InternalError):
                store.write(batch)
        with store.read() as txn:
            assert txn.get(b"k", db=db) is None
        store.write(lambda txn: txn.put(b"k", b"v", db=db))  # the store is still usable
    finally:
        store.close()


# ---- collections ------------------------------------------------------------------------
def test_checkpoint_indexes_refuse_the_self_hooks() -> None:
    flat = FlatIndex(DIM)
    assert flat.persistence == "checkpoint" and flat.space is None
    with pytest.raises(FailedPreconditionError):
        flat.attach(None)  # type: ignore[arg-type]
    with pytest.raises(FailedPreconditionError):
        SelfFlat(DIM).persist_all(None)  # not attached


def test_upserts_and_deletes_reach_the_subdb_and_reopen_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "db"
    oracle: dict[int, np.ndarray] = {}
    with vecdb.open(path) as db:
        col = db.create_collection("c", dim=DIM, metric="l2", index=KIND)
        index = last()
        assert index.space is not None and index.full_writes == 1 and len(index) == 0
        ids = np.arange(40, dtype=np.int64)
        x = rows_for(ids, 1)
        col.upsert(ids, x, [{"i": int(i)} for i in ids])
        oracle.update(zip(ids.tolist(), x))
        y = rows_for(ids[:10], 2)  # replace 10
        col.upsert(ids[:10], y)
        oracle.update(zip(ids[:10].tolist(), y))
        assert col.delete(ids[30:35]) == 5
        for i in range(30, 35):
            oracle.pop(i)
        col.create_tenant("t")
        col.grant("t", ids[:3])
        assert index.batches == 5 and index is last()  # one write per batch, no rebuild
        check_serves(col, oracle)
        assert col.search(x[20], k=3, filter={"i": 20}).ids[0, 0] == 20
        assert sorted(col.search(x[20], k=5, tenant="t").ids[0].tolist()) == [-1, -1, 0, 1, 2]
    check_subdb(path, 1, oracle)
    folders = list((path / "index").glob("c00000000/*"))
    assert folders and all((f / "payload").is_dir() for f in folders)  # the payload index is checkpointed
    assert not [f for f in folders if (f / "index").exists()], "a 'self' index must not be saved to a folder"
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        index = last()
        assert index.loaded == len(oracle) and index.added == 0  # loaded from LMDB, nothing replayed
        check_serves(col, oracle)
        z = rows_for(np.array([100]), 3)
        col.upsert([100], z, [{"i": 100}])
        oracle[100] = z[0]
        check_serves(col, oracle)
        assert col.search(z[0], k=1, filter={"i": 100}).ids[0, 0] == 100
    check_subdb(path, 1, oracle)
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        assert last().loaded == len(oracle) and last().added == 0
        check_serves(col, oracle)
        assert col.search(z[0], k=1, filter={"i": 100}).ids[0, 0] == 100


def test_rejected_batch_leaves_the_subdb_untouched(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", dim=DIM, metric="l2", index=KIND)
        index = last()
        col.upsert([1, 2], rows_for(np.array([1, 2]), 1))
        before = read_rows(index.space, index._rows, DIM)
        with pytest.raises(InvalidArgumentError):
            col.upsert([3], rows_for(np.array([3]), 2), [{"bad": float("nan")}])
        with pytest.raises(InvalidArgumentError):
            col.upsert([3], np.ones((1, DIM + 1), np.float32))
        after = read_rows(index.space, index._rows, DIM)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        assert index.batches == 1 and col.count() == 2


def test_an_index_write_error_aborts_the_batch_and_the_collection_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "db"
    oracle: dict[int, np.ndarray] = {}
    with vecdb.open(path) as db:
        col = db.create_collection("c", dim=DIM, metric="l2", index=KIND)
        index = last()
        x = rows_for(np.arange(5), 1)
        col.upsert(np.arange(5), x, [{"i": i} for i in range(5)])
        oracle.update(zip(range(5), x))
        before = read_rows(index.space, index._rows, DIM)
        SelfFlat.fail_at = 2
        try:
            with pytest.raises(InternalError, match="injected"):
                col.upsert([7, 1], rows_for(np.array([7, 1]), 2))
            with pytest.raises(InternalError, match="injected"):
                col.delete([0])
            with pytest.raises(InternalError, match="injected"):
                col.create_tenant("t")
        finally:
            SelfFlat.fail_at = None
        after = read_rows(index.space, index._rows, DIM)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        with pytest.raises(IdNotFoundError):
            col.get([7])
        assert col.list_tenants() == []
        check_serves(col, oracle)  # nothing of the failed batches is visible
        y = rows_for(np.array([7]), 3)
        col.upsert([7], y)
        oracle[7] = y[0]
        col.delete([0])
        oracle.pop(0)
        check_serves(col, oracle)
        assert index is last() and index.batches == 3
    check_subdb(path, 1, oracle)
    with vecdb.open(path) as db:
        check_serves(db.get_collection("c"), oracle)
        assert last().loaded == len(oracle) and last().added == 0


def test_drop_collection_drops_the_index_subdbs(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with vecdb.open(path) as db:
        for name in ("a", "b"):
            db.create_collection(name, dim=DIM, metric="l2", index=KIND).upsert([1, 2], rows_for(np.arange(2), 1))
    names = env_names(path)
    assert {"c00000000.x1.rows", "c00000000.x1.seqs", "c00000001.x1.rows", "c00000001.x1.seqs"} <= set(names)
    with vecdb.open(path) as db:
        db.drop_collection("a")
        assert db.get_collection("b").count() == 2
    names = env_names(path)
    assert not [n for n in names if n.startswith("c00000000.")], names
    assert {"c00000001.x1.rows", "c00000001.x1.seqs"} <= set(names)
    with vecdb.open(path) as db:
        check_serves(db.get_collection("b"), dict(zip([1, 2], rows_for(np.arange(2), 1))))


def test_snapshot_carries_the_index_subdbs(tmp_path: Path) -> None:
    oracle = dict(zip(range(30), rows_for(np.arange(30), 1)))
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", dim=DIM, metric="l2", index=KIND)
        col.upsert(list(oracle), np.stack(list(oracle.values())))
        db.snapshot(tmp_path / "snap")
        col.upsert([99], rows_for(np.array([99]), 2))  # after the snapshot: not in it
    assert {"c00000000.x1.rows", "c00000000.x1.seqs"} <= set(env_names(tmp_path / "snap"))
    with vecdb.open(tmp_path / "snap") as snap:
        col = snap.get_collection("c")
        assert last().loaded == 30 and last().added == 0
        check_serves(col, oracle)


def test_training_writes_a_new_generation_and_drops_the_old(tmp_path: Path) -> None:
    """An index that needs training (like SPANN) is served by exact scan, writing nothing,
    until the collection holds enough points; then it is built, written whole into a
    generation of sub-databases, and takes every later batch. ``train()`` rebuilds it into
    the next generation and drops the old one."""
    path = tmp_path / "db"
    oracle: dict[int, np.ndarray] = {}
    with vecdb.open(path) as db:
        col = db.create_collection("c", dim=DIM, metric="l2", index=TRAINED_KIND)
        x = rows_for(np.arange(10), 1)
        col.upsert(np.arange(10), x)
        oracle.update(zip(range(10), x))
        assert not col.stats().trained
        y = rows_for(np.arange(10, 25), 2)
        col.upsert(np.arange(10, 25), y)
        oracle.update(zip(range(10, 25), y))
        assert col.wait_indexed(timeout=60)  # automatic training runs in the background indexer
        assert col.stats().trained
        index = last(TRAINED_KIND)
        assert index.full_writes == 1 and index.batches == 0 and len(index) == 25
        col.delete([3])
        oracle.pop(3)
        assert index.batches == 1
        check_serves(col, oracle)
        col.train()
        rebuilt = last(TRAINED_KIND)
        assert rebuilt is not index and rebuilt.full_writes == 1
        assert sorted(rebuilt.space.store.names("c00000000.x")) == ["c00000000.x2.rows", "c00000000.x2.seqs"]
        col.delete([4])
        oracle.pop(4)
        assert rebuilt.batches == 1
        check_serves(col, oracle)
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        assert col.stats().trained and last(TRAINED_KIND).loaded == len(oracle) and last(TRAINED_KIND).added == 0
        check_serves(col, oracle)


def test_an_index_state_that_disagrees_with_the_store_is_rebuilt_into_a_new_generation(tmp_path: Path) -> None:
    """Committed points never become unreachable: sub-databases that lost a row (here deleted
    behind the database's back) are not served; the index is rebuilt from the stored vectors
    into the next generation and the damaged one is dropped."""
    path = tmp_path / "db"
    oracle = dict(zip(range(12), rows_for(np.arange(12), 1)))
    with vecdb.open(path) as db:
        db.create_collection("c", dim=DIM, metric="l2", index=KIND).upsert(list(oracle), np.stack(list(oracle.values())))
    env = lmdb.open(str(path / "lmdb"), max_dbs=64)
    try:
        rows = env.open_db(b"c00000000.x1.rows")
        with env.begin(write=True) as txn:
            cur = txn.cursor(rows)
            assert cur.first() and cur.delete()
    finally:
        env.close()
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        index = last()
        assert index.loaded == 0 and index.full_writes == 1 and len(index) == len(oracle)
        check_serves(col, oracle)
        assert index.space is not None and index.space.names() == ["c00000000.x2.rows", "c00000000.x2.seqs"]
        assert index.space.store.names("c00000000.x") == index.space.names()
    with vecdb.open(path) as db:
        check_serves(db.get_collection("c"), oracle)
        assert last().loaded == len(oracle) and last().space.prefix == "c00000000.x2."


# ---- SIGKILL of a writer ----------------------------------------------------------------
BATCH = 16


def op(b: int) -> tuple[Any, ...]:
    """Write number ``b``: a delete of half an earlier batch, a replacement, or new points."""
    if b % 5 == 4 and b >= 5:
        return ("delete", np.arange((b - 3) * BATCH, (b - 2) * BATCH, 2, dtype=np.int64))
    first = (b - 2) if b % 7 == 6 else b
    ids = np.arange(first * BATCH, (first + 1) * BATCH, dtype=np.int64)
    return ("upsert", ids, rows_for(ids, 1000 + b))


def apply_op(oracle: dict[int, np.ndarray], b: int) -> None:
    kind, *rest = op(b)
    if kind == "delete":
        for i in rest[0].tolist():
            oracle.pop(i, None)
    else:
        oracle.update(zip(rest[0].tolist(), rest[1]))


def writer(path: str, start: int, ack_file: str) -> None:
    """Child process: write batches start, start+1, ... until killed, appending each
    acknowledged batch number to ``ack_file``."""
    register_kinds()
    fd = os.open(ack_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    col = vecdb.open(path, checkpoint_points=48).get_collection("c")
    b = start
    while True:
        kind, *rest = op(b)
        if kind == "delete":
            col.delete(rest[0])
        else:
            col.upsert(rest[0], rest[1], [{"b": b}] * len(rest[0]))
        os.write(fd, f"{b}\n".encode())
        b += 1


def test_sigkill_leaves_exactly_the_acknowledged_batches_each_written_once(tmp_path: Path) -> None:
    # writers fork from a forkserver that never runs a parallel region (see test_crash)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vecdb", "numpy", "lmdb"])
    path = tmp_path / "db"
    with vecdb.open(path) as db:
        db.create_collection("c", dim=DIM, metric="l2", index=KIND)
    rng = np.random.default_rng(3)
    oracle: dict[int, np.ndarray] = {}
    applied = 0
    for attempt in range(6):
        ack_file = tmp_path / f"acks-{attempt}"
        proc = ctx.Process(target=writer, args=(str(path), applied, str(ack_file)))
        proc.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.is_alive() and not (ack_file.exists() and ack_file.stat().st_size):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.join()
        assert proc.exitcode == -9, f"writer exited on its own with {proc.exitcode}"
        acks = [int(x) for x in ack_file.read_text().split()] if ack_file.exists() else []
        assert acks == list(range(applied, applied + len(acks)))
        for b in acks:
            apply_op(oracle, b)
        applied += len(acks)
        with vecdb.open(path) as db:
            col = db.get_collection("c")
            if col.count() != len(oracle) or not _same(col, oracle):  # the batch in flight committed
                apply_op(oracle, applied)
                applied += 1
            index = last()
            assert index.loaded == len(oracle) and index.added == 0, "the index must load from LMDB, not replay"
            check_serves(col, oracle)
        check_subdb(path, 1, oracle)
    assert applied > 6, "the writers should have acknowledged some batches"


def _same(col: Any, oracle: dict[int, np.ndarray]) -> bool:
    """Whether the collection holds exactly the oracle's points and vectors."""
    ids = np.array(sorted(oracle), np.int64)
    try:
        got = col.get(ids).vectors if len(ids) else np.zeros((0, DIM), np.float32)
    except IdNotFoundError:
        return False
    return bool(np.array_equal(got, np.stack([oracle[i] for i in ids.tolist()]) if len(ids) else got))
