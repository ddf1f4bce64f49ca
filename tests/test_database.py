"""The embedded database API: lifecycle, collections, ids, payloads, tenants, bad input that
changes nothing, snapshots, map growth, concurrency, and the HNSW index through the registry."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb.api import CollectionAPI, DatabaseAPI
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, DimensionMismatchError, FailedPreconditionError,
                          IdNotFoundError, InvalidArgumentError, TenantNotFoundError)
from vecdb.storage import keys as K

DIM = 8


@pytest.fixture
def db(tmp_path: Path) -> Any:
    with vecdb.open(tmp_path / "db") as database:
        yield database


def filled(db: Any, n: int = 50, **kwargs: Any) -> Any:
    col = db.create_collection("docs", dim=DIM, metric=kwargs.pop("metric", "l2"), index=kwargs.pop("index", "flat"), **kwargs)
    x = np.random.default_rng(3).standard_normal((n, DIM)).astype(np.float32)
    ids = list(range(n)) if col.info.id_type == "int" else [f"d{i}" for i in range(n)]
    col.upsert(ids, x, [{"lang": "en" if i % 2 else "fr", "year": 2000 + i, "i": i} for i in range(n)])
    return col, ids, x


def test_protocols_and_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "new" / "db"
    with vecdb.open(path) as db:
        assert isinstance(db, DatabaseAPI)
        col = db.create_collection("docs", dim=DIM, index="flat")
        assert isinstance(col, CollectionAPI)
        assert col.info == vecdb.database.CollectionInfo("docs", DIM, "cosine", "flat", {}, "int")
        assert [c.name for c in db.list_collections()] == ["docs"]
        assert db.get_collection("docs") is col
        with pytest.raises(FailedPreconditionError, match="already open"):
            vecdb.open(path)
    with pytest.raises(FailedPreconditionError):
        db.get_collection("docs")
    with pytest.raises(FailedPreconditionError):
        col.count()
    db.close()  # harmless twice
    with vecdb.open(path) as db:
        col = db.get_collection("docs")
        assert col.info.index == "flat"
        db.drop_collection("docs")
        assert db.list_collections() == []
        with pytest.raises(CollectionNotFoundError):
            db.get_collection("docs")
        with pytest.raises(CollectionNotFoundError):
            db.drop_collection("docs")
        with pytest.raises(CollectionNotFoundError):
            col.count()


def test_create_collection_validates(db: Any) -> None:
    db.create_collection("a", dim=4, index="flat")
    with pytest.raises(AlreadyExistsError):
        db.create_collection("a", dim=4, index="flat")
    for kwargs, match in [({"name": "bad name!"}, "collection name"), ({"dim": 0}, "dim"), ({"metric": "cheb"}, "metric"),
                          ({"metric": "hamming"}, "float vectors"), ({"index": "nope"}, "unknown index"),
                          ({"id_type": "uuid"}, "id_type"), ({"index_params": {"bogus": 1}}, "rejects index_params")]:
        args = {"name": "b", "dim": 4, "index": "flat"} | kwargs
        with pytest.raises(InvalidArgumentError, match=match):
            db.create_collection(**args)
    assert [c.name for c in db.list_collections()] == ["a"]


def test_upsert_get_search_and_replace(db: Any) -> None:
    col, ids, x = filled(db)
    assert col.count() == 50
    got = col.get([3, 1])
    np.testing.assert_array_equal(got.ids, [3, 1])
    np.testing.assert_array_equal(got.vectors, x[[3, 1]])
    assert got.payloads[0] == {"lang": "en", "year": 2003, "i": 3}
    res = col.search(x[:2], k=3, with_payloads=True)
    np.testing.assert_array_equal(res.ids[:, 0], [0, 1])
    assert res.payloads is not None and res.payloads[1][0]["i"] == 1
    # replacing an id swaps vector and payload together; filters follow the new payload
    col.upsert([1], x[10:11] + 5, [{"lang": "de"}])
    assert col.count() == 50
    np.testing.assert_array_equal(col.get([1]).vectors[0], x[10] + 5)
    assert col.search(x[1], k=50, filter={"lang": "en"}).ids[0].tolist().count(1) == 0
    assert col.search(x[10] + 5, k=1, filter={"lang": "de"}).ids[0, 0] == 1
    col.upsert([2], x[2], None)
    assert col.get([2]).payloads == [None]
    with pytest.raises(IdNotFoundError, match="999"):
        col.get([1, 999])
    assert col.delete([1, 2, 999]) == 2
    assert col.count() == 48
    res = col.search(x[1], k=60)
    assert res.ids.shape == (1, 60) and (res.ids[0, 48:] == -1).all() and np.isinf(res.distances[0, 48:]).all()


def test_filters_through_search(db: Any) -> None:
    col, _, x = filled(db)
    res = col.search(x[0], k=50, filter={"lang": "en", "year": {"gte": 2020}})
    found = sorted(i for i in res.ids[0].tolist() if i >= 0)
    assert found == [i for i in range(50) if i % 2 and i >= 20]
    res = col.search(x[0], k=50, filter={"$or": [{"i": {"lt": 3}}, {"$not": {"year": {"lt": 2048}}}]})
    assert sorted(i for i in res.ids[0].tolist() if i >= 0) == [0, 1, 2, 48, 49]
    assert (col.search(x[0], k=5, filter={"lang": "xx"}).ids == -1).all()


def test_str_ids(db: Any) -> None:
    col, ids, x = filled(db, id_type="str")
    res = col.search(x[4], k=2)
    assert res.ids.dtype == object and res.ids[0, 0] == "d4"
    assert col.search(x[4], k=60).ids[0, -1] is None
    assert list(col.get(["d7", "d2"]).ids) == ["d7", "d2"]
    with pytest.raises(InvalidArgumentError, match="str ids"):
        col.upsert([5], x[:1])
    with pytest.raises(InvalidArgumentError, match="str ids"):
        col.upsert([""], x[:1])


def assert_unchanged(col: Any, x: np.ndarray, n: int) -> None:
    assert col.count() == n
    np.testing.assert_array_equal(col.get(list(range(n))).vectors, x[:n])


def test_bad_input_is_rejected_and_changes_nothing(db: Any) -> None:
    col, _, x = filled(db, n=20)
    col.create_tenant("t")
    new = np.ones((2, DIM), np.float32)
    cases = [
        (DimensionMismatchError, lambda: col.upsert([100, 101], np.ones((2, DIM + 1)))),
        (InvalidArgumentError, lambda: col.upsert([100, 101], np.where(new > 0, np.nan, 0))),
        (InvalidArgumentError, lambda: col.upsert([100, 100], new)),
        (InvalidArgumentError, lambda: col.upsert([100, 101, 102], new)),
        (InvalidArgumentError, lambda: col.upsert([100, 101], new, payloads=[{"a": {1, 2}}, None])),
        (InvalidArgumentError, lambda: col.upsert([100, 101], new, payloads=[{"a": 1}])),
        (InvalidArgumentError, lambda: col.upsert([100, 101], new, payloads=[{"a": float("nan")}, None])),
        (InvalidArgumentError, lambda: col.upsert(["x", "y"], new)),
        (InvalidArgumentError, lambda: col.upsert([-1, 2], new)),
        (TenantNotFoundError, lambda: col.upsert([100, 101], new, tenant="nobody")),
        (TenantNotFoundError, lambda: col.upsert([100, 101], new, tenant=["t", "nobody"])),
        (InvalidArgumentError, lambda: col.search(x[0], k=3, filter={"lang": {"like": "e%"}})),
        (InvalidArgumentError, lambda: col.search(x[0], k=0)),
        (DimensionMismatchError, lambda: col.search(np.ones(DIM + 2), k=3)),
        (InvalidArgumentError, lambda: col.search(x[0], k=3, params={"nprobe": 3})),
        (TenantNotFoundError, lambda: col.search(x[0], k=3, tenant="nobody")),
        (TenantNotFoundError, lambda: col.count(tenant="nobody")),
        (TenantNotFoundError, lambda: col.delete([1], tenant="nobody")),
        (IdNotFoundError, lambda: col.grant("t", [1, 555])),
        (IdNotFoundError, lambda: col.get([555])),
        (AlreadyExistsError, lambda: col.create_tenant("t")),
        (CollectionNotFoundError, lambda: db.get_collection("missing")),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
        assert_unchanged(col, x, 20)
        assert col.count(tenant="t") == 0


def test_tenants_isolate_whatever_the_filter(db: Any) -> None:
    col, _, x = filled(db, n=30)
    col.create_tenant("a")
    col.create_tenant("b")
    y = np.random.default_rng(9).standard_normal((10, DIM)).astype(np.float32)
    col.upsert(list(range(100, 110)), y, [{"lang": "en"}] * 10, tenant="a")
    col.upsert(list(range(200, 205)), y[:5], [{"lang": "en"}] * 5, tenant=["a", "b"])
    assert col.list_tenants() == ["a", "b"]
    assert (col.count(), col.count("a"), col.count("b")) == (45, 15, 5)
    for flt in (None, {"lang": "en"}, {"$not": {"lang": "en"}}, {"i": {"gte": 0}}):
        res = col.search(x[:3], k=45, filter=flt, tenant="b")
        assert set(res.ids[res.ids >= 0].tolist()) <= set(range(200, 205))
    col.grant("b", [0, 1])
    assert col.count("b") == 7
    assert set(col.search(x[0], k=10, tenant="b").ids[0, :7].tolist()) == {0, 1, 200, 201, 202, 203, 204}
    col.revoke("b", [0, 200])
    assert col.count("b") == 5 and col.count() == 45
    assert col.delete(list(range(100, 105)) + [1], tenant="a") == 5  # 1 is not in "a"
    assert col.count() == 40 and col.count("a") == 10
    col.drop_tenant("a")
    assert col.list_tenants() == ["b"] and col.count() == 40
    with pytest.raises(TenantNotFoundError):
        col.search(x[0], k=3, tenant="a")


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db", checkpoint_points=10) as db:
        col, _, x = filled(db, n=40)
        col.create_tenant("t")
        col.grant("t", [3, 4])
        col.delete([5])
        before = col.search(x[:4], k=5, filter={"lang": "fr"})
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("docs")
        assert col.count() == 39 and col.count("t") == 2
        after = col.search(x[:4], k=5, filter={"lang": "fr"})
        np.testing.assert_array_equal(before.ids, after.ids)
        np.testing.assert_allclose(before.distances, after.distances)
        stats = col.stats()
        assert stats.count == 39 and stats.n_tenants == 1 and stats.index == "flat"
        assert stats.memory_bytes > 39 * DIM * 4 and stats.disk_bytes > 39 * DIM * 4


def test_hnsw_collection_recall_and_reopen(tmp_path: Path) -> None:
    from vecdb.data.synthetic import gaussian_mixture

    data = gaussian_mixture(2100, 16, seed=1338)
    base, queries = data[:2000], data[2000:]
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("h", dim=16, metric="l2", index="hnsw", index_params={"M": 8, "seed": 1})
        col.upsert(np.arange(2000), base, [{"even": i % 2 == 0} for i in range(2000)])
        col.delete(np.arange(0, 2000, 10))
        res = col.search(queries, k=10, filter={"even": True}, params={"ef": 64})
    keep = np.array([i for i in range(2000) if i % 2 == 0 and i % 10], np.int64)
    d = ((queries[:, None, :] - base[keep][None]) ** 2).sum(-1)
    truth = keep[np.argsort(d, axis=1)[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids.tolist(), truth.tolist())])
    assert recall >= 0.9  # measured 0.99+ (seed 1338, n=2000, d=16, M=8, ef=64)
    with vecdb.open(tmp_path / "db") as db:
        again = db.get_collection("h").search(queries, k=10, filter={"even": True}, params={"ef": 64})
    np.testing.assert_array_equal(again.ids, res.ids)


def test_map_grows_automatically(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db", map_size=256 * 1024) as db:
        col = db.create_collection("g", dim=64, index="flat", metric="l2")
        x = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
        for b in range(0, 4000, 1000):
            col.upsert(np.arange(b, b + 1000), x[b : b + 1000], [{"b": b}] * 1000)
        assert col.count() == 4000
        assert db._store.map_size() > 256 * 1024
    with vecdb.open(tmp_path / "db") as db:
        np.testing.assert_array_equal(db.get_collection("g").get([3999]).vectors[0], x[3999])


def test_snapshot_while_writing_is_consistent(tmp_path: Path) -> None:
    """A snapshot taken while a writer commits batch after batch holds whole batches only:
    every batch acknowledged before the call, and none that the writer committed after it
    (the writer provably runs before, during and after the snapshot)."""
    batch, max_batches = 100, 5000

    def vectors(b: int) -> np.ndarray:
        return np.random.default_rng(b).standard_normal((batch, DIM)).astype(np.float32)

    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("s", dim=DIM, index="flat", metric="l2")
        acked: list[int] = []
        progress = threading.Condition()
        stop = threading.Event()

        def writer() -> None:
            for b in range(max_batches):  # bounded; stopped long before the end
                if stop.is_set():
                    return
                col.upsert(np.arange(b * batch, (b + 1) * batch), vectors(b), [{"b": b}] * batch)
                with progress:
                    acked.append(b)
                    progress.notify_all()

        t = threading.Thread(target=writer)
        t.start()
        try:
            with progress:
                assert progress.wait_for(lambda: len(acked) >= 10, timeout=120)
                before = len(acked)
            db.snapshot(tmp_path / "snap")
            with progress:
                after = len(acked)
                assert progress.wait_for(lambda: len(acked) > after + 1, timeout=120), "the writer stopped"
        finally:
            stop.set()
            t.join()
        live = col.count()
        with pytest.raises(InvalidArgumentError):
            db.snapshot(tmp_path / "snap")
    with vecdb.open(tmp_path / "snap") as snap:
        col = snap.get_collection("s")
        n = col.count()
        assert n % batch == 0
        # a batch committed just before the snapshot may not be in ``acked`` yet: hence + 1
        assert before * batch <= n <= (after + 1) * batch < live
        got = col.get(np.arange(n))
        np.testing.assert_array_equal(got.vectors, np.vstack([vectors(b) for b in range(n // batch)]))
        assert got.payloads == [{"b": i // batch} for i in range(n)]
        with pytest.raises(IdNotFoundError):
            col.get([n])  # the next batch was committed after the snapshot
        everything = col.search(vectors(0)[0], k=n + batch).ids[0]
        np.testing.assert_array_equal(np.sort(everything[everything >= 0]), np.arange(n))


def test_readers_never_see_half_a_batch(db: Any) -> None:
    """Readers counting and searching (k covering every point) while batches are upserted
    and deleted see each batch entirely or not at all."""
    batch, batches = 50, 40
    col = db.create_collection("c", dim=DIM, index="flat", metric="l2")
    x = np.random.default_rng(2).standard_normal((batch * batches, DIM)).astype(np.float32)
    done = threading.Event()
    problems: list[str] = []
    seen_counts: set[int] = set()
    reads = [0]
    progress = threading.Condition()

    def reader() -> None:
        while not done.is_set():
            n = col.count()
            seen_counts.add(n)
            if n % batch:
                problems.append(f"count {n}")
            res = col.search(x[0], k=batch * batches, filter={"b": {"gte": 0}})
            got = res.ids[0][res.ids[0] >= 0]
            per_batch = np.bincount(got // batch, minlength=batches)
            if not np.isin(per_batch, [0, batch]).all():
                problems.append(f"search saw batches partly: {per_batch[~np.isin(per_batch, [0, batch])][:3]}")
            with progress:
                reads[0] += 1
                progress.notify_all()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for b in range(batches):
            with progress:  # every reader state overlaps the writes: wait for fresh reads each batch
                start = reads[0]
                assert progress.wait_for(lambda: reads[0] >= start + 2, timeout=120), "readers stalled"
            col.upsert(np.arange(b * batch, (b + 1) * batch), x[b * batch : (b + 1) * batch], [{"b": b}] * batch)
            if b % 7 == 6:
                col.delete(np.arange((b - 3) * batch, (b - 2) * batch))
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not problems, problems[:5]
    assert len(seen_counts) >= batches // 2  # the readers watched the collection grow


# ---- issue 9: requests that were acknowledged or accepted although wrong ------------------------
def test_rows_without_ids_are_refused(db: Any) -> None:
    col, _, _ = filled(db, n=5)
    for vectors in (np.zeros((2**32 - 1, 0), np.float32), np.zeros((3, 0)), np.zeros((2, DIM))):
        with pytest.raises(InvalidArgumentError, match=f"got {len(vectors)} vectors but no ids"):
            col.upsert([], vectors)
    col.upsert([], np.zeros((0, DIM)))  # an empty batch stays a harmless no-op
    assert col.count() == 5


def test_collection_names_must_match_in_full(db: Any) -> None:
    db.create_collection("ok", dim=4, index="flat")
    for name in ("ok\n", "new\n", "new\nline", "a" * 129):
        with pytest.raises(InvalidArgumentError, match="collection name"):
            db.create_collection(name, dim=4, index="flat")
        with pytest.raises(CollectionNotFoundError):
            db.get_collection(name)
    assert [c.name for c in db.list_collections()] == ["ok"]


def test_get_racing_a_drop_answers_not_found(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A get that passed its first state check before a drop completed must not touch the
    dropped store: it re-checks under the collection's lock (sync by events, no sleeps)."""
    col, _, _ = filled(db, n=10)
    entered, proceed = threading.Event(), threading.Event()
    keys_of = col._keys_of

    def paused(*args: Any, **kwargs: Any) -> Any:  # runs after get's first check, before its lock
        out = keys_of(*args, **kwargs)
        entered.set()
        proceed.wait()
        return out

    monkeypatch.setattr(col, "_keys_of", paused)
    outcome: list[BaseException | None] = []

    def get() -> None:
        try:
            col.get([1, 2])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
            outcome.append(exc)

    reader = threading.Thread(target=get)
    reader.start()
    assert entered.wait(60)  # a deadlock guard, not a timing bound
    db.drop_collection("docs")
    proceed.set()
    reader.join()
    assert isinstance(outcome[0], CollectionNotFoundError), outcome


