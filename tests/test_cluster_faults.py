"""vecdb.cluster under failure and change, on a local Ray started once for the module:
replica actors killed during a stream of upserts and searches (no acknowledged write lost,
searches answer throughout and are complete once the replica is back), reads failing over
to a surviving replica, rebalancing from 2 to 3 shards during searches and writes (never a
duplicate, never a missing neighbour), and ``vecdb serve --cluster`` used through the
client SDK."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import vecdb  # noqa: E402
from vecdb.cluster import ClusterDatabase, connect  # noqa: E402
from vecdb.cluster import placement as P  # noqa: E402
from vecdb.errors import IdNotFoundError  # noqa: E402
from vecdb.server.process import start_server_process  # noqa: E402
from vecdb.storage import keys as K  # noqa: E402

DIM = 8
X = np.random.default_rng(11).standard_normal((3000, DIM)).astype(np.float32)   # row i: the vector of id i
Q = np.random.default_rng(12).standard_normal((6, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDatabase]:
    """2 shards x 2 replicas (the congruence suite runs 3 x 2)."""
    db = connect(root=str(tmp_path_factory.mktemp("faults") / "cluster"), shards=2, replicas=2)
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
    groups = {g.shard: g for g in cluster._groups_now()}
    ray.kill(groups[0].actors[0], no_restart=False)     # a replica of shard 0, Ray restarts it
    second.wait()
    ray.kill(groups[1].actors[1], no_restart=False)     # and the other replica of shard 1
    threads[0].join()
    stop.set()
    threads[1].join()
    assert not errors, errors
    assert answered[0] > 0 and len(acked) == 400
    # every acknowledged point is on every replica of its shard (the killed ones too)
    for shard, ids in owned_by(cluster, base + acked).items():
        for actor in groups[shard].actors:
            got = ray.get(actor.get.remote("faults", ids, None))
            assert not isinstance(got, list), f"shard {shard} lost {got[:5]}"
            np.testing.assert_array_equal(got.vectors, X[ids])
    assert coll.count() == 700
    every = np.array(base + acked)
    for _ in range(4):   # round-robin over both replicas of each shard: all complete
        np.testing.assert_array_equal(coll.search(Q, k=10).ids, exact_top(every, 10))


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
            group = {g.shard: g for g in db._groups_now()}[shard]
            assert group.read("call", "rb", "count").result() == len(ids)
        np.testing.assert_array_equal(coll.get(acked).ids, acked)
        assert coll.count(tenant="t") == 200
        np.testing.assert_array_equal(coll.search(Q, k=10, filter={"static": True}).ids, truth)
        ring = db.placement.ring()
        groups = {g.shard: g for g in db._groups_now()}
        for i in range(6):   # each tenant's points moved together, to its home under the new ring
            home = ring.owner(P.tenant_key(f"t{i}"))
            assert mt.search_shards(f"t{i}") == [home]
            assert groups[home].read("call", "rbmt", "count", (f"t{i}",)).result() == 20
        assert mt.count() == 120
    finally:
        db.close()


@pytest.mark.slow   # restarts a cluster (~10 s of actor start-up)
def test_an_interrupted_shrink_is_finished_by_connect(local_ray: None, tmp_path: Path) -> None:
    """A shrink from 3 to 2 shards the router "crashed" in (the new layout recorded, no point
    moved): connect finishes it before serving, and the removed shard's folder goes."""
    root = tmp_path / "shrink"
    db = connect(root=str(root), shards=3, replicas=1)
    try:
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
    finally:
        db.close()
    P.save(root, db.placement.with_target([0, 1]))
    db = connect(root=str(root))
    try:
        assert P.load(root).shards == (0, 1) and P.load(root).moving_to is None
        assert not (root / "shard-2").exists()
        coll = db.get_collection("rb")
        assert coll.count() == len(every) and coll.count(tenant="t") == 200
        np.testing.assert_array_equal(coll.search(Q, k=10, filter={"static": True}).ids, truth)
        assert db.get_collection("rbmt").count() == 120
    finally:
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
    groups = {g.shard: g for g in cluster._groups_now()}
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
    group = {g.shard: g for g in cluster._groups_now()}[0]
    ray.kill(group.actors[0], no_restart=True)
    for _ in range(4):
        np.testing.assert_array_equal(coll.search(Q, k=10).ids, before)
        assert coll.count() == 700
    assert group.failovers >= 1


@pytest.mark.slow   # a server process joining the Ray cluster (~15 s of start-up)
def test_serve_cluster_with_the_client_sdk(local_ray: None, tmp_path: Path) -> None:
    root = tmp_path / "served"
    root.mkdir()
    P.save(root, P.new_placement(2, 1))   # the cluster's layout, before it ever ran: 2 shards x 1 replica
    gcs = ray.get_runtime_context().gcs_address
    proc = start_server_process(root, tmp_path / "server.log", args=["--cluster", gcs, "--no-metrics"])
    try:
        with vecdb.connect(proc.address, timeout=60) as client:
            coll = client.create_collection("served", DIM, metric="l2", index="flat")
            ids = np.arange(200)
            coll.upsert(ids, X[ids], [{"i": int(i)} for i in ids])
            np.testing.assert_array_equal(coll.search(Q, k=10).ids, exact_top(ids, 10))
            assert coll.count() == 200 and coll.get([7]).payloads == [{"i": 7}]
            coll.create_tenant("t")
            coll.grant("t", [1, 2])
            assert coll.count(tenant="t") == 2
    finally:
        assert proc.stop() == 0
    db = connect(root=str(root))   # the points live in the cluster's shards
    try:
        assert db.get_collection("served").count() == 200
        assert db.placement.shards == (0, 1)
    finally:
        db.close()
