"""Vector blocks (``vecdb.collection.blocks``): an upsert's new rows in one record per batch.

Collections written before blocks (per-point ``vec`` records, the committed fixture
``tests/data/per_point_v1``) open, read, search, take new writes and reopen with no migration;
random mixes of upserts, replaces and deletes answer like a dict oracle through get, search,
export, a snapshot's replay, a rebuild from the store and a plain reopen; a block none of
whose points is left is deleted; a corrupt or truncated block is DataLossError. Payloads are
kept in blocks the same way (``pblk``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecdb
from vecdb.collection import blocks
from vecdb.errors import DataLossError

DIM = 8
FIXTURE = Path(__file__).parent / "data" / "per_point_v1"


def records(path: Path, name: str) -> dict[bytes, bytes]:
    """Every record of sub-database ``name`` of the database in ``path`` (closed)."""
    env = lmdb.open(str(path / "lmdb"), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            if txn.get(name.encode()) is None:
                return {}
            db = env.open_db(name.encode(), txn=txn, create=False)
            return {bytes(k): bytes(v) for k, v in txn.cursor(db)}
    finally:
        env.close()


def put_raw(path: Path, name: str, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path / "lmdb"), max_dbs=64)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value, db=env.open_db(name.encode(), txn=txn))
    finally:
        env.close()


def check(col: Any, oracle: dict[int, tuple[np.ndarray, Any]]) -> None:
    """``col`` answers exactly ``oracle`` (id -> (vector, payload)): count, get (with repeats),
    export, and an exact search for each point's own vector."""
    ids = sorted(oracle)
    assert col.count() == len(ids)
    if not ids:
        assert len(col.export()) == 0
        return
    asked = ids + ids[::3]
    got = col.get(asked)
    np.testing.assert_array_equal(got.vectors, np.stack([oracle[i][0] for i in asked]))
    assert got.payloads == [oracle[i][1] for i in asked]
    out = col.export(limit=10_000)   # in internal-id order
    assert out.done and sorted(out.uids) == ids
    np.testing.assert_array_equal(out.vectors, np.stack([oracle[i][0] for i in out.uids]))
    assert out.payloads == [oracle[i][1] for i in out.uids]
    x = np.stack([oracle[i][0] for i in ids])
    params = {"ef": 200} if col.info.index == "hnsw" else None
    res = col.search(x, k=1, params=params, with_payloads=True)
    np.testing.assert_array_equal(res.ids[:, 0], ids)
    assert [row[0] for row in res.payloads] == [oracle[i][1] for i in ids]
    # the payload index answers like the stored payloads (rebuilt from the blocks on open)
    for field in ("v", "n"):
        for value in sorted({p[field] for _, p in oracle.values() if p is not None and field in p})[:6]:
            want = sorted(i for i, (_, p) in oracle.items() if p is not None and p.get(field) == value)
            got_ids = col.search(x[:1], k=len(ids), filter={field: value}, params=params).ids[0]
            assert sorted(i for i in got_ids.tolist() if i >= 0) == want


def fixture_oracle() -> tuple[dict[int, tuple[np.ndarray, Any]], list[int]]:
    exp = json.loads((FIXTURE / "expected.json").read_text())
    oracle = {i: (np.array(v, np.float32), p) for i, v, p in zip(exp["ids"], exp["vectors"], exp["payloads"])}
    return oracle, exp["tenant_t"]