def test_loading_a_collection_does_not_stall_other_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one collection loads (held here by an event), calls about other collections
    complete; a second caller of the loading one waits for it and gets the same object."""
    from vecdb.collection import Collection

    with vecdb.open(tmp_path / "db") as db:
        filled(db, n=10)
        db.create_collection("other", dim=4, index="flat").upsert([1], np.ones((1, 4)))
    entered, release = threading.Event(), threading.Event()
    init = Collection.__init__

    def held_init(self: Any, host: Any, info: Any, cid: int) -> None:
        if info.name == "docs":
            entered.set()
            release.wait()
        init(self, host, info, cid)

    monkeypatch.setattr(Collection, "__init__", held_init)
    with vecdb.open(tmp_path / "db") as db:
        got: dict[str, Any] = {}
        first = threading.Thread(target=lambda: got.setdefault("first", db.get_collection("docs")))
        first.start()
        assert entered.wait(60)
        others_done = threading.Event()

        def others() -> None:
            got["other"] = db.get_collection("other").count()
            got["names"] = [c.name for c in db.list_collections()]
            others_done.set()

        threading.Thread(target=others, daemon=True).start()
        completed = others_done.wait(60)  # a deadlock guard, not a timing bound
        second = threading.Thread(target=lambda: got.setdefault("second", db.get_collection("docs")))
        second.start()
        release.set()
        first.join()
        second.join()
        assert completed, "get_collection of another collection waited for the load"
        assert got["other"] == 1 and got["names"] == ["docs", "other"]
        assert got["first"] is got["second"] and got["first"].count() == 10


def test_filter_results_are_cached_per_write(tmp_path: Path) -> None:
    """A repeated filter is answered from the collection's cache of filter results, which is
    keyed by the write sequence: any write makes the next search see the new payloads."""
    from vecdb.collection.memory import FILTER_CACHE_ENTRIES, FilterCache
    from vecdb.index.allow import AllowSet

    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", dim=4, metric="l2", index="flat")
        col.upsert(np.arange(10), np.zeros((10, 4), np.float32), [{"k": i % 2} for i in range(10)])
        q = np.zeros((1, 4), np.float32)
        first = col.search(q, k=10, filter={"k": 1})
        assert set(first.ids[0][first.ids[0] >= 0].tolist()) == {1, 3, 5, 7, 9}
        again = col.search(q, k=10, filter={"k": 1})
        np.testing.assert_array_equal(first.ids, again.ids)
        col.upsert([2], np.zeros((1, 4), np.float32), [{"k": 1}])
        after = col.search(q, k=10, filter={"k": 1})
        assert set(after.ids[0][after.ids[0] >= 0].tolist()) == {1, 2, 3, 5, 7, 9}
        col.delete([1])
        after = col.search(q, k=10, filter={"k": {"in": [1]}})
        assert set(after.ids[0][after.ids[0] >= 0].tolist()) == {2, 3, 5, 7, 9}
    cache = FilterCache()
    sets = [AllowSet.from_ids([i]) for i in range(FILTER_CACHE_ENTRIES + 1)]
    for i, s in enumerate(sets):
        cache.put((("in", "k", "n", (float(i),)), 1), s, size=8)
        assert cache.get((("in", "k", "n", (0.0,)), 1)) is sets[0]  # recently used: kept
    assert cache.get((("in", "k", "n", (1.0,)), 1)) is None  # the least recently used went
    assert cache.get((("in", "k", "n", (0.0,)), 2)) is None  # another write seq: another entry
    cache.put(("big", 1), sets[0], size=1 << 40)  # one huge bitmap: only it is kept
    assert cache.get((("in", "k", "n", (0.0,)), 1)) is None and cache.get(("big", 1)) is sets[0]


@pytest.mark.parametrize("id_type", ["int", "str"])
def test_padding_never_reads_a_point_when_a_batch_fills_the_id_arrays(db: Any, id_type: str) -> None:
    """A search's -1 padding translates through the last entry of the internal-id arrays, which
    must stay unused: batches of 1000 then 2000 points once grew them to exactly 3000 entries,
    and a filter matching nothing or a tenant with fewer than k points returned point 2999."""
    col = db.create_collection("fill", dim=DIM, metric="l2", index="flat", id_type=id_type)
    rng = np.random.default_rng(11)
    make = (lambda a: a.tolist()) if id_type == "int" else (lambda a: [f"p{i}" for i in a])
    col.upsert(make(np.arange(1000)), rng.standard_normal((1000, DIM)).astype(np.float32))
    col.create_tenant("t")
    col.upsert(make(np.arange(1000, 3000)), rng.standard_normal((2000, DIM)).astype(np.float32),
               [{"g": "b" if i == 5 else "a"} for i in range(2000)], tenant="t")
    q = rng.standard_normal(DIM).astype(np.float32)
    none_left = -1 if id_type == "int" else None
    res = col.search(q, k=5, filter={"g": "zzz"})
    assert list(res.ids[0]) == [none_left] * 5
    one = col.search(q, k=5, filter={"g": "b"}, tenant="t")
    assert list(one.ids[0]) == make(np.array([1005]))[:1] + [none_left] * 4


def test_export_reads_every_point_whole_in_bounded_steps(tmp_path: Path) -> None:
    """``Collection.export`` walks the committed points in steps: ids, vectors, payloads,
    owners and grants as stored; ``select`` narrows which scanned points are read whole."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((25, 4)).astype(np.float32)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", 4, metric="l2", index="flat", id_type="str")
        col.create_tenant("a")
        col.create_tenant("b")
        col.upsert([f"p{i}" for i in range(10)], x[:10], [{"i": i} for i in range(10)], tenant="a")
        col.upsert([f"p{i}" for i in range(10, 25)], x[10:], None)
        col.grant("b", ["p1", "p12"], write=True)
        col.grant("b", ["p13"])
        col.delete(["p3"])
        seen, after, steps = {}, -1, 0
        while True:
            part = col.export(after, 7)
            steps += 1
            for uid, vec, pay, owners, grants in zip(part.uids, part.vectors, part.payloads, part.owners, part.grants):
                seen[uid] = (vec, pay, owners, grants)
            after = part.last_iid
            if part.done:
                break
        assert steps == 4 and sorted(seen) == sorted(f"p{i}" for i in range(25) if i != 3)
        for i in (0, 1, 12, 13, 20):
            vec, pay, owners, grants = seen[f"p{i}"]
            np.testing.assert_array_equal(vec, x[i])
            assert pay == ({"i": i} if i < 10 else None)
            assert owners == (("a",) if i < 10 else ())
            assert grants == {"b": True} if i in (1, 12) else grants == ({"b": False} if i == 13 else {})
        odd = col.export(-1, 100, select=lambda keys, owners: [bool(o) for o in owners])
        assert sorted(odd.uids) == sorted(f"p{i}" for i in range(10) if i != 3) and odd.done
        assert col.stored_keys([K.str_id_key("p1"), K.str_id_key("p3")]) == [True, False]
        with pytest.raises(InvalidArgumentError):
            col.export(-1, 0)


