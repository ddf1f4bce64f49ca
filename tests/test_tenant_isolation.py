"""Tenants cannot touch or probe each other's points (issue 9, items 3-5), embedded and over
gRPC against a real server process whose tenant API keys scope every call.

- owners and grants: a tenant owns the points it creates; an admin grants others read or
  write access; a grantee's delete only drops its own access;
- probing: an id a tenant cannot see answers exactly like a missing one, and a malformed
  request answers INVALID_ARGUMENT whatever ids it names;
- the takeover race: tenants racing to create the same new ids, exactly one wins;
- a randomized multi-tenant race: threads upsert, delete, grant, revoke and read
  overlapping ids; every answer is checked against an exact model, and at the end every
  tenant reads exactly the points it owns or was granted.

The model is exact despite concurrency because each id belongs to one worker thread, the
only one that touches it (acting as any tenant, or as admin for grants); contested ids are
written by every worker at once, each as its own tenant, so exactly one may win each.
"""
from __future__ import annotations

import itertools
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import vecdb
from vecdb.errors import (AlreadyExistsError, IdNotFoundError, InvalidArgumentError, PermissionDeniedError,
                          VecdbError)
from vecdb.server.auth import hash_key
from vecdb.server.process import ServerProcess, start_server_process

DIM = 4
TENANTS = ["t0", "t1", "t2", "t3"]
KEYS = {name: secrets.token_urlsafe(24) for name in ["admin", *TENANTS]}
_names = itertools.count()


# ---- backends: one collection seen by an admin and by each tenant ------------------------------
class Actor:
    """Calls a collection as one tenant (``tenant`` set: embedded, passed on every call; or
    None with a tenant API key: the server scopes it) or as an admin."""

    def __init__(self, col: Any, tenant: str | None) -> None:
        self.col = col
        self._t = tenant

    def upsert(self, ids: Any, x: Any, payloads: Any = None) -> None:
        self.col.upsert(ids, x, payloads, tenant=self._t)

    def delete(self, ids: Any) -> int:
        return int(self.col.delete(ids, tenant=self._t))

    def get(self, ids: Any) -> Any:
        return self.col.get(ids, tenant=self._t)

    def count(self) -> int:
        return int(self.col.count(tenant=self._t))

    def search(self, q: Any, k: int) -> Any:
        return self.col.search(q, k=k, tenant=self._t)


@dataclass
class Backend:
    """An admin handle on a fresh collection, its tenants' actors, and what to close."""

    admin: Any
    tenants: dict[str, Actor]
    closers: list[Callable[[], None]] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tenant-server")
    auth = {"keys": [{"name": "ops", "role": "admin", "sha256": hash_key(KEYS["admin"])}]
            + [{"name": f"{t}-app", "tenants": [t], "sha256": hash_key(KEYS[t])} for t in TENANTS]}
    (root / "auth.json").write_text(json.dumps(auth))
    proc = start_server_process(root / "data", root / "server.log",
                                args=["--auth-file", str(root / "auth.json"), "--no-metrics"])
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def embedded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # sync=False: fsync is not what these tests are about (durability has its own tests)
    db = vecdb.open(tmp_path_factory.mktemp("tenant-embedded") / "db", sync=False)
    yield db
    db.close()


def make_backend(kind: str, request: pytest.FixtureRequest) -> Backend:
    name = f"c{next(_names)}"
    if kind == "embedded":
        col = request.getfixturevalue("embedded_db").create_collection(name, DIM, metric="l2", index="flat")
        for t in TENANTS:
            col.create_tenant(t)
        return Backend(col, {t: Actor(col, t) for t in TENANTS})
    proc = request.getfixturevalue("server")
    admin_db = vecdb.connect(proc.address, api_key=KEYS["admin"], timeout=60)
    col = admin_db.create_collection(name, DIM, metric="l2", index="flat")
    for t in TENANTS:
        col.create_tenant(t)
    clients = {t: vecdb.connect(proc.address, api_key=KEYS[t], timeout=60) for t in TENANTS}
    backend = Backend(col, {t: Actor(c.get_collection(name), None) for t, c in clients.items()})
    backend.closers = [admin_db.close, *[c.close for c in clients.values()]]
    return backend


