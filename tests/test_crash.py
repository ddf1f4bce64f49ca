"""Crash test: a writer process doing bulk upserts, replacements and deletes is killed with
SIGKILL at random moments (during opening, replay, batches, background indexing and
checkpoints), over and over on the same database. After each kill the database is reopened
and must hold exactly the acknowledged batches (plus, possibly, the one batch in flight,
entirely or not at all): at once, while the replayed batches are still staged (searched
exactly, indexed in the background), and again once the index has caught up.

Writers are forked from a forkserver that has imported vecdb once, so each of the many
processes starts in milliseconds instead of re-importing numpy/Numba.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb.errors import IdNotFoundError

DIM = 16
BATCH = 32


def ids_of(b: int) -> np.ndarray:
    return np.arange(b * BATCH, (b + 1) * BATCH, dtype=np.int64)


def op(b: int) -> tuple[Any, ...]:
    """The deterministic write number ``b``: a delete, a replacement or a fresh upsert."""
    if b % 5 == 4 and b >= 5:
        return ("delete", ids_of(b - 3)[::2])
    ids = ids_of(b - 2) if b % 7 == 6 else ids_of(b)
    vecs = np.random.default_rng(b).standard_normal((len(ids), DIM)).astype(np.float32)
    payloads = [{"b": b, "i": int(i), "even": bool(i % 2 == 0)} for i in ids]
    # a write scoped to tenant "t" may only create points or replace t's own, so replacements
    # (of points written unscoped) are unscoped
    return ("upsert", ids, vecs, payloads, "t" if b % 3 == 0 and b % 7 != 6 else None)


def apply_op(state: dict[int, tuple[np.ndarray, dict[str, Any], bool]], b: int) -> None:
    """Apply write ``b`` to the oracle: id -> (vector, payload, in tenant t)."""
    kind, *rest = op(b)
    if kind == "delete":
        for i in rest[0].tolist():
            state.pop(i, None)
        return
    ids, vecs, payloads, tenant = rest
    for row, i in enumerate(ids.tolist()):
        member = state[i][2] if i in state else False
        state[i] = (vecs[row], payloads[row], member or tenant == "t")


def writer(path: str, start: int, ack_file: str, index: str, checkpoint_points: int, max_pending: int) -> None:
    """Child process: open the database and write batches start, start+1, ... until killed,
    appending "b" to ``ack_file`` after each write returns (acknowledged on commit: the
    background indexer is usually behind)."""
    fd = os.open(ack_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    db = vecdb.open(path, checkpoint_points=checkpoint_points, max_pending=max_pending)
    col = db.get_collection("c")
    b = start
    while True:
        kind, *rest = op(b)
        if kind == "delete":
            col.delete(rest[0])
        else:
            ids, vecs, payloads, tenant = rest
            col.upsert(ids, vecs, payloads, tenant=tenant)
        os.write(fd, f"{b}\n".encode())
        b += 1


def verify(col: Any, state: dict[int, tuple[np.ndarray, dict[str, Any], bool]], deleted: list[int],
           rng: np.random.Generator) -> None:
    """Compare everything in the reopened collection with the oracle."""
    assert col.count() == len(state)
    assert col.stats().count == len(state)
    assert col.count(tenant="t") == sum(m for _, _, m in state.values())
    ids = np.array(sorted(state), np.int64)
    if len(ids):
        got = col.get(ids)
        np.testing.assert_array_equal(got.vectors, np.stack([state[i][0] for i in ids.tolist()]))
        assert got.payloads == [state[i][1] for i in ids.tolist()]
        if col.info.index == "flat":  # the index holds exactly the stored points
            everything = col.search(state[int(ids[0])][0], k=len(ids)).ids[0]
            np.testing.assert_array_equal(np.sort(everything), ids)
        else:  # the graph holds every stored point (each finds itself) and nothing else
            found = col.search(np.stack([state[i][0] for i in ids.tolist()]), k=3, params={"ef": 128}).ids
            assert np.isin(found[found >= 0], ids).all(), "a deleted or never-acknowledged point is searchable"
            assert (found[:, 0] == ids).mean() >= 0.99
        probe = rng.choice(ids, size=min(16, len(ids)), replace=False)
        res = col.search(np.stack([state[i][0] for i in probe.tolist()]), k=1)
        np.testing.assert_array_equal(res.ids[:, 0], probe)
        res = col.search(np.stack([state[i][0] for i in probe.tolist()]), k=3, tenant="t", filter={"even": True})
        for row in res.ids.tolist():
            assert all(i == -1 or (state[i][2] and i % 2 == 0) for i in row)
    for i in deleted[-8:]:
        if i not in state:
            with pytest.raises(IdNotFoundError):
                col.get([i])


def run_crashes(tmp_path: Path, *, kills: int, index: str, checkpoint_points: int, max_delay: float,
                seed: int, max_pending: int = 200_000) -> int:
    """Kill ``kills`` writers at random moments; verify after each (right after reopening,
    then once nothing is staged); returns writes applied."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vecdb", "numpy", "lmdb"])
    path = tmp_path / "db"
    with vecdb.open(path) as db:
        db.create_collection("c", dim=DIM, metric="l2", index=index).create_tenant("t")
    rng = np.random.default_rng(seed)
    state: dict[int, tuple[np.ndarray, dict[str, Any], bool]] = {}
    deleted: list[int] = []
    applied = in_flight = staged_at_open = 0
    started = time.perf_counter()
    for attempt in range(kills):
        ack_file = tmp_path / f"acks-{attempt}"
        proc = ctx.Process(target=writer, args=(str(path), applied, str(ack_file), index, checkpoint_points,
                                                  max_pending))
        proc.start()
        if attempt % 3 == 1:  # anywhere, including while opening / replaying what earlier writers left
            time.sleep(rng.uniform(0.0, max_delay))
        else:  # during the bulk upserts
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.is_alive() and not (ack_file.exists() and ack_file.stat().st_size):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, max_delay))
        proc.kill()
        proc.join()
        assert proc.exitcode == -9, f"writer exited on its own with {proc.exitcode}"
        acks = [int(x) for x in ack_file.read_text().split()] if ack_file.exists() else []
        assert acks == list(range(applied, applied + len(acks)))
        for b in acks:
            apply_op(state, b)
        applied += len(acks)
        # The write in flight at the kill is either entirely present or entirely absent.
        with_next = dict(state)
        apply_op(with_next, applied)
        kind, *rest = op(applied)
        with vecdb.open(path) as db:
            col = db.get_collection("c")
            staged_at_open += col.stats().pending > 0
            if not _matches(col, state, rest[0]):
                assert _matches(col, with_next, rest[0]), f"write {applied} is half applied"
                state = with_next
                applied += 1
                in_flight += 1
            if kind == "delete":
                deleted.extend(rest[0].tolist())
            verify(col, state, deleted, rng)        # replayed batches possibly still staged
            assert col.wait_indexed(timeout=60)
            assert col.stats().pending == 0 and col.stats().indexed == len(state)
            verify(col, state, deleted, rng)        # everything in the index
    print(f"{kills} kills, {applied} writes applied ({in_flight} in flight at a kill), "
          f"{len(state)} points, {staged_at_open} reopenings served staged points, "
          f"{time.perf_counter() - started:.1f}s")
    return applied


