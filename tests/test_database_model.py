"""Model-based test: a Hypothesis state machine drives random upserts, deletes, tenant
changes, filtered and tenant searches, gets, snapshots, closes and reopens of an embedded
database, and checks every answer against a plain in-memory oracle with exact search."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import vecdb
from vecdb.errors import AlreadyExistsError, IdNotFoundError, PermissionDeniedError, TenantNotFoundError

DIM = 4
TENANTS = ["t1", "t2", "t3"]
LANGS = ["en", "fr", "de"]

payloads = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "lang": st.sampled_from(LANGS),
        "year": st.integers(2015, 2025),
        "score": st.floats(-1, 1, allow_nan=False, width=32),
        "flag": st.booleans(),
        "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        "meta": st.fixed_dictionaries({"src": st.sampled_from(["web", "pdf"])}),
    }),
)

leaf_filters = st.one_of(
    st.sampled_from(LANGS).map(lambda v: {"lang": v}),
    st.sampled_from(LANGS).map(lambda v: {"lang": {"ne": v}}),
    st.tuples(st.integers(2014, 2026), st.integers(2014, 2026)).map(lambda t: {"year": {"gte": min(t), "lt": max(t)}}),
    st.integers(2014, 2026).map(lambda v: {"year": {"gt": v}}),
    st.floats(-1, 1, width=32).map(lambda v: {"score": {"lte": v}}),
    st.booleans().map(lambda v: {"flag": v}),
    st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3).map(lambda v: {"tags": {"in": v}}),
    st.sampled_from(["web", "pdf"]).map(lambda v: {"meta.src": v}),
    st.sampled_from(["b", "f"]).map(lambda v: {"lang": {"lt": v}}),
)
filters = st.recursive(
    leaf_filters,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
        inner.map(lambda f: {"$not": f}),
    ),
    max_leaves=4,
)


# ---- oracle ----------------------------------------------------------------------------
def _leaves(payload: dict[str, Any] | None, path: str) -> list[Any]:
    """Scalar values of a dotted field path (list elements count separately)."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    return value if isinstance(value, list) else [value]


def _same_kind(a: Any, b: Any) -> bool:
    def kind(x: Any) -> str:
        return "b" if isinstance(x, bool) else "n" if isinstance(x, (int, float)) else "s"
    return kind(a) == kind(b)


def oracle_match(payload: dict[str, Any] | None, flt: dict[str, Any]) -> bool:
    for key, cond in flt.items():
        if key == "$and":
            ok = all(oracle_match(payload, f) for f in cond)
        elif key == "$or":
            ok = any(oracle_match(payload, f) for f in cond)
        elif key == "$not":
            ok = not oracle_match(payload, cond)
        else:
            vals = _leaves(payload, key)
            if not isinstance(cond, dict):
                cond = {"eq": cond}
            ok = True
            for op, arg in cond.items():
                if op == "eq":
                    ok &= any(_same_kind(v, arg) and v == arg for v in vals)
                elif op == "ne":
                    ok &= not any(_same_kind(v, arg) and v == arg for v in vals)
                elif op == "in":
                    ok &= any(_same_kind(v, a) and v == a for v in vals for a in arg)
                else:
                    cmp = {"gt": lambda x: x > arg, "gte": lambda x: x >= arg,
                           "lt": lambda x: x < arg, "lte": lambda x: x <= arg}[op]
                    ok &= any(_same_kind(v, arg) and cmp(v) for v in vals)
        if not ok:
            return False
    return True


def oracle_distance(metric: str, q: np.ndarray, x: np.ndarray) -> float:
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        return float(((q64 - x64) ** 2).sum())
    if metric == "ip":
        return float(-(q64 @ x64))
    nq, nx = np.linalg.norm(q64), np.linalg.norm(x64)
    return 1.0 - (float(q64 @ x64) / (nq * nx) if nq > 0 and nx > 0 else 0.0)