def test_a_search_of_many_rows_runs_in_steps_with_the_same_answers(db: Any) -> None:
    """More query rows than ``SEARCH_STEP_ROWS`` run in steps (a writer waits for one step,
    not the batch): ids, distances and payloads equal a brute-force oracle for every row,
    including the rows at the step boundaries, with a filter and with a tenant."""
    from vecdb.collection.collection import SEARCH_STEP_ROWS

    col, ids, x = filled(db, n=120, metric="l2")
    col.create_tenant("t")
    col.grant("t", ids[::3])
    nq = 2 * SEARCH_STEP_ROWS + 37
    q = np.random.default_rng(5).standard_normal((nq, DIM)).astype(np.float32)
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    for kwargs, keep in (({}, np.arange(120)), ({"filter": {"lang": "en"}}, np.arange(1, 120, 2)),
                         ({"tenant": "t"}, np.arange(0, 120, 3))):
        res = col.search(q, k=5, with_payloads=True, **kwargs)
        want = keep[np.argsort(d2[:, keep], axis=1, kind="stable")[:, :5]]
        assert res.ids.shape == (nq, 5)
        np.testing.assert_array_equal(res.ids, want)
        np.testing.assert_allclose(res.distances, np.take_along_axis(d2, want, 1), rtol=1e-4, atol=1e-4)
        assert [[p["i"] for p in row] for row in res.payloads] == want.tolist()