@pytest.mark.parametrize("rebuild", [False, True], ids=["checkpoint+replay", "rebuild-from-store"])
def test_per_point_database_opens_reads_writes_and_reopens(tmp_path: Path, rebuild: bool) -> None:
    path = tmp_path / "db"
    shutil.copytree(FIXTURE, path)
    (path / "expected.json").unlink()
    if rebuild:
        shutil.rmtree(path / "index")
    oracle, tenant_t = fixture_oracle()
    assert len(records(path, "c00000000.vec")) == len(oracle) and not records(path, "c00000000.vblk")
    rng = np.random.default_rng(1)
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        check(col, oracle)
        assert col.count(tenant="t") == len(tenant_t)
        # new points (a block), replaced per-point points, replaced and deleted ones of both kinds
        new = rng.standard_normal((12, DIM)).astype(np.float32)
        ids = [100 + i for i in range(8)] + [0, 1, 30, 31]
        pays = [{"k": i} for i in range(8)] + [None, {"r": 1}, {"r": 30}, None]
        col.upsert(ids, new, pays)
        oracle.update({i: (v, p) for i, v, p in zip(ids, new, pays)})
        assert col.delete([0, 6, 101, 45]) == 4
        for i in (0, 6, 101, 45):
            oracle.pop(i)
        check(col, oracle)
    assert len(records(path, "c00000000.vblk")) == len(records(path, "c00000000.pblk")) == 1
    with vecdb.open(path) as db:
        check(db.get_collection("c"), oracle)
    shutil.rmtree(path / "index")
    with vecdb.open(path) as db:
        check(db.get_collection("c"), oracle)


ops = st.lists(st.tuples(st.sampled_from(["upsert", "upsert", "delete"]),
                         st.lists(st.integers(0, 40), min_size=1, max_size=15, unique=True),
                         st.booleans()),
               min_size=1, max_size=8)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops, seed=st.integers(0, 2**16))
def test_random_upserts_replaces_and_deletes_answer_like_a_dict(tmp_path_factory: Any, steps: list[Any],
                                                               seed: int) -> None:
    path = tmp_path_factory.mktemp("db")
    rng = np.random.default_rng(seed)
    oracle: dict[int, tuple[np.ndarray, Any]] = {}
    with vecdb.open(path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="flat")
        for kind, ids, flag in steps:
            if kind == "upsert":
                x = rng.standard_normal((len(ids), DIM)).astype(np.float32)
                pays = [{"v": int(i)} if flag or i % 2 else None for i in ids]
                col.upsert(ids, x, pays if any(p is not None for p in pays) else None)
                oracle.update({i: (v, p) for i, v, p in zip(ids, x, pays)})
            else:
                assert col.delete(ids) == sum(i in oracle for i in ids)
                for i in ids:
                    oracle.pop(i, None)
        check(col, oracle)
        db.snapshot(path / "snap")   # newer than any checkpoint: opening it replays the log
    with vecdb.open(path / "snap") as db:
        check(db.get_collection("c"), oracle)
    with vecdb.open(path / "db") as db:
        check(db.get_collection("c"), oracle)
    shutil.rmtree(path / "db" / "index")
    with vecdb.open(path / "db") as db:
        check(db.get_collection("c"), oracle)
    # every stored block still holds a live point; every live point has exactly one home
    live = _iids(path, set(oracle))
    spans = [blocks.key_span(k) for k in records(path / "db", "c00000000.vblk")]
    assert all(any(a <= i <= b for i in live) for a, b in spans)


def _iids(path: Path, live: set[int]) -> set[int]:
    """Internal ids of the live user ids (from the ``ids`` records)."""
    recs = records(path / "db", "c00000000.ids")
    return {int.from_bytes(v, "big") for k, v in recs.items() if int.from_bytes(k[1:], "big") in live}