@pytest.fixture(params=["embedded", "remote"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    made = make_backend(request.param, request)
    yield made
    for close in made.closers:
        close()


def vec(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def raised(fn: Callable[[], Any]) -> VecdbError | None:
    try:
        fn()
    except VecdbError as exc:
        return exc
    return None


# ---- owners and grants (item 5) -----------------------------------------------------------
def test_owners_grants_and_grantee_deletes(backend: Backend) -> None:
    acme, beta = backend.tenants["t0"], backend.tenants["t1"]
    acme.upsert([1, 2, 3], vec(1, 3), [{"v": 1}, {"v": 2}, {"v": 3}])
    assert acme.count() == 3 and beta.count() == 0
    backend.admin.grant("t1", [1])               # read-only by default
    backend.admin.grant("t1", [2], write=True)
    assert beta.get([1, 2]).payloads == [{"v": 1}, {"v": 2}]
    err = raised(lambda: beta.upsert([1], vec(9), [{"v": "beta"}]))
    assert isinstance(err, PermissionDeniedError) and "read-only" in str(err)
    beta.upsert([2], vec(2), [{"v": "beta"}])    # a write grant may replace
    assert acme.get([1, 2]).payloads == [{"v": 1}, {"v": "beta"}]
    assert isinstance(raised(lambda: beta.upsert([3], vec(3))), AlreadyExistsError)  # cannot see 3
    assert acme.get([3]).payloads == [{"v": 3}]
    assert beta.delete([1, 2, 3]) == 2           # drops its grants only
    assert acme.count() == 3 and beta.count() == 0 and backend.admin.count() == 3
    assert acme.get([1, 2, 3]).payloads == [{"v": 1}, {"v": "beta"}, {"v": 3}]
    backend.admin.grant("t1", [2], write=True)
    backend.admin.grant("t1", [2])               # a later read grant replaces the write grant
    assert isinstance(raised(lambda: beta.upsert([2], vec(2))), PermissionDeniedError)
    backend.admin.grant("t0", [1], write=False)  # granting an owner leaves it the owner
    acme.upsert([1], vec(4), [{"v": "acme"}])
    assert acme.delete([1, 2]) == 2              # the owner's delete removes the points for all
    assert backend.admin.count() == 1 and beta.count() == 0
    assert isinstance(raised(lambda: backend.admin.get([1])), IdNotFoundError)
    backend.admin.revoke("t0", [3])              # revoking the owner leaves an admin-only point
    assert acme.count() == 0 and backend.admin.get([3]).payloads == [{"v": 3}]
    assert isinstance(raised(lambda: acme.upsert([3], vec(3))), AlreadyExistsError)
    backend.admin.upsert([3], vec(5), [{"v": "admin"}])  # an admin may replace anything
    assert backend.admin.get([3]).payloads == [{"v": "admin"}]


def test_grant_write_must_be_a_bool(backend: Backend) -> None:
    backend.tenants["t0"].upsert([1], vec(1))
    assert isinstance(raised(lambda: backend.admin.grant("t1", [1], write="yes")), InvalidArgumentError)
    assert backend.tenants["t1"].count() == 0


# ---- probing (item 4) -------------------------------------------------------------------
def test_hidden_ids_answer_exactly_like_missing_ones(backend: Backend) -> None:
    acme, beta = backend.tenants["t0"], backend.tenants["t1"]
    acme.upsert([10, 11], vec(1, 2))
    hidden, missing = raised(lambda: beta.get([10])), raised(lambda: beta.get([12]))
    assert type(hidden) is type(missing) is IdNotFoundError
    name = backend.admin.name
    assert str(hidden) == f"1 id(s) not found in collection '{name}': [10]"
    assert str(missing) == f"1 id(s) not found in collection '{name}': [12]"
    both = raised(lambda: beta.get([12, 10, 11]))
    assert str(both) == f"3 id(s) not found in collection '{name}': [12, 10, 11]"
    # a malformed upsert answers INVALID_ARGUMENT, with one message, whatever ids it names
    wrong_dim = np.ones((2, DIM + 1), np.float32)
    on_hidden, on_free = raised(lambda: beta.upsert([10, 11], wrong_dim)), raised(lambda: beta.upsert([20, 21], wrong_dim))
    assert isinstance(on_hidden, InvalidArgumentError) and type(on_hidden) is type(on_free)
    assert str(on_hidden) == str(on_free)
    assert acme.count() == 2 and beta.count() == 0


# ---- the takeover race (item 3) -------------------------------------------------------------
def test_racing_tenants_never_both_take_new_ids(backend: Backend) -> None:
    actors = [backend.tenants["t0"], backend.tenants["t1"]]
    for rnd in range(8):
        ids = np.arange(300) + 1000 * (rnd + 1)
        barrier = threading.Barrier(2)
        outcome: list[Any] = [None, None]

        def write(i: int) -> None:
            barrier.wait()
            outcome[i] = raised(lambda: actors[i].upsert(ids, vec(rnd * 2 + i, 300), [{"by": i}] * 300))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i in range(2) if outcome[i] is None]
        assert len(winners) == 1, outcome
        loser = 1 - winners[0]
        assert isinstance(outcome[loser], AlreadyExistsError)
        assert actors[winners[0]].get(ids).payloads == [{"by": winners[0]}] * 300
        assert isinstance(raised(lambda: actors[loser].get(ids[:1])), IdNotFoundError)
        assert backend.admin.get(ids).payloads == [{"by": winners[0]}] * 300
    assert actors[0].count() + actors[1].count() == 8 * 300


# ---- the randomized multi-tenant race --------------------------------------------------------
@dataclass
class Point:
    vector: np.ndarray
    payload: dict[str, Any]
    access: dict[str, str]  # tenant -> "o" owner, "w" write grant, "r" read grant


def expect_absent(name: str, ids: list[int]) -> str:
    return f"{len(ids)} id(s) not found in collection '{name}': {ids[:5]}"


class Worker:
    """One thread's share of the race: its own ids (a model of each), and its tenant for the
    contested writes. Every answer is compared with the model at once; mismatches are kept."""

    def __init__(self, backend: Backend, w: int, seed: int, own: list[int]) -> None:
        self.b, self.w = backend, w
        self.rng = np.random.default_rng([seed, w])
        self.own = own
        self.model: dict[int, Point] = {}
        self.contested_won: dict[int, Point] = {}
        self.errors: list[str] = []
        self.ops = 0
        self.name = backend.admin.name

    def step(self) -> None:
        """One random operation on this worker's ids, checked against the model."""
        self.ops += 1
        rng, model = self.rng, self.model
        op = rng.choice(["upsert", "upsert", "delete", "grant", "revoke", "get"])
        t = str(rng.choice(TENANTS))
        ids = sorted(int(i) for i in rng.choice(self.own, size=int(rng.integers(1, 5)), replace=False))
        if op == "upsert":
            x = vec(int(rng.integers(2**31)), len(ids))
            pays = [{"w": self.w, "op": self.ops, "by": t, "id": i} for i in ids]
            blocked = [i for i in ids if i in model and model[i].access.get(t) not in ("o", "w")]
            err = raised(lambda: self.b.tenants[t].upsert(ids, x, pays))
            if blocked:
                hidden = [i for i in blocked if t not in model[i].access]
                want = AlreadyExistsError if hidden else PermissionDeniedError
                if not isinstance(err, want):
                    self.errors.append(f"upsert {ids} as {t}: expected {want.__name__}, got {err!r}")
                return
            if err is not None:
                self.errors.append(f"upsert {ids} as {t}: unexpected {err!r}")
                return
            for row, i in enumerate(ids):
                access = model[i].access if i in model else {t: "o"}
                model[i] = Point(x[row], pays[row], access)
        elif op == "delete":
            admin = rng.random() < 0.15
            seen = [i for i in ids if i in model and (admin or t in model[i].access)]
            got = (self.b.admin.delete(ids) if admin else self.b.tenants[t].delete(ids))
            if got != len(seen):
                self.errors.append(f"delete {ids} as {'admin' if admin else t}: {got} != {len(seen)}")
            for i in seen:
                if admin or model[i].access[t] == "o":
                    del model[i]
                else:
                    del model[i].access[t]
        elif op in ("grant", "revoke"):
            present = [i for i in ids if i in model]
            if not present:
                return
            write = bool(rng.random() < 0.5)
            if op == "grant":
                self.b.admin.grant(t, present, write=write)
            else:
                self.b.admin.revoke(t, present)
            for i in present:
                access = model[i].access
                if op == "revoke":
                    access.pop(t, None)
                elif access.get(t) != "o":
                    access[t] = "w" if write else "r"
        else:
            self.check_get(t, ids)

    def check_get(self, t: str, ids: list[int]) -> None:
        absent = [i for i in ids if i not in self.model or t not in self.model[i].access]
        try:
            got = self.b.tenants[t].get(ids)
        except IdNotFoundError as exc:
            if str(exc) != expect_absent(self.name, absent):
                self.errors.append(f"get {ids} as {t}: {exc} (expected absent: {absent})")
            return
        if absent:
            self.errors.append(f"get {ids} as {t} read ids it may not see: {absent}")
        elif got.payloads != [self.model[i].payload for i in ids] or not np.array_equal(
                got.vectors, np.stack([self.model[i].vector for i in ids])):
            self.errors.append(f"get {ids} as {t}: wrong points {got.payloads}")

    def contest(self, chunk: list[int], barrier: threading.Barrier) -> None:
        """Write the shared ``chunk`` as this worker's own tenant at the same moment as the others."""
        self.ops += 1
        t = TENANTS[self.w]
        x = vec(10_000 + 100 * chunk[0] + self.w, len(chunk))
        pays = [{"w": self.w, "contested": i, "by": t} for i in chunk]
        barrier.wait()
        err = raised(lambda: self.b.tenants[t].upsert(chunk, x, pays))
        if err is None:
            for row, i in enumerate(chunk):
                self.contested_won[i] = Point(x[row], pays[row], {t: "o"})
        elif not isinstance(err, AlreadyExistsError):
            self.errors.append(f"contested upsert {chunk} as {t}: unexpected {err!r}")


def run_race(backend: Backend, *, rounds: int, steps: int, seed: int) -> int:
    """Run the race; check the final state of every tenant; return the number of operations."""
    n_workers = len(TENANTS)
    workers = [Worker(backend, w, seed, own=list(range(w * 1000, w * 1000 + 40))) for w in range(n_workers)]
    barrier = threading.Barrier(n_workers)
    chunks = [list(range(100_000 + 8 * r, 100_000 + 8 * r + 8)) for r in range(rounds)]
    failures: list[BaseException] = []

    def work(worker: Worker) -> None:
        try:
            for r in range(rounds):
                for _ in range(steps):
                    worker.step()
                worker.contest(chunks[r], barrier)
        except BaseException as exc:  # reported below; the barrier must not leave others waiting
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    errors = [e for w in workers for e in w.errors]
    assert not errors, errors[:10]

    truth: dict[int, Point] = {}
    for w in workers:
        truth.update(w.model)
    for chunk in chunks:  # each contested id was won by exactly one worker
        winners = [w.w for w in workers if chunk[0] in w.contested_won]
        assert len(winners) == 1, (chunk, winners)
        for i in chunk:
            truth[i] = workers[winners[0]].contested_won[i]
    everything = sorted(truth)
    assert backend.admin.count() == len(truth)
    got = backend.admin.get(everything)
    assert got.payloads == [truth[i].payload for i in everything]
    name = backend.admin.name
    for t in TENANTS:
        actor = backend.tenants[t]
        mine = sorted(i for i, p in truth.items() if t in p.access)
        hidden = sorted(i for i in truth if i not in mine) + [7_777_777]  # plus one that never existed
        assert actor.count() == len(mine), t
        if mine:
            seen = actor.get(mine)
            assert seen.payloads == [truth[i].payload for i in mine], t
            np.testing.assert_array_equal(seen.vectors, np.stack([truth[i].vector for i in mine]))
            res = actor.search(truth[mine[0]].vector, k=len(truth) + 5)
            assert sorted(res.ids[0][res.ids[0] >= 0].tolist()) == mine, t
        with pytest.raises(IdNotFoundError) as info:
            actor.get(hidden)
        assert str(info.value) == expect_absent(name, hidden), t
    return sum(w.ops for w in workers)


def test_randomized_multi_tenant_race(backend: Backend) -> None:
    ops = run_race(backend, rounds=25, steps=10, seed=20240909)
    assert ops >= 1000


@pytest.mark.slow
def test_randomized_multi_tenant_race_long(backend: Backend) -> None:
    ops = run_race(backend, rounds=150, steps=20, seed=77)
    assert ops >= 12_000


def test_tenant_allow_set_is_cached_until_its_membership_changes() -> None:
    """A tenant's AllowSet is built once and reused by every search until a point joins or
    leaves the tenant; a change of access level only keeps it."""
    from vecdb.collection.layout import OWNER, READ, WRITE
    from vecdb.collection.tenants import TenantSet

    ts = TenantSet(3)
    ts.set_level(5, OWNER)
    ts.set_level(2, READ)
    first = ts.allow()
    assert first is ts.allow() and first.ids.tolist() == [2, 5]
    ts.set_level(2, WRITE)  # a level change: same members, same set
    assert ts.allow() is first
    ts.set_level(9, READ)
    assert ts.allow() is not first and ts.allow().ids.tolist() == [2, 5, 9]
    grown = ts.allow()
    ts.discard(5)
    assert ts.allow().ids.tolist() == [2, 9] and grown.ids.tolist() == [2, 5, 9]
