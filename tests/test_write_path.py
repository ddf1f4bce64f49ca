"""The write path: a write is acknowledged on commit and searchable at once (staged rows are
searched exactly, stale ones hidden) while the collection's background indexer moves it into
the index; back-pressure bounds the staged rows; close and drop stop the indexer cleanly;
``wait_indexed`` and ``stats().indexed / .pending``; cached filter results kept up to date
across writes. Read-your-writes is checked embedded and over gRPC."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import vecdb
from vecdb.collection.memory import filter_allow
from vecdb.errors import CollectionNotFoundError, InvalidArgumentError
from vecdb.filters import PayloadIndex, parse_filter
from vecdb.server.process import ServerProcess, start_server_process

DIM = 12


def vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def check_read_your_writes(col: Any, rounds: int, batch: int, seed: int) -> None:
    """Each acknowledged upsert, replace and delete is visible to the very next search: a
    new or replaced point is its own nearest neighbour at distance 0 (and appears once), a
    replaced point's old vector no longer finds it at its old distance, a deleted point is
    never returned; a payload filter sees the new payloads at once."""
    rng = np.random.default_rng(seed)
    live: dict[int, np.ndarray] = {}
    next_id = 0
    for r in range(rounds):
        # fresh points (a bigger batch now and then keeps the indexer busy behind the writer)
        size = batch * (8 if r % 4 == 0 else 1)
        ids = np.arange(next_id, next_id + size)
        next_id += size
        x = vecs(size, seed * 1000 + r)
        col.upsert(ids, x, [{"r": r} for _ in range(size)])
        live.update(zip(ids.tolist(), x))
        res = col.search(x[:batch], k=3)
        np.testing.assert_array_equal(res.ids[:, 0], ids[:batch])
        assert np.allclose(res.distances[:, 0], 0, atol=1e-4)
        assert all(len(set(row[row >= 0].tolist())) == (row >= 0).sum() for row in res.ids)   # no duplicates
        got = col.search(x[:4], k=1, filter={"r": r})
        np.testing.assert_array_equal(got.ids[:, 0], ids[:4])
        # replace some older points: the new vector finds them, the old one no longer does
        old_ids = rng.choice(sorted(live), size=min(batch, len(live)), replace=False)
        old_x = np.stack([live[i] for i in old_ids.tolist()])
        new_x = vecs(len(old_ids), seed * 1000 + r + 500) + np.float32(3.0)
        col.upsert(old_ids, new_x, [{"r": -r - 1} for _ in old_ids])
        live.update(zip(old_ids.tolist(), new_x))
        res = col.search(new_x, k=1)
        np.testing.assert_array_equal(res.ids[:, 0], old_ids)
        res = col.search(old_x, k=5)
        for row, ident, before in zip(res.ids, old_ids.tolist(), old_x):
            hits = row == ident
            if hits.any():   # only at the new vector's distance, never at distance 0 to the old one
                assert not np.allclose(live[ident], before)
        assert not np.isin(col.search(old_x[:4], k=5, filter={"r": r - 1} if r else {"r": -1000}).ids, old_ids).any()
        # delete a few: never returned again
        gone = rng.choice(sorted(live), size=min(batch // 2, len(live)), replace=False)
        assert col.delete(gone) == len(gone)
        for i in gone.tolist():
            del live[i]
        res = col.search(np.stack([vecs(1, 7)[0]] + [x[0]]), k=min(50, len(live)))
        assert not np.isin(res.ids, gone).any()
        assert col.count() == len(live)


def test_read_your_writes_embedded(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        check_read_your_writes(col, rounds=12, batch=40, seed=1)
        assert col.wait_indexed()
        stats = col.stats()
        assert stats.pending == 0 and stats.indexed == stats.count == col.count()


def test_read_your_writes_with_the_indexer_paused(tmp_path: Path) -> None:
    """With the indexer held off, every write is served from staging alone."""
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(100), vecs(100, 9))
        assert col.wait_indexed()
        with col._indexing:   # the indexer cannot take a step meanwhile
            check_read_your_writes(col, rounds=4, batch=20, seed=2)
            assert col.stats().pending > 0
            assert col.wait_indexed(timeout=0.05) is False
        assert col.wait_indexed()
        assert col.stats().pending == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("write-path-server")
    proc = start_server_process(root / "data", root / "server.log", args=["--no-metrics"])
    yield proc
    assert proc.stop() == 0


def test_read_your_writes_over_grpc(server: ServerProcess) -> None:
    with vecdb.connect(server.address, timeout=60) as db:
        col = db.create_collection("ryw", DIM, metric="l2", index="hnsw")
        check_read_your_writes(col, rounds=6, batch=30, seed=3)
        assert col.wait_indexed() is True
        stats = col.stats()
        assert stats.pending == 0 and stats.indexed == stats.count == col.count()
        assert col.wait_indexed(timeout=0) is True
        with pytest.raises(InvalidArgumentError):
            col.wait_indexed(timeout=-1)


def test_back_pressure_bounds_the_staged_rows(tmp_path: Path) -> None:
    """Writers wait while more than ``max_pending`` points are staged: after every write the
    staged rows are at most the bound plus that write's batch; with the indexer held off,
    the writer blocks until it is let go."""
    bound, batch = 100, 30
    with vecdb.open(tmp_path / "db", max_pending=bound) as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        staged_after = []
        for b in range(20):
            col.upsert(np.arange(b * batch, (b + 1) * batch), vecs(batch, b))
            staged_after.append(len(col._mem.staging))
        assert max(staged_after) <= bound + batch
        assert col.wait_indexed()
        # hold the indexer off: writes go on until the bound is passed, then the writer waits;
        # it is admitted while at most `bound` rows are staged: 4 batches (0, 30, 60, 90)
        with _writer_held_back(col, range(20, 30), batch, admitted=4):
            pass
        assert col.wait_indexed() and col.count() == 30 * batch


def test_writers_keep_the_staged_scan_short_while_searches_run(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """While searches are served, a writer waits until its batch fits below ``SERVING_PENDING``
    staged points (or nothing is staged) however large ``max_pending`` is (every search scans
    the staged points); with none served recently, ``max_pending`` alone applies."""
    from vecdb.collection import collection as module

    monkeypatch.setattr(module, "SERVING_PENDING", 100)
    monkeypatch.setattr(module, "SERVING_SECONDS", 3600.0)   # the search below counts as recent throughout
    batch = 30
    with vecdb.open(tmp_path / "db", max_pending=100_000) as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        with col._indexing:                      # nothing leaves the staged rows meanwhile
            for b in range(8):                   # no search yet: max_pending alone applies
                col.upsert(np.arange(b * batch, (b + 1) * batch), vecs(batch, b))
            assert len(col._mem.staging) == 8 * batch
        assert col.wait_indexed()
        col.search(vecs(1, 99), k=3)             # searches are served from now on
        # admitted while the batch fits below 100 staged rows: 3 batches (0, 30, 60 staged
        # before each; the 4th would make 120)
        with _writer_held_back(col, range(8, 18), batch, admitted=3):
            res = col.search(vecs(1, 10)[:1], k=1)   # the staged rows are served meanwhile
            assert res.ids[0, 0] == 10 * batch and res.distances[0, 0] == pytest.approx(0.0, abs=1e-4)
        assert col.wait_indexed() and col.count() == 18 * batch
        # a batch larger than the bound is admitted once nothing is staged: a search then
        # scans that one batch
        col.search(vecs(1, 99), k=3)
        with _writer_held_back(col, range(18, 21), 150, admitted=1):
            pass
        assert col.wait_indexed()


def test_searches_and_writes_go_on_while_replaced_points_are_unlinked(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The stale entries of replaced and deleted points leave an HNSW index in two halves:
    unlinked (the O(n) part) while searches and writes go on, then freed in a short
    exclusive step. Here the unlinking is held open: searches answer meanwhile, from the new
    rows, never with the old entries; another write is acknowledged; afterwards the old
    entries are gone from the index and every point is found."""
    from vecdb.index.hnsw import HNSW

    entered, release = threading.Event(), threading.Event()
    original = HNSW.prepare_remove

    def held(self: HNSW, ids: Any, pace: Any = None) -> Any:
        entered.set()
        assert release.wait(60)
        return original(self, ids, pace)

    monkeypatch.setattr(HNSW, "prepare_remove", held)
    x = vecs(2000, 1)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(2000), x)
        assert col.wait_indexed()
        new_x = vecs(300, 2) + np.float32(3.0)
        col.upsert(np.arange(300), new_x)        # replaced: the old entries become stale
        col.delete(np.arange(300, 350))
        assert entered.wait(60)                  # the indexer is unlinking them now
        answers: list[Any] = []

        def serve() -> None:
            answers.append(col.search(new_x[:50], k=1))
            answers.append(col.search(x[:350], k=3))
            col.upsert(np.arange(2000, 2010), vecs(10, 3))
            answers.append(col.search(vecs(10, 3), k=1))

        worker = threading.Thread(target=serve)
        worker.start()
        worker.join(30)
        unlinking = worker.is_alive()
        release.set()
        worker.join()
        assert not unlinking, "a search or write waited for the removal's O(n) part"
        assert answers[0].ids[:, 0].tolist() == list(range(50))
        assert not np.isin(answers[1].ids, np.arange(350)).any()   # old entries hidden, deleted gone
        assert answers[2].ids[:, 0].tolist() == list(range(2000, 2010))
        assert col.wait_indexed()
        assert col.stats().indexed == col.count() == 1960
        index_ids = col._mem.index.ids
        assert not np.isin(np.arange(300, 350), index_ids).any() and np.isin(np.arange(300), index_ids).all()
        assert col._mem.index.unreachable() == 0
        found = col.search(np.concatenate([new_x, x[350:]]), k=1, params={"ef": 128}).ids[:, 0]
        assert (found == np.concatenate([np.arange(300), np.arange(350, 2000)])).mean() > 0.99