def _matches(col: Any, state: dict[int, Any], ids: np.ndarray) -> bool:
    """Whether the stored points ``ids`` look exactly as in ``state``."""
    for i in ids.tolist():
        try:
            got = col.get([i])
        except IdNotFoundError:
            if i in state:
                return False
            continue
        if i not in state or not np.array_equal(got.vectors[0], state[i][0]) or got.payloads[0] != state[i][1]:
            return False
    return True


# Writers are forked from the forkserver, a fresh interpreter that only imports vecdb and never
# runs a parallel region, so its children may start OpenMP themselves. This process keeps its
# thread-safe threading layer: the background indexer and the verifying searches launch parallel
# kernels from two threads at once, which Numba's workqueue layer answers with an abort.


def test_sigkill_during_bulk_upserts_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """12 kills, every 3rd from the writer's start (opening, replay), the rest after its first
    acknowledged batch; a checkpoint every 150 points (about 5 batches), so that kills also
    land in checkpoints and in the background indexer's steps."""
    applied = run_crashes(tmp_path, kills=12, index="flat", checkpoint_points=150, max_delay=0.8, seed=7)
    assert applied > 12, "the writers should have acknowledged some batches"


def test_sigkill_with_hnsw_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """HNSW is the default index: the same kills, with graph checkpoints every 100 points."""
    applied = run_crashes(tmp_path, kills=6, index="hnsw", checkpoint_points=100, max_delay=0.5, seed=5)
    assert applied > 6, "the writers should have acknowledged some batches"


def test_sigkill_with_the_indexer_held_back_by_back_pressure(tmp_path: Path) -> None:
    """A tiny ``max_pending`` makes writers wait for the background indexer at almost every
    batch: kills land while writers wait, mid-step and mid-checkpoint."""
    applied = run_crashes(tmp_path, kills=4, index="hnsw", checkpoint_points=150, max_delay=0.5, seed=9,
                          max_pending=40)
    assert applied > 4, "the writers should have acknowledged some batches"


@pytest.mark.slow
def test_sigkill_during_bulk_upserts_many_times(tmp_path: Path) -> None:
    """The flat sweep of the default test, longer: 30 kills, checkpoints every 300 points."""
    applied = run_crashes(tmp_path, kills=30, index="flat", checkpoint_points=300, max_delay=0.8, seed=17)
    assert applied > 30


@pytest.mark.slow
def test_sigkill_with_hnsw_many_times(tmp_path: Path) -> None:
    applied = run_crashes(tmp_path, kills=40, index="hnsw", checkpoint_points=500, max_delay=1.5, seed=11)
    assert applied > 40
