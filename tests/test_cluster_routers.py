"""Several routers (``vecdb.cluster.connect`` called more than once on one cluster, e.g. two
``vecdb serve --cluster`` front ends) on the session's local Ray (``conftest.local_ray``):
writes racing from two routers never lose an acknowledged write and leave every replica
identical; a router that is not the cluster's writer reads, and its writes are refused
with a clear error (never acknowledged); once the writing router dies (killed mid-write,
one replica committed and the other not), another router takes the writing over, the
replicas converge and no acknowledged write of either router is lost."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from vecdb.cluster import ClusterDatabase, connect  # noqa: E402
from vecdb.cluster.database import NAMESPACE  # noqa: E402
from vecdb.cluster.routers import release_lease, take_lease  # noqa: E402
from vecdb.errors import FailedPreconditionError  # noqa: E402
from vecdb.storage import keys as K  # noqa: E402

from cluster_child import start_router, until_paused  # noqa: E402

DIM = 8
X = np.random.default_rng(21).standard_normal((4000, DIM)).astype(np.float32)   # row i: the vector of id i
Q = np.random.default_rng(22).standard_normal((4, DIM)).astype(np.float32)


def stored(db: ClusterDatabase, name: str) -> dict[int, bytes]:
    """Every replica of every shard holds exactly the same points (read from the replica
    actors themselves); those points' vectors, by id."""
    found: dict[int, bytes] = {}
    for group in db._groups_now():
        views = []
        for actor in group.actors:
            b = ray.get(actor.export.remote(name, -1, 1 << 20, None))
            assert b.done
            views.append({int(u): b.vectors[i].tobytes() for i, u in enumerate(b.uids)})
        assert all(v == views[0] for v in views[1:]), f"replicas of shard {group.shard} differ"
        found.update(views[0])
    return found


