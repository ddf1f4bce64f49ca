"""The parts of vecdb.cluster that need no Ray cluster: the consistent-hash ring, the durable
placement record, and the exact top-k merge over shards."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from vecdb.api import QueryResult  # noqa: E402
from vecdb.cluster import placement as P  # noqa: E402
from vecdb.cluster.merge import merge_topk  # noqa: E402
from vecdb.errors import DataLossError  # noqa: E402
from vecdb.storage import keys as K  # noqa: E402


def test_adding_a_shard_moves_about_one_in_n_points_all_to_it() -> None:
    keys = [K.int_id_key(i) for i in range(20_000)]
    before = P.HashRing([0, 1, 2]).owners(keys)
    after = P.HashRing([0, 1, 2, 3]).owners(keys)
    moved = before != after
    assert set(after[moved].tolist()) == {3}                 # only onto the new shard
    assert 0.15 < moved.mean() < 0.35                          # about 1/4
    counts = np.bincount(after, minlength=4) / len(keys)
    assert counts.min() > 0.15                                 # every shard takes a fair part
    assert P.HashRing([2, 0, 1]).owners(keys[:100]).tolist() == before[:100].tolist()   # order-free, stable


def test_a_tenant_places_its_own_points_together() -> None:
    ring = P.HashRing([0, 1, 2])
    own = [P.placement_key(K.int_id_key(i), ("acme", "zeta"), True) for i in range(50)]
    assert len(set(ring.owners(own).tolist())) == 1 and ring.owners(own)[0] == ring.owner(P.tenant_key("acme"))
    plain = [P.placement_key(K.int_id_key(i), ("acme",), False) for i in range(50)]
    assert len(set(ring.owners(plain).tolist())) == 3          # not multi-tenant: by id


def test_the_placement_record_round_trips_and_refuses_corruption(tmp_path: Path) -> None:
    assert P.load(tmp_path) is None
    rec = P.new_placement(2, 3).with_target([0, 1, 2])
    P.save(tmp_path, rec)
    assert P.load(tmp_path) == rec and rec.next_shard == 3 and rec.all_shards() == (0, 1, 2)
    assert P.load(tmp_path).finished().shards == (0, 1, 2)
    assert not (tmp_path / (P.RECORD + ".tmp")).exists()
    (tmp_path / P.RECORD).write_text('{"format": "vecdb-cluster", "version": 1, "shards": [0')
    with pytest.raises(DataLossError):
        P.load(tmp_path)
    (tmp_path / P.RECORD).write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(DataLossError):
        P.load(tmp_path)


def test_the_merge_ranks_as_one_collection_and_drops_copies() -> None:
    rng = np.random.default_rng(5)
    nq, k = 7, 10
    dist = np.round(rng.random((nq, 90)), 2).astype(np.float32)   # many ties
    ids = np.tile(np.arange(90), (nq, 1))
    shard = np.arange(90) % 3
    parts = []
    for s in range(3):
        cols = np.flatnonzero(shard == s)
        order = np.lexsort((ids[:, cols], dist[:, cols]), axis=-1)[:, :k]
        parts.append(QueryResult(np.take_along_axis(ids[:, cols], order, 1), np.take_along_axis(dist[:, cols], order, 1)))
    # a copy of shard 0's answer, as seen while a rebalance moves those points
    parts.append(parts[0])
    got = merge_topk(parts, k, "int")
    want = np.lexsort((ids, dist), axis=-1)[:, :k]
    np.testing.assert_array_equal(got.ids, np.take_along_axis(ids, want, 1))
    np.testing.assert_array_equal(got.distances, np.take_along_axis(dist, want, 1))
    few = merge_topk([QueryResult(np.array([[4, -1]]), np.array([[0.5, np.inf]], np.float32))] * 2, 3, "int")
    assert few.ids.tolist() == [[4, -1, -1]] and np.isinf(few.distances[0, 1:]).all()


def test_a_mark_changes_with_the_writes_of_its_block_and_only_them(tmp_path: Path) -> None:
    """``Database.marking`` (a cluster replica's applied-write number): recorded in the
    transaction of each write committed in the block, alone when the block wrote nothing,
    not at all when the block's write was refused; other threads' writes do not carry it."""
    import threading

    import vecdb
    from vecdb.errors import AlreadyExistsError

    with vecdb.open(str(tmp_path / "db")) as db:
        assert db.mark("applied") is None
        coll = db.create_collection("c", 4, metric="l2", index="flat")
        with db.marking("applied", b"1"):
            coll.upsert([1, 2], np.ones((2, 4)))
        assert db.mark("applied") == b"1"
        coll.create_tenant("t")
        with pytest.raises(AlreadyExistsError):
            with db.marking("applied", b"2"):
                coll.create_tenant("t")        # refused: nothing written, the mark stays
        assert db.mark("applied") == b"1"
        with db.marking("applied", b"3"):
            assert coll.delete([99]) == 0      # wrote nothing: the mark is written alone
        assert db.mark("applied") == b"3"
        seen: list[bytes | None] = []
        with db.marking("applied", b"4"):
            def elsewhere() -> None:
                coll.upsert([5], np.ones((1, 4)))
                seen.append(db.mark("applied"))

            other = threading.Thread(target=elsewhere)
            other.start()
            other.join()
        assert seen == [b"3"]                  # another thread's write did not carry it
        assert db.mark("applied") == b"4"
        db.snapshot(str(tmp_path / "copy"))
    with vecdb.open(str(tmp_path / "db")) as again, vecdb.open(str(tmp_path / "copy")) as copy:
        assert again.mark("applied") == b"4" and copy.mark("applied") == b"4"
        assert again.get_collection("c").count() == 3
