"""SPANN: recall against the exact FlatIndex, persistence (standalone and in a collection),
in-place updates (splits, reassignment, tombstones), corrupt postings, filters, metrics and
bad input. Data is generated with seeded generators; every index lives in tmp_path or a
temporary directory of its own."""
from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import vecdb
from vecdb.errors import (AlreadyExistsError, DataLossError, DimensionMismatchError, FailedPreconditionError,
                          InvalidArgumentError)
from vecdb.index import SPANN, FlatIndex, index_class, load_index
from vecdb.index.spann import postings
from vecdb.index.spann.clustering import split_until

DIM = 24
SMALL = {"posting_limit": 64, "head_size": 16}
EVERYTHING = {"max_postings": 4096, "eps2": 1e9}   # read every posting: exact search


def clustered(n: int, seed: int, dim: int = DIM, centres: int = 60, spread: float = 2.0) -> np.ndarray:
    """Rows around ``centres`` fixed gaussian centres (the same centres for every seed), unit
    noise around centres ``spread`` apart (smaller: more overlap, harder)."""
    middle = np.random.default_rng(1234).standard_normal((centres, dim)).astype(np.float32) * spread
    rng = np.random.default_rng(seed)
    return (middle[rng.integers(0, centres, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / len(w) for g, w in zip(got, want)]))


def built(x: np.ndarray, metric: str = "l2", ids: Any = None, **kw: Any) -> SPANN:
    index = SPANN(x.shape[1], metric, **{**SMALL, **kw})
    index.train(x)
    index.add(x, ids)
    return index


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(6000, 1), clustered(200, 2)


# ---- recall ----------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_recall_at_10_against_flat(data: tuple[np.ndarray, np.ndarray], metric: str) -> None:
    x, q = data
    index = built(x, metric)
    try:
        flat = FlatIndex(DIM, metric)
        flat.add(x)
        want = flat.search(q, 10)
        got, stats = index.search_with_stats(q, 10)
        assert recall(got.ids, want.ids) >= 0.9
        same = got.ids == want.ids
        np.testing.assert_allclose(got.distances[same], want.distances[same], rtol=1e-4, atol=1e-4)
        assert (stats.postings <= 64).all() and stats.bytes_read > 0 and (stats.entries > 0).all()
        assert stats.entries.mean() < 0.25 * len(x)            # a small part of the data is read
        sizes = index.posting_sizes()
        assert sizes.max() <= index.posting_limit and sizes.sum() >= len(x)
        # resident: heads, their graph, bookkeeping; the postings (>= the raw vectors) stay on disk
        assert index.memory_bytes() < x.nbytes <= index.disk_bytes()
    finally:
        index.close()


def test_boundary_vectors_are_replicated_within_the_limit() -> None:
    x = clustered(3000, 3)
    index = built(x, eps1=1.0, replicas=3)
    try:
        assert len(x) < index.posting_sizes().sum() <= 3 * len(x)
        with index._space.read() as txn:
            slots = [postings.decode(v, DIM, 0)[0] for _, v in txn.cursor(index._pdb).iternext()]
        copies = np.bincount(np.concatenate(slots))
        assert copies.max() <= 3 and copies.min() == 1
    finally:
        index.close()


def test_clustering_is_balanced_and_bounded() -> None:
    x = clustered(5000, 4)
    parts = split_until(x, 50, np.random.default_rng(0))
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() <= 100 and sizes.sum() == len(x)          # at most twice the target
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(x)))
    assert sizes.min() >= 25 and np.percentile(sizes, 10) >= 50   # no starved clusters


