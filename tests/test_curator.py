"""The Curator multi-tenant index (vecdb/index/curator): a Hypothesis state machine of random
tenants, shared vectors, grants, revokes, removals, drops and save/load that never leaks a
vector across tenants and matches per-tenant exact search (FlatIndex with allow=); the tree
invariants through splits and merges; identical results after save/load; bad input."""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from vecdb.errors import (AlreadyExistsError, DataLossError, DimensionMismatchError, FailedPreconditionError,
                          InvalidArgumentError)
from vecdb.index import Curator, FlatIndex, index_class, load_index
from vecdb.index.allow import AllowSet

DIM = 8
#: recall@10 that default-budget tenant searches reach on the clustered set below (measured 0.97+)
STATED_RECALL = 0.95


def clustered_rows(n: int, seed: int, dim: int = DIM, n_clusters: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((n_clusters, dim)) * 4
    return (centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def small_curator(metric: str = "l2", max_shortlist: int = 4, dim: int = DIM, tier_threshold: int = 0,
                  codes: str = "float") -> Curator:
    """A deep little tree (so a few dozen points already split and merge shortlists)."""
    index = Curator(dim, metric, n_root=4, branching=2, max_depth=3, max_shortlist=max_shortlist,
                    min_points_per_centroid=2, n_iter=5, seed=3, tier_threshold=tier_threshold, tier_M=4,
                    tier_ef_construction=32, codes=codes)
    index.train(clustered_rows(400, 99, dim))
    return index


#: relative and absolute distance difference within which two candidates tie: kernels that sum a
#: dot product in another order (graph walk, exact scan, a recompiled kernel) round differently
#: in the last bits, and may then order such candidates either way
TIE = 1e-5


def assert_exact_top_k(got: Any, flat: FlatIndex, q: np.ndarray, k: int, allowed: np.ndarray) -> None:
    """``got`` is an exact top-k of each query among the ``allowed`` ids: distinct allowed ids,
    as many as exist, the j-th with the j-th smallest true distance (``flat``'s), reported as
    such, up to ``TIE`` (tied candidates may come in either order, or swap at the k-th place)."""
    want = flat.search(q, k, allow=allowed)
    for i in range(len(q)):
        ids = got.ids[i][got.ids[i] >= 0]
        assert len(np.unique(ids)) == len(ids) and np.isin(ids, allowed).all()
        assert len(ids) == int((want.ids[i] >= 0).sum())
        own = flat.search(q[i : i + 1], k, allow=ids)                  # true distances of the ids returned
        true_of = dict(zip(own.ids[0].tolist(), own.distances[0].tolist()))
        np.testing.assert_allclose([true_of[j] for j in ids.tolist()], want.distances[i][: len(ids)],
                                   rtol=TIE, atol=TIE)
        np.testing.assert_allclose(got.distances[i], want.distances[i], rtol=TIE, atol=TIE)


def exact(vectors: dict[int, np.ndarray], allowed: set[int], q: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Ids of the exact top-k among ``allowed`` (FlatIndex with allow=), -1 padded."""
    flat = FlatIndex(q.shape[1], metric)
    ids = np.array(sorted(vectors), np.int64)
    if len(ids):
        flat.add(np.stack([vectors[i] for i in ids.tolist()]), ids)
    return flat.search(q, k, allow=sorted(allowed)).ids


# ---- the state machine ----------------------------------------------------------------------
_TEMPLATES: dict[tuple[str, int, int, str], Path] = {}


def trained_template(metric: str, max_shortlist: int, tier_threshold: int, codes: str) -> Path:
    """A saved, trained, empty ``small_curator`` (one per setting, per session)."""
    key = (metric, max_shortlist, tier_threshold, codes)
    if key not in _TEMPLATES or not _TEMPLATES[key].exists():
        root = tempfile.mkdtemp(prefix="vecdb-curator-template-")
        atexit.register(shutil.rmtree, root, True)
        path = Path(root) / "idx"
        small_curator(metric, max_shortlist, tier_threshold=tier_threshold, codes=codes).save(path)
        _TEMPLATES[key] = path
    return _TEMPLATES[key]


class CuratorMachine(RuleBasedStateMachine):
    """Random operations on one Curator against a model: id -> vector, tenant -> member ids
    (membership is a relation over ids: it survives a removal and applies again on re-add)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-curator-"))
        self.vectors: dict[int, np.ndarray] = {}
        self.members: dict[int, set[int]] = {}

    @initialize(metric=st.sampled_from(["l2", "ip", "cosine"]), max_shortlist=st.sampled_from([2, 4, 16]),
                tier_threshold=st.sampled_from([0, 0, 8]), codes=st.sampled_from(["float", "sq8"]))
    def setup(self, metric: str, max_shortlist: int, tier_threshold: int, codes: str) -> None:
        """With ``tier_threshold`` 8, tenants of 8+ members move to their own HNSW (and back below 4);
        with SQ8 codes, searches re-rank every candidate (``rerank``) so they stay exact."""
        self.metric = metric
        self.index = load_index(trained_template(metric, max_shortlist, tier_threshold, codes))   # trained once, then loaded

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(ids=st.lists(st.integers(0, 60), min_size=1, max_size=12, unique=True), seed=st.integers(0, 2**16),
          tenant=st.one_of(st.none(), st.integers(0, 4)))
    def add(self, ids: list[int], seed: int, tenant: int | None) -> None:
        x = clustered_rows(len(ids), seed)
        if any(i in self.vectors for i in ids):
            with pytest.raises(AlreadyExistsError):
                self.index.add(x, ids, tenant=tenant)
            return
        self.index.add(x, ids, tenant=tenant)
        self.vectors.update(zip(ids, x))
        if tenant is not None:
            self.members.setdefault(tenant, set()).update(ids)

    @rule(ids=st.lists(st.integers(0, 64), min_size=1, max_size=15), tenant=st.integers(0, 4))
    def grant(self, ids: list[int], tenant: int) -> None:
        self.index.grant(tenant, ids)                      # ids not stored are kept for later
        self.members.setdefault(tenant, set()).update(ids)

    @rule(ids=st.lists(st.integers(0, 64), min_size=1, max_size=15), tenant=st.integers(0, 4))
    def revoke(self, ids: list[int], tenant: int) -> None:
        self.index.revoke(tenant, ids)
        self.members.get(tenant, set()).difference_update(ids)

    @rule(ids=st.lists(st.integers(0, 64), min_size=1, max_size=15))
    def remove(self, ids: list[int]) -> None:
        assert self.index.remove(ids) == len({i for i in ids if i in self.vectors})
        for i in ids:
            self.vectors.pop(i, None)

    @rule(tenant=st.integers(0, 4))
    def drop_tenant(self, tenant: int) -> None:
        self.index.drop_tenant(tenant)
        self.members.pop(tenant, None)

    @rule(tenant=st.integers(0, 4))
    def create_tenant(self, tenant: int) -> None:
        self.index.create_tenant(tenant)
        self.members.setdefault(tenant, set())

    @rule(mmap=st.booleans())
    def save_and_load(self, mmap: bool) -> None:
        q = clustered_rows(3, 7)
        before = {t: self.index.search(q, 5, tenant=t) for t in range(5)}
        path = self.dir / "idx"
        self.index.save(path)
        self.index = load_index(path, mmap=mmap)
        for t, res in before.items():
            after = self.index.search(q, 5, tenant=t)
            np.testing.assert_array_equal(after.ids, res.ids)
            np.testing.assert_array_equal(after.distances, res.distances)

    @rule(seed=st.integers(0, 2**16), k=st.integers(1, 12), tenant=st.one_of(st.none(), st.integers(0, 5)),
          filtered=st.booleans())
    def search(self, seed: int, k: int, tenant: int | None, filtered: bool) -> None:
        q = clustered_rows(3, seed)
        allow = set(range(0, 65, 3)) if filtered else None
        visible = set(self.vectors) if tenant is None else self.members.get(tenant, set()) & set(self.vectors)
        if allow is not None:
            visible &= allow
        budget = 10**6                                     # the walk scans every candidate: exact
        allow_ids = None if allow is None else sorted(allow)
        res = self.index.search(q, k, tenant=tenant, allow=allow_ids, budget=budget, ef=200,   # (a graph of < 70: exact)
                                rerank=100)
        got = res.ids[res.ids >= 0]
        assert set(got.tolist()) <= visible, f"leaked ids {set(got.tolist()) - visible}"
        np.testing.assert_array_equal(res.ids, exact(self.vectors, visible, q, k, self.metric))
        small = self.index.search(q, k, tenant=tenant, allow=allow_ids, budget=k)    # a tiny budget never leaks either
        assert set(small.ids[small.ids >= 0].tolist()) <= visible

    @rule(seed=st.integers(0, 2**16), k=st.integers(1, 12),
          tenants=st.lists(st.integers(0, 5), min_size=2, max_size=4, unique=True), filtered=st.booleans())
    def search_several_tenants(self, seed: int, k: int, tenants: list[int], filtered: bool) -> None:
        """One call over several tenants: the exact top k of their union, a shared vector once."""
        q = clustered_rows(3, seed)
        allow = set(range(0, 65, 2)) if filtered else None
        visible = set().union(*(self.members.get(t, set()) for t in tenants)) & set(self.vectors)
        if allow is not None:
            visible &= allow
        allow_ids = None if allow is None else sorted(allow)
        res = self.index.search(q, k, tenant=tenants, allow=allow_ids, budget=10**6, ef=200, rerank=100)
        for row in res.ids:
            got = row[row >= 0]
            assert set(got.tolist()) <= visible, f"leaked ids {set(got.tolist()) - visible}"
            assert len(np.unique(got)) == len(got)
        np.testing.assert_array_equal(res.ids, exact(self.vectors, visible, q, k, self.metric))
        small = self.index.search(q, k, tenant=tuple(tenants), allow=allow_ids, budget=k, ef=k)
        assert set(small.ids[small.ids >= 0].tolist()) <= visible

    @invariant()
    def tree_invariants_hold(self) -> None:
        if hasattr(self, "index"):
            self.index.check()
            assert len(self.index) == len(self.vectors)
            for t in range(5):
                size = self.index.tenant_size(t)
                assert size == len(self.members.get(t, set()) & set(self.vectors))
                if self.index.tier_threshold:
                    assert self.index.promoted(t) if size >= 8 else (not self.index.promoted(t) if size < 4 else True)


TestCuratorMachine = CuratorMachine.TestCase
TestCuratorMachine.settings = settings(max_examples=30, stateful_step_count=35, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


# ---- split and merge ------------------------------------------------------------------------
def test_shortlists_split_on_overflow_and_merge_back_on_shrink() -> None:
    index = small_curator(max_shortlist=8)
    x = clustered_rows(300, 5)
    index.add(x, np.arange(300))
    index.grant(1, np.arange(6))
    lists = index._tenants[1]
    assert list(lists.lists) == [0] and not lists.expanded          # a small tenant: one shortlist at the root
    index.grant(1, np.arange(6, 200))
    index.check()
    assert lists.expanded[0] == 200 and 0 not in lists.lists        # split below the root, recursively
    assert max((len(p) for n, p in lists.lists.items() if not index.tree.is_leaf(n)), default=0) <= 8
    depths = {int(index.tree.depth[n]) for n in lists.lists}
    assert max(depths) >= 2
    index.revoke(1, np.arange(5, 200))
    index.check()
    assert list(lists.expanded) == [0]                              # 5 > 8 // 2: the root stays split,
    assert {int(index.tree.depth[n]) for n in lists.lists} == {1}   # the sub-trees below merged back
    index.revoke(1, [4])
    index.check()
    assert list(lists.lists) == [0] and not lists.expanded          # 4 <= 8 // 2: merged into the root
    np.testing.assert_array_equal(np.sort(lists.lists[0]), np.sort(index._ids.lookup(np.arange(4))))
    index.revoke(1, np.arange(4))
    assert not lists.lists and index.tenant_size(1) == 0
    assert (index.search(x[:2], 3, tenant=1).ids == -1).all()


def test_shared_vectors_are_stored_once() -> None:
    index = small_curator()
    x = clustered_rows(200, 6)
    index.add(x, np.arange(200))
    before = index.memory_bytes()
    rows = index._rows.nbytes
    for t in range(10):
        index.grant(t, np.arange(200))
    assert index._rows.nbytes == rows                               # no vector copied per tenant
    assert index.memory_bytes() - before < 10 * 200 * 64            # memberships cost bytes, not rows
    for t in range(10):
        assert index.tenant_size(t) == 200


# ---- recall against exact per-tenant search -------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_tenant_search_recall_against_exact_search(metric: str) -> None:
    n = 6000
    x = clustered_rows(n, 11, dim=16, n_clusters=40)
    index = Curator(16, metric, n_root=16, branching=4, max_depth=2, max_shortlist=64, seed=0)
    index.train(x[:3000])
    index.add(x, np.arange(n))
    rng = np.random.default_rng(12)
    tenants = {t: np.unique(rng.choice(n, int(rng.integers(30, 2500)), replace=False)) for t in range(8)}
    for t, ids in tenants.items():
        index.grant(t, ids)
    index.check()
    flat = FlatIndex(16, metric)
    flat.add(x, np.arange(n))
    q = clustered_rows(40, 13, dim=16, n_clusters=40)
    recalls = []
    for t, ids in tenants.items():
        got = index.search(q, 10, tenant=t)
        want = flat.search(q, 10, allow=ids)
        assert np.isin(got.ids[got.ids >= 0], ids).all()
        recalls += [len(set(a) & set(b)) / 10 for a, b in zip(got.ids.tolist(), want.ids.tolist())]
        full = index.search(q, 10, tenant=t, budget=n)              # a budget past the tenant: exact
        np.testing.assert_array_equal(full.ids, want.ids)
        np.testing.assert_allclose(full.distances, want.distances, rtol=1e-5, atol=1e-5)
    assert np.mean(recalls) >= STATED_RECALL, np.mean(recalls)
    admin = index.search(q, 10, budget=n)
    np.testing.assert_array_equal(admin.ids, flat.search(q, 10).ids)


def test_tenant_search_with_a_payload_allow_set() -> None:
    index = small_curator(max_shortlist=8)
    x = clustered_rows(300, 8)
    index.add(x, np.arange(300) * 2 + 7)                           # ids differ from slots
    index.grant(3, np.arange(0, 300, 2) * 2 + 7)
    allow = AllowSet.from_ids(np.arange(0, 300, 3) * 2 + 7)
    res = index.search(x[:20], 10, tenant=3, allow=allow, budget=10**6)
    both = set((np.arange(0, 300, 6) * 2 + 7).tolist())
    assert set(res.ids[res.ids >= 0].tolist()) <= both
    flat = FlatIndex(DIM)
    flat.add(x, np.arange(300) * 2 + 7)
    np.testing.assert_array_equal(res.ids, flat.search(x[:20], 10, allow=sorted(both)).ids)
    assert (index.search(x[:2], 4, tenant=3, allow=[8, 10]).ids == -1).all()   # no member allowed


def test_a_removed_member_comes_back_with_its_id_and_unknown_tenants_are_empty() -> None:
    index = small_curator()
    x = clustered_rows(50, 9)
    index.add(x, np.arange(50), tenant=2)
    index.remove([4, 5])
    res = index.search(x[4:6], 3, tenant=2)
    assert not np.isin(res.ids, [4, 5]).any()
    index.add(x[4:6] + 100, [4, 5])                                 # replaced: still members of 2
    assert index.search(x[4:6] + 100, 1, tenant=2).ids[:, 0].tolist() == [4, 5]
    index.check()
    assert (index.search(x[:2], 3, tenant=77).ids == -1).all()
    index.drop_tenant(2)
    assert (index.search(x[:2], 3, tenant=2).ids == -1).all()
    assert index.search(x[:2], 1).ids[:, 0].tolist() == [0, 1]    # points stay after a drop


# ---- persistence ----------------------------------------------------------------------------
def test_save_load_gives_identical_results_and_keeps_working(tmp_path: Path) -> None:
    index = small_curator("cosine", max_shortlist=8)
    x = clustered_rows(400, 10)
    index.add(x, np.arange(400) + 1000)
    for t in range(4):
        index.grant(t, np.arange(t * 50, t * 50 + 150) + 1000)
    index.grant(9, [5, 6])                                          # kept for ids not stored yet
    index.remove(np.arange(1000, 1010))
    q = clustered_rows(16, 11)
    before = [index.search(q, 7, tenant=t, budget=64) for t in range(4)] + [index.search(q, 7, budget=64)]
    index.save(tmp_path / "c")
    loaded = load_index(tmp_path / "c")
    assert isinstance(loaded, Curator) and loaded.params() == index.params()
    after = [loaded.search(q, 7, tenant=t, budget=64) for t in range(4)] + [loaded.search(q, 7, budget=64)]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.distances, b.distances)
    loaded.add(x[:2], [5, 6])                                       # the kept grants apply on add
    assert set(loaded.search(x[:2], 5, tenant=9).ids[0].tolist()) == {5, 6, -1}
    loaded.check()


def _tamper(path: Path, name: str, change: Any) -> None:
    arr = np.load(path / f"{name}.npy")
    np.save(path / f"{name}.npy", change(arr.copy()), allow_pickle=False)


@pytest.mark.parametrize("name, change", [
    ("sl_slots", lambda a: np.where(a == a[0], a[-1], a)),          # a member in two shortlists
    ("sl_ptr", lambda a: a[:-1]),
    ("leaf", lambda a: np.full_like(a, 0)),                         # vectors at the root (not a leaf)
    ("ex", lambda a: a + np.array([0, 0, 1])),                      # an expanded count off by one
    ("first_child", lambda a: a[::-1].copy()),
    ("vectors", lambda a: a[:, :-1].copy()),
])
def test_corrupt_state_is_data_loss(tmp_path: Path, name: str, change: Any) -> None:
    index = small_curator(max_shortlist=4)
    index.add(clustered_rows(120, 12), np.arange(120))
    index.grant(0, np.arange(0, 120, 2))
    index.grant(1, np.arange(30))
    index.save(tmp_path / "c")
    _tamper(tmp_path / "c", name, change)
    with pytest.raises(DataLossError):
        load_index(tmp_path / "c")


def test_corrupt_params_are_data_loss(tmp_path: Path) -> None:
    index = small_curator()
    index.add(clustered_rows(20, 13), np.arange(20))
    index.save(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    meta["params"]["max_shortlist"] = 0
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataLossError):
        load_index(tmp_path / "c")


# ---- bad input ------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors_and_changes_nothing() -> None:
    assert index_class("curator") is Curator and Curator.tenant_aware and Curator.needs_training
    untrained = Curator(DIM)
    assert not untrained.is_trained and untrained.min_train_points >= 1000
    with pytest.raises(FailedPreconditionError, match="not trained"):
        untrained.add(np.zeros((2, DIM), np.float32))
    assert (untrained.search(np.zeros(DIM, np.float32), 3, tenant=1).ids == -1).all()
    for kwargs in ({"n_root": 1}, {"branching": 0}, {"max_depth": 0}, {"max_shortlist": 1}, {"n_root": True},
                   {"min_points_per_centroid": 0}, {"seed": -1}):
        with pytest.raises(InvalidArgumentError):
            Curator(DIM, **kwargs)
    with pytest.raises(InvalidArgumentError, match="metric"):
        Curator(DIM, "hamming")
    index = small_curator()
    x = clustered_rows(30, 14)
    index.add(x, np.arange(30), tenant=1)
    with pytest.raises(FailedPreconditionError, match="train before adding"):
        index.train(x)
    for bad in ({"budget": 0}, {"budget": True}, {"budget": 1.5}, {"budget": 2**41}, {"ef": 0}, {"nprobe": 3}):
        with pytest.raises(InvalidArgumentError):
            index.search(x[:1], 3, tenant=1, **bad)
    with pytest.raises(DimensionMismatchError):
        index.search(np.zeros((1, DIM + 1), np.float32), 3, tenant=1)
    with pytest.raises(DimensionMismatchError):
        index.add(np.zeros((1, DIM + 1), np.float32), [99])
    for bad_tenant in (-1, "a", 1.5, True):
        with pytest.raises(InvalidArgumentError, match="tenant"):
            index.search(x[:1], 3, tenant=bad_tenant)
        with pytest.raises(InvalidArgumentError, match="tenant"):
            index.grant(bad_tenant, [1])
    with pytest.raises(InvalidArgumentError):
        index.grant(1, [-3])
    with pytest.raises(InvalidArgumentError):
        index.add(x[:1], [31], tenant=-2)
    with pytest.raises(AlreadyExistsError):
        index.add(x[:2], [29, 40], tenant=2)
    assert len(index) == 30 and index.tenant_size(1) == 30 and index.tenant_size(2) == 0
    index.check()


def test_an_added_batch_is_stored_in_leaf_order() -> None:
    """Rows of one ``add`` get ascending slots in leaf order (a shortlist's rows lie close
    together); ids still find their own vectors."""
    index = small_curator()
    x = clustered_rows(300, 23)
    index.add(x, np.arange(300))
    leaf = index._leaf[: index._ids.n_slots]
    assert (np.diff(leaf) >= 0).all() and len(np.unique(leaf)) > 4
    np.testing.assert_array_equal(index._rows[index._ids.lookup(np.arange(300))], x)
    index.add(x[:40] + 1, np.arange(300, 340))                        # a second batch: sorted within itself
    assert (np.diff(index._leaf[300:340]) >= 0).all()
    np.testing.assert_array_equal(index.search(x[:5], 1).ids[:, 0], np.arange(5))


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_one_query_per_call_matches_the_batched_path(metric: str) -> None:
    """A query or a few per call take lean paths (a small tenant's whole scan in one kernel call,
    a promoted tenant's graph directly); their answers equal the batched walk's, ids and
    distances, and stay within the tenant."""
    index = small_curator(metric, max_shortlist=8, tier_threshold=100)
    x = clustered_rows(500, 21)
    index.add(x, np.arange(500) * 3 + 7)                             # ids are not slots
    index.grant(1, np.arange(40) * 3 + 7)                           # scanned whole
    index.grant(2, np.arange(100, 400) * 3 + 7)                     # promoted
    index.create_tenant(3)                                          # empty
    q = clustered_rows(12, 22)
    for tenant, params in ((1, {"budget": 64}), (1, {"budget": 16}), (2, {"ef": 50}), (3, {})):
        batched = index.search(q, 10, tenant=tenant, **params)      # 12 queries: the general path
        for i in range(len(q)):
            one = index.search(q[i], 10, tenant=tenant, **params)
            np.testing.assert_array_equal(one.ids[0], batched.ids[i])
            np.testing.assert_allclose(one.distances[0], batched.distances[i], rtol=1e-6, atol=1e-6)
    members = index.search(q, 10, tenant=1, budget=64).ids
    assert np.isin(members[members >= 0], np.arange(40) * 3 + 7).all() and (members >= 0).all()


# ---- tiering --------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_large_tenant_is_promoted_to_its_own_hnsw_and_demoted_when_it_shrinks(tmp_path: Path, metric: str) -> None:
    """A tenant reaching ``tier_threshold`` gets its own graph, which at ef >= its size answers
    exactly (``assert_exact_top_k``: the graph's and the flat scan's kernels round a dot product
    differently, so near-tied candidates may swap; comparing ids alone failed on such a tie);
    removals and revokes keep it exact and members-only, and below half the threshold the tenant
    returns to the shared tree, across save / load."""
    index = small_curator(metric, max_shortlist=8, tier_threshold=100)
    x = clustered_rows(600, 15)
    index.add(x, np.arange(600) + 10)
    index.grant(1, np.arange(99) + 10)
    index.grant(2, np.arange(50, 450) + 10)                        # 400 members: promoted at once
    assert not index.promoted(1) and index.promoted(2)
    index.grant(1, [300])                                           # the 100th member promotes it
    assert index.promoted(1)
    q = clustered_rows(20, 16)
    flat = FlatIndex(DIM, metric)
    flat.add(x, np.arange(600) + 10)
    for t, members in ((1, np.append(np.arange(99) + 10, 300)), (2, np.arange(50, 450) + 10)):
        got = index.search(q, 10, tenant=t, ef=400)                   # ef >= members: exact
        assert_exact_top_k(got, flat, q, 10, members)
        allow = members[::3]
        got = index.search(q, 5, tenant=t, allow=np.append(allow, [0, 1, 2, 3]), ef=400)   # with a filter
        assert_exact_top_k(got, flat, q, 5, allow)
    index.remove(np.arange(48, 100) + 10)                           # leaves 2's graph too; 1 keeps 49
    index.revoke(2, np.arange(100, 300) + 10)
    assert index.promoted(2) and index.tenant_size(2) == 150
    got = index.search(q, 10, tenant=2, ef=400)
    assert np.isin(got.ids[got.ids >= 0], np.arange(300, 450) + 10).all()
    index.check()
    index.save(tmp_path / "c")
    loaded = load_index(tmp_path / "c")
    assert loaded.promoted(2) and loaded.promoted(1) is False        # 1 fell to 49 < 100 // 2 with the removal
    np.testing.assert_array_equal(loaded.search(q, 10, tenant=2, ef=50).ids, index.search(q, 10, tenant=2, ef=50).ids)
    loaded.revoke(2, np.arange(300, 410) + 10)                      # 40 < 50: back to the shared tree
    assert not loaded.promoted(2) and loaded.tenant_size(2) == 40
    got = loaded.search(q, 10, tenant=2, budget=10**6)
    assert_exact_top_k(got, flat, q, 10, np.arange(410, 450) + 10)
    loaded.check()
    loaded.drop_tenant(1)
    loaded.grant(3, np.arange(500) + 10)
    assert loaded.promoted(3)
    loaded.drop_tenant(3)
    assert not loaded.promoted(3) and (loaded.search(q, 3, tenant=3).ids == -1).all()


def test_a_wrong_shortlist_entry_is_caught_by_the_exact_membership_check() -> None:
    """White-box: a slot planted in a tenant's shortlist (as a summary false positive would
    offer it) is never returned: the answer is checked against the membership chains, and a
    search whose answer held a stranger runs again checking every candidate (still k members)."""
    index = small_curator(max_shortlist=1000)
    x = clustered_rows(100, 17)
    index.add(x, np.arange(100))
    index.grant(4, np.arange(50))
    index.search(x[77], 5, tenant=4, budget=10**6)                   # the lean scan's checked slots are cached
    lists = index._tenants[4]
    (node,) = lists.lists
    stranger = index._ids.lookup(np.array([77]))[0]                  # id 77 is no member of 4
    lists.lists[node] = np.append(lists.lists[node], np.int32(stranger))
    lists._view = None
    for params in ({"budget": 10**6}, {"budget": 10}):               # scanned whole / walked
        res = index.search(x[77:78], 5, tenant=4, **params)
        assert 77 not in res.ids and np.isin(res.ids, np.arange(50)).all()
        batch = index.search(np.repeat(x[77:78], 5, axis=0), 5, tenant=4, **params)
        assert 77 not in batch.ids and np.isin(batch.ids, np.arange(50)).all()
    with pytest.raises(ValueError, match="no member"):
        index.check()


def test_a_wrong_node_in_a_promoted_tenants_graph_is_never_returned() -> None:
    """White-box: a slot planted in a promoted tenant's graph is dropped by the exact membership
    check on the one-query path (one kernel call) as on the batched one."""
    index = small_curator(max_shortlist=8, tier_threshold=50)
    x = clustered_rows(200, 23)
    index.add(x, np.arange(200))
    index.grant(5, np.arange(100))                                  # promoted
    assert index.promoted(5)
    stranger = int(index._ids.lookup(np.array([150]))[0])
    index._tiers.graphs[5].add_slots(np.array([stranger], np.int64), index._rows)
    for q in (x[150], np.repeat(x[150:151], 6, axis=0)):
        res = index.search(q, 5, tenant=5, ef=200)
        assert 150 not in res.ids and np.isin(res.ids[res.ids >= 0], np.arange(100)).all()


def test_a_promoted_tenants_graph_reads_the_shared_rows_and_copies_no_vector() -> None:
    """Tiering costs the links only: the graph's nodes read the Curator's rows in place,
    and stay right when those rows are reallocated by later adds."""
    dim = 64
    index = small_curator(dim=dim, max_shortlist=8, tier_threshold=100)
    x = clustered_rows(600, 18, dim=dim)
    index.add(x, np.arange(600))
    before = index.memory_bytes()
    index.grant(1, np.arange(0, 600, 2))                            # 300 members: promoted
    assert index.promoted(1)
    assert index.memory_bytes() - before < 300 * dim * 4            # less than a copy of its vectors
    more = clustered_rows(3000, 19, dim=dim)
    index.add(more, np.arange(600, 3600), tenant=1)                 # the row matrix grows (reallocated)
    index.revoke(1, np.arange(0, 100, 2))
    index.check()
    members = np.concatenate([np.arange(100, 600, 2), np.arange(600, 3600)])
    flat = FlatIndex(dim)
    flat.add(np.concatenate([x, more]), np.arange(3600))
    q = clustered_rows(20, 20, dim=dim)
    got = index.search(q, 10, tenant=1, ef=800)
    want = flat.search(q, 10, allow=members)
    assert np.isin(got.ids, members).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.ids.tolist(), want.ids.tolist())]) >= 0.95