def test_the_background_build_runs_on_a_lowered_thread(tmp_path: Path) -> None:
    """Rows are linked into HNSW on the worker's lowered link thread (on Linux a higher nice
    value and the SCHED_IDLE policy), stale entries removed on its other lowered thread (the
    nice value only); a failure there reaches the caller; once the worker stops, calls run
    on the caller."""
    import os
    import sys

    from vecdb.worker import BACKGROUND_NICE, BACKGROUND_SCHED_IDLE, Lowered

    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(500), vecs(500, 1))
        assert col.wait_indexed()
        col.delete([499])
        assert col.wait_indexed()
        link, remove = col._worker._idle, col._worker._lowered
        assert link._thread is not None and remove._thread is not None      # the link and the removal ran there
        if sys.platform.startswith("linux"):
            assert link.lowered and remove.lowered
            for lowered in (link, remove):
                assert os.getpriority(os.PRIO_PROCESS, lowered._thread.native_id) == BACKGROUND_NICE
            policy = os.SCHED_IDLE if BACKGROUND_SCHED_IDLE else os.SCHED_OTHER
            assert os.sched_getscheduler(link._thread.native_id) == policy
            assert os.sched_getscheduler(remove._thread.native_id) == os.SCHED_OTHER
        res = col.search(vecs(500, 1)[:5], k=1)
        assert res.ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert link._thread is None and remove._thread is None                # stopped with the collection
    runner = Lowered("vecdb-test-lowered")
    assert runner.call(threading.get_ident) != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        runner.call(lambda: 1 // 0)
    runner.stop()
    assert runner.call(threading.get_ident) == threading.get_ident()


def test_close_with_the_indexer_mid_step(tmp_path: Path) -> None:
    """Closing while the indexer works through a backlog stops it after its step, indexes the
    rest and checkpoints; everything is there after reopening."""
    n = 6000
    x = vecs(n, 4)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(n), x)
        assert col.stats().count == n
        worker = col._worker
    assert worker._thread is not None and not worker._thread.is_alive()   # close stopped the indexer
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("c")
        assert col.stats().pending == 0 and col.stats().indexed == n   # the close indexed and saved it all
        assert col._mem.ckpt_seq == col._mem.seq                         # from the checkpoint: nothing replayed
        np.testing.assert_array_equal(col.search(x[::500], k=1).ids[:, 0], np.arange(0, n, 500))