def test_filters_apply_inside_the_scan(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    index = built(x)
    try:
        allowed = np.random.default_rng(5).choice(len(x), len(x) // 3, replace=False)
        flat = FlatIndex(DIM)
        flat.add(x)
        want = flat.search(q, 10, allow=allowed)
        got = index.search(q, 10, allow=allowed)
        assert np.isin(got.ids[got.ids >= 0], allowed).all()
        assert recall(got.ids, want.ids) >= 0.85
        assert (index.search(q, 5, allow=[]).ids == -1).all()
        with pytest.raises(InvalidArgumentError):
            index.search(q, 5, tenant=1)
    finally:
        index.close()


# ---- persistence -----------------------------------------------------------------------
def test_standalone_close_and_reopen_give_identical_results(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    ids = np.arange(len(x), dtype=np.int64) * 3 + 7         # not slots: a hashed id map
    index = SPANN(DIM, "l2", tmp_path / "s", **SMALL)
    index.train(x)
    index.add(x[:4000], ids[:4000])
    index.add(x[4000:], ids[4000:])
    assert index.remove(ids[:500]) == 500
    before = index.search(q, 10)
    heads, sizes, memory = index.n_heads, index.posting_sizes(), index.memory_bytes()
    index.close()
    again = SPANN(DIM, "l2", tmp_path / "s")                  # parameters come from the store
    try:
        assert again.posting_limit == 64 and len(again) == len(x) - 500 and again.n_heads == heads
        np.testing.assert_array_equal(again.posting_sizes(), sizes)
        after = again.search(q, 10)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.distances, before.distances)
        assert again.memory_bytes() <= memory + 64
        assert not np.isin(after.ids, ids[:500]).any()
        again.add(x[:10], ids[:10])                            # still writable
        assert again.search(x[:10], 1).ids[:, 0].tolist() == ids[:10].tolist()
    finally:
        again.close()


def test_reopen_with_another_dim_or_metric_is_refused(tmp_path: Path) -> None:
    index = built(clustered(300, 5), path=tmp_path / "s")
    index.close()
    with pytest.raises(InvalidArgumentError):
        SPANN(DIM + 1, "l2", tmp_path / "s")
    with pytest.raises(InvalidArgumentError):
        SPANN(DIM, "ip", tmp_path / "s")


def test_a_temporary_environment_is_removed_on_close_and_collection() -> None:
    index = built(clustered(300, 6))
    path = index.path
    assert path is not None and path.exists()
    index.close()
    assert not path.exists() and len(index) == 0 and not index.is_trained
    other = built(clustered(300, 6))
    path = other.path
    del other
    gc.collect()
    assert path is not None and not path.exists()


def test_save_and_load_round_trip(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    index = built(x[:2000])
    index.remove(np.arange(100))
    try:
        index.save(tmp_path / "saved")
        loaded = load_index(tmp_path / "saved")
        assert isinstance(loaded, SPANN) and len(loaded) == 1900
        a, b = index.search(q, 10), loaded.search(q, 10)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.distances, b.distances)
        loaded.close()
    finally:
        index.close()


def test_in_a_collection_the_postings_commit_with_each_batch_and_reload(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    x, q = clustered(1500, 7), clustered(50, 8)
    params = {**SMALL, "min_train": 300}
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="spann", index_params=params)
        col.upsert(np.arange(1000), x[:1000])
        col.train()                                            # built now; later batches write postings
        col.upsert(np.arange(1000, 1500), x[1000:])
        col.delete(np.arange(0, 1500, 7))
        col.upsert(np.arange(100, 140), x[:40])                # replacements
        col.wait_indexed()
        index = col._mem.index                                 # white-box: the configured index serves
        assert isinstance(index, SPANN) and index.space is not None and len(index) == col.count()
        before = col.search(q, 10)
    gone = np.setdiff1d(np.arange(0, 1500, 7), np.arange(100, 140))
    assert (before.ids >= 0).all() and not np.isin(before.ids, gone).any()
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("c")
        col.wait_indexed()
        reloaded = col._mem.index
        assert isinstance(reloaded, SPANN) and len(reloaded) == col.count()
        assert "rebuilding" not in caplog.text                 # loaded from its sub-databases, not rebuilt
        after = col.search(q, 10)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.distances, before.distances)


def test_searches_during_splits_return_valid_results(tmp_path: Path) -> None:
    """A reader thread searches while the writer's batches split postings in place."""
    x = clustered(4000, 9)
    q = clustered(20, 10)
    errors: list[BaseException] = []
    done = threading.Event()
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="spann",
                                   index_params={"posting_limit": 32, "head_size": 16, "min_train": 500})
        col.upsert(np.arange(500), x[:500])
        col.train()                                            # synchronously: the index is built now
        col.wait_indexed()
        heads = col._mem.index.n_heads
        col.search(q, 5)                                       # the build is committed: postings leave memory
        assert col._mem.index._overlay is None and col._mem.index.memory_bytes() < x[:500].nbytes

        def reader() -> None:
            try:
                for _ in range(2000):
                    if done.is_set():
                        break
                    res = col.search(q, 5)
                    valid = res.ids[res.ids >= 0]
                    assert (valid < 4000).all() and (res.ids[:, 0] >= 0).all()
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        for start in range(500, 4000, 250):
            col.upsert(np.arange(start, start + 250), x[start : start + 250])
        col.wait_indexed()
        done.set()
        thread.join()
        assert not errors, errors[0]
        index = col._mem.index
        assert index.n_heads > heads and index.posting_sizes().max() <= 32
        res = col.search(x[::200], 1)
        np.testing.assert_array_equal(res.ids[:, 0], np.arange(0, 4000, 200))


