"""Several routers (``vecdb.cluster.connect`` called more than once on one cluster, e.g. two
``vecdb serve --cluster`` front ends) on the session's local Ray (``conftest.local_ray``):
every router writes (through the cluster's writer actor) and reads; a router's own writes
are visible to its next read, other routers' once its view was refreshed (session
consistency); writes racing from two routers never lose an acknowledged write and leave
every replica identical; the writer killed during another router's writes (between two
replicas' commits, or restarted by Ray) loses no acknowledged write and writes resume;
closing a router leaves the others served, the last one stops the cluster."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from vecdb.cluster import ClusterDatabase, connect  # noqa: E402
from vecdb.cluster import placement as P  # noqa: E402
from vecdb.cluster.database import NAMESPACE  # noqa: E402
from vecdb.errors import AlreadyExistsError, CollectionNotFoundError, IdNotFoundError  # noqa: E402

from cluster_child import ChildError, Router, start_router, until_paused  # noqa: E402

DIM = 8
SEED = 21
X = np.random.default_rng(SEED).standard_normal((4000, DIM)).astype(np.float32)   # row i: the vector of id i
Q = np.random.default_rng(22).standard_normal((4, DIM)).astype(np.float32)


def stored(db: ClusterDatabase, name: str) -> dict[int, bytes]:
    """Every replica of every shard holds exactly the same points (read from the replica
    actors themselves); those points' vectors, by id."""
    found: dict[int, bytes] = {}
    for group in db._shards.groups_now():
        views = []
        for actor in group.actors:
            b = ray.get(actor.export.remote(name, -1, 1 << 20, None))
            assert b.done
            views.append({int(u): b.vectors[i].tobytes() for i, u in enumerate(b.uids)})
        assert all(v == views[0] for v in views[1:]), f"replicas of shard {group.shard} differ"
        found.update(views[0])
    return found


def writer_actor(db: ClusterDatabase) -> Any:
    assert db._writer is not None
    return ray.get_actor(db._writer.name, namespace=NAMESPACE)


def exact_top(ids: np.ndarray, k: int) -> np.ndarray:
    """The k nearest of ``ids`` to each query by L2, ranked by (distance, id) like the cluster."""
    d = ((X[ids][None, :, :] - Q[:, None, :]) ** 2).sum(-1)
    return np.array([ids[np.lexsort((ids, row))[:k]] for row in d])


@pytest.fixture(scope="module")
def pair(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterDatabase, Router]]:
    """A cluster of 2 shards x 2 replicas with two routers: one in this process, one in a
    child process (started once for the module)."""
    tmp = tmp_path_factory.mktemp("routers")
    root = tmp / "cluster"
    a = connect(root=str(root), shards=2, replicas=2)
    b = Router(tmp, root, SEED, len(X))
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def test_two_routers_in_two_processes_write_and_read(pair: tuple[ClusterDatabase, Router]) -> None:
    """Both routers create, upsert, delete and drop; each reads its own writes at once, and
    the other's once its view was refreshed after the acknowledgement (``sync``)."""
    a, b = pair
    mine = a.create_collection("ours", DIM, metric="l2", index="flat")
    assert b.ask("sync") == "True" and b.ask("list") == "ours"
    assert b.ask("create theirs") == ""
    assert "theirs" in [i.name for i in a.list_collections()]   # the catalog write was acknowledged
    with pytest.raises(AlreadyExistsError):
        a.create_collection("theirs", DIM)
    with pytest.raises(ChildError, match="AlreadyExistsError"):
        b.ask("create ours")
    mine.upsert(np.arange(0, 100), X[:100])
    assert mine.count() == 100                                     # its own write, read at once
    np.testing.assert_array_equal(mine.get(np.arange(100)).vectors, X[:100])
    assert b.ask("upsert ours 100 160") == "" and b.ask("has ours 100 160") == "True"   # the child's own, at once
    assert b.ask("count ours") == "160"
    a._refresher.wait_round(60)   # a whole refresh begun after the child's acknowledgement
    np.testing.assert_array_equal(mine.get(np.arange(160)).vectors, X[:160])
    np.testing.assert_array_equal(mine.search(Q, k=10).ids, exact_top(np.arange(160), 10))
    assert b.ask("delete ours 150 170") == "10" and b.ask("count ours") == "150"
    assert mine.delete(np.arange(0, 20)) == 20 and mine.count() == 130   # counted after b's delete too
    assert b.ask("sync") == "True" and b.ask("count ours") == "130"
    with pytest.raises(ChildError, match="IdNotFoundError"):
        b.ask("has ours 0 20")
    theirs = a.get_collection("theirs")
    theirs.upsert(np.arange(500, 510), X[500:510])
    assert b.ask("sync") == "True" and b.ask("has theirs 500 510") == "True"
    a.drop_collection("theirs")
    assert [i.name for i in a.list_collections()] == ["ours"]
    assert b.ask("sync") == "True" and b.ask("list") == "ours"
    with pytest.raises(ChildError, match="CollectionNotFoundError"):
        b.ask("drop theirs")
    assert b.ask("drop ours") == "" and b.ask("list") == ""
    with pytest.raises(CollectionNotFoundError):
        a.get_collection("ours")


