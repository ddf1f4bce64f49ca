"""SPANN's background maintenance (SPFresh): which oversized postings a write queues for
the background and which it splits itself, and the bounded background steps that do the
queued splits (each with its LIRE reassignment) and purge tombstones.

``Maintenance`` is mixed into ``SPANN``: it works on the index's committed state (heads,
the split queue ``_pending``, the removal count ``_dead``, the purge sweep ``_purge``) and
writes through the index's write path (``_write_step``, ``_write_plan``), so each step is
one plan in one write transaction. The queue is derived state: reopening requeues every
posting over the limit.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vecdb.index.spann.updates import HeadState, Plan, Work

if TYPE_CHECKING:
    from vecdb.index.spann.index import SPANN

#: postings queued for a background split at most (past it the writer splits them itself)
SPLIT_QUEUE = 1024
#: a posting this many times over its limit is split by the writer, queue or not
HARD_LIMIT = 2
#: queued splits one background step does (each with its reassignment)
SPLITS_PER_STEP = 4
#: postings one purge step reads and rewrites (without their tombstones)
PURGE_HEADS = 64
#: a tombstone purge starts once removals reach this fraction of the stored entries
PURGE_FRACTION = 0.1


class Maintenance:
    """Split scheduling and the background steps of a SPANN index (see the module doc)."""

    _pending: dict[int, None]
    _dead: int
    _purge: list[int] | None
    _splits: int
    _bg_splits: int

    def _schedule_splits(self: "SPANN", work: Work, *, building: bool, lire: bool) -> None:
        """After a write's postings are planned: a posting left over the limit is queued for
        the background (``Plan.oversized``) unless the queue is full or it passed
        ``HARD_LIMIT`` times the limit (split here, with reassignment), or ``building``
        (nothing committed yet: split here, nobody's searches to spare)."""
        plan = work.plan
        over = work.oversized()
        if not over:
            return
        if building:
            work.split_oversized(lire=lire)
            return
        hard = HARD_LIMIT * self.posting_limit
        room = max(0, SPLIT_QUEUE - len(self._pending))
        small = [h for h in over if len(plan.postings[h][0]) <= hard]
        fresh = [h for h in small if h not in self._pending]
        plan.oversized = tuple(fresh[:room])
        inline = [h for h in over if len(plan.postings[h][0]) > hard] + fresh[room:]
        if inline:
            work.split_oversized(lire=True, heads=inline)

    def _wake(self: "SPANN") -> None:
        if self._bg is not None and self._due():
            self._bg.wake()

    def _due(self: "SPANN") -> bool:
        """True when a split is queued or a tombstone purge is running or due."""
        if self._disk is None or self._space is None:
            return False
        entries = int(self._disk.count[self._disk.count > 0].sum())
        return bool(self._pending) or self._purge is not None or self._dead > PURGE_FRACTION * max(entries, 1)

    def maintain(self: "SPANN") -> bool:
        """One bounded background step: up to ``SPLITS_PER_STEP`` queued splits (each with its
        LIRE reassignment), else one chunk of the tombstone purge, written in one write
        transaction (searches see the postings before it or after it). Returns True when
        more is due. Must not be called inside a write transaction of the same store."""
        if self._space is None or self._disk is None or not self._due():
            return False
        before = (len(self._pending), self._purge, self._dead, self._disk.token)
        self._write_step(self._maintain_step)
        after = (len(self._pending), self._purge, self._dead, self._disk.token)
        return before != after and self._due()      # no progress (nothing committed yet): stop asking

    def wait_idle(self: "SPANN", timeout: float | None = None) -> bool:
        """Wait until no background work is queued or running: the background thread's
        (standalone), or ``maintain`` run here until done. True when idle."""
        if self._bg is not None and self._own:
            self._wake()
            bg = self._bg
            bg.wait_for(lambda: bg.stopping or (bg.idle and not self._due()), timeout)
            return not bg.stopping and bg.idle and not self._due()
        while self.maintain():
            pass
        return True

    @property
    def pending_splits(self) -> int:
        """Postings queued for a background split."""
        return len(self._pending)

    @property
    def splits(self) -> int:
        """Postings split since this index was opened (in-place updates, SPFresh)."""
        return self._splits

    @property
    def background_splits(self) -> int:
        """Of ``splits``, those done by background steps (the rest: by writers, when the
        queue was full or a posting passed ``HARD_LIMIT`` times the limit, and builds)."""
        return self._bg_splits

    def _maintain_step(self: "SPANN", txn: Any) -> Plan | None:
        with self._lock:
            heads = self._sync_writer(txn)
            if self._overlay is not None or heads.token is None:
                return None
            plan = self._empty_plan(heads)
            work = Work(self._source(), plan, txn)
            limit = self.posting_limit
            picked: list[int] = []
            for head in list(self._pending):
                if len(picked) == SPLITS_PER_STEP:
                    break
                if head < len(heads.count) and heads.count[head] > limit:
                    picked.append(head)
                else:
                    del self._pending[head]      # stale (split already, or shrunk): nothing to do
            if picked:
                plan.dequeued = tuple(picked)    # leave the queue when the plan commits
                for head in picked:
                    work.put(head, *work.get(head))
                work.split_oversized(lire=True, heads=picked)
            elif self._due():
                self._purge_chunk(work, heads)
            if not plan.postings:
                if plan.sweep is not None:        # nothing to rewrite in this chunk: move on
                    self._promote_sweep(plan)
                return None
            self._write_plan(txn, plan)
            self._inflight = plan
            return plan

    def _purge_chunk(self: "SPANN", work: Work, heads: HeadState) -> None:
        """Rewrite the next ``PURGE_HEADS`` postings holding entries without their tombstones;
        a sweep over every head started when removals passed ``PURGE_FRACTION``."""
        start, covers = self._purge if self._purge is not None else (0, self._dead)
        live = np.flatnonzero(heads.count > 0)
        chunk = live[live >= start][:PURGE_HEADS]
        for head in chunk.tolist():
            slots, vectors = work.get(head)
            if len(slots) < heads.count[head]:
                work.put(head, slots, vectors)
        last = not len(chunk) or chunk[-1] == live[-1]
        work.plan.sweep = (-1 if last else int(chunk[-1]) + 1, covers)   # applied when the plan commits

    def _promote_sweep(self: "SPANN", plan: Plan) -> None:
        """Advance the purge sweep past a chunk that held no tombstone (nothing written)."""
        with self._sync_lock:
            nxt, covers = plan.sweep
            self._purge = None if nxt < 0 else [nxt, covers]
            if nxt < 0:
                self._dead = max(0, self._dead - covers)

    def _requeue(self: "SPANN") -> None:
        """Queue every posting over the limit (after opening: the queue is not stored)."""
        if self._disk is not None:
            for head in np.flatnonzero(self._disk.count > self.posting_limit).tolist():
                self._pending[head] = None


def maintain_weakly(index: "SPANN") -> Callable[[], bool]:
    """A background round for ``index`` that holds it only weakly, so an index nobody
    references is still collected (its finalizer then stops the thread)."""
    ref = weakref.ref(index)

    def run_round() -> bool:
        owner = ref()
        return owner is not None and bool(owner.maintain())
    return run_round
