"""The LMDB layer: key order, value round trips, atomic batches, map growth, the RW lock."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from vecdb.errors import DataLossError, ResourceExhaustedError
from vecdb.storage import RWLock, Store, locks
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE, U64_LE, decode_json, encode_json, from_bytes, rows_to_bytes, to_bytes


def test_big_endian_keys_sort_like_numbers() -> None:
    values = np.array([0, 1, 255, 256, 65535, 2**32, 2**40 + 3, 2**63 - 1], np.uint64)
    keys = K.u64_many(values)
    assert keys == sorted(keys)
    assert [K.read_u64(k) for k in keys] == values.tolist()
    assert K.read_u32(K.u32(123456)) == 123456
    assert K.decode_id_key(K.int_id_key(42)) == 42
    assert K.decode_id_key(K.str_id_key("héllo")) == "héllo"


def test_arrays_round_trip_as_little_endian_copies() -> None:
    rows = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    recs = rows_to_bytes(rows)
    assert len(recs) == 3 and all(len(r) == 20 for r in recs)
    back = np.stack([from_bytes(r, F32_LE, count=5) for r in recs])
    np.testing.assert_array_equal(back, rows)
    assert back.flags.writeable and back.flags.aligned
    ids = np.array([1, 2**40], np.int64)
    np.testing.assert_array_equal(from_bytes(to_bytes(ids, U64_LE), U64_LE), ids)
    with pytest.raises(DataLossError):
        from_bytes(b"abc", F32_LE)
    with pytest.raises(DataLossError):
        from_bytes(recs[0], F32_LE, count=4)


def test_json_values_are_standard_json() -> None:
    assert decode_json(encode_json({"a": [1, "é", None, True]})) == {"a": [1, "é", None, True]}
    with pytest.raises(ValueError):
        encode_json({"x": float("nan")})
    with pytest.raises(DataLossError):
        decode_json(b"{not json")


def test_failed_batch_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "env")
    db = store.db("t")

    def batch(txn: lmdb.Transaction) -> None:
        txn.put(b"a", b"1", db=db)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write(batch)
    with store.read() as txn:
        assert txn.get(b"a", db=db) is None
    store.close()


def test_map_grows_instead_of_failing_and_keeps_data(tmp_path: Path) -> None:
    store = Store(tmp_path / "env", map_size=64 * 1024)
    db = store.db("t")
    blob = np.random.default_rng(1).bytes(4000)
    for i in range(200):  # ~800 KB, far over the initial 64 KB map
        store.write(lambda txn, i=i: txn.put(K.u64(i), blob, db=db))
    assert store.map_size() > 64 * 1024
    with store.read() as txn:
        assert sum(1 for _ in txn.cursor(db=db)) == 200
        assert txn.get(K.u64(199), db=db) == blob
    assert store.used_bytes(["t"]) >= 200 * 4000
    store.close()


def test_growth_stops_at_max_map_size(tmp_path: Path) -> None:
    store = Store(tmp_path / "env", map_size=64 * 1024, max_map_size=128 * 1024)
    db = store.db("t")
    blob = b"x" * 100_000
    with pytest.raises(ResourceExhaustedError, match="max_map_size"):
        store.write(lambda txn: [txn.put(K.u64(i), blob, db=db) for i in range(5)])
    with store.read() as txn:
        assert txn.get(K.u64(0), db=db) is None
    store.close()


def test_reopened_store_keeps_values_and_copy_is_consistent(tmp_path: Path) -> None:
    store = Store(tmp_path / "env")
    db = store.db("t")
    store.write(lambda txn: txn.put(b"k", b"v", db=db))
    store.copy_to(tmp_path / "copy")
    store.close()
    for where in ("env", "copy"):
        again = Store(tmp_path / where)
        handle = again.db("t")  # handles are opened outside transactions
        with again.read() as txn:
            assert txn.get(b"k", db=handle) == b"v"
        again.close()


def _wait_for_a_waiting_writer(lock: RWLock) -> None:
    """Bounded poll of the lock's own count until a writer waits for it (no guessed delay)."""
    for _ in range(60_000):
        with lock._cond:
            if lock._waiting_writers == 1:
                return
        time.sleep(0.001)


def test_rwlock_writer_excludes_readers_and_readers_share() -> None:
    """Two readers hold the lock at once; a writer that arrives meanwhile (provably waiting:
    the lock counts it) gets in only after both have left. Events and the lock's own state
    order it all, no guessed delays."""
    lock = RWLock()
    events: list[str] = []
    inside = threading.Barrier(3)  # the two readers, holding the lock, and this thread
    release = threading.Event()
    entered = threading.Event()

    def reader() -> None:
        with lock.read():
            inside.wait(timeout=60)  # both readers inside at once (else BrokenBarrierError)
            assert release.wait(timeout=60)
            events.append("r")

    def writer() -> None:
        with lock.write():
            entered.set()
            events.append("w")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    inside.wait(timeout=60)  # both readers now hold the lock
    w = threading.Thread(target=writer)
    w.start()
    _wait_for_a_waiting_writer(lock)
    assert lock._waiting_writers == 1
    assert not entered.is_set() and events == []
    release.set()
    for t in [*readers, w]:
        t.join(timeout=60)
    assert events == ["r", "r", "w"]