def test_drop_with_the_indexer_mid_step(tmp_path: Path) -> None:
    n = 6000
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(n), vecs(n, 5))
        worker = col._worker
        db.drop_collection("c")
        assert worker._thread is not None and not worker._thread.is_alive()   # stopped before the data went
        with pytest.raises(CollectionNotFoundError):
            col.search(vecs(1, 6), k=1)
        with pytest.raises(CollectionNotFoundError):
            col.wait_indexed()
        again = db.create_collection("c", DIM, metric="l2", index="hnsw")
        again.upsert(np.arange(10), vecs(10, 7))
        assert again.wait_indexed() and again.count() == 10


def test_wait_indexed_and_the_pending_count(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        assert col.wait_indexed() is True                       # nothing written: nothing to wait for
        with col._indexing:
            col.upsert(np.arange(500), vecs(500, 8))
            stats = col.stats()
            assert (stats.count, stats.pending, stats.indexed) == (500, 500, 0)
            assert col.wait_indexed(timeout=0) is False
        assert col.wait_indexed(timeout=None) is True
        stats = col.stats()
        assert (stats.count, stats.pending, stats.indexed) == (500, 0, 500)
        for bad in (-1, float("nan"), "1", True):
            with pytest.raises(InvalidArgumentError):
                col.wait_indexed(timeout=bad)


def test_restart_serves_the_replayed_batches_at_once(tmp_path: Path) -> None:
    """Batches committed after the last checkpoint (the process died before the next one) are
    searchable right after reopening, staged, and indexed in the background."""
    import subprocess
    import sys

    script = (
        "import os, numpy as np, vecdb\n"
        f"db = vecdb.open({str(tmp_path / 'db')!r}, checkpoint_points=10**9, checkpoint_seconds=10**9)\n"
        f"col = db.create_collection('c', {DIM}, metric='l2', index='hnsw')\n"
        f"x = np.random.default_rng(10).standard_normal((3000, {DIM})).astype(np.float32)\n"
        "col.upsert(np.arange(1000), x[:1000])\n"
        "db.close()\n"
        f"db = vecdb.open({str(tmp_path / 'db')!r}, checkpoint_points=10**9, checkpoint_seconds=10**9)\n"
        "col = db.get_collection('c')\n"
        "col.upsert(np.arange(1000, 3000), x[1000:])\n"
        "col.delete(np.arange(0, 100))\n"
        "os._exit(0)\n"  # no close: no checkpoint after the first one
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    x = np.random.default_rng(10).standard_normal((3000, DIM)).astype(np.float32)
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("c")
        assert col.count() == 2900
        res = col.search(x[::100], k=1)           # served at once: staged rows + the checkpointed graph
        want = np.arange(0, 3000, 100)
        np.testing.assert_array_equal(res.ids[1:, 0], want[1:])
        assert res.ids[0, 0] != 0                  # deleted after the checkpoint: hidden
        assert col.wait_indexed()
        assert col.stats().pending == 0 and col.stats().indexed == 2900
        np.testing.assert_array_equal(col.search(x[100::100], k=1).ids[:, 0], want[1:])


# ---- filter results kept across writes ------------------------------------------------------
def test_evaluate_ids_agrees_with_evaluate_on_points_written_since_a_resort() -> None:
    rng = np.random.default_rng(11)
    index = PayloadIndex()
    n = 3000
    index.reserve(n)
    live = np.zeros(n, bool)
    for i in range(2000):
        index.add(i, {"a": int(rng.integers(0, 20)), "s": str(rng.integers(0, 5)), "t": ["x", "y"][i % 2]})
        live[i] = True
    index.compact(force=True)
    gen = index.generation
    touched = np.unique(np.concatenate([rng.choice(2000, 300, replace=False), np.arange(2000, 2400)]))
    for i in touched.tolist():
        if i < 2000:
            index.remove(np.array([i]))
        if rng.random() < 0.8:
            index.add(i, {"a": int(rng.integers(0, 20)), "s": str(rng.integers(0, 5))} if rng.random() < 0.9 else {"b": 1})
            live[i] = True
        else:
            live[i] = False
    assert index.generation == gen   # (no compact call: the tails hold every live entry of `touched`)
    for spec in ({"a": {"gte": 5, "lt": 12}}, {"s": {"in": ["1", "3"]}}, {"a": 3}, {"$not": {"s": "2"}},
                 {"$or": [{"a": {"lt": 2}}, {"t": "x"}]}, {"a": {"ne": 4}}, {"b": 1}, {}):
        node = parse_filter(spec) if spec else ("all",)
        full = index.evaluate(node, live)[touched]
        np.testing.assert_array_equal(index.evaluate_ids(node, touched, live[touched]), full, err_msg=str(spec))


def test_cached_filter_results_follow_the_writes(tmp_path: Path) -> None:
    """A filter's cached result is updated for the points each write touched (no full
    evaluation while no column is re-sorted) and always equals a fresh evaluation."""
    rng = np.random.default_rng(12)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="flat")
        n = 6000
        col.upsert(np.arange(n), vecs(n, 12), [{"g": int(g)} for g in rng.integers(0, 10, n)])
        node = parse_filter({"g": {"lt": 3}})
        mem = col._mem
        filter_allow(mem, node)
        updates = 0
        for step in range(15):
            ids = rng.choice(n + 200, 40, replace=False)
            col.upsert(ids, vecs(40, 100 + step), [{"g": int(g)} for g in rng.integers(0, 10, 40)])
            if step % 3 == 2:
                col.delete(rng.choice(n, 10, replace=False))
            gen = mem.payidx.generation
            cached = mem.filters.get(node)
            got = filter_allow(mem, node)
            updates += cached is not None and cached.generation == gen
            want = np.flatnonzero(mem.payidx.evaluate(node, mem.live))
            np.testing.assert_array_equal(got.ids, want)
            np.testing.assert_array_equal(np.flatnonzero(got.bitmap(len(mem.live))[: len(mem.live)]), want)
            res = col.search(vecs(2, step), k=20, filter={"g": {"lt": 3}}, with_payloads=True)
            assert all(p is None or p["g"] < 3 for row in res.payloads for p in row)
        assert updates >= 10   # most rounds took the incremental path


def test_checkpoints_and_training_run_in_the_background(tmp_path: Path) -> None:
    """A due checkpoint is saved by the indexer (the writer only commits and publishes); an
    index that needs training is trained there once enough points are stored."""
    with vecdb.open(tmp_path / "db", checkpoint_points=100) as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        for b in range(4):
            col.upsert(np.arange(b * 60, (b + 1) * 60), vecs(60, 20 + b))
        assert col.wait_indexed()
        assert col._worker.wait_for(lambda: col._mem.ckpt_seq > 0, timeout=120)
        sq = db.create_collection("s", DIM, metric="l2", index="sq8", index_params={"rerank": 8})
        need = sq._mem.train_at
        assert need is not None and need > 1
        x = vecs(need, 30)
        sq.upsert(np.arange(need), x)
        assert sq.wait_indexed()                       # includes the due training
        assert sq.stats().trained and sq.stats().pending == 0
        np.testing.assert_array_equal(sq.search(x[:5], k=1).ids[:, 0], np.arange(5))
        assert col._worker.failures == 0 and sq._worker.failures == 0

@contextlib.contextmanager
def _writer_held_back(col: Any, batches: range, batch: int, admitted: int) -> Iterator[None]:
    """With the indexer held off, a writer thread upserts ``batches``; the block runs once it
    was admitted ``admitted`` batches and waits for room for the next; after the block (the
    indexer free again) every batch lands."""
    returned: list[int] = []
    done = threading.Event()

    def writer() -> None:
        for b in batches:
            col.upsert(np.arange(b * batch, (b + 1) * batch), vecs(batch, b))
            returned.append(b)
        done.set()

    with col._indexing:
        thread = threading.Thread(target=writer)
        thread.start()
        assert not col._worker.wait_for(lambda: len(returned) > admitted, timeout=0.5)
        assert len(returned) == admitted and len(col._mem.staging) == admitted * batch
        yield
    assert done.wait(timeout=120)
    thread.join()


def test_the_switch_interval_is_a_server_setting(tmp_path: Path) -> None:
    """``vecdb serve --switch-interval-ms`` sets the process's GIL switch interval (a search
    waits at most that long for the GIL behind a writer's Python); the library and a
    default server config leave it alone, and a bad value is refused."""
    import sys

    from vecdb.server.__main__ import build_parser, config_from_args
    from vecdb.server.app import serve
    from vecdb.server.config import ServerConfig

    assert ServerConfig().switch_interval_ms is None
    for bad in ("0", "-1", "x", "5000"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--switch-interval-ms", bad])
    args = build_parser().parse_args(["--data", str(tmp_path / "d"), "--port", "0", "--no-metrics",
                                      "--switch-interval-ms", "0.5"])
    config = config_from_args(args)
    assert config.switch_interval_ms == 0.5
    before = sys.getswitchinterval()
    db = vecdb.open(tmp_path / "d")
    assert sys.getswitchinterval() == before
    stop = threading.Event()
    stop.set()
    codes: list[int] = []
    try:
        runner = threading.Thread(target=lambda: codes.append(serve(config, db=db, stop=stop)))
        runner.start()
        runner.join()
        assert codes == [0] and sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)
        db.close()


def test_int_id_keys_of_a_batch_equal_the_keys_one_at_a_time() -> None:
    """The writer's batched id keys are byte for byte the stored format of one id's key."""
    from vecdb.storage import keys as K

    ids = np.array([0, 1, 255, 256, 2**32, 2**63 - 1, 7919], np.int64)
    assert K.int_id_keys(ids) == [K.int_id_key(int(i)) for i in ids]
    assert K.int_id_keys(np.zeros(0, np.int64)) == []


def _payload_batches() -> list[list[Any]]:
    """Payload batches for the writer's batched paths: one shape (ints, floats, bools, str,
    None values), and batches that must take the per-payload path (nested, lists, braces in
    text, mixed shapes and types, None payloads, non-ASCII text, ints past 64 bits)."""
    return [
        [{"n": i, "f": i / 4, "b": i % 2 == 0, "s": f"t{i}", "z": None} for i in range(40)],
        [{"a": {"b": i}, "l": [i, "x"]} for i in range(40)],
        [{"s": "}{" if i % 3 else "{", "n": i} for i in range(40)],
        [{"n": i} if i % 2 else {"n": float(i), "extra": "e"} for i in range(40)],
        [None if i % 5 == 0 else {"n": i} for i in range(40)],
        [{"n": i if i % 2 else str(i)} for i in range(40)],
        [{"s": "é" if i == 7 else "e", "n": i} for i in range(40)],
        [{"big": 2**70 + i, "k}": i} for i in range(40)],
        [{} for _ in range(40)],
    ]


@pytest.mark.parametrize("shape", range(len(_payload_batches())))
def test_batched_payload_paths_store_and_index_what_was_given(tmp_path: Path, shape: int) -> None:
    """Payloads checked, encoded and indexed a batch at a time read back (get, and after a
    reopen) equal to what was given, and filters find exactly the points holding a value;
    the batched JSON encoder gives the per-payload encoder's bytes."""
    from vecdb.storage.arrays import encode_checked_json, encode_checked_json_many

    pays = _payload_batches()[shape]
    assert encode_checked_json_many(pays) == [None if p is None else encode_checked_json(p) for p in pays]
    ids = np.arange(100, 100 + len(pays))
    x = vecs(len(pays), 40 + shape)

    def check(col: Any) -> None:
        got = col.get(ids)
        assert got.payloads == pays
        for field in ("n", "s", "b"):
            values = {p[field] for p in pays if p and type(p.get(field)) in (int, str, bool)}
            for value in sorted(values, key=repr)[:3]:
                want = sorted(int(i) for i, p in zip(ids, pays) if p and field in p and p[field] == value
                              and type(p[field]) is type(value))
                res = col.search(x[:1], k=len(pays), filter={field: value})
                assert sorted(int(i) for i in res.ids[0] if i >= 0) == want

    db = vecdb.open(tmp_path / "db")
    col = db.create_collection("c", DIM, index="hnsw")
    col.upsert(ids, x, pays)
    check(col)
    db.close()
    db = vecdb.open(tmp_path / "db")
    check(db.get_collection("c"))
    db.close()


@pytest.mark.parametrize("id_type", ["int", "str"])
def test_id_records_in_any_order_and_below_the_stored_ones(tmp_path: Path, id_type: str) -> None:
    """The writer puts a batch's new id records in key order, appended when they all sort
    after the stored ones: batches in random order, ascending, below and interleaved with
    the stored ids, and mixed with replacements, all read back (and after a reopen)."""
    rng = np.random.default_rng(7)
    as_id = (lambda v: int(v)) if id_type == "int" else (lambda v: f"p{v:07d}")
    batches = [rng.permutation(np.arange(1000, 1300)),          # random order
               np.arange(2000, 2300),                           # ascending, after the stored ids
               np.arange(0, 300)[::-1],                         # below the stored ids, descending
               np.arange(1000, 2600, 7),                        # interleaved: new ones and replacements
               np.concatenate([rng.choice(np.arange(1000, 1300), 50, replace=False),   # replacements
                               np.arange(500, 550), np.arange(9000, 9010)])]
    db = vecdb.open(tmp_path / "db")
    col = db.create_collection("c", DIM, id_type=id_type)
    want: dict[Any, np.ndarray] = {}
    for b, batch in enumerate(batches):
        ids = [as_id(v) for v in batch.tolist()]
        x = vecs(len(ids), 60 + b)
        col.upsert(ids, x, [{"b": b} for _ in ids])
        want.update(zip(ids, x))
    for opened in range(2):
        if opened:
            db.close()
            db = vecdb.open(tmp_path / "db")
            col = db.get_collection("c")
        keys = list(want)
        got = col.get(keys)
        np.testing.assert_array_equal(got.vectors, np.stack([want[k] for k in keys]))
        assert col.count() == len(want)
    db.close()


def test_out_of_order_appended_id_records_fail_the_batch(tmp_path: Path) -> None:
    """LMDB skips an appended key that sorts before the stored ones without an error; the
    writer's put counts what was added and fails the transaction instead (nothing written)."""
    import lmdb

    from vecdb.collection.collection import _put_sorted
    from vecdb.errors import InternalError

    env = lmdb.open(str(tmp_path / "env"), max_dbs=2)
    with env.begin(write=True) as txn:
        _put_sorted(txn.cursor(), [b"b", b"c"], [b"1", b"2"])
    with env.begin(write=True) as txn:   # "a" sorts first: inserted in order, not appended
        _put_sorted(txn.cursor(), [b"a", b"d"], [b"3", b"4"])
    with pytest.raises(InternalError, match="1 of 2 id records"):
        with env.begin(write=True) as txn:   # appended after "d", but "0" is out of order
            _put_sorted(txn.cursor(), [b"e", b"0"], [b"5", b"6"])
    with env.begin() as txn:
        assert [k for k, _ in txn.cursor()] == [b"a", b"b", b"c", b"d"]
    env.close()


@pytest.mark.parametrize("bad", [float("nan"), 2**1100, "é", [1], None])
def test_a_bad_payload_in_a_one_shape_batch_is_named_and_nothing_is_written(tmp_path: Path, bad: Any) -> None:
    """A batch of one shape but for one value is checked as carefully as one payload at a
    time: a value JSON or the payload index cannot take is refused with its position, and a
    value of another type (valid) sends the batch down the per-payload path."""
    db = vecdb.open(tmp_path / "db")
    col = db.create_collection("c", DIM)
    pays: list[Any] = [{"n": float(i)} for i in range(20)]
    pays[7] = {"n": bad}
    if bad is None or isinstance(bad, (str, list)):
        col.upsert(np.arange(20), vecs(20, 3), pays)
        assert col.get(np.arange(20)).payloads == pays
    else:
        with pytest.raises(InvalidArgumentError, match=r"payloads\[7\]"):
            col.upsert(np.arange(20), vecs(20, 3), pays)
        assert col.count() == 0
    db.close()


@pytest.mark.parametrize("serving_rest", [1.0, 0.0])
def test_the_indexer_rests_between_chunks_only_while_searches_are_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          serving_rest: float) -> None:
    """The indexer's linking and unlinking go straight while nobody searches, and rest
    between chunks while searches are served (``serving_rest`` per second of work; never with
    0); every point is indexed and found either way. The rests are recorded instead of slept."""
    from types import SimpleNamespace
    import time

    from vecdb.collection import collection as collection_module

    rests: list[float] = []
    clock = SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.sleep = rests.append                                # (returns None: the rest is not slept)
    monkeypatch.setattr(collection_module, "time", clock)
    monkeypatch.setattr(collection_module, "SERVING_SECONDS", 3600.0)   # one search: serving from then on
    x = vecs(3000, 7)
    with vecdb.open(tmp_path / "db", serving_rest=serving_rest) as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(1000), x[:1000])
        assert col.wait_indexed()
        assert rests == []                                    # nobody searched yet: no rest
        assert col.search(x[:1], k=1).ids[0][0] == 0
        col.upsert(np.arange(1000, 2000), x[1000:2000])       # new points: linked in paced chunks
        col.upsert(np.arange(500), x[2000:2500])              # replacements: unlinked in paced chunks
        assert col.wait_indexed()
        if serving_rest:
            assert len(rests) > 1 and all(r >= 0 for r in rests)
        else:
            assert rests == []
        assert col.stats().pending == 0
        want = np.concatenate([np.arange(500), np.arange(1000, 2000)])
        rows = np.concatenate([x[2000:2500], x[1000:2000]])
        assert (col.search(rows, k=1).ids[:, 0] == want).mean() >= 0.99


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "fast", True])
def test_serving_rest_must_be_a_finite_number_at_least_zero(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="serving_rest"):
        vecdb.open(tmp_path / "db", serving_rest=bad)
    assert not (tmp_path / "db").exists()                     # checked before anything is created