def test_a_search_over_several_tenants_merges_tree_and_graph_answers(tmp_path: Path) -> None:
    index = small_curator(max_shortlist=8, tier_threshold=100)
    x = clustered_rows(500, 21)
    index.add(x, np.arange(500) + 5)
    index.grant(1, np.arange(0, 300) + 5)                           # promoted
    index.grant(2, np.arange(250, 290) + 5)                         # tree; 40 shared with 1
    index.grant(3, np.arange(400, 420) + 5)
    assert index.promoted(1) and not index.promoted(2)
    flat = FlatIndex(DIM)
    flat.add(x, np.arange(500) + 5)
    q = clustered_rows(30, 22)
    for tenants in ((1, 2), (2, 3), (1, 2, 3), [3, 1], (2, 2)):
        union = np.unique(np.concatenate([index_members(t) for t in tenants]))
        got = index.search(q, 10, tenant=tenants, budget=10**6, ef=400)
        np.testing.assert_array_equal(got.ids, flat.search(q, 10, allow=union).ids)
    assert (index.search(q[:2], 3, tenant=(8, 9)).ids == -1).all()   # unknown tenants: nothing
    index.save(tmp_path / "c")
    loaded = load_index(tmp_path / "c", mmap=True)
    np.testing.assert_array_equal(loaded.search(q, 10, tenant=(1, 3), ef=50).ids,
                                  index.search(q, 10, tenant=(1, 3), ef=50).ids)
    with pytest.raises(InvalidArgumentError, match="tenant"):
        index.search(q[:1], 3, tenant=())
    with pytest.raises(InvalidArgumentError, match="tenant"):
        index.search(q[:1], 3, tenant=(1, -2))


