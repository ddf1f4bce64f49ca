"""The Index contract v2 (vecdb/index/base.py): training and tenant defaults, typed search
params resolved once, ``search`` == validate + ``search_trusted``, allow-sets in every form,
cosine handled once in the base, and the hooks a new index kind must define."""
from __future__ import annotations

import dataclasses
from typing import Any
import numpy as np
import pytest

from vecdb.errors import DimensionMismatchError, InvalidArgumentError
from vecdb.index import HNSW, FlatIndex, Index
from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex, SearchParams, index_class, index_kinds
from vecdb.index.hnsw import HNSWParams
from vecdb.types import F32Matrix, I64Vector, Metric

DIM = 8


def make(kind: str, metric: str = "l2", n: int = 400, seed: int = 0) -> tuple[BaseIndex, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    index: BaseIndex = FlatIndex(DIM, metric) if kind == "flat" else HNSW(DIM, metric, M=8, seed=0)
    index.add(x, np.arange(n) * 3 + 1)         # ids differ from slots: the id map is exercised
    return index, x


def knobs(index: BaseIndex, ef: int) -> dict[str, int]:
    return {"ef": ef} if isinstance(index, HNSW) else {}


def oracle(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    b, qq = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        d = ((qq[:, None, :] - b[None]) ** 2).sum(-1)
    elif metric == "ip":
        d = -(qq @ b.T)
    else:
        d = 1 - (qq / np.linalg.norm(qq, axis=1)[:, None]) @ (b / np.linalg.norm(b, axis=1)[:, None]).T
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_defaults_for_indexes_that_need_no_training_and_keep_no_tenants(kind: str) -> None:
    index, x = make(kind)
    assert isinstance(index, Index)
    assert type(index).needs_training is False and index.is_trained and index.min_train_points == 0
    assert type(index).tenant_aware is False and type(index).persistence == "checkpoint"
    before = index.search(x[:5], 4, **knobs(index, 64))
    index.train(x[:50])                                    # a no-op that still checks its input
    index.create_tenant(3)
    index.grant(3, [1, 4])
    index.revoke(3, [4])
    index.drop_tenant(3)
    after = index.search(x[:5], 4, **knobs(index, 64))
    np.testing.assert_array_equal(before.ids, after.ids)
    with pytest.raises(DimensionMismatchError):
        index.train(np.zeros((3, DIM + 1), np.float32))
    for bad in (-1, "a", 1.5, True):
        with pytest.raises(InvalidArgumentError, match="tenant"):
            index.grant(bad, [1])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_with_a_tenant_on_a_non_tenant_index_is_refused(kind: str) -> None:
    index, x = make(kind)
    with pytest.raises(InvalidArgumentError, match="does not keep tenants; pass the tenant's ids as allow="):
        index.search(x[:1], 3, tenant=0)


def test_add_with_a_tenant_is_validated_then_kept_as_plain_points() -> None:
    index = FlatIndex(DIM)
    x = np.ones((2, DIM), np.float32)
    with pytest.raises(InvalidArgumentError, match="tenant"):
        index.add(x, [1, 2], tenant=-4)
    assert len(index) == 0                                 # nothing added on a bad call
    index.add(x, [1, 2], tenant=4)
    assert sorted(index.ids.tolist()) == [1, 2]


def test_hnsw_params_are_typed_frozen_validated_and_cached() -> None:
    index, _ = make("hnsw")
    p = index.resolve_params({"ef": 40, "filter_mode": "graph"})
    assert isinstance(p, HNSWParams) and p.ef == 40 and p.filter_mode == "graph"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ef = 3                                           # type: ignore[misc]
    assert index.resolve_params({"ef": 40, "filter_mode": "graph"}) is p
    assert index.resolve_params({}) is index.resolve_params(None) == HNSWParams()
    assert index.resolve_params({"ef": np.int64(12)}).ef == 12 and type(index.resolve_params({"ef": np.int64(12)}).ef) is int
    index.resolve_params({"ef": 1})
    for bad, message in [({"ef": True}, "ef must be an integer"), ({"ef": 1.0}, "ef must be an integer"),
                         ({"ef": 0}, "ef must be >= 1"), ({"ef": 10**30}, "ef must be <="),
                         ({"filter_mode": "fast"}, "filter_mode"), ({"filter_mode": ["scan"]}, "filter_mode"),
                         ({"nprobe": 3}, "unknown search parameter"), ({"allow": [1]}, "unknown search parameter")]:
        with pytest.raises(InvalidArgumentError, match=message):
            index.resolve_params(bad)
    assert HNSW.search_params == {"ef", "filter_mode"} and FlatIndex.search_params == frozenset()
    with pytest.raises(InvalidArgumentError, match="unknown search parameter"):
        FlatIndex(2).search(np.zeros(2, np.float32), 1, ef=3)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_search_is_validation_plus_search_trusted(kind: str, metric: str) -> None:
    index, x = make(kind, metric)
    q = np.random.default_rng(9).standard_normal((5, DIM)).astype(np.float32)
    allow = (np.arange(0, 400, 2) * 3 + 1).tolist()
    for knobs in ({}, {"ef": 80} if kind == "hnsw" else {}):
        for a in (None, allow):
            public = index.search(q, 7, allow=a, **knobs)
            trusted = index.search_trusted(q, 7, None if a is None else AllowSet.from_ids(a), None,
                                           index.resolve_params(knobs))
            np.testing.assert_array_equal(public.ids, trusted.ids)
            np.testing.assert_array_equal(public.distances, trusted.distances)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_allow_accepts_allow_sets_arrays_lists_sets_and_ranges(kind: str) -> None:
    index, x = make(kind)
    members = np.arange(40, 400, 5) * 3 + 1
    forms = [AllowSet.from_ids(members), members, members[::-1].tolist(), set(members.tolist()),
             range(121, 1201, 15), np.concatenate([members, members, [10**12]])]    # repeats, unknown ids
    results = [index.search(x[:6], 5, allow=f, **knobs(index, 128)) for f in forms]
    for res in results[1:]:
        np.testing.assert_array_equal(res.ids, results[0].ids)
    assert np.isin(results[0].ids[results[0].ids >= 0], members).all()
    with pytest.raises(InvalidArgumentError, match="bool mask"):
        index.search(x[:1], 3, allow=np.ones(400, bool))
    empty = index.search(x[:2], 3, allow=[10**9])
    assert (empty.ids == -1).all() and np.isinf(empty.distances).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_distances_are_the_metrics_own_and_inputs_are_untouched(kind: str, metric: str) -> None:
    """Cosine normalisation and the +1 fix-up happen exactly once (in the base)."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((300, DIM)) * 3).astype(np.float32)
    ids = np.arange(300) + 1000
    index: BaseIndex = FlatIndex(DIM, metric) if kind == "flat" else HNSW(DIM, metric, M=16, seed=0)
    x_copy = x.copy()
    index.add(x, ids)
    q = (rng.standard_normal((4, DIM)) * 2).astype(np.float32)
    q_copy = q.copy()
    got = index.search(q, 5, **knobs(index, 300))
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(q, q_copy)
    want_ids, want_d = oracle(x, ids, q, 5, metric)
    np.testing.assert_array_equal(got.ids, want_ids)
    np.testing.assert_allclose(got.distances, want_d, rtol=1e-4, atol=1e-4)
    one = index.search(q[0], 5, **knobs(index, 300))                    # a 1-D query is one row
    np.testing.assert_array_equal(one.ids, got.ids[:1])


def test_no_index_overrides_the_public_search() -> None:
    for cls in (FlatIndex, HNSW):
        assert "search" not in vars(cls) and "add" not in vars(cls)


def test_hnsw_filtered_search_reuses_the_allow_sets_bitmap() -> None:
    """Ids == slots (a collection's internal ids): the caller's AllowSet reaches the kernel as
    is, so its bitmap is built once for any number of searches."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, DIM)).astype(np.float32)
    index = HNSW(DIM, M=8, seed=0)
    index.add(x, np.arange(2000))
    allow = AllowSet.from_ids(np.arange(0, 2000, 2))
    bitmap = allow.bitmap(len(index))
    first = index.search(x[:8], 5, allow=allow, filter_mode="graph")
    second = index.search(x[:8], 5, allow=allow, filter_mode="graph")
    assert allow.bitmap(len(index)) is bitmap
    np.testing.assert_array_equal(first.ids, second.ids)
    assert (first.ids % 2 == 0).all()
    exact = index.search(x[:8], 5, allow=allow, filter_mode="scan")
    assert (first.ids == exact.ids).mean() > 0.9


def test_translated_allow_sets_are_cached_until_the_ids_change() -> None:
    index, x = make("hnsw")                                # ids 3*slot + 1: a translation is needed
    allow = AllowSet.from_ids(np.arange(0, 400, 2) * 3 + 1)
    slots = index._slot_allow(allow)
    np.testing.assert_array_equal(slots.ids, np.arange(0, 400, 2))
    assert index._slot_allow(allow) is slots
    index.remove([1])                                      # slot 0 leaves: the cache must not answer
    again = index._slot_allow(allow)
    assert again is not slots and again.ids[0] == 2


def test_a_new_index_kind_must_define_its_hooks() -> None:
    no_search = type("NoSearch", (FlatIndex,), {"kind": "test-no-search", "_search_slots": BaseIndex._search_slots})
    with pytest.raises(TypeError, match="abstract method _search_slots"):
        no_search(2)
    with pytest.raises(TypeError, match="tenant-aware but defines no _create_tenant"):
        type("BadTenants", (FlatIndex,), {"kind": "test-bad-tenants", "tenant_aware": True})
    with pytest.raises(TypeError, match="needs training"):
        type("BadTraining", (FlatIndex,), {"kind": "test-bad-training", "needs_training": True})
    with pytest.raises(TypeError, match="persistence"):
        type("BadPersistence", (FlatIndex,), {"kind": "test-bad-persistence", "persistence": "lmdb"})


class TenantRecorder(FlatIndex):
    """A tenant-aware index for the test: it records membership and answers tenant searches."""

    kind = "test-tenant-recorder"
    tenant_aware = True

    def __init__(self, dim: int, metric: Metric | str = Metric.L2) -> None:
        super().__init__(dim, metric)
        self.members: dict[int, set[int]] = {}
        self.seen_tenants: list[int | None] = []

    def _create_tenant(self, tenant: int) -> None:
        self.members.setdefault(tenant, set())

    def _drop_tenant(self, tenant: int) -> None:
        self.members.pop(tenant, None)

    def _grant(self, tenant: int, ids: I64Vector) -> None:
        self.members.setdefault(tenant, set()).update(ids.tolist())

    def _revoke(self, tenant: int, ids: I64Vector) -> None:
        self.members.get(tenant, set()).difference_update(ids.tolist())

    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        self.seen_tenants.append(tenant)
        if tenant is not None:
            mine = AllowSet.from_ids(self._ids.lookup(np.array(sorted(self.members.get(tenant, ())), np.int64)))
            allow = mine if allow is None else mine.intersect(allow)
            if not len(allow):
                return np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), np.inf, np.float32)
        return super()._search_slots(queries, k, allow, None, params)


def test_a_tenant_aware_index_gets_membership_and_the_tenant_argument() -> None:
    index = TenantRecorder(2)
    pts = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], np.float32)
    index.add(pts[:2], [10, 11], tenant=5)
    index.add(pts[2:], [12, 13])
    index.grant(6, [12, 13])
    index.revoke(6, [12])
    assert index.members == {5: {10, 11}, 6: {13}}
    q = np.array([[2.9, 0]], np.float32)
    assert index.search(q, 1, tenant=5).ids[0, 0] == 11
    assert index.search(q, 1, tenant=6).ids[0, 0] == 13
    assert index.search(q, 1).ids[0, 0] == 13
    assert index.seen_tenants == [5, 6, None]
    index.drop_tenant(6)
    assert index.search(q, 1, tenant=6).ids[0, 0] == -1