def test_a_router_reads_its_own_writes_without_any_refresh(local_ray: None, tmp_path: Path) -> None:
    """With its refresher stopped (its view moves only by its own acknowledgements), a
    router's tenant search routes to a shard its grant just gave the tenant access to, and
    its reads follow the layout its rebalance just made; another router's writes stay
    invisible to it until it refreshes (the other router itself reads them at once)."""
    root = str(tmp_path / "own")
    a = connect(root=root, shards=2, replicas=1)
    b = connect(root=root)
    try:
        a._refresher.close()
        coll = a.create_collection("mt", DIM, metric="l2", index="flat", multi_tenant=True)
        coll.create_tenant("t")
        coll.create_tenant("u")
        ring = a.placement.ring()
        home = ring.owner(P.tenant_key("t"))
        other = next(u for u in (f"u{i}" for i in range(100)) if ring.owner(P.tenant_key(u)) != home)
        coll.create_tenant(other)
        coll.upsert(np.arange(0, 50), X[:50], tenant="t")
        coll.upsert(np.arange(50, 100), X[50:100], tenant=other)
        assert coll.search_shards("t") == [home]
        assert coll.search(X[70:71], k=1, tenant="t").ids[0, 0] != 70
        coll.grant("t", [70])
        assert sorted(coll.search_shards("t")) == [0, 1]   # the grant's shard, asked again at once
        assert coll.search(X[70:71], k=1, tenant="t").ids[0, 0] == 70
        assert coll.search_shards("u") == []   # u may access no point yet
        theirs = b.get_collection("mt")
        theirs.grant("u", [3])   # another router's write: b routes by it at once, a not yet
        assert theirs.search_shards("u") == [home] and theirs.search(X[3:4], k=1, tenant="u").ids[0, 0] == 3
        assert coll.search_shards("u") == []
        a._refresh_view()   # one refresh of a's view: b's grant routes a's searches too
        assert coll.search_shards("u") == [home] and coll.search(X[3:4], k=1, tenant="u").ids[0, 0] == 3
        a.rebalance(3, batch=40)
        assert a.placement.shards == (0, 1, 2) and sorted(a._shards.groups) == [0, 1, 2]
        assert coll.count() == 100 and coll.count(tenant="t") == 51
        np.testing.assert_array_equal(coll.get(np.arange(100)).vectors, X[:100])
        np.testing.assert_array_equal(coll.search(X[:100], k=1).ids[:, 0], np.arange(100))
    finally:
        b.close()
        a.close()


def test_killing_the_writer_during_another_routers_writes_loses_nothing(pair: tuple[ClusterDatabase,
                                                                                  Router]) -> None:
    """The child router streams upserts while this test kills the writer actor twice: once
    Ray restarts it, once for good (the next write starts it again by name). Every write
    the child had acknowledged is on every replica; the stream completes (the upsert in
    flight is sent again), and both routers write on."""
    a, b = pair
    coll = a.create_collection("stream", DIM, metric="l2", index="flat")
    coll.upsert(np.arange(0, 50), X[:50])
    kills: list[str] = []

    def kill_now(ids: list[int]) -> None:
        if ids[0] == 1100 or ids[0] == 1300:   # mid-stream, after some acknowledgements
            restart = ids[0] == 1100
            ray.kill(writer_actor(a), no_restart=not restart)
            kills.append("restarted" if restart else "for good")

    b.acked.clear()
    b.send("stream stream 1000 1500")
    assert b.answer(on_acked=kill_now) == ""
    assert kills == ["restarted", "for good"]
    assert sorted(b.acked) == list(range(1000, 1500))
    found = stored(a, "stream")
    assert set(found) == set(range(50)) | set(range(1000, 1500))   # nothing lost, nothing else
    for i in found:
        assert found[i] == X[i].tobytes()
    coll.upsert(np.arange(1500, 1510), X[1500:1510])
    assert coll.delete([1509]) == 1 and coll.count() == 559
    assert b.ask("upsert stream 1510 1520") == "" and b.ask("count stream") == "569"


