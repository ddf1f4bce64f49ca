"""vecdb.cluster under failure and change, on the session's local Ray (``conftest.local_ray``):
replica actors killed during a stream of upserts and searches (no acknowledged write lost,
searches answer throughout and are complete once the replica is back), reads failing over
to a surviving replica, replicas brought back to their shard's latest write after missing
some (down past the write wait, refusing what the others committed, the writer killed
between two replicas' commits), rebalancing from 2 to 3 shards during searches and writes (never a
duplicate, never a missing neighbour), an interrupted shrink finished by connect, and
``vecdb serve --cluster`` used through the client SDK."""
from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import vecdb  # noqa: E402
from vecdb.cluster import ClusterDatabase, connect  # noqa: E402
from vecdb.cluster import placement as P  # noqa: E402
from vecdb.cluster.database import NAMESPACE  # noqa: E402
from vecdb.cluster.replicas import ShardGroup  # noqa: E402
from vecdb.errors import IdNotFoundError  # noqa: E402
from vecdb.server.process import start_server_process  # noqa: E402
from vecdb.storage import keys as K  # noqa: E402

from cluster_child import start_router, until_paused  # noqa: E402

DIM = 8
X = np.random.default_rng(11).standard_normal((3000, DIM)).astype(np.float32)   # row i: the vector of id i
Q = np.random.default_rng(12).standard_normal((6, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def cluster(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDatabase]:
    """2 shards x 2 replicas (the congruence suite runs 3 x 2); a replica down for longer than
    a second is not waited for by writes (it is caught up once back)."""
    db = connect(root=str(tmp_path_factory.mktemp("faults") / "cluster"), shards=2, replicas=2, wait_seconds=1.0)
    yield db
    db.close()


def exact_top(ids: np.ndarray, k: int) -> np.ndarray:
    """The k nearest of ``ids`` to each query by L2, ranked by (distance, id) like the cluster."""
    d = ((X[ids][None, :, :] - Q[:, None, :]) ** 2).sum(-1)
    out = []
    for row in d:
        order = np.lexsort((ids, row))[:k]
        out.append(ids[order])
    return np.array(out)


def owned_by(db: ClusterDatabase, ids: list[int]) -> dict[int, list[int]]:
    """The ids each shard holds, by the placement's ring."""
    owners = db.placement.ring().owners([K.int_id_key(i) for i in ids])
    return {s: [i for i, o in zip(ids, owners) if o == s] for s in db.placement.shards}


def test_killed_replicas_lose_no_acknowledged_write(cluster: ClusterDatabase) -> None:
    coll = cluster.create_collection("faults", DIM, metric="l2", index="flat")
    base = list(range(300))
    coll.upsert(base, X[base])
    acked: list[int] = []
    errors: list[BaseException] = []
    answered = [0]
    first, second, stop = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        try:
            for b in range(40):
                ids = list(range(1000 + 10 * b, 1010 + 10 * b))
                coll.upsert(ids, X[ids], [{"b": b}] * 10)
                acked.extend(ids)
                if b == 10:
                    first.set()
                if b == 25:
                    second.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            first.set()
            second.set()

    def search() -> None:
        try:
            while not stop.is_set():
                res = coll.search(Q, k=10)
                assert all(len(set(row.tolist())) == 10 for row in res.ids)   # complete rows, no duplicate
                answered[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=search)]
    for t in threads:
        t.start()
    first.wait()
    groups = {g.shard: g for g in cluster._shards.groups_now()}
    ray.kill(groups[0].actors[0], no_restart=False)     # a replica of shard 0, Ray restarts it
    second.wait()
    ray.kill(groups[1].actors[1], no_restart=False)     # and the other replica of shard 1
    threads[0].join()
    stop.set()
    threads[1].join()
    assert not errors, errors
    assert answered[0] > 0 and len(acked) == 400
    # every acknowledged point is on every replica of its shard (the killed ones too, once
    # caught up if they were down longer than the write wait)
    for group in groups.values():
        caught_up(group)
    for shard, ids in owned_by(cluster, base + acked).items():
        for actor in groups[shard].actors:
            present, got = ray.get(actor.get.remote("faults", ids, None))
            assert all(present), f"shard {shard} lost {[i for i, p in zip(ids, present) if not p][:5]}"
            np.testing.assert_array_equal(got.vectors, X[ids])
    assert coll.count() == 700
    every = np.array(base + acked)
    for _ in range(4):   # round-robin over both replicas of each shard: all complete
        np.testing.assert_array_equal(coll.search(Q, k=10).ids, exact_top(every, 10))


def caught_up(group: ShardGroup) -> None:
    """Wait until the router's catch-up brought every replica of ``group`` to its latest
    write (bounded: a replica that never comes back fails the test)."""
    for _ in range(1200):
        if not group.lagging():
            return
        time.sleep(0.05)
    raise AssertionError(f"shard {group.shard}: replicas {group.lagging()} never caught up")


def replicas_agree(db: ClusterDatabase, name: str) -> dict[int, Any]:
    """Every replica of every shard at its shard's write number, holding exactly the same
    points (vectors, payloads, owner tenants, grants); the points found, by id."""
    found: dict[int, Any] = {}
    for group in db._shards.groups_now():
        numbers = {ray.get(a.ping.remote())[3] for a in group.actors}
        assert numbers == {group.seq}, (group.shard, numbers, group.seq)
        views = []
        for actor in group.actors:
            b = ray.get(actor.export.remote(name, -1, 1 << 20, None))
            assert b.done
            grants = {key: sorted(ids) for key, ids in b.grants.items()}
            views.append(({u: (b.vectors[i].tobytes(), b.payloads[i], b.owners[i]) for i, u in enumerate(b.uids)},
                          grants, ray.get(actor.call.remote(name, "list_tenants"))))
        assert all(v == views[0] for v in views[1:]), f"replicas of shard {group.shard} differ"
        found.update(views[0][0])
    return found


def test_a_replica_down_past_the_write_wait_catches_up(cluster: ClusterDatabase, tmp_path: Path) -> None:
    """A replica killed for good and kept down (its database held by another process)
    longer than the write wait while writes go on: the writes are acknowledged by the other
    replica and it alone answers reads; once the replica can start again the router starts
    it and replays the writes it missed, and every read equals an embedded collection given
    the same writes (the ground truth)."""
    embedded = vecdb.open(str(tmp_path / "truth"))
    try:
        colls = [db.create_collection("lag", DIM, metric="l2", index="flat") for db in (cluster, embedded)]
        coll, truth = colls

        def both(call: Any) -> list[Any]:
            return [call(c) for c in colls]

        def same_reads() -> None:
            got, want = both(lambda c: c.search(Q, k=10))
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.distances, want.distances)
            assert both(lambda c: c.count()) == [len(live)] * 2
            assert len(set(both(lambda c: (c.count(tenant="t"), c.count(tenant="u") if "u" in c.list_tenants() else 0,
                                           tuple(c.list_tenants()))))) == 1
            got, want = both(lambda c: c.get(sorted(live)))
            np.testing.assert_array_equal(got.vectors, want.vectors)
            assert got.payloads == want.payloads

        live = {i: {"i": i} for i in range(200)}
        both(lambda c: c.create_tenant("t"))
        both(lambda c: c.upsert(list(live), X[list(live)], list(live.values())))
        both(lambda c: c.grant("t", list(range(0, 200, 4))))
        group = {g.shard: g for g in cluster._shards.groups_now()}[0]
        ray.kill(group.actors[1], no_restart=True)
        fd = os.open(cluster.root / "shard-0" / "replica-1" / "LOCK", os.O_RDWR)
        try:
            for _ in range(400):   # the killed process lets go of its database
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.05)
            else:
                raise AssertionError("the killed replica never released its database")
            for b in range(12):
                ids = list(range(1000 + 10 * b, 1010 + 10 * b))
                both(lambda c: c.upsert(ids, X[ids], [{"b": b}] * 10))
                live.update({i: {"b": b} for i in ids})
                assert both(lambda c: c.delete([3 * b])) == [1, 1]
                del live[3 * b]
                same_reads()
            both(lambda c: c.create_tenant("u"))
            both(lambda c: c.grant("u", [1000, 1001, 4]))
            assert group.lagging() == [1]   # it missed writes: no reads, no writes go to it
            same_reads()
        finally:
            os.close(fd)   # its database is free again: the router starts it and catches it up
        caught_up(group)
        found = replicas_agree(cluster, "lag")
        assert sorted(found) == sorted(live)
        for _ in range(4):   # round-robin over both replicas of each shard
            same_reads()
        both(lambda c: c.upsert([2999], X[2999:]))   # and it takes writes again
        live[2999] = None
        same_reads()
        assert {ray.get(a.ping.remote())[3] for a in group.actors} == {group.seq}
    finally:
        embedded.close()


