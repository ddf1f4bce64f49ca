"""``index="curator"`` in a collection: the database model machine (random upserts,
replacements, deletes, tenant changes, filtered and tenant searches, reopens) over a
collection whose Curator index is trained explicitly mid-run; a multi-tenant run where
every tenant search is checked for leaks and against exact per-tenant search, across a
reopen; and crash replay (SIGKILL after writes newer than the checkpoint), with and
without tiering."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import precondition, rule

import vecdb
from test_database_model import DatabaseMachine


class CuratorDatabaseMachine(DatabaseMachine):
    """The model machine over a Curator collection. Below its training threshold the exact
    scan stands in; the ``train`` rule builds the Curator from the stored points (and hands it
    every tenant's membership), which then serves, is checkpointed and reloaded on reopen."""

    INDEX = "curator"

    @precondition(lambda self: self.points)
    @rule()
    def train(self) -> None:
        self.col.train()
        assert self.col.stats().trained is True
        assert self.col._mem.index.kind == "curator"   # white-box: the Curator serves from here on


TestCuratorDatabaseModel = CuratorDatabaseMachine.TestCase
TestCuratorDatabaseModel.settings = settings(max_examples=20, stateful_step_count=25, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _rows(n: int, seed: int, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(5).standard_normal((30, dim)) * 3
    return (centres[rng.integers(0, 30, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def test_tenants_of_a_curator_collection_never_leak_across_reopen(tmp_path: Path) -> None:
    """Shared points, grants, revokes, replacements and deletes across six tenants; every
    tenant search returns only the tenant's points and, with a budget past its size, exactly
    the per-tenant exact answer — before and after a close/reopen."""
    rng = np.random.default_rng(21)
    n, dim = 2400, 16
    x = _rows(n, 1)
    params: dict[str, Any] = {"n_root": 16, "branching": 4, "max_depth": 2, "max_shortlist": 32}
    members: dict[str, set[int]] = {f"t{t}": set() for t in range(6)}
    vectors = {i: x[i] for i in range(n)}
    with vecdb.open(tmp_path / "db") as db:
        col = db.create_collection("c", dim, metric="l2", index="curator", index_params=params)
        for t in members:
            col.create_tenant(t)
        for start in range(0, n, 400):          # each batch owned by one tenant, then shared
            owner = f"t{(start // 400) % 6}"
            ids = np.arange(start, start + 400)
            col.upsert(ids, x[ids], tenant=owner)
            members[owner].update(ids.tolist())
        col.train()                               # explicit: automatic training may run in the background
        assert col.stats().trained is True and col._mem.index.kind == "curator"
        for t in members:
            shared = rng.choice(n, 300, replace=False)
            col.grant(t, shared)
            members[t].update(shared.tolist())
            gone = rng.choice(sorted(members[t]), 150, replace=False)
            col.revoke(t, gone)
            members[t].difference_update(gone.tolist())
        replaced = rng.choice(n, 100, replace=False)
        new = _rows(100, 2)
        col.upsert(replaced, new)                 # replacements keep their tenants
        vectors.update(zip(replaced.tolist(), new))
        deleted = rng.choice(n, 200, replace=False)
        col.delete(deleted)
        for i in deleted.tolist():
            vectors.pop(i, None)
        for t in members:
            members[t] &= set(vectors)
        _check(col, members, vectors, dim)
    with vecdb.open(tmp_path / "db") as db:
        col = db.get_collection("c")
        col.wait_indexed()
        assert col._mem.index.kind == "curator"
        _check(col, members, vectors, dim)


def _check(col: Any, members: dict[str, set[int]], vectors: dict[int, np.ndarray], dim: int,
           metric: str = "l2") -> None:
    q = _rows(24, 3, dim)
    flat = vecdb.index.FlatIndex(dim, metric)
    ids = np.array(sorted(vectors), np.int64)
    flat.add(np.stack([vectors[i] for i in ids.tolist()]), ids)
    for t, mine in members.items():
        assert col.count(tenant=t) == len(mine)
        res = col.search(q, k=10, tenant=t)
        assert set(res.ids[res.ids >= 0].tolist()) <= mine
        full = col.search(q, k=10, tenant=t, params={"budget": 10**6, "ef": 1000})
        np.testing.assert_array_equal(full.ids, flat.search(q, 10, allow=sorted(mine)).ids)
        hits = col.search(q, k=10, tenant=t, filter={"nope": 1})   # nothing matches the filter
        assert (hits.ids == -1).all()


# ---- crash replay -------------------------------------------------------------------------------
CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np, vecdb
import test_curator_collection as suite
db = vecdb.open({path!r}, checkpoint_points=10**9, checkpoint_seconds=1e9)
suite.after_checkpoint(db.get_collection("c"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def after_checkpoint(col: Any) -> None:
    """Writes the crashed child makes after the checkpoint: shared points, grants, revokes,
    a replacement of members, deletes and a dropped tenant (replayed from the op log)."""
    col.upsert(np.arange(600, 700), _rows(100, 31), tenant="a")
    col.grant("b", np.arange(600, 650))
    col.revoke("a", np.arange(0, 40))
    col.upsert(np.arange(100, 120), _rows(20, 32))     # members of a and b keep their access
    col.delete(np.arange(300, 330))
    col.create_tenant("c")
    col.grant("c", np.setdiff1d(np.arange(0, 700, 7), np.arange(300, 330)))
    col.drop_tenant("c")


def _model_after(x: np.ndarray) -> tuple[dict[int, np.ndarray], dict[str, set[int]]]:
    vectors = {i: x[i] for i in range(600)}
    members = {"a": set(range(0, 300)), "b": set(range(200, 600))}
    vectors.update(zip(range(600, 700), _rows(100, 31)))
    members["a"].update(range(600, 700))
    members["b"].update(range(600, 650))
    members["a"].difference_update(range(0, 40))
    vectors.update(zip(range(100, 120), _rows(20, 32)))
    for i in range(300, 330):
        vectors.pop(i)
    for t in members:
        members[t] &= set(vectors)
    return vectors, members


@pytest.mark.parametrize("tier_threshold", [0, 150])
def test_a_crash_after_the_checkpoint_is_replayed_onto_the_curator(tmp_path: Path, tier_threshold: int) -> None:
    """The Curator is checkpointed on close (tree, shortlists, tier graphs); a writer killed
    with SIGKILL after more writes leaves them in the op log; reopening replays them onto
    the checkpointed Curator (not a rebuild) and every tenant sees exactly its points."""
    path = str(tmp_path / "db")
    x = _rows(600, 30)
    params = {"n_root": 8, "branching": 4, "max_depth": 2, "max_shortlist": 16, "tier_threshold": tier_threshold}
    with vecdb.open(path, checkpoint_points=10**9, checkpoint_seconds=1e9) as db:
        col = db.create_collection("c", 16, metric="cosine", index="curator", index_params=params)
        col.create_tenant("a")
        col.create_tenant("b")
        col.upsert(np.arange(0, 300), x[:300], tenant="a")
        col.upsert(np.arange(300, 600), x[300:], tenant="b")
        col.grant("b", np.arange(200, 300))
        col.train()
        if tier_threshold:
            assert col._mem.index.promoted(1)              # b (400 members) has its own graph
    script = CHILD.format(tests=str(Path(__file__).parent), path=path)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    vectors, members = _model_after(x)
    with vecdb.open(path) as db:
        col = db.get_collection("c")
        mem = col._mem                                    # white-box: the checkpoint with the log replayed
        assert mem.index.kind == "curator" and mem.ckpt_seq > 0 and mem.seq > mem.ckpt_seq
        mem.index.check()
        assert sorted(col.list_tenants()) == ["a", "b"]
        _check(col, members, vectors, 16, metric="cosine")