class DatabaseMachine(RuleBasedStateMachine):
    """Random operations on one collection, compared with a dict-of-points oracle."""

    #: the collection's index; HNSW below (at most 31 points, ef 64: its search is exact here)
    INDEX = "flat"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-model-"))
        self.db: Any = None
        # uid -> (vector, payload, {tenant: access level "o" owner / "w" write / "r" read})
        self.points: dict[Any, tuple[np.ndarray, Any, dict[str, str]]] = {}
        self.tenants: set[str] = set()

    @initialize(id_type=st.sampled_from(["int", "str"]), metric=st.sampled_from(["cosine", "l2", "ip"]),
                checkpoint_points=st.sampled_from([3, 1000]))
    def setup(self, id_type: str, metric: str, checkpoint_points: int) -> None:
        self.id_type, self.metric, self.ckpt = id_type, metric, checkpoint_points
        self.db = vecdb.open(self.dir / "db", checkpoint_points=checkpoint_points)
        self.col = self.db.create_collection("c", dim=DIM, metric=metric, index=self.INDEX, id_type=id_type)

    def uid(self, n: int) -> Any:
        return n if self.id_type == "int" else f"id-{n}"

    def teardown(self) -> None:
        if self.db is not None:
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- writes ----------------------------------------------------------------------
    @rule(ids=st.lists(st.integers(0, 24), min_size=1, max_size=8, unique=True), seed=st.integers(0, 2**32 - 1),
          data=st.data(), tenant=st.sampled_from([None] + TENANTS))
    def upsert(self, ids: list[int], seed: int, data: Any, tenant: str | None) -> None:
        rng = np.random.default_rng(seed)
        vecs = rng.integers(-3, 4, size=(len(ids), DIM)).astype(np.float32) / 2
        pls = [data.draw(payloads) for _ in ids]
        uids = [self.uid(i) for i in ids]
        if tenant is not None and tenant not in self.tenants:
            with pytest.raises(TenantNotFoundError):
                self.col.upsert(uids, vecs, pls, tenant=tenant)
            return
        if tenant is not None:  # a tenant-scoped write may only replace what the tenant can write
            blocked = [u for u in uids if u in self.points and self.points[u][2].get(tenant) not in ("o", "w")]
            if blocked:
                hidden = [u for u in blocked if tenant not in self.points[u][2]]
                with pytest.raises(AlreadyExistsError if hidden else PermissionDeniedError):
                    self.col.upsert(uids, vecs, pls, tenant=tenant)
                return
        self.col.upsert(uids, vecs, pls, tenant=tenant)
        for u, v, p in zip(uids, vecs, pls):
            access = self.points[u][2] if u in self.points else ({} if tenant is None else {tenant: "o"})
            self.points[u] = (v.copy(), p, access)

    @rule(ids=st.lists(st.integers(0, 30), min_size=1, max_size=6), tenant=st.sampled_from([None] + TENANTS))
    def delete(self, ids: list[int], tenant: str | None) -> None:
        uids = [self.uid(i) for i in ids]
        if tenant is not None and tenant not in self.tenants:
            with pytest.raises(TenantNotFoundError):
                self.col.delete(uids, tenant=tenant)
            return
        seen = {u for u in uids if u in self.points and (tenant is None or tenant in self.points[u][2])}
        assert self.col.delete(uids, tenant=tenant) == len(seen)
        for u in seen:  # an owner's (or unscoped) delete removes the point; a grantee's only its grant
            if tenant is None or self.points[u][2][tenant] == "o":
                del self.points[u]
            else:
                del self.points[u][2][tenant]

    @rule(tenant=st.sampled_from(TENANTS))
    def create_tenant(self, tenant: str) -> None:
        if tenant in self.tenants:
            with pytest.raises(vecdb.AlreadyExistsError):
                self.col.create_tenant(tenant)
        else:
            self.col.create_tenant(tenant)
            self.tenants.add(tenant)

    @precondition(lambda self: self.tenants)
    @rule(data=st.data())
    def drop_tenant(self, data: Any) -> None:
        tenant = data.draw(st.sampled_from(sorted(self.tenants)))
        self.col.drop_tenant(tenant)
        self.tenants.discard(tenant)
        for _, _, access in self.points.values():
            access.pop(tenant, None)

    @precondition(lambda self: self.tenants and self.points)
    @rule(data=st.data(), grant=st.booleans(), write=st.booleans())
    def grant_or_revoke(self, data: Any, grant: bool, write: bool) -> None:
        tenant = data.draw(st.sampled_from(sorted(self.tenants)))
        keys = sorted(self.points, key=str)
        chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=5))
        if grant:
            self.col.grant(tenant, chosen, write=write)
        else:
            self.col.revoke(tenant, chosen)
        for u in chosen:
            access = self.points[u][2]
            if not grant:
                access.pop(tenant, None)
            elif access.get(tenant) != "o":  # owners stay owners
                access[tenant] = "w" if write else "r"

    @rule(missing=st.integers(25, 30))
    def grant_missing_changes_nothing(self, missing: int) -> None:
        if not self.tenants or not self.points:
            return
        tenant = sorted(self.tenants)[0]
        present = next(iter(self.points))
        with pytest.raises(IdNotFoundError):
            self.col.grant(tenant, [present, self.uid(missing)])
        assert (tenant in self.points[present][2]) == (self.col.count(tenant) > 0 and
                                                       self._tenant_has(tenant, present))

    def _tenant_has(self, tenant: str, uid: Any) -> bool:
        v = self.points[uid][0]
        res = self.col.search(v, k=len(self.points), tenant=tenant)
        return uid in res.ids[0].tolist()

    # ---- lifecycle -------------------------------------------------------------------
    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = vecdb.open(self.dir / "db", checkpoint_points=self.ckpt)
        self.col = self.db.get_collection("c")

    @rule()
    def snapshot_matches(self) -> None:
        snap = self.dir / f"snap-{len(list(self.dir.iterdir()))}"
        self.db.snapshot(snap)
        with vecdb.open(snap) as copy:
            col = copy.get_collection("c")
            assert col.count() == len(self.points)
            assert sorted(col.list_tenants()) == sorted(self.tenants)
        shutil.rmtree(snap)

    # ---- reads -----------------------------------------------------------------------
    @precondition(lambda self: self.points)
    @rule(data=st.data())
    def get(self, data: Any) -> None:
        keys = sorted(self.points, key=str)
        chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=5))
        got = self.col.get(chosen)
        assert list(got.ids) == chosen
        for row, u in enumerate(chosen):
            np.testing.assert_array_equal(got.vectors[row], self.points[u][0])
            assert got.payloads[row] == self.points[u][1]

    @precondition(lambda self: self.tenants)
    @rule(data=st.data(), ids=st.lists(st.integers(0, 30), min_size=1, max_size=5))
    def get_as_tenant(self, data: Any, ids: list[int]) -> None:
        """A tenant reads exactly what it may access; every other id answers like a missing one."""
        tenant = data.draw(st.sampled_from(sorted(self.tenants)))
        uids = [self.uid(i) for i in ids]
        absent = [u for u in uids if u not in self.points or tenant not in self.points[u][2]]
        if absent:
            with pytest.raises(IdNotFoundError) as info:
                self.col.get(uids, tenant=tenant)
            assert str(info.value) == f"{len(absent)} id(s) not found in collection 'c': {absent[:5]}"
            return
        got = self.col.get(uids, tenant=tenant)
        assert got.payloads == [self.points[u][1] for u in uids]

    @rule(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 8), flt=st.one_of(st.none(), filters),
          tenant=st.sampled_from([None] + TENANTS), with_payloads=st.booleans())
    def search(self, seed: int, k: int, flt: Any, tenant: str | None, with_payloads: bool) -> None:
        q = np.random.default_rng(seed).integers(-3, 4, size=(2, DIM)).astype(np.float32) / 2
        if tenant is not None and tenant not in self.tenants:
            with pytest.raises(TenantNotFoundError):
                self.col.search(q, k=k, tenant=tenant)
            return
        res = self.col.search(q, k=k, filter=flt, tenant=tenant, with_payloads=with_payloads)
        allowed = {u: p for u, p in self.points.items()
                   if (tenant is None or tenant in p[2]) and (flt is None or oracle_match(p[1], flt))}
        assert res.ids.shape == (2, k) and res.distances.shape == (2, k)
        for qi in range(2):
            truth = sorted(oracle_distance(self.metric, q[qi], p[0]) for p in allowed.values())[:k]
            row = [u for u in res.ids[qi].tolist() if u not in (-1, None)]
            assert len(row) == len(truth), (flt, tenant, row, truth)
            assert len(set(row)) == len(row)
            assert set(row) <= set(allowed), (flt, tenant, set(row) - set(allowed))
            got = [oracle_distance(self.metric, q[qi], allowed[u][0]) for u in row]
            np.testing.assert_allclose(res.distances[qi, : len(row)], got, atol=1e-4)
            np.testing.assert_allclose(sorted(got), truth, atol=1e-4)
            assert np.isinf(res.distances[qi, len(row):]).all()
            if with_payloads:
                assert res.payloads is not None
                assert res.payloads[qi][: len(row)] == [allowed[u][1] for u in row]

    @invariant()
    def counts_match(self) -> None:
        if self.db is None:
            return
        assert self.col.count() == len(self.points)
        for t in self.tenants:
            assert self.col.count(tenant=t) == sum(t in p[2] for p in self.points.values())
        assert sorted(self.col.list_tenants()) == sorted(self.tenants)


_fast = settings(max_examples=30, stateful_step_count=25, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestDatabaseModel = DatabaseMachine.TestCase
TestDatabaseModel.settings = _fast


class HnswDatabaseMachine(DatabaseMachine):
    """The same machine over an HNSW collection, the default index: replacements and deletes
    unlink and relink graph nodes, checkpoints save the graph, reopens load it."""

    INDEX = "hnsw"


TestDatabaseModelHnsw = HnswDatabaseMachine.TestCase
TestDatabaseModelHnsw.settings = _fast


class SlowDatabaseMachine(DatabaseMachine):
    """The same machine with many more and longer runs."""


TestDatabaseModelSlow = pytest.mark.slow(SlowDatabaseMachine.TestCase)
TestDatabaseModelSlow.settings = settings(_fast, max_examples=150, stateful_step_count=50)


class SlowHnswDatabaseMachine(HnswDatabaseMachine):
    """The HNSW machine with many more and longer runs."""


TestDatabaseModelHnswSlow = pytest.mark.slow(SlowHnswDatabaseMachine.TestCase)
TestDatabaseModelHnswSlow.settings = settings(_fast, max_examples=150, stateful_step_count=50)