def test_a_replica_that_refuses_what_the_others_commit_is_copied(cluster: ClusterDatabase) -> None:
    """Replicas found disagreeing on a write (one holds a tenant the other lacks, written
    behind the router's back): the write is acknowledged by the replica that committed it,
    and the other is copied from it, not left different."""
    coll = cluster.create_collection("disagree", DIM, metric="l2", index="flat")
    ids = list(range(40))
    coll.upsert(ids, X[ids])
    group = cluster._shards.catalog_group()
    ray.get(group.actors[1].call.remote("disagree", "create_tenant", ("x",)))   # not a numbered write
    coll.create_tenant("x")                 # replica 0 commits it, replica 1 refuses: no InternalError
    caught_up(group)
    replicas_agree(cluster, "disagree")
    for actor in group.actors:
        assert ray.get(actor.call.remote("disagree", "list_tenants")) == ["x"]
    coll.grant("x", [1, 2])
    assert coll.count(tenant="x") == 2


def test_the_writer_killed_between_replica_commits_leaves_replicas_that_converge(local_ray: None,
                                                                               tmp_path: Path) -> None:
    """The writer killed for good after one replica committed a write and before the other
    did, its router (a child process) SIGKILLed too: the next router starts a writer, which
    finds the replicas at different write numbers and copies the one behind from the other
    before serving; no acknowledged write is lost."""
    root = tmp_path / "crash"
    proc = start_router(tmp_path, root, seed=11, rows=3000)
    try:
        acked, writer = until_paused(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ray.kill(writer, no_restart=True)
    finally:
        proc.kill()
        proc.wait()
    assert len(acked) == 50
    db = connect(root=str(root))
    try:
        group = db._shards.catalog_group()
        assert not group.lagging()
        coll = db.get_collection("crash")
        found = replicas_agree(db, "crash")
        assert set(acked) <= set(found) and set(found) <= set(acked) | set(range(100, 110))
        assert set(range(100, 110)) <= set(found)   # the first replica had committed it: it stands on both
        every = np.array(sorted(found))
        for _ in range(4):
            np.testing.assert_array_equal(coll.search(Q, k=10).ids, exact_top(every, 10))
        coll.upsert([200], X[200:201])
        assert coll.count() == len(found) + 1
    finally:
        db.close()


def test_same_mistake_same_exception_as_embedded(cluster: ClusterDatabase, tmp_path: Path) -> None:
    """Requests the router validates itself raise what the embedded collection raises."""
    bad = [lambda c: c.upsert([1, 1], np.ones((2, DIM))), lambda c: c.upsert([-1], np.ones((1, DIM))),
           lambda c: c.upsert([1], np.ones((1, DIM + 1))), lambda c: c.upsert([1], np.ones((1, DIM)), tenant="nobody"),
           lambda c: c.upsert([1], np.ones((1, DIM)), [{"a": 1}, {"b": 2}]), lambda c: c.get([12345]),
           lambda c: c.search(np.ones(DIM), k=3, params={"no_such_knob": 1}), lambda c: c.grant("nobody", [1]),
           lambda c: c.search(np.ones(DIM), k=3, tenant="nobody"), lambda c: c.delete(["x"])]
    with vecdb.open(str(tmp_path / "embedded")) as embedded:
        colls = [db.create_collection("mistakes", DIM, metric="l2", index="hnsw") for db in (embedded, cluster)]
        for c in colls:
            c.upsert(np.arange(20), X[:20])
        for call in bad:
            raised = []
            for c in colls:
                with pytest.raises(Exception) as info:
                    call(c)
                raised.append((type(info.value), str(info.value)))
            assert raised[0] == raised[1]


def test_a_partial_batch_says_which_ids_were_committed(cluster: ClusterDatabase) -> None:
    """A tenant upsert some shards refuse: the error names the committed ids, and exactly
    those (and no refused one) are stored."""
    coll = cluster.create_collection("partial", DIM, metric="l2", index="flat")
    coll.create_tenant("t")
    taken = owned_by(cluster, list(range(100)))[0][:1]   # one id on shard 0, held by the admin
    coll.upsert(taken, X[taken])
    ids = [i for i in range(100, 130)] + taken
    with pytest.raises(vecdb.errors.AlreadyExistsError) as info:
        coll.upsert(ids, X[ids], tenant="t")
    committed = getattr(info.value, "committed_ids", [])
    failed = getattr(info.value, "failed_ids", [])
    assert sorted(committed + failed) == sorted(ids) and taken[0] in failed and committed
    assert f"{committed[0]}" in str(info.value)
    assert sorted(coll.get(committed, tenant="t").ids.tolist()) == sorted(committed)
    refused_new = [i for i in failed if i not in taken]
    if refused_new:
        with pytest.raises(IdNotFoundError):
            coll.get(refused_new)


def test_rebalance_from_2_to_3_shards_during_searches(local_ray: None, tmp_path: Path) -> None:
    root = tmp_path / "rb"
    db = connect(root=str(root), shards=2, replicas=1)
    try:
        coll = db.create_collection("rb", DIM, metric="l2", index="flat")
        mt = db.create_collection("rbmt", DIM, metric="l2", index="flat", multi_tenant=True)
        for i in range(6):
            mt.create_tenant(f"t{i}")
            mt.upsert(list(range(20 * i, 20 * i + 20)), X[20 * i:20 * i + 20], tenant=f"t{i}")
        static = np.arange(600)
        coll.upsert(static, X[static], [{"static": True}] * len(static))
        coll.create_tenant("t")
        coll.grant("t", list(range(0, 600, 3)), write=True)
        truth = exact_top(static, 10)
        seen: list[str] = []
        acked: list[int] = []
        stop = threading.Event()
        errors: list[BaseException] = []

        def check(where: str) -> None:
            res = coll.search(Q, k=10, filter={"static": True})
            if not np.array_equal(res.ids, truth):
                seen.append(f"{where}: {res.ids.tolist()} != {truth.tolist()}")

        def background() -> None:
            n = 0
            try:
                while not stop.is_set():
                    check("concurrent")
                    ids = [2000 + n]
                    coll.upsert(ids, X[ids], [{"static": False}])
                    acked.extend(ids)
                    n += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        moved: list[int] = []

        def between(total: int) -> None:
            moved.append(total)
            check(f"after {total} moved")
            assert db.placement.moving_to == (0, 1, 2)   # mid-move: the new layout is recorded
            assert P.load(root).moving_to == (0, 1, 2)

        worker = threading.Thread(target=background)
        worker.start()
        db.rebalance(3, batch=40, on_batch=between)
        stop.set()
        worker.join()
        assert not errors and not seen, (errors, seen[:3])
        assert len(moved) >= 3   # several bounded batches, each followed by a complete search
        assert P.load(root) == db.placement and db.placement.shards == (0, 1, 2) and db.placement.moving_to is None
        every = list(static) + acked
        assert coll.count() == len(every)                  # no point on two shards
        for shard, ids in owned_by(db, every).items():     # each on the shard the new ring names
            group = {g.shard: g for g in db._shards.groups_now()}[shard]
            assert group.read("call", "rb", "count").result() == len(ids)
        np.testing.assert_array_equal(coll.get(acked).ids, acked)
        assert coll.count(tenant="t") == 200
        np.testing.assert_array_equal(coll.search(Q, k=10, filter={"static": True}).ids, truth)
        ring = db.placement.ring()
        groups = {g.shard: g for g in db._shards.groups_now()}
        for i in range(6):   # each tenant's points moved together, to its home under the new ring
            home = ring.owner(P.tenant_key(f"t{i}"))
            assert mt.search_shards(f"t{i}") == [home]
            assert groups[home].read("call", "rbmt", "count", (f"t{i}",)).result() == 20
        assert mt.count() == 120
    finally:
        db.close()


def test_an_interrupted_shrink_is_finished_by_connect(local_ray: None, tmp_path: Path) -> None:
    """A shrink from 3 to 2 shards the router "crashed" in (the new layout recorded, no point
    moved; the router gone without closing, its replicas left serving): connect finishes it
    before serving, and the removed shard's replica and folder go."""
    root = tmp_path / "shrink"
    db = connect(root=str(root), shards=3, replicas=1)
    coll = db.create_collection("rb", DIM, metric="l2", index="flat")
    every = list(range(600))
    coll.upsert(every, X[every], [{"static": True}] * 600)
    coll.create_tenant("t")
    coll.grant("t", list(range(0, 600, 3)), write=True)
    mt = db.create_collection("rbmt", DIM, metric="l2", index="flat", multi_tenant=True)
    for i in range(6):
        mt.create_tenant(f"t{i}")
        mt.upsert(list(range(20 * i, 20 * i + 20)), X[20 * i:20 * i + 20], tenant=f"t{i}")
    truth = exact_top(np.arange(600), 10)
    P.save(root, db.placement.with_target([0, 1]))   # as rebalance() records it first; then the writer is gone
    ray.kill(ray.get_actor(db._writer.name, namespace=NAMESPACE), no_restart=True)   # (its replicas stay)
    gone = db
    db = connect(root=str(root))   # finds the replicas running under their names, starts a writer
    try:
        assert P.load(root).shards == (0, 1) and P.load(root).moving_to is None
        assert not (root / "shard-2").exists()
        coll = db.get_collection("rb")
        assert coll.count() == len(every) and coll.count(tenant="t") == 200
        np.testing.assert_array_equal(coll.search(Q, k=10, filter={"static": True}).ids, truth)
        assert db.get_collection("rbmt").count() == 120
    finally:
        gone.close()
        db.close()


def test_a_multi_tenant_collection_keeps_each_tenant_on_one_shard(cluster: ClusterDatabase) -> None:
    """Tenant-affine placement: a tenant's own points live on its home shard, its search asks
    that shard only, ids stay one namespace, and grants on other shards widen its search."""
    coll = cluster.create_collection("mt", DIM, metric="l2", index="flat", multi_tenant=True)
    tenants = [f"t{i}" for i in range(6)]
    ring = cluster.placement.ring()
    homes = {t: ring.owner(P.tenant_key(t)) for t in tenants}
    assert len(set(homes.values())) >= 2
    for i, t in enumerate(tenants):
        coll.create_tenant(t)
        ids = list(range(100 * i, 100 * i + 50))
        coll.upsert(ids, X[ids], tenant=t)
    groups = {g.shard: g for g in cluster._shards.groups_now()}
    for i, t in enumerate(tenants):
        assert coll.search_shards(t) == [homes[t]]
        assert [groups[s].read("call", "mt", "count", (t,)).result() for s in sorted(groups)] == \
               [50 if s == homes[t] else 0 for s in sorted(groups)]
        np.testing.assert_array_equal(coll.search(Q, k=5, tenant=t).ids, exact_top(np.arange(100 * i, 100 * i + 50), 5))
    with pytest.raises(vecdb.errors.AlreadyExistsError):
        coll.upsert([0], X[:1], tenant="t1")       # t0's id: taken, whoever asks
    coll.upsert([0], X[1:2])                       # the admin replaces it where it lives
    np.testing.assert_array_equal(coll.get([0]).vectors, X[1:2])
    assert coll.count(tenant="t0") == 50 and coll.count() == 300
    other = next(t for t in tenants if homes[t] != homes["t0"])
    far = 100 * tenants.index(other)
    coll.grant("t0", [far])
    assert sorted(coll.search_shards("t0")) == sorted({homes["t0"], homes[other]})
    assert far in coll.search(X[far:far + 1], k=1, tenant="t0").ids[0].tolist()
    assert coll.get([far], tenant="t0").ids.tolist() == [far]
    assert coll.delete([far, 1], tenant="t0") == 2   # its grant on far is revoked, its own 1 deleted
    assert coll.count(tenant="t0") == 49 and coll.count() == 299
    with pytest.raises(IdNotFoundError):
        coll.get([far], tenant="t0")


def test_reads_fail_over_to_a_surviving_replica(cluster: ClusterDatabase) -> None:
    """With one replica of a shard dead for good, every read still answers, complete."""
    coll = cluster.get_collection("faults")
    before = coll.search(Q, k=10).ids
    group = {g.shard: g for g in cluster._shards.groups_now()}[0]
    ray.kill(group.actors[0], no_restart=True)
    for _ in range(4):
        np.testing.assert_array_equal(coll.search(Q, k=10).ids, before)
        assert coll.count() == 700
    assert group.failovers >= 1


def test_serve_cluster_with_the_client_sdk(local_ray: None, tmp_path: Path) -> None:
    """Two ``vecdb serve --cluster`` front ends (server processes joining this Ray) used
    through the client SDK: both take writes, each client reads its own and the other's
    acknowledged writes; the points live in the shards' own databases."""
    root = tmp_path / "served"
    root.mkdir()
    P.save(root, P.new_placement(2, 1))   # the cluster's layout, before it ever ran: 2 shards x 1 replica
    gcs = ray.get_runtime_context().gcs_address
    procs = [start_server_process(root, tmp_path / f"server{i}.log", args=["--cluster", gcs, "--no-metrics"])
             for i in range(2)]
    try:
        with vecdb.connect(procs[0].address, timeout=60) as client, \
                vecdb.connect(procs[1].address, timeout=60) as second:
            coll = client.create_collection("served", DIM, metric="l2", index="flat")
            ids = np.arange(200)
            coll.upsert(ids, X[ids], [{"i": int(i)} for i in ids])
            np.testing.assert_array_equal(coll.search(Q, k=10).ids, exact_top(ids, 10))
            assert coll.count() == 200 and coll.get([7]).payloads == [{"i": 7}]
            coll.create_tenant("t")
            coll.grant("t", [1, 2])
            assert coll.count(tenant="t") == 2
            other = second.get_collection("served")
            other.upsert(np.arange(200, 250), X[200:250], [{"i": int(i)} for i in range(200, 250)])
            assert other.delete([0, 1, 249]) == 3 and other.count() == 247
            assert coll.count() == 247 and coll.get([248]).payloads == [{"i": 248}]   # acknowledged on every replica
            coll.delete([2])
            assert other.count(tenant="t") == 0
            live = np.arange(3, 249)
            for c in (coll, other):
                np.testing.assert_array_equal(c.search(Q, k=10).ids, exact_top(live, 10))
    finally:
        assert procs[1].stop() == 0   # leaves the cluster serving the first
        assert procs[0].stop() == 0   # the last router: closing its cluster database stopped the replicas
    counts = []
    for shard in (0, 1):
        with vecdb.open(str(root / f"shard-{shard}" / "replica-0")) as part:
            counts.append(part.get_collection("served").count())
    assert sum(counts) == 246 and min(counts) > 0