class MultiTenantRecorder(TenantRecorder):
    """A TenantRecorder that also searches several tenants at once (their union)."""

    kind = "test-multi-tenant-recorder"
    multi_tenant_search = True

    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: Any,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(tenant, tuple):
            return super()._search_slots(queries, k, allow, tenant, params)
        self.seen_tenants.append(tenant)
        ids = sorted(set().union(*(self.members.get(t, set()) for t in tenant)))
        mine = AllowSet.from_ids(self._ids.lookup(np.array(ids, np.int64)))
        return FlatIndex._search_slots(self, queries, k, mine if allow is None else mine.intersect(allow), None, params)


def test_several_tenants_reach_only_an_index_that_searches_them_together() -> None:
    pts = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], np.float32)
    q = np.array([[2.9, 0]], np.float32)
    single, multi = TenantRecorder(2), MultiTenantRecorder(2)
    for index in (single, multi):
        index.add(pts[:2], [10, 11], tenant=5)
        index.add(pts[2:], [12, 13], tenant=6)
        assert index.search(q, 1, tenant=[6]).ids[0, 0] == 13          # one tenant in a list: that tenant
    with pytest.raises(InvalidArgumentError, match="one tenant at a time"):
        single.search(q, 1, tenant=[5, 6])
    res = multi.search(q, 4, tenant=np.array([6, 5, 6]))
    assert res.ids[0].tolist() == [13, 12, 11, 10] and multi.seen_tenants[-1] == (5, 6)
    for bad in ([], [5, -1], ["5", 6]):
        with pytest.raises(InvalidArgumentError, match="tenant"):
            multi.search(q, 1, tenant=bad)


def test_index_kinds_and_their_classes_come_from_the_registry() -> None:
    kinds = index_kinds()
    assert {"binary", "flat", "hnsw", "pq", "sq8"} <= set(kinds) and kinds == sorted(kinds)
    assert index_class("hnsw") is HNSW and index_class("flat") is FlatIndex
    assert all(index_class(kind).kind == kind for kind in kinds)
    for bad in ("nope", "HNSW", None, 3):
        with pytest.raises(InvalidArgumentError, match=r"unknown index kind .*; known: binary, curator, flat, hnsw, pq, spann, sq8"):
            index_class(bad)  # type: ignore[arg-type]