def index_members(tenant: int) -> np.ndarray:
    """Ids granted in ``test_a_search_over_several_tenants_merges_tree_and_graph_answers``."""
    return {1: np.arange(0, 300), 2: np.arange(250, 290), 3: np.arange(400, 420)}[tenant] + 5



@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_sq8_codes_in_the_scan_keep_recall_against_float(tmp_path: Path, metric: str) -> None:
    """codes="sq8": candidates are ranked on SQ8 codes, the best re-ranked on float rows;
    recall@10 against exact search stays within 0.02 of the float scan's at the same budget,
    a re-rank of every candidate is exact, and the option survives save/load."""
    n, dim = 6000, 32
    x = clustered_rows(n, 23, dim=dim, n_clusters=40)
    made = {}
    for codes in ("float", "sq8"):
        index = Curator(dim, metric, n_root=16, branching=4, max_depth=2, max_shortlist=64, seed=0, codes=codes)
        index.train(x[:3000])
        index.add(x, np.arange(n))
        made[codes] = index
    rng = np.random.default_rng(24)
    tenants = {t: np.unique(rng.choice(n, int(rng.integers(50, 3000)), replace=False)) for t in range(6)}
    for index in made.values():
        for t, ids in tenants.items():
            index.grant(t, ids)
    assert made["sq8"].memory_bytes() - made["float"].memory_bytes() >= n * dim   # a byte per dimension more
    flat = FlatIndex(dim, metric)
    flat.add(x, np.arange(n))
    q = clustered_rows(40, 25, dim=dim, n_clusters=40)
    recalls: dict[str, list[float]] = {"float": [], "sq8": []}
    for t, ids in tenants.items():
        want = flat.search(q, 10, allow=ids).ids
        for codes, index in made.items():
            got = index.search(q, 10, tenant=t, budget=512)
            assert np.isin(got.ids[got.ids >= 0], ids).all()
            recalls[codes] += [len(set(a) & set(b)) / 10 for a, b in zip(got.ids.tolist(), want.tolist())]
        full = made["sq8"].search(q, 10, tenant=t, budget=n, rerank=n)          # every candidate re-ranked: exact
        np.testing.assert_array_equal(full.ids, want)
    assert np.mean(recalls["sq8"]) >= np.mean(recalls["float"]) - 0.02, {c: np.mean(r) for c, r in recalls.items()}
    sq8 = made["sq8"]
    sq8.save(tmp_path / "c")
    loaded = load_index(tmp_path / "c")
    assert loaded.codes == "sq8" and loaded.params() == sq8.params()
    for t in tenants:
        np.testing.assert_array_equal(loaded.search(q, 10, tenant=t, budget=256).ids,
                                      sq8.search(q, 10, tenant=t, budget=256).ids)
    _tamper(tmp_path / "c", "sq8.step", lambda a: a[:-1].copy())
    with pytest.raises(DataLossError):
        load_index(tmp_path / "c")
    with pytest.raises(InvalidArgumentError, match="codes"):
        Curator(dim, codes="pq")
    with pytest.raises(InvalidArgumentError):
        sq8.search(q[:1], 10, tenant=0, rerank=0)