def writer_loop(coll: Any, base: int, batches: int, acked: list[int], refused: list[BaseException],
                errors: list[BaseException], go: threading.Event) -> None:
    """Upsert ``batches`` batches of 5 ids from ``base``; each acknowledged id is noted, each
    batch refused as a whole with FailedPreconditionError (not this cluster's writer) too."""
    go.wait()
    try:
        for b in range(batches):
            ids = list(range(base + 5 * b, base + 5 * b + 5))
            try:
                coll.upsert(ids, X[ids])
            except FailedPreconditionError as exc:
                refused.append(exc)
                continue
            acked.extend(ids)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_two_routers_writing_at_once_lose_no_acknowledged_write(local_ray: None, tmp_path: Path) -> None:
    """Two routers (two ClusterDatabase objects on one root: the path two front-end
    processes take) upsert disjoint ids into one collection at once: every acknowledged id
    is on every replica with its vector, the replicas of each shard are identical, and a
    refused write is refused with a vecdb error naming the reason."""
    root = str(tmp_path / "two")
    a = connect(root=root, shards=2, replicas=2)
    b = connect(root=root)
    try:
        colls = [a.create_collection("race", DIM, metric="l2", index="flat"), None]
        colls[1] = b.get_collection("race")
        acked: list[list[int]] = [[], []]
        refused: list[list[BaseException]] = [[], []]
        errors: list[BaseException] = []
        go = threading.Event()
        threads = [threading.Thread(target=writer_loop, args=(c, 1000 * (i + 1), 30, acked[i], refused[i], errors, go))
                   for i, c in enumerate(colls)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join()
        assert not errors, errors
        found = stored(a, "race")
        every = acked[0] + acked[1]
        assert every, "no write was acknowledged"
        missing = sorted(set(every) - set(found))
        assert not missing, f"{len(missing)} acknowledged id(s) lost: {missing[:10]}"
        for i in every:
            assert found[i] == X[i].tobytes()
        assert set(found) == set(every)   # a refused batch left nothing behind
        for exc in refused[0] + refused[1]:
            assert "another router" in str(exc) and "writes this cluster" in str(exc)
        # both routers read every acknowledged point, with its vector
        for db in (a, b):
            coll = db.get_collection("race")
            got = coll.get(sorted(every))
            np.testing.assert_array_equal(got.vectors, X[sorted(every)])
    finally:
        b.close()
        a.close()


def test_a_reading_router_serves_reads_and_refuses_writes(local_ray: None, tmp_path: Path) -> None:
    """A second router reads what the writer wrote (searches, gets, counts, listings, as the
    writer does); every kind of write it is asked is refused with FailedPreconditionError and
    changes nothing; the writer, closing, gives its lease up."""
    root = str(tmp_path / "reader")
    a = connect(root=root, shards=1, replicas=2)
    b = connect(root=root)
    try:
        coll = a.create_collection("r", DIM, metric="l2", index="flat")
        coll.create_tenant("t")
        ids = list(range(300))
        coll.upsert(ids, X[ids], [{"i": i} for i in ids])
        coll.grant("t", ids[:30])
        other = b.get_collection("r")
        assert [i.name for i in b.list_collections()] == ["r"] and other.list_tenants() == ["t"]
        for _ in range(4):   # round-robin over the replicas: each answers alike
            np.testing.assert_array_equal(other.search(Q, k=10).ids, coll.search(Q, k=10).ids)
        assert other.count() == 300 and other.count(tenant="t") == 30
        np.testing.assert_array_equal(other.get([5, 299]).vectors, X[[5, 299]])
        writes = [lambda: other.upsert([5000], X[:1]), lambda: other.delete([1]), lambda: other.create_tenant("u"),
                  lambda: other.drop_tenant("t"), lambda: other.grant("t", [40]), lambda: other.revoke("t", [1]),
                  lambda: b.create_collection("s", DIM), lambda: b.drop_collection("r"), lambda: b.rebalance(3),
                  lambda: other.train()]
        for write in writes:
            with pytest.raises(FailedPreconditionError, match="another router"):
                write()
        assert coll.count() == 300 and coll.count(tenant="t") == 30 and coll.list_tenants() == ["t"]
        assert [i.name for i in a.list_collections()] == ["r"] and len(a._groups) == 1
        coll.upsert([300], X[300:301])       # the writer writes on
        seen = 0
        for _ in range(200):   # the reader sees it once it refreshed its view of the replicas
            seen = other.count()
            if seen == 301:
                break
            time.sleep(0.05)
        assert seen == 301
        lease = a._lease_name()
        a.close()   # gives the writer lease up: the next router asked to write takes it
        taken, _ = take_lease(lease, NAMESPACE, "another", 30.0)
        assert taken is not None
        release_lease(taken)
    finally:
        b.close()
        a.close()


def test_closing_the_writer_leaves_the_replicas_serving_a_reading_router(local_ray: None, tmp_path: Path) -> None:
    """The writing router closes while a reading router is open: the replicas keep serving
    it (searches, gets, counts, as before); the last router to close stops them."""
    root = str(tmp_path / "leave")
    a = connect(root=root, shards=1, replicas=2)
    b = connect(root=root, wait_seconds=10.0)
    try:
        coll = a.create_collection("l", DIM, metric="l2", index="flat")
        ids = np.arange(300)
        coll.upsert(ids, X[ids])
        other = b.get_collection("l")
        truth = other.search(Q, k=10).ids
        np.testing.assert_array_equal(truth, exact_top(ids, 10))
        a.close()
        np.testing.assert_array_equal(other.search(Q, k=10).ids, truth)   # no router writes any more
        np.testing.assert_array_equal(other.get(ids).vectors, X[ids])
        assert other.count() == 300
        actors = [actor for g in b._groups_now() for actor in g.actors]
        b.close()   # the last router open: stops the replicas
        for actor in actors:
            with pytest.raises((ray.exceptions.RayActorError, ray.exceptions.RayTaskError)):
                ray.get(actor.ping.remote())
    finally:
        b.close()
        a.close()


def exact_top(ids: np.ndarray, k: int) -> np.ndarray:
    """The k nearest of ``ids`` to each query by L2, ranked by (distance, id) like the cluster."""
    d = ((X[ids][None, :, :] - Q[:, None, :]) ** 2).sum(-1)
    return np.array([ids[np.lexsort((ids, row))[:k]] for row in d])


def test_a_reading_router_searches_completely_while_the_writer_rebalances(local_ray: None, tmp_path: Path) -> None:
    """The writer rebalances from 1 to 2 shards in small batches while a second router
    searches and gets: after every batch and throughout, its answers are complete, with no
    duplicate; then it reads the new layout."""
    root = str(tmp_path / "rb")
    a = connect(root=root, shards=1, replicas=1)
    b = connect(root=root)
    try:
        coll = a.create_collection("rb", DIM, metric="l2", index="flat")
        ids = np.arange(600)
        coll.upsert(ids, X[ids])
        other = b.get_collection("rb")
        truth = exact_top(ids, 10)
        wrong: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def check(where: str) -> None:
            got = other.search(Q, k=10).ids
            if not np.array_equal(got, truth):
                wrong.append(f"{where}: {got.tolist()}")
            np.testing.assert_array_equal(other.get([7, 123, 599]).vectors, X[[7, 123, 599]])

        def reader() -> None:
            try:
                while not stop.is_set():
                    check("concurrent")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        moved: list[int] = []
        worker = threading.Thread(target=reader)
        worker.start()
        try:
            a.rebalance(2, batch=60, on_batch=lambda total: (moved.append(total), check(f"after {total} moved")))
        finally:
            stop.set()
            worker.join()
        assert not errors and not wrong, (errors, wrong[:3])
        assert len(moved) >= 2 and a.placement.shards == (0, 1)
        for _ in range(200):   # the reader takes the finished layout from the placement record
            if b.placement.shards == (0, 1) and b.placement.moving_to is None:
                break
            time.sleep(0.05)
        assert b.placement.shards == (0, 1) and b.placement.moving_to is None
        assert other.count() == 600
        np.testing.assert_array_equal(other.search(Q, k=10).ids, truth)
        np.testing.assert_array_equal(other.get(ids).vectors, X[ids])
    finally:
        b.close()
        a.close()


def test_the_writer_killed_mid_write_while_another_router_writes(local_ray: None, tmp_path: Path) -> None:
    """The writing router (a child process) is SIGKILLed after one replica committed a write
    and before the other did, while a second router keeps trying to write: the second
    router's writes are refused until the writer is gone, then it takes writing over, copies
    the replica behind from the other, and every write either router acknowledged is on
    both replicas."""
    root = tmp_path / "crash"
    proc = start_router(tmp_path, root, seed=21, rows=4000)
    other: ClusterDatabase | None = None

    def second_router() -> None:          # the second router, while the first writes
        nonlocal other
        other = connect(root=str(root))

    try:
        acked = until_paused(proc, second_router)
        assert other is not None
        coll = other.get_collection("crash")
        with pytest.raises(FailedPreconditionError, match="another router"):
            coll.upsert([500], X[500:501])        # the first router, alive, is the writer
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mine: list[int] = []
        for i in range(500, 3000):   # bounded: Ray notices the writer died, then this router writes
            try:
                coll.upsert([i], X[i:i + 1])
            except FailedPreconditionError:
                time.sleep(0.05)
                continue
            mine.append(i)
            if len(mine) == 5:
                break
        assert len(mine) == 5, "the second router never took writing over"
        found = stored(other, "crash")
        assert set(acked) | set(mine) <= set(found)
        assert set(found) <= set(acked) | set(mine) | set(range(100, 110))
        assert set(range(100, 110)) <= set(found)   # the first replica had committed it: it stands on both
        assert coll.count() == len(found)
        np.testing.assert_array_equal(coll.get(sorted(found)).vectors, X[sorted(found)])
    finally:
        proc.kill()
        proc.wait()
        if other is not None:
            other.close()