def test_two_routers_writing_at_once_lose_no_acknowledged_write(pair: tuple[ClusterDatabase, Router]) -> None:
    """Two routers in one process (two ClusterDatabase objects on one root) upsert disjoint
    ids into one collection from two threads at once: every write is acknowledged, every
    acknowledged id is on every replica with its vector, replicas identical."""
    a = pair[0]
    b = connect(root=str(a.root))
    try:
        colls = [a.create_collection("race", DIM, metric="l2", index="flat"), b.get_collection("race")]
        acked: list[list[int]] = [[], []]
        errors: list[BaseException] = []
        go = threading.Event()

        def write(coll: Any, base: int, out: list[int]) -> None:
            go.wait()
            try:
                for k in range(30):
                    ids = list(range(base + 5 * k, base + 5 * k + 5))
                    coll.upsert(ids, X[ids])
                    out.extend(ids)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(c, 1000 * (i + 1), acked[i])) for i, c in enumerate(colls)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(acked[0]) == len(acked[1]) == 150
        found = stored(a, "race")
        assert set(found) == set(acked[0]) | set(acked[1])
        for i in found:
            assert found[i] == X[i].tobytes()
        for db in (a, b):   # each sees both routers' writes
            db._refresher.wait_round(60)
            every = sorted(found)
            np.testing.assert_array_equal(db.get_collection("race").get(every).vectors, X[every])
    finally:
        b.close()   # not the last router: the cluster serves on


def test_closing_a_router_leaves_the_cluster_serving_the_other(local_ray: None, tmp_path: Path) -> None:
    """The router that started the cluster closes while another is open: the writer and the
    replicas keep serving the other (reads and writes); the last router to close stops them."""
    root = str(tmp_path / "leave")
    a = connect(root=root, shards=1, replicas=1)
    b = connect(root=root, wait_seconds=10.0)
    try:
        coll = a.create_collection("l", DIM, metric="l2", index="flat")
        ids = np.arange(300)
        coll.upsert(ids, X[ids])
        writer = writer_actor(a)
        a.close()
        other = b.get_collection("l")
        np.testing.assert_array_equal(other.search(Q, k=10).ids, exact_top(ids, 10))
        other.upsert([300], X[300:301])
        assert other.count() == 301 and other.delete([0]) == 1
        with pytest.raises(IdNotFoundError):
            other.get([0])
        actors = [actor for g in b._shards.groups_now() for actor in g.actors] + [writer]
        b.close()   # the last router open: stops the writer and the replicas
        for actor in actors:
            with pytest.raises((ray.exceptions.RayActorError, ray.exceptions.RayTaskError)):
                ray.get(actor.ping.remote() if actor is not writer else actor.holding.remote())
    finally:
        b.close()
        a.close()


def test_a_router_searches_completely_while_another_rebalances(local_ray: None, tmp_path: Path) -> None:
    """One router rebalances from 1 to 2 shards in small batches while a second router
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
        b._refresher.wait_round(60)   # the second router takes the finished layout from the record
        assert b.placement.shards == (0, 1) and b.placement.moving_to is None
        assert other.count() == 600
        np.testing.assert_array_equal(other.search(Q, k=10).ids, truth)
        np.testing.assert_array_equal(other.get(ids).vectors, X[ids])
    finally:
        b.close()
        a.close()


def test_the_writer_killed_between_replica_commits_while_another_router_writes(local_ray: None,
                                                                             tmp_path: Path) -> None:
    """A child router's write holds in the writer after one replica committed it and before
    the other did, while a second router (this process) writes too (it waits behind the held
    write); the writer is killed: Ray restarts it, it copies the replica behind from the
    other, both routers' writes complete, and every write either acknowledged is on both
    replicas."""
    root = tmp_path / "crash"
    proc = start_router(tmp_path, root, seed=SEED, rows=len(X))
    other: list[ClusterDatabase] = []
    try:
        acked, writer = until_paused(proc, lambda: other.append(connect(root=str(root))))
        coll = other[0].get_collection("crash")
        mine: list[int] = []
        errors: list[BaseException] = []

        def write() -> None:   # waits behind the held write until the writer is killed
            try:
                for i in range(500, 505):
                    coll.upsert([i], X[i:i + 1])
                    mine.append(i)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        worker = threading.Thread(target=write)
        worker.start()
        ray.kill(writer, no_restart=False)
        worker.join()
        assert not errors and mine == list(range(500, 505)), errors
        found = stored(other[0], "crash")
        assert set(acked) | set(mine) | set(range(100, 110)) == set(found)   # 100-109: committed by one replica
        assert coll.count() == len(found)
        np.testing.assert_array_equal(coll.get(sorted(found)).vectors, X[sorted(found)])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for db in other:
            db.close()
