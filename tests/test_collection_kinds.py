"""One collection suite for every index kind, embedded and over gRPC: upsert, delete, get,
search with a filter and with a tenant, close/reopen, and crash replay (the writer is killed
with SIGKILL after writes newer than its last checkpoint, then the collection is reopened).

Kinds that need training (pq, binary, sq8) are exercised on both sides of their training
threshold: first served by the exact-scan stand-in, then trained automatically once the
collection holds ``index.min_train_points`` points, then checkpointed and replayed.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import vecdb
from vecdb.api import CollectionAPI, CollectionInfo
from vecdb.collection.training import new_index
from vecdb.errors import IdNotFoundError
from vecdb.server.process import start_server_process

DIM = 32
KINDS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"M": 8, "ef_construction": 64},
    "pq": {"m": 8, "nbits": 4, "rerank": 64},
    "binary": {"rerank": 128},
    "sq8": {"rerank": 16},
    "curator": {"n_root": 16, "branching": 4, "max_depth": 2, "max_shortlist": 32, "tier_threshold": 120},
    "spann": {"posting_limit": 64, "head_size": 16, "min_train": 256},
}
TRAINS = {"pq", "binary", "sq8", "curator", "spann"}
Oracle = dict[int, tuple[np.ndarray, dict[str, Any], bool]]  # id -> (vector, payload, member of "t")


def threshold(kind: str) -> int:
    """Points at which a collection of ``kind`` trains its index (0: needs no training)."""
    index = new_index(CollectionInfo("x", DIM, "l2", kind, KINDS[kind]))
    return int(index.min_train_points) if index.needs_training else 0


def rows(ids: np.ndarray, seed: int) -> np.ndarray:
    """Clustered float32 rows for ``ids`` (seeded), so that codes are not all alike."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((16, DIM)).astype(np.float32) * 3
    return (centres[ids % 16] + rng.standard_normal((len(ids), DIM)).astype(np.float32)).astype(np.float32)


def upsert(col: CollectionAPI, oracle: Oracle, ids: np.ndarray, seed: int, tenant: str | None = None) -> None:
    x = rows(ids, seed)
    pays = [{"g": int(i) % 3, "seed": seed} for i in ids.tolist()]
    col.upsert(ids, x, pays, tenant=tenant)
    for row, i in enumerate(ids.tolist()):
        member = oracle[i][2] if i in oracle else False
        oracle[i] = (x[row], pays[row], member or tenant == "t")


def delete(col: CollectionAPI, oracle: Oracle, ids: np.ndarray) -> None:
    assert col.delete(ids) == sum(int(i) in oracle for i in ids.tolist())
    for i in ids.tolist():
        oracle.pop(i, None)


def membership(col: CollectionAPI, oracle: Oracle, ids: np.ndarray, grant: bool) -> None:
    (col.grant if grant else col.revoke)("t", ids)
    for i in ids.tolist():
        vec, pay, _ = oracle[i]
        oracle[i] = (vec, pay, grant)


def phase_a(col: CollectionAPI, oracle: Oracle, kind: str) -> None:
    """Writes before the first reopen: below the training threshold, then past it."""
    col.create_tenant("t")
    upsert(col, oracle, np.arange(0, 100), 1, tenant="t")
    upsert(col, oracle, np.arange(100, 400), 2)
    assert col.stats().trained is (kind not in TRAINS)
    verify(col, oracle)
    total = max(threshold(kind), 600) + 100
    upsert(col, oracle, np.arange(400, total), 3)
    assert col.wait_indexed(timeout=60)  # automatic training runs in the background indexer
    assert col.stats().trained is True
    delete(col, oracle, np.arange(0, 10))
    delete(col, oracle, np.arange(500, 510))
    upsert(col, oracle, np.arange(150, 170), 4)  # replacements
    membership(col, oracle, np.arange(200, 220), grant=True)
    membership(col, oracle, np.arange(10, 20), grant=False)


def phase_b(col: CollectionAPI, oracle: Oracle, kind: str) -> None:
    """Writes after a checkpoint, before a crash: replayed from the op log on reopen."""
    start = max(threshold(kind), 600) + 100
    upsert(col, oracle, np.arange(start, start + 50), 5, tenant="t")
    upsert(col, oracle, np.arange(170, 190), 6)
    delete(col, oracle, np.arange(300, 320))
    membership(col, oracle, np.arange(220, 230), grant=True)
    membership(col, oracle, np.arange(20, 25), grant=False)
    col.create_tenant("u")
    col.drop_tenant("u")


def verify(col: CollectionAPI, oracle: Oracle) -> None:
    """Everything the collection answers agrees with the oracle."""
    ids = np.array(sorted(oracle), np.int64)
    members = {i for i, (_, _, m) in oracle.items() if m}
    assert col.count() == len(oracle)
    assert col.count(tenant="t") == len(members)
    got = col.get(ids)
    np.testing.assert_array_equal(got.vectors, np.stack([oracle[i][0] for i in ids.tolist()]))
    assert got.payloads == [oracle[i][1] for i in ids.tolist()]
    gone = next(i for i in range(10_000) if i not in oracle)
    with pytest.raises(IdNotFoundError):
        col.get([gone])
    probe = ids[np.linspace(0, len(ids) - 1, 12).astype(int)]
    q = np.stack([oracle[i][0] for i in probe.tolist()])
    res = col.search(q, k=5)
    np.testing.assert_array_equal(res.ids[:, 0], probe)  # every point finds itself first
    assert set(res.ids.ravel().tolist()) <= set(oracle)
    res = col.search(q, k=10, filter={"g": 0})
    hits = res.ids[res.ids >= 0].tolist()
    assert hits and all(oracle[i][1]["g"] == 0 for i in hits)
    for row, i in enumerate(probe.tolist()):
        if oracle[i][1]["g"] == 0:
            assert res.ids[row, 0] == i
    res = col.search(q, k=10, tenant="t")
    hits = res.ids[res.ids >= 0].tolist()
    assert hits and set(hits) <= members
    for row, i in enumerate(probe.tolist()):
        if i in members:
            assert res.ids[row, 0] == i
    res = col.search(q, k=10, filter={"g": 1}, tenant="t")
    assert all(i in members and oracle[i][1]["g"] == 1 for i in res.ids[res.ids >= 0].tolist())