WRITER = """
import os, sys
sys.path.insert(0, {tests!r})
import numpy as np, vecdb
from test_spann import clustered
col = vecdb.open({path!r}).get_collection("c")
fd = os.open({acks!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
x = clustered(6000, 21)
for b in range(1, 60):
    ids = np.arange(b * 100, b * 100 + 100)
    col.upsert(ids, x[ids])
    if b % 3 == 0:
        col.delete(ids[::10])
    os.write(fd, f"{{b}}\\n".encode())
"""


def test_sigkill_during_inserts_and_splits_loses_no_acknowledged_vector(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A writer whose batches split postings is killed; the reopened collection loads the
    index from LMDB (no rebuild) holding exactly the acknowledged batches (plus, perhaps,
    the one in flight), every posting readable."""
    x = clustered(6000, 21)
    path, acks = tmp_path / "db", tmp_path / "acks"
    with vecdb.open(path) as db:
        col = db.create_collection("c", DIM, metric="l2", index="spann",
                                   index_params={"posting_limit": 24, "head_size": 8, "min_train": 100})
        col.upsert(np.arange(100), x[:100])
        col.train()
    script = WRITER.format(tests=str(Path(__file__).parent), path=str(path), acks=str(acks))
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"})
    try:
        for _ in range(60_000):                               # until 8 batches are acknowledged (or it exits)
            if (acks.exists() and len(acks.read_text().split()) >= 8) or child.poll() is not None:
                break
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    acked = [int(b) for b in acks.read_text().split()]
    assert acked == list(range(1, len(acked) + 1)) and len(acked) >= 8
    oracle = set(range(100))
    for b in acked:
        oracle |= set(range(b * 100, b * 100 + 100))
        if b % 3 == 0:
            oracle -= set(range(b * 100, b * 100 + 100, 10))
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        col.wait_indexed()
        index = col._mem.index
        assert isinstance(index, SPANN) and "rebuilding" not in caplog.text
        stored = set(index.ids.tolist())
        assert oracle <= stored and len(stored - oracle) <= 100   # the batch in flight may have committed
        assert len(stored) == col.count()
        ids = np.array(sorted(oracle))
        found = col.search(x[ids], 1, params=EVERYTHING).ids[:, 0]
        np.testing.assert_array_equal(found, ids)
        assert index.n_heads > 13                             # the writer's batches split postings


# ---- updates (SPFresh) -----------------------------------------------------------------
def test_insert_half_more_and_delete_a_fifth_keeps_recall_of_a_fresh_build() -> None:
    x0, x1, q = (clustered(n, seed, centres=150, spread=1.5) for n, seed in ((6000, 11), (3000, 12), (200, 13)))
    knobs = {"max_postings": 8}
    small = {"posting_limit": 24, "head_size": 12}            # the inserts split many postings
    index = built(x0, **small)
    try:
        heads = index.n_heads
        for start in range(0, 3000, 300):
            index.add(x1[start : start + 300], np.arange(6000 + start, 6300 + start))
        assert index.n_heads > heads and index.splits > 50 and index.posting_sizes().max() <= index.posting_limit
        gone = np.random.default_rng(14).choice(9000, 1800, replace=False)
        for start in range(0, 1800, 300):
            assert index.remove(gone[start : start + 300]) == 300
        keep = np.setdiff1d(np.arange(9000), gone)
        x = np.concatenate([x0, x1])[keep]
        flat = FlatIndex(DIM)
        flat.add(x, keep)
        want = flat.search(q, 10).ids
        fresh = built(x, ids=keep, **small)
        try:
            updated_recall = recall(index.search(q, 10, **knobs).ids, want)
            fresh_recall = recall(fresh.search(q, 10, **knobs).ids, want)
        finally:
            fresh.close()
        assert updated_recall >= fresh_recall - 0.02, (updated_recall, fresh_recall)
        assert updated_recall >= 0.9
    finally:
        index.close()


def dead_entries(index: SPANN) -> int:
    """Entries of removed vectors still held by the postings (tombstones)."""
    live = index._ids.slot_ids
    dead = 0
    with index._space.read() as txn:
        for key, raw in txn.cursor(index._pdb).iternext():
            slots, _ = postings.decode(raw, index.dim, int.from_bytes(key, "big"))
            dead += int((live[slots] < 0).sum())
    return dead


def test_deletes_are_tombstones_purged_when_a_posting_is_rewritten() -> None:
    x = clustered(2000, 15)
    index = built(x, posting_limit=4096, head_size=64)        # no splits: only the rewrite purges
    try:
        total = index.posting_sizes().sum()
        index.remove(np.arange(0, 2000, 2))
        assert index.posting_sizes().sum() == total and dead_entries(index) >= 1000
        found = index.search(x[:20], 5, **EVERYTHING).ids
        assert (found >= 0).all() and (found % 2 == 1).all()
        index.add(x, np.arange(2000, 4000))                   # touches every posting: each is rewritten
        assert dead_entries(index) == 0
        assert index.posting_sizes().sum() < 2 * total
    finally:
        index.close()


# ---- corrupt state ---------------------------------------------------------------------
def corrupt(path: Path, change: Any, db: bytes = b"spann.postings") -> None:
    env = lmdb.open(str(path), max_dbs=16)
    try:
        handle = env.open_db(db)
        with env.begin(write=True) as txn:
            key, value = next(iter(txn.cursor(handle).iternext()))
            change(txn, handle, bytes(key), bytes(value))
    finally:
        env.close()


@pytest.mark.parametrize("how", ["flip", "truncate", "drop", "header"])
def test_a_corrupt_or_truncated_posting_raises_data_loss(tmp_path: Path, how: str) -> None:
    x = clustered(1000, 16)
    index = built(x, path=tmp_path / "s")
    with index._space.read() as txn:
        key, raw = next(iter(txn.cursor(index._pdb).iternext()))
        members = postings.decode(raw, DIM, int.from_bytes(key, "big"))[1]  # the first posting's vectors
    index.close()
    changes = {
        "flip": lambda t, h, k, v: t.put(k, v[:-3] + bytes([v[-3] ^ 0x40]) + v[-2:], db=h),
        "truncate": lambda t, h, k, v: t.put(k, v[: len(v) - 4 * DIM], db=h),
        "drop": lambda t, h, k, v: t.delete(k, db=h),
        "header": lambda t, h, k, v: t.put(k, b"XXXX" + v[4:], db=h),
    }
    corrupt(tmp_path / "s", changes[how])
    again = SPANN(DIM, "l2", tmp_path / "s")
    try:
        with pytest.raises(DataLossError):
            again.search(x[:50], 10, **EVERYTHING)
        with pytest.raises(DataLossError):                     # an insert rewriting that posting
            again.add(members, np.arange(5000, 5000 + len(members)))
        assert len(again) == len(x)
    finally:
        again.close()


def test_a_corrupt_state_chunk_raises_data_loss_on_open(tmp_path: Path) -> None:
    index = built(clustered(500, 17), path=tmp_path / "s")
    index.close()

    def flip(txn: Any, handle: Any, key: bytes, value: bytes) -> None:
        chunk = next(k for k, _ in txn.cursor(handle).iternext() if bytes(k).startswith(b"a/"))
        raw = bytes(txn.get(chunk, db=handle))
        txn.put(chunk, bytes([raw[0] ^ 1]) + raw[1:], db=handle)

    corrupt(tmp_path / "s", flip, db=b"spann.meta")
    with pytest.raises(DataLossError):
        SPANN(DIM, "l2", tmp_path / "s")


# ---- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"posting_limit": 0}, {"posting_limit": 2}, {"head_size": 0},
                                 {"head_size": 10_000}, {"replicas": 0}, {"eps1": -1.0}, {"eps1": float("nan")},
                                 {"eps1": True}, {"rng_factor": 0.0}, {"head_M": 1}, {"min_train": 0},
                                 {"seed": -1}, {"posting_limit": "big"}])
def test_bad_parameters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        SPANN(DIM, "l2", **bad)


def test_bad_calls_are_refused_and_change_nothing() -> None:
    x = clustered(400, 18)
    index = SPANN(DIM, **SMALL)
    with pytest.raises(FailedPreconditionError):
        index.add(x)
    with pytest.raises(InvalidArgumentError):
        index.train(np.zeros((0, DIM), np.float32))
    index.train(x)
    try:
        index.add(x)
        with pytest.raises(FailedPreconditionError):
            index.train(x)
        with pytest.raises(DimensionMismatchError):
            index.add(np.ones((2, DIM + 1), np.float32))
        with pytest.raises(InvalidArgumentError):
            index.add(np.full((1, DIM), np.nan, np.float32))
        with pytest.raises(AlreadyExistsError):
            index.add(x[:2], [5, 400])
        for knobs in ({"max_postings": 0}, {"max_postings": 10**9}, {"eps2": -1}, {"eps2": "x"}, {"ef": 0},
                      {"nprobe": 3}):
            with pytest.raises(InvalidArgumentError):
                index.search(x[:2], 3, **knobs)
        with pytest.raises(InvalidArgumentError):
            index.search(x[:2], 0)
        assert len(index) == 400 and index.search(x[:1], 1).ids[0, 0] == 0
        assert index.remove([10_000, 10_001]) == 0
    finally:
        index.close()


def test_registered_as_a_self_persisting_trained_kind() -> None:
    assert index_class("spann") is SPANN
    assert SPANN.persistence == "self" and SPANN.needs_training and not SPANN.tenant_aware
    assert {"max_postings", "eps2", "ef"} == SPANN.search_params


# ---- property: reading every posting is exact search -----------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 80), seed=st.integers(0, 10_000), metric=st.sampled_from(["l2", "ip", "cosine"]),
       k=st.integers(1, 8), drop=st.integers(0, 20))
def test_reading_every_posting_matches_flat(n: int, seed: int, metric: str, k: int, drop: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    q = rng.standard_normal((5, 6)).astype(np.float32)
    index = SPANN(6, metric, posting_limit=8, head_size=4, replicas=2)
    index.train(x)
    index.add(x)
    flat = FlatIndex(6, metric)
    flat.add(x)
    gone = rng.choice(n, min(drop, n - 1), replace=False) if n > 1 else np.zeros(0, np.int64)
    index.remove(gone)
    flat.remove(gone)
    try:
        got, want = index.search(q, k, **EVERYTHING), flat.search(q, k)
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-4)
        with np.errstate(invalid="ignore"):                    # inf - inf of padded rows: not "sure"
            distinct = np.abs(np.diff(want.distances, axis=1, prepend=-np.inf, append=np.inf))
        sure = (distinct[:, :-1] > 1e-3) & (distinct[:, 1:] > 1e-3)
        np.testing.assert_array_equal(got.ids[sure], want.ids[sure])
    finally:
        index.close()


# ---- state machine: updates never lose a vector ------------------------------------------
class UpdatesMatchFlat(RuleBasedStateMachine):
    """Batches of inserts (splitting tiny postings, reassigning their neighbours' vectors),
    deletes and reopenings of a standalone index: reading every posting must always give
    exactly FlatIndex's answer, so no vector is ever lost, duplicated or left stale."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spann-sm-"))
        self.rng = np.random.default_rng(0)
        self.index = SPANN(4, "l2", self.dir, posting_limit=6, head_size=3, replicas=2, eps1=1.0)
        self.flat = FlatIndex(4)
        self.next_id = 0
        self.index.train(self.rng.standard_normal((20, 4)).astype(np.float32))

    @rule(n=st.integers(1, 25), seed=st.integers(0, 1000))
    def insert(self, n: int, seed: int) -> None:
        x = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
        ids = np.arange(self.next_id, self.next_id + n)
        self.next_id += n
        self.index.add(x, ids)
        self.flat.add(x, ids)

    @rule(fraction=st.floats(0.05, 0.6), seed=st.integers(0, 1000))
    def delete(self, fraction: float, seed: int) -> None:
        ids = self.flat.ids
        if len(ids):
            gone = np.random.default_rng(seed).choice(ids, max(1, int(fraction * len(ids))), replace=False)
            assert self.index.remove(gone) == self.flat.remove(gone)

    @rule()
    def reopen(self) -> None:
        self.index.close()
        self.index = SPANN(4, "l2", self.dir)

    @invariant()
    def matches_flat(self) -> None:
        assert len(self.index) == len(self.flat)
        if not len(self.flat):
            return
        q = self.rng.standard_normal((4, 4)).astype(np.float32)
        k = min(5, len(self.flat))
        got, want = self.index.search(q, k, **EVERYTHING), self.flat.search(q, k)
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-5)
        assert self.index.posting_sizes().max() <= self.index.posting_limit

    def teardown(self) -> None:
        self.index.close()
        shutil.rmtree(self.dir, ignore_errors=True)


UpdatesMatchFlat.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
test_updates_match_flat = UpdatesMatchFlat.TestCase
