"""Training inside collections, and tenant membership reaching the index.

- ``Collection.train()``: FailedPreconditionError on an empty collection; trains an index
  below its automatic threshold; a codec that cannot train on what is stored leaves the
  exact scan serving; searches are answered while the index trains (an index whose training
  waits on an event proves it, no timing).
- Automatic training happens exactly at ``index.min_train_points`` points.
- A tenant-aware index (a recording FlatIndex registered under a test-only kind) receives
  every membership operation once, live and through checkpoint + replay after a crash.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import vecdb
from vecdb.api import CollectionInfo
from vecdb.collection.training import new_index
from vecdb.errors import FailedPreconditionError, InvalidArgumentError, VecdbError
from vecdb.index.allow import AllowSet
from vecdb.index.base import SearchParams
from vecdb.index.flat import FlatIndex
from vecdb.index.sq8 import SQ8Index
from vecdb.types import F32Matrix, I64Vector, Metric

DIM = 16


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


# ---- test-only index kinds ------------------------------------------------------------------
class RecordingTenantIndex(FlatIndex):
    """A FlatIndex that keeps tenant membership itself and records every membership op it is
    handed (class-wide, in order), so a test can see what a collection told it."""

    kind = "test_recording_tenants"
    tenant_aware = True
    calls: ClassVar[list[tuple[Any, ...]]] = []
    searched_as: ClassVar[list[int]] = []  # tenant numbers searches passed as ``tenant=``

    def __init__(self, dim: int, metric: Metric | str = Metric.L2) -> None:
        super().__init__(dim, metric)
        self.members: dict[int, set[int]] = {}

    def _create_tenant(self, tenant: int) -> None:
        self.calls.append(("create", tenant))
        self.members.setdefault(tenant, set())

    def _drop_tenant(self, tenant: int) -> None:
        self.calls.append(("drop", tenant))
        self.members.pop(tenant, None)

    def _grant(self, tenant: int, ids: I64Vector) -> None:
        self.calls.append(("grant", tenant, tuple(sorted(ids.tolist()))))
        self.members.setdefault(tenant, set()).update(ids.tolist())

    def _revoke(self, tenant: int, ids: I64Vector) -> None:
        self.calls.append(("revoke", tenant, tuple(sorted(ids.tolist()))))
        self.members.get(tenant, set()).difference_update(ids.tolist())

    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        if tenant is not None:
            self.searched_as.append(tenant)
            slots = self._ids.lookup(np.array(sorted(self.members.get(tenant, ())), np.int64))
            mine = AllowSet.from_ids(slots[slots >= 0])
            allow = mine if allow is None else mine.intersect_mask(allow.bitmap(self._store.n))
            if not len(allow):
                return np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), np.inf, np.float32)
        return super()._search_slots(queries, k, allow, None, params)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params, arrays = super()._state()
        pairs = [(t, i) for t, ids in sorted(self.members.items()) for i in sorted(ids)]
        tenants = np.array(sorted(self.members), np.int64)
        return params, dict(arrays, pairs=np.array(pairs, np.int64).reshape(-1, 2), tenants=tenants)

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> FlatIndex:
        index = super()._from_state(dim, metric, params, arrays)
        index.members = {int(t): set() for t in arrays["tenants"]}  # type: ignore[attr-defined]
        for t, i in arrays["pairs"].tolist():
            index.members[t].add(i)  # type: ignore[attr-defined]
        return index


class GatedSQ8(SQ8Index):
    """SQ8 whose training, while ``armed``, sets ``entered`` and waits until ``release`` is set."""

    kind = "test_gated_sq8"
    armed: ClassVar[bool] = False
    entered: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def _train(self, sample: F32Matrix) -> None:
        if self.armed:
            self.entered.set()
            assert self.release.wait(120), "the test never released training"
        super()._train(sample)


# ---- Collection.train -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw", "sq8", "pq", "binary"])
def test_train_an_empty_collection_is_a_failed_precondition(tmp_path: Path, kind: str) -> None:
    params = {"m": 4, "nbits": 4} if kind == "pq" else {}
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, index=kind, index_params=params)
        with pytest.raises(FailedPreconditionError, match="empty"):
            col.train()
        assert col.count() == 0


def test_explicit_train_below_the_threshold_and_it_survives_reopen(tmp_path: Path) -> None:
    x = rows(50, 1)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="sq8", index_params={"rerank": 10})
        col.upsert(np.arange(50), x)
        assert col.stats().trained is False
        col.train()
        assert col.stats().trained is True
        np.testing.assert_array_equal(col.search(x[:10], k=1).ids[:, 0], np.arange(10))
        col.upsert(np.arange(50, 60), rows(10, 2))  # the trained index takes further points
        assert col.count() == 60
    with vecdb.open(tmp_path / "db") as db:  # the trained index was checkpointed
        col = db.get_collection("c")
        assert col.stats().trained is True and col.count() == 60
        np.testing.assert_array_equal(col.search(x[:10], k=1).ids[:, 0], np.arange(10))


def test_retrain_of_an_index_without_training_rebuilds_it(tmp_path: Path) -> None:
    x = rows(200, 3)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="hnsw")
        col.upsert(np.arange(200), x)
        col.delete(np.arange(0, 200, 2))
        before = col.search(x[1::2][:20], k=3)
        col.train()
        after = col.search(x[1::2][:20], k=3)
        np.testing.assert_array_equal(after.ids[:, 0], np.arange(1, 40, 2))
        np.testing.assert_array_equal(before.ids[:, 0], after.ids[:, 0])
        assert col.stats().trained is True and col.count() == 100


def test_a_codec_that_cannot_train_leaves_the_exact_scan_serving(tmp_path: Path) -> None:
    x = rows(10, 4)  # PQ with 16 centroids per sub-space needs at least 16 points
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="pq", index_params={"m": 4, "nbits": 4})
        col.upsert(np.arange(10), x)
        with pytest.raises(VecdbError):
            col.train()
        assert col.stats().trained is False
        np.testing.assert_array_equal(col.search(x, k=1).ids[:, 0], np.arange(10))


def test_automatic_training_happens_at_min_train_points(tmp_path: Path) -> None:
    info = CollectionInfo("c", DIM, "l2", "sq8", {"rerank": 8})
    need = new_index(info).min_train_points
    assert need > 1
    x = rows(need, 5)
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="sq8", index_params={"rerank": 8})
        col.upsert(np.arange(need - 1), x[:-1])
        assert col.stats().trained is False
        col.upsert([need - 1], x[-1:])
        assert col.wait_indexed(timeout=60)  # automatic training runs in the background indexer
        assert col.stats().trained is True
        np.testing.assert_array_equal(col.search(x[-5:], k=1).ids[:, 0], np.arange(need - 5, need))


def test_searches_are_served_while_the_index_trains(tmp_path: Path) -> None:
    x = rows(100, 6)
    GatedSQ8.entered.clear()
    GatedSQ8.release.clear()
    GatedSQ8.armed = True
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="test_gated_sq8")
        col.upsert(np.arange(100), x)
        errors: list[BaseException] = []

        def train() -> None:
            try:
                col.train()
            except BaseException as exc:  # reported below
                errors.append(exc)

        worker = threading.Thread(target=train)
        worker.start()
        try:
            assert GatedSQ8.entered.wait(60)
            # training holds the writer lock, not the readers: this search answers meanwhile
            np.testing.assert_array_equal(col.search(x[:5], k=1).ids[:, 0], np.arange(5))
            assert col.stats().trained is False
        finally:
            GatedSQ8.release.set()
            worker.join()
            GatedSQ8.armed = False
        assert not errors
        assert col.stats().trained is True


def test_the_exact_scan_stand_in_resolves_the_configured_knobs(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="sq8")
        col.upsert(np.arange(20), rows(20, 7))
        with pytest.raises(InvalidArgumentError, match="unknown search parameter"):
            col.search(rows(1, 8), k=1, params={"ef": 10})  # the stand-in resolves sq8's knobs
        col.search(rows(1, 8), k=1, params={"rerank": 5})


# ---- tenant membership reaches the index ----------------------------------------------------
CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np, vecdb
import test_training as suite
db = vecdb.open({path!r}, checkpoint_points=10**9, checkpoint_seconds=1e9)
suite.after_checkpoint(db.get_collection("c"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def after_checkpoint(col: Any) -> None:
    """Membership changes written after the checkpoint (then the writer crashes)."""
    col.upsert(np.arange(10, 15), rows(5, 11), tenant="b")  # grant(b=1, 10..14)
    col.revoke("a", [0])                                     # revoke(a=0, [0])
    col.grant("a", [10])                                     # grant(a=0, [10])
    col.grant("a", [2], write=True)                          # a level change: nothing for the index
    col.delete([1])                                          # point 1 leaves a and b
    col.create_tenant("c")                                   # create(2)
    col.drop_tenant("b")                                     # drop(1)


EXPECTED_AFTER = [("grant", 1, (10, 11, 12, 13, 14)), ("revoke", 0, (0,)), ("grant", 0, (10,)),
                  ("revoke", 0, (1,)), ("revoke", 1, (1,)), ("create", 2), ("drop", 1)]


def test_membership_ops_reach_the_index_live_and_once_through_replay(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    RecordingTenantIndex.calls.clear()
    with vecdb.open(path, checkpoint_points=10**9, checkpoint_seconds=1e9) as db:
        col = db.create_collection("c", DIM, metric="l2", index="test_recording_tenants")
        col.create_tenant("a")
        col.upsert(np.arange(10), rows(10, 10), tenant="a")
        col.create_tenant("b")
        col.grant("b", [0, 1])
        assert RecordingTenantIndex.calls == [("create", 0), ("grant", 0, tuple(range(10))), ("create", 1),
                                              ("grant", 1, (0, 1))]
        RecordingTenantIndex.searched_as.clear()
        res = col.search(rows(1, 10), k=20, tenant="b")  # served by the index's own membership
        assert set(res.ids[res.ids >= 0].tolist()) == {0, 1}
        assert RecordingTenantIndex.searched_as == [1]  # the tenant reached the index as tenant=number
    # the close wrote a checkpoint holding that membership; a child process writes more, then crashes
    script = CHILD.format(tests=str(Path(__file__).parent), path=path)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    RecordingTenantIndex.calls.clear()
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        assert RecordingTenantIndex.calls == EXPECTED_AFTER  # each op after the checkpoint, once, in order
        res = col.search(rows(1, 10), k=20, tenant="a")
        assert set(res.ids[res.ids >= 0].tolist()) == {2, 3, 4, 5, 6, 7, 8, 9, 10}
        assert col.count(tenant="a") == 9
        assert sorted(col.list_tenants()) == ["a", "c"]
        assert col.search(rows(1, 10), k=5, tenant="c").ids.max() == -1


def test_a_fresh_build_hands_a_tenant_aware_index_every_membership(tmp_path: Path) -> None:
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, metric="l2", index="test_recording_tenants")
        col.create_tenant("a")
        col.upsert(np.arange(6), rows(6, 12), tenant="a")
        col.upsert(np.arange(6, 9), rows(3, 13))
        RecordingTenantIndex.calls.clear()
        col.train()  # a rebuild: the new index learns every tenant and member from the collection
        assert RecordingTenantIndex.calls == [("create", 0), ("grant", 0, tuple(range(6)))]
        res = col.search(rows(1, 12), k=9, tenant="a")
        assert set(res.ids[res.ids >= 0].tolist()) == set(range(6))


def test_a_stored_collection_of_an_unknown_index_kind_is_data_loss() -> None:
    """A database written by a vecdb with more index kinds: its collection cannot be built here."""
    from vecdb.errors import DataLossError

    info = CollectionInfo("later", 4, "l2", "spann-from-a-later-vecdb")
    with pytest.raises(DataLossError, match=r"'later' uses index kind 'spann-from-a-later-vecdb'.*known: binary, curator, flat"):
        new_index(info)
