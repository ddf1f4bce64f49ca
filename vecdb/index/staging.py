"""Changes published to readers before they reach an index: rows staged for insertion and
ids whose indexed entry is stale.

A collection applies a committed batch to memory in one short exclusive step by staging it
here (new rows are searched exactly; replaced and deleted ids are hidden from the index's
answers), then moves the staged work into the index in bounded steps (``step``), each also
exclusive, so no step blocks searches for long and every search sees a batch whole or not
at all: a point is answered from exactly one place, the staging rows or the index.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex, SearchParams
from vecdb.index.flat import FlatIndex
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult

#: up to this many stale ids, a search over-fetches and drops them; beyond it, it passes the
#: index an allow-set of its ids minus the stale ones (one O(n) pass, only while staging).
OVERFETCH_LIMIT = 256


class Staging:
    """Rows waiting to enter an index (searched by exact scan meanwhile) and ids whose entry
    in the index is outdated (hidden from its answers until ``step`` removes them)."""

    def __init__(self, dim: int, metric: Metric | str) -> None:
        self.rows = FlatIndex(dim, metric)
        self._queue: list[tuple[I64Vector, F32Matrix]] = []
        self.stale = np.zeros(0, np.int64)

    @property
    def busy(self) -> bool:
        """True while staged work remains to be moved into the index."""
        return bool(len(self.stale) or self._queue)

    def __len__(self) -> int:
        return len(self.rows)

    def stage(self, x: F32Matrix, ids: I64Vector, stale: I64Vector) -> None:
        """Stage rows ``x`` under ``ids`` and hide the index's current entries of ``stale``."""
        self.unstage(ids)
        self.hide(stale)
        if len(ids):
            self.rows.add(x, ids)
            self._queue.append((ids, x))

    def hide(self, ids: I64Vector) -> None:
        """Hide the index's entries of ``ids`` until ``step`` removes them."""
        if len(ids):
            self.stale = np.union1d(self.stale, ids)

    def unstage(self, ids: I64Vector) -> None:
        """Drop staged rows of ``ids`` (deleted or replaced before they reached the index)."""
        if not len(self.rows) or not len(ids):
            return
        if not self.rows.remove(ids):
            return
        queue = []
        for q_ids, q_x in self._queue:
            keep = ~np.isin(q_ids, ids)
            if keep.any():
                queue.append((q_ids[keep], q_x[keep]))
        self._queue = queue

    def reserve(self, index: BaseIndex) -> None:
        """Let ``index`` grow for the staged rows ahead of time (outside the exclusive steps)."""
        index.reserve(len(index) + len(self.rows))

    def step(self, index: BaseIndex, budget: int) -> None:
        """Move up to ``budget`` units of staged work into ``index``: stale entries first
        (an id's new row can only enter once its old entry is gone), then staged rows."""
        if len(self.stale):
            take, self.stale = self.stale[:budget], self.stale[budget:]
            index.remove(take)
            return
        if not self._queue:
            return
        ids, x = self._queue[0]
        take_ids, take_x = ids[:budget], x[:budget]
        index.add(take_x, take_ids)
        self.rows.remove(take_ids)
        if len(ids) > budget:
            self._queue[0] = (ids[budget:], x[budget:])
        else:
            self._queue.pop(0)

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
            ids, dists = _first_k(np.concatenate([ids, extra.ids], axis=1),
                                  np.concatenate([dists, extra.distances], axis=1), k)
        return SearchResult(ids, dists)

    def memory_bytes(self) -> int:
        """Bytes held by staged rows (queued and searchable copies) and the stale set."""
        queued = sum(q_ids.nbytes + q_x.nbytes for q_ids, q_x in self._queue)
        return int(self.rows.memory_bytes() + queued + self.stale.nbytes)


def _first_k(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances of each row with their ids, closest first (stable, so
    equal distances keep their column order); -1 / +inf fill rows with fewer hits."""
    order = np.argsort(dists, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(dists, order, axis=1)