def _a_shared_hold_keeps_a_writer_out(lock: RWLock) -> None:
    """Take ``lock``'s shared side with ``enter_shared``, start a writer, check it waits, then
    release with ``exit_shared`` and check the writer got in."""
    since = lock.enter_shared()
    entered = threading.Event()

    def writer() -> None:
        with lock.write():
            entered.set()

    w = threading.Thread(target=writer)
    w.start()
    _wait_for_a_waiting_writer(lock)
    assert lock._waiting_writers == 1 and not entered.is_set()
    lock.exit_shared(since)
    w.join(timeout=60)
    assert entered.is_set() and lock._readers == 0


def test_a_shared_hold_without_a_context_manager_excludes_writers_and_is_counted() -> None:
    """``enter_shared`` / ``exit_shared`` (what a read transaction holds) keep a writer out
    until released, like ``read()``, and the hold is timed like any other."""
    name = "test-enter-shared"
    lock = RWLock(name)
    before = locks.hold_stats().get((name, "read", "wall"))
    _a_shared_hold_keeps_a_writer_out(lock)
    after = locks.hold_stats()[(name, "read", "wall")]
    assert after.count == (0 if before is None else before.count) + 1 and after.total >= 0


def test_untimed_reads_still_exclude_writers_and_only_writes_are_exported() -> None:
    """``time_reads=False`` (the store's map gate, held by every read transaction): a shared
    hold keeps a writer out as before, but no read figures are exported; write holds are."""
    name = "test-untimed-reads"
    lock = RWLock(name, time_reads=False)
    _a_shared_hold_keeps_a_writer_out(lock)
    with lock.read():
        pass
    stats = locks.hold_stats()
    assert (name, "read", "wall") not in stats and (name, "read", "cpu") not in stats
    assert stats[(name, "write", "wall")].count == 1 and lock.longest_read == 0.0


def test_dir_bytes_counts_every_file_below_and_zero_when_missing(tmp_path: Path) -> None:
    from vecdb.storage.files import dir_bytes, fsync_tree

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.bin").write_bytes(b"1" * 100)
    (tmp_path / "a" / "b" / "y.bin").write_bytes(b"2" * 23)
    fsync_tree(tmp_path / "a")  # every file and folder is synced; the contents stay
    assert dir_bytes(tmp_path / "a") == 123
    assert dir_bytes(tmp_path / "missing") == 0


def test_hold_stats_survive_a_lock_collected_while_they_are_read() -> None:
    """A lock's finalizer (it keeps the figures of a collected lock) runs wherever the garbage
    collector does, which includes any allocation made while ``hold_stats`` holds the stats
    lock: run there, it must not wait for that lock (it hung a /metrics scrape for good), and
    the collected lock's holds still count (white-box: the finalizer is run by hand)."""
    name = "test-collected-while-read"
    lock = RWLock(name)
    with lock.write():
        pass
    own = lock._own
    done = threading.Event()

    def collected_inside_hold_stats() -> None:
        with locks._STATS_LOCK:      # where hold_stats is when the collector runs
            locks._retire(name, own)  # what weakref.finalize calls for a collected lock
        done.set()

    threading.Thread(target=collected_inside_hold_stats, daemon=True).start()
    assert done.wait(120), "a lock's finalizer deadlocked on the stats lock"
    del lock
    assert locks.hold_stats()[(name, "write", "wall")].count >= 1


def test_reads_reuse_one_transaction_yet_each_sees_the_commits_before_it(tmp_path: Path) -> None:
    """Store.read ends its transaction into py-lmdb's spare (max_spare_txns=1) and the next
    read renews it: every read must still see what was committed before it began, a read
    open across a commit keeps its own snapshot, two reads open at once in one thread both
    work, a read that raised leaves the next one sound, and the map grows with a spare held."""
    store = Store(tmp_path / "env", map_size=64 * 1024)
    db = store.db("t")
    for i in range(20):
        store.write(lambda txn, i=i: txn.put(b"k", K.u64(i), db=db))
        with store.read(buffers=True) as txn:
            assert bytes(txn.get(b"k", db=db)) == K.u64(i)
    with store.read() as before:
        store.write(lambda txn: txn.put(b"k", b"new", db=db))
        with store.read() as inner:                      # a second read while the first is open
            assert inner.get(b"k", db=db) == b"new"
        assert before.get(b"k", db=db) == K.u64(19)     # the older snapshot, unchanged
    with pytest.raises(KeyError):
        with store.read() as txn:
            raise KeyError("inside a read")
    blob = np.random.default_rng(2).bytes(4000)
    for i in range(100):                                 # ~400 KB: the map grows between reads
        store.write(lambda txn, i=i: txn.put(K.u64(i), blob, db=db))
        with store.read() as txn:
            assert txn.get(K.u64(i), db=db) == blob
    assert store.map_size() > 64 * 1024
    seen: list[bytes] = []
    worker = threading.Thread(target=lambda: seen.extend(_read_key(store, db) for _ in range(50)))
    worker.start()
    for _ in range(50):
        assert _read_key(store, db) == b"new"
    worker.join(timeout=60)
    assert seen == [b"new"] * 50
    store.close()


def _read_key(store: Store, db: "lmdb._Database") -> bytes:
    with store.read(buffers=True) as txn:
        return bytes(txn.get(b"k", db=db))