# ---- embedded -------------------------------------------------------------------------------
CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np, vecdb
import test_collection_kinds as suite
oracle = suite.load_oracle({oracle!r})
db = vecdb.open({path!r})
col = db.get_collection("c")
suite.phase_b(col, oracle, {kind!r})
suite.save_oracle(oracle, {oracle!r})
os.kill(os.getpid(), signal.SIGKILL)
"""


def save_oracle(oracle: Oracle, path: str) -> None:
    ids = np.array(sorted(oracle), np.int64)
    np.savez(path, ids=ids, x=np.stack([oracle[i][0] for i in ids.tolist()]),
             g=np.array([oracle[i][1]["g"] for i in ids.tolist()]), seed=np.array([oracle[i][1]["seed"] for i in ids.tolist()]),
             member=np.array([oracle[i][2] for i in ids.tolist()]))


def load_oracle(path: str) -> Oracle:
    data = np.load(path if path.endswith(".npz") else path + ".npz")
    return {int(i): (x, {"g": int(g), "seed": int(s)}, bool(m))
            for i, x, g, s, m in zip(data["ids"], data["x"], data["g"], data["seed"], data["member"])}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_embedded(tmp_path: Path, kind: str) -> None:
    path, oracle = str(tmp_path / "db"), {}  # type: ignore[var-annotated]
    with vecdb.open(path) as db:
        col = db.create_collection("c", DIM, metric="l2", index=kind, index_params=KINDS[kind])
        phase_a(col, oracle, kind)
        verify(col, oracle)
    with vecdb.open(path) as db:  # close / reopen: from the checkpoint written on close
        col = db.get_collection("c")
        assert col.stats().trained is True
        verify(col, oracle)
    save_oracle(oracle, str(tmp_path / "oracle"))
    script = CHILD.format(tests=str(Path(__file__).parent), oracle=str(tmp_path / "oracle.npz"), path=path, kind=kind)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    oracle = load_oracle(str(tmp_path / "oracle.npz"))
    with vecdb.open(path) as db:  # crash replay: checkpoint + the op log written since
        col = db.get_collection("c")
        mem = col._mem  # white-box: served by the checkpointed index with the log replayed, not rebuilt
        assert mem.ckpt_seq > 0 and mem.index.kind == kind and mem.seq > mem.ckpt_seq
        verify(col, oracle)
        assert col.list_tenants() == ["t"]


# ---- over gRPC ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def remote_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every kind's collection ("c-<kind>") through the same three server lifetimes on one data
    directory: writes, then a clean stop; a restart, verification and more writes, then a
    SIGKILL (those writes are in the op log only); a restart and verification. Three server
    starts for all kinds, not three per kind. Returns kind -> the traceback of its first
    failure ("" when every step passed); a kind that failed skips its later steps."""
    root = tmp_path_factory.mktemp("kinds-remote")
    oracles: dict[str, Oracle] = {kind: {} for kind in KINDS}
    failed = {kind: "" for kind in KINDS}

    def each(conn: Any, step: Callable[[CollectionAPI, Oracle, str], None]) -> None:
        for kind in sorted(KINDS):
            if not failed[kind]:
                try:
                    step(conn.get_collection(f"c-{kind}"), oracles[kind], kind)
                except Exception:
                    failed[kind] = traceback.format_exc()

    def create(conn: Any) -> None:
        for kind in sorted(KINDS):
            conn.create_collection(f"c-{kind}", DIM, metric="l2", index=kind, index_params=KINDS[kind])

    def start(n: int) -> Any:
        return start_server_process(root / "data", root / f"server{n}.log", args=["--no-metrics"])

    server = start(0)
    try:
        with vecdb.connect(server.address, timeout=60) as conn:
            create(conn)
            each(conn, lambda col, oracle, kind: (phase_a(col, oracle, kind), verify(col, oracle)))
    finally:
        assert server.stop() == 0
    server = start(1)  # close / reopen
    try:
        with vecdb.connect(server.address, timeout=60) as conn:
            def reopened(col: CollectionAPI, oracle: Oracle, kind: str) -> None:
                assert col.stats().trained is True
                verify(col, oracle)
                phase_b(col, oracle, kind)
            each(conn, reopened)
    finally:
        server.process.send_signal(signal.SIGKILL)  # crash: the writes since the checkpoint are in the log only
        server.process.wait(30)
    server = start(2)
    try:
        with vecdb.connect(server.address, timeout=60) as conn:
            def replayed(col: CollectionAPI, oracle: Oracle, kind: str) -> None:
                verify(col, oracle)
                assert col.list_tenants() == ["t"]
            each(conn, replayed)
    finally:
        assert server.stop() == 0
    return failed


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_remote(remote_runs: dict[str, str], kind: str) -> None:
    """Writes, a clean restart and a crash replay of a ``kind`` collection over gRPC."""
    assert not remote_runs[kind], remote_runs[kind]
