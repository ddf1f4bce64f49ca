"""Changes published to readers before they reach an index: rows staged for insertion and
ids whose indexed entry is stale.

A collection applies a committed batch to memory in one short exclusive step by staging it
here (new rows are searched exactly; replaced and deleted ids are hidden from the index's
answers); its background indexer then moves the staged work into the index in bounded
steps (``step``), each also exclusive, so no step blocks searches for long and every search
sees a batch whole or not at all: a point is answered from exactly one place, the staging
rows or the index. A staged row is held once (in ``rows``); the queue keeps only its id.

An index that can link new rows while it is searched (``begin_add`` / ``finish_add``, e.g.
HNSW) takes them in a ``Move`` instead: placed in one short exclusive step (``begin``),
linked while searches go on (``link``), and published in another short exclusive step
(``finish``). Meanwhile those rows are still answered from here, and a search may also get
some of them from the index: answers are merged without duplicates. A moving row that is
replaced or deleted meanwhile has its new index entry hidden (the writer marks it stale),
and ``finish`` leaves its new staged row (if any) in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex, SearchParams
from vecdb.index.flat import FlatIndex
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult

#: up to this many stale ids, a search over-fetches and drops them; beyond it, it passes the
#: index an allow-set of its ids minus the stale ones (one O(n) pass, only while staging).
OVERFETCH_LIMIT = 256


@dataclass
class Move:
    """Staged rows on their way into an index that links them while it is searched."""

    ids: I64Vector
    slots: I64Vector
    touched: list[I64Vector] = field(default_factory=list)   # ids unstaged meanwhile


class Staging:
    """Rows waiting to enter an index (searched by exact scan meanwhile) and ids whose entry
    in the index is outdated (hidden from its answers until ``step`` removes them)."""

    def __init__(self, dim: int, metric: Metric | str) -> None:
        self.rows = FlatIndex(dim, metric)
        self._queue: list[I64Vector] = []
        self.stale = np.zeros(0, np.int64)
        self.moving: Move | None = None

    @property
    def busy(self) -> bool:
        """True while staged work remains to be moved into the index."""
        return bool(len(self.stale) or self._queue or self.moving is not None)

    def __len__(self) -> int:
        """Staged rows (points searched exactly until they reach the index)."""
        return len(self.rows)

    def stage(self, x: F32Matrix, ids: I64Vector, stale: I64Vector) -> None:
        """Stage rows ``x`` under ``ids`` and hide the index's current entries of ``stale``."""
        self.unstage(ids)
        self.hide(stale)
        if len(ids):
            self.rows.add(x, ids)
            self._queue.append(np.array(ids, np.int64))

    def hide(self, ids: I64Vector) -> None:
        """Hide the index's entries of ``ids`` until ``step`` removes them."""
        if len(ids):
            self.stale = np.union1d(self.stale, ids)

    def unstage(self, ids: I64Vector) -> None:
        """Drop staged rows of ``ids`` (deleted or replaced before they reached the index)."""
        if not len(self.rows) or not len(ids):
            return
        if self.moving is not None:
            self.moving.touched.append(np.asarray(ids, np.int64))
        if not self.rows.remove(ids):
            return
        queue = []
        for q_ids in self._queue:
            keep = q_ids[~np.isin(q_ids, ids)]
            if len(keep):
                queue.append(keep)
        self._queue = queue

    def reserve(self, index: BaseIndex) -> None:
        """Let ``index`` grow for the staged rows ahead of time (outside the exclusive steps)."""
        index.reserve(len(index) + len(self.rows))

    def step(self, index: BaseIndex, budget: int) -> None:
        """Move up to ``budget`` units of staged work into ``index``: stale entries first
        (an id's new row can only enter once its old entry is gone), then staged rows. If
        the index raises, the staged state is unchanged (the work stays hidden / staged)."""
        if len(self.stale):
            take = self.stale[:budget]
            index.remove(take)
            self.stale = self.stale[budget:]
            return
        if not self._queue:
            return
        ids = self._queue[0]
        take_ids = ids[:budget]
        index.add(self.rows.vectors(take_ids), take_ids)
        self.rows.remove(take_ids)
        if len(ids) > budget:
            self._queue[0] = ids[budget:]
        else:
            self._queue.pop(0)

    def begin(self, index: BaseIndex, budget: int) -> Move | None:
        """Start moving up to ``budget`` staged rows into ``index`` (one that links while it is
        searched; caller excludes searches): stale entries go first, in the ``step`` way
        (None is returned then, as when nothing is queued); else the rows are placed in the
        index, unlinked, and the returned ``Move`` is for ``link`` then ``finish``."""
        if len(self.stale) or not self._queue:
            self.step(index, budget)
            return None
        ids = self._queue[0]
        take = ids[:budget]
        slots = index.begin_add(self.rows.vectors(take), take)  # type: ignore[attr-defined]
        if len(ids) > budget:
            self._queue[0] = ids[budget:]
        else:
            self._queue.pop(0)
        self.moving = Move(take, slots)
        return self.moving

    @staticmethod
    def link(index: BaseIndex, move: Move) -> None:
        """Link the moving rows into ``index`` (searches go on meanwhile)."""
        index.finish_add(move.slots)  # type: ignore[attr-defined]

    def finish(self, move: Move) -> None:
        """Publish a linked move (caller excludes searches): its rows are answered by the
        index alone, except those unstaged meanwhile (their index entries are stale)."""
        ids = move.ids
        if move.touched:
            ids = ids[~np.isin(ids, np.concatenate(move.touched))]
        if len(ids):
            self.rows.remove(ids)
        self.moving = None

    def search_trusted(self, index: BaseIndex, queries: F32Matrix, k: int, allow: AllowSet | None,
                       tenant: int | None, params: SearchParams | Mapping[str, Any] | None) -> SearchResult:
        """``index.search_trusted`` as if the staged work were already applied: stale entries
        are left out, staged rows are scanned exactly, and the two answers are merged by
        distance. ``queries`` are validated already; ``allow`` holds ids (staged ones included)
        and also restricts the staged rows; ``tenant`` goes to the index only (staged rows know
        no tenants: for a tenant-aware index the caller narrows ``allow`` for them)."""
        if not isinstance(params, SearchParams):
            params = index.resolve_params(params)
        if allow is not None and not isinstance(allow, AllowSet):
            allow = AllowSet.from_ids(allow)
        stale = self.stale
        fetch, in_index = k, allow
        if len(stale):
            if allow is not None:
                in_index = allow.without(stale)
            elif len(stale) <= OVERFETCH_LIMIT:
                fetch = k + len(stale)
            else:
                indexed = index.ids
                indexed.sort(kind="stable")             # slot order is often sorted already: O(n) then
                in_index = AllowSet.from_sorted(indexed[~np.isin(indexed, stale, assume_unique=True)])
        res = index.search_trusted(queries, fetch, in_index, tenant, params)
        ids, dists = res.ids, res.distances
        if fetch > k:
            hidden = np.isin(ids, stale)
            ids, dists = _first_k(np.where(hidden, -1, ids), np.where(hidden, np.inf, dists).astype(np.float32), k)
        if len(self.rows):
            extra = self.rows.search_trusted(queries, k, allow, None, self.rows.resolve_params(None))
            ids, dists = np.concatenate([ids, extra.ids], axis=1), np.concatenate([dists, extra.distances], axis=1)
            if self.moving is not None:   # a moving row may come from both
                ids, dists = _without_repeats(ids, dists)
            ids, dists = _first_k(ids, dists, k)
        return SearchResult(ids, dists)

    def memory_bytes(self) -> int:
        """Bytes held by staged rows, their queued ids and the stale set."""
        queued = sum(q_ids.nbytes for q_ids in self._queue)
        return int(self.rows.memory_bytes() + queued + self.stale.nbytes)


def _without_repeats(ids: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ids once, at their smallest distance (repeats become -1 / +inf)."""
    ids, dists = ids.copy(), dists.copy()
    for row in range(len(ids)):
        order = np.argsort(dists[row], kind="stable")
        seen = ids[row][order]
        first = np.zeros(len(seen), bool)
        first[np.unique(seen, return_index=True)[1]] = True
        repeat = order[~first & (seen >= 0)]
        ids[row][repeat] = -1
        dists[row][repeat] = np.inf
    return ids, dists


def _first_k(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances of each row with their ids, closest first (stable, so
    equal distances keep their column order); -1 / +inf fill rows with fewer hits."""
    order = np.argsort(dists, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(dists, order, axis=1)
