"""Applying a committed batch to a collection's memory, and the staged drain.

A batch is published to readers in one short exclusive step: new rows are staged (searched
exactly), replaced and deleted index entries hidden (``vecdb.index.staging``), tenant sets
updated and membership ops handed to the index; the payload index's re-sorts that fall due
are built after it, searches going on, and swapped in by a second O(1) exclusive step
(``compact_payloads``). The staged rows then move into the index in
steps of about ``STEP_SECONDS``, each exclusive (the collection's background indexer runs
them; ``drain`` runs them all at once), so searches see a batch whole or not at all and
never wait long behind a large one. A tenant-aware index takes each batch whole in the
publishing step (its membership ops need the points in place), without staging.

Membership reaches the index as a relation over ids, in the order of the writes: removing a
point's vector (a replacement, a delete) leaves it alone, and a delete also revokes the
point from every tenant that held it. So replay after a checkpoint can re-add the touched
points and then hand over the logged membership ops, each exactly once.
"""
from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any, Callable

import numpy as np

from vecdb.collection import oplog
from vecdb.collection.layout import OWNER
from vecdb.collection.memory import Memory
from vecdb.collection.tenants import TenantSet
from vecdb.collection.training import apply_membership
from vecdb.filters import Shape
from vecdb.index.staging import Prepared

#: target length of one exclusive step that moves staged points into the index (the longest
#: a search waits behind the indexer); the number of points per step adapts to it (between
#: the two bounds below).
STEP_SECONDS = 0.005
MIN_STEP_ROWS, MAX_STEP_ROWS = 16, 65_536


def apply_upsert(mem: Memory, iids: np.ndarray, is_new: np.ndarray, uids: list[Any], x: np.ndarray,
                 pays: list[dict[str, Any] | None], owners: list[TenantSet], ops: list[oplog.Op],
                 seq: int, next_iid: int, prepared: Prepared | None = None, shape: Shape | None = None) -> None:
    """Publish a committed upsert: rows staged (``prepared``: copied in already, see
    ``Staging.prepare``), payloads indexed (``shape``: their columns, when the check made
    them), new points owned by ``owners``, membership ``ops`` handed to the index."""
    mem.reserve(next_iid)
    old = iids[~is_new]
    if len(old):
        mem.payidx.remove(old)
    mem.staging.stage(x, iids, stale=old, prepared=prepared)
    new = iids[is_new]
    if mem.uid_of.dtype == object:   # str ids: one object array, filled element by element by numpy
        given = np.empty(len(uids), object)
        given[:] = uids
        mem.uid_of[new] = given[is_new]
    else:
        mem.uid_of[new] = np.asarray(uids, np.int64)[is_new]
    mem.live[new] = True
    mem.n_live += len(new)
    has_pays = any(pays)
    if has_pays:
        mem.payidx.add_many(iids, pays, shape)
    if owners:
        mem.tenants.set_access(owners, new.tolist(), OWNER)
    hand_ops(mem, ops)
    mem.changes.record(seq, iids)
    mem.seq, mem.next_iid = seq, next_iid
    mem.dirty += len(iids)


def apply_delete(mem: Memory, iids: np.ndarray, revoke: list[int], tenant: TenantSet | None,
                 ops: list[oplog.Op], seq: int) -> None:
    """Publish a committed delete of ``iids`` (every tenant loses them) and the revocation
    of ``tenant``'s access to ``revoke``."""
    if len(iids):
        mem.staging.unstage(iids)
        mem.staging.hide(iids)
        mem.payidx.remove(iids)
        mem.live[iids] = False
        mem.n_live -= len(iids)
        mem.uid_of[iids] = None if mem.uid_of.dtype == object else -1
        mem.tenants.forget_points(iids.tolist())
    if revoke and tenant is not None:
        mem.tenants.set_access([tenant], revoke, None)
    hand_ops(mem, ops)
    mem.changes.record(seq, iids)
    mem.seq = seq
    mem.dirty += len(iids) + len(revoke)


def compact_payloads(mem_of: Callable[[], Memory], exclusive: Callable[[], AbstractContextManager[Any]],
                     guard: Callable[[Callable[[], None]], None]) -> None:
    """Re-sort the payload index's columns that a published batch made due (caller holds the
    writer lock, so nothing else changes the payload index meanwhile). The re-sorted runs are
    built with searches going on (``PayloadIndex.compaction``, the O(n) part), then swapped
    in one exclusive O(1) step, so readers never wait for a sort or merge. A failure is
    handled by ``guard`` (memory rebuilt from the store) like a failing batch."""
    mem = mem_of()
    try:
        runs = mem.payidx.compaction()
    except Exception as exc:
        def fail() -> None:
            raise exc
        with exclusive():
            guard(fail)
        return
    if runs:
        with exclusive():
            if mem_of() is mem:   # else memory was rebuilt meanwhile (with its own re-sorts)
                guard(lambda: mem.payidx.install(runs))


def hand_ops(mem: Memory, ops: list[oplog.Op]) -> None:
    """Hand a batch's membership ops to the index, in order. A tenant-aware index first takes
    the staged rows (a grant must find its points); for the others the ops are no-ops."""
    index = mem.index
    if index.tenant_aware:
        while mem.staging.busy:
            mem.staging.step(index, MAX_STEP_ROWS)
    for op in ops:
        if op.tag != oplog.POINTS:
            apply_membership(index, op)


def deletion_ops(iids: np.ndarray, lost: dict[int, list[int]]) -> list[oplog.Op]:
    """Log ops of a delete: the points, then each tenant's revoked members among them."""
    ops = [oplog.Op(oplog.POINTS, 0, iids)] if len(iids) else []
    ops += [oplog.Op(oplog.REVOKE, number, np.array(sorted(members), np.int64)) for number, members in sorted(lost.items())]
    return ops


def drain(mem_of: Callable[[], Memory], exclusive: Callable[[], AbstractContextManager[Any]],
          guard: Callable[[Callable[[], None]], None], step_rows: int) -> int:
    """Move every staged row into the index in short exclusive steps, now (caller holds the
    collection's indexing lock): each step is sized to take about ``STEP_SECONDS``, so
    searches wait at most one step; they see staged points meanwhile. ``mem_of`` gives the
    current memory (``guard`` may replace it when a step fails); returns the next step size."""
    mem = mem_of()
    if not mem.staging.busy:
        return step_rows
    mem.staging.reserve(mem.index)
    while mem_of().staging.busy:
        size = step_rows
        with exclusive():
            start = time.perf_counter()
            guard(lambda: mem_of().staging.step(mem_of().index, size))
            took = time.perf_counter() - start
        step_rows = next_step_rows(size, took)
    return step_rows


def next_step_rows(size: int, took: float) -> int:
    """Rows for the next step, given that ``size`` rows took ``took`` seconds: sized to take
    about ``STEP_SECONDS`` (within ``MIN_STEP_ROWS``..``MAX_STEP_ROWS``), growing at most 2x."""
    return int(min(MAX_STEP_ROWS, 2 * size, max(MIN_STEP_ROWS, size * STEP_SECONDS / max(took, 1e-4))))