def test_a_block_with_no_point_left_is_deleted(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, DIM)).astype(np.float32)
    path = tmp_path / "db"
    with vecdb.open(path) as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        for s in range(0, 30, 10):
            col.upsert(np.arange(s, s + 10), x[s:s + 10], [{"n": i} for i in range(s, s + 10)])
        col.upsert([12], x[:1])          # replaced: its row and "no payload" now in per-point records
        col.delete(list(range(10, 20)) + [25])
    for part in ("vblk", "pblk"):
        assert sorted(blocks.key_span(k) for k in records(path, f"c00000000.{part}")) == [(0, 9), (20, 29)]
    assert not records(path, "c00000000.vec") and not records(path, "c00000000.pay")   # left with point 12
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        col.upsert([3], x[3] + 1, [{"n": -3}])
        col.delete([i for i in range(10) if i != 3])
    for part in ("vblk", "pblk"):
        assert sorted(blocks.key_span(k) for k in records(path, f"c00000000.{part}")) == [(0, 9), (20, 29)]
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        got = col.get([3, 20])
        np.testing.assert_array_equal(got.vectors, [x[3] + 1, x[20]])
        assert got.payloads == [{"n": -3}, {"n": 20}]
        col.delete(list(range(30)))
        assert col.count() == 0
    for part in ("vblk", "pblk", "vec", "pay"):
        assert not records(path, f"c00000000.{part}")


@pytest.mark.parametrize("part", ["vblk", "pblk"])
@pytest.mark.parametrize("damage", ["truncated", "header", "count", "short"])
@pytest.mark.parametrize("rebuild", [False, True], ids=["checkpoint", "rebuild-from-store"])
def test_corrupt_or_truncated_block_is_data_loss(tmp_path: Path, part: str, damage: str, rebuild: bool) -> None:
    x = np.random.default_rng(4).standard_normal((20, DIM)).astype(np.float32)
    path = tmp_path / "db"
    with vecdb.open(path) as db:
        db.create_collection("c", DIM, metric="l2", index="flat").upsert(np.arange(20), x,
                                                                          [{"n": i} for i in range(20)])
    (key, value), = records(path, f"c00000000.{part}").items()
    assert blocks.key_span(key) == (0, 19)
    bad = {"truncated": value[:-4], "header": b"XXXX" + value[4:], "short": value[:5],
           "count": value[:4] + (19).to_bytes(4, "little") + value[8:]}[damage]
    put_raw(path, f"c00000000.{part}", key, bad)
    if rebuild:
        shutil.rmtree(path / "index")
    with pytest.raises(DataLossError):
        with vecdb.open(path) as db:
            col = db.get_collection("c")
            col.get([5])
    with pytest.raises(DataLossError):
        with vecdb.open(path) as db:
            db.get_collection("c").export()


def test_block_format_round_trips_and_checks_its_key() -> None:
    rows = np.arange(24, dtype=np.float32).reshape(3, DIM)
    key = blocks.block_key(7, 3)
    first, back = blocks.decode(key, bytes(blocks.encode(rows)), DIM)
    assert first == 7 and blocks.key_span(key) == (7, 9)
    np.testing.assert_array_equal(back, rows)
    with pytest.raises(DataLossError):
        blocks.decode(blocks.block_key(7, 4), bytes(blocks.encode(rows)), DIM)   # key spans 4 rows
    with pytest.raises(DataLossError):
        blocks.decode(key, bytes(blocks.encode(rows)), DIM + 1)                  # another collection's dim
    with pytest.raises(DataLossError):
        blocks.key_span(key[:12])


def format_record(path: Path) -> Any:
    env = lmdb.open(str(path / "lmdb"), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return json.loads(txn.get(b"format", db=env.open_db(b"meta", txn=txn)))
    finally:
        env.close()


def test_a_version_1_database_is_marked_version_2_and_unknown_versions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    shutil.copytree(FIXTURE, path)
    assert format_record(path) == {"format": "vecdb-db", "version": 1}
    with vecdb.open(path) as db:          # its new batches are blocks: an older vecdb must refuse it
        assert db.get_collection("c").count() > 0
    assert format_record(path) == {"format": "vecdb-db", "version": 2}
    env = lmdb.open(str(path / "lmdb"), max_dbs=64)
    with env.begin(write=True) as txn:
        txn.put(b"format", json.dumps({"format": "vecdb-db", "version": 3}).encode(), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(DataLossError, match="version"):
        vecdb.open(path)
    assert format_record(path)["version"] == 3   # refused, not rewritten
