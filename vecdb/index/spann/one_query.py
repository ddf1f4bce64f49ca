"""SPANN's one-query search in one kernel call (``mapped.search_one``): the query normalised,
routed, its postings planned, looked up, checked and ranked (SQ8: re-ranked) and the answer
written as ids and final distances, between one read transaction's begin and end. The
general path (``SPANN._search_work``) makes the same answer in two kernel calls with ~15
Python steps between them and around them (result rows, plan and scan wrappers, the id map,
the distance finish): ~35 us of a ~105 us glove query.

Anything the lean path does not cover (no page map, an overlay of unwritten postings, a
route that is not one kernel, a record problem, pages the map reader does not follow) falls
back to the general path, which gives the same answer or raises.

``OneQuery`` is mixed into ``SPANN`` before ``BaseIndex``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vecdb.index.allow import AllowSet
from vecdb.index.base import SearchParams
from vecdb.index.spann.routing import _ROUTE_METRICS, MIN_GROUPS, groups_of
from vecdb.types import F32Matrix, SearchResult

if TYPE_CHECKING:
    from vecdb.index.spann.updates import HeadState

#: what the grouped route's arrays are replaced by on the exact route (never read; the
#: dtypes of ``HeadGroups.code_route``, so the kernel compiles once for both routes)
_NO_ROUTE = (np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.uint8), np.zeros(0, np.float32),
             np.zeros(0, np.uint8), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
_NO_MASK = np.zeros(1, np.uint8)


class OneQuery:
    """The lean one-query search of ``SPANN`` (see the module doc)."""

    def search_trusted(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: Any,
                       params: SearchParams) -> SearchResult:
        """``BaseIndex.search_trusted``; one query in one kernel call where it can."""
        if len(queries) == 1 and self._mapped is not None:   # type: ignore[attr-defined]
            got = self._search_lean(queries[0], k, allow, params)
            if got is not None:
                return got
        return super().search_trusted(queries, k, allow, tenant, params)  # type: ignore[misc]

    def _search_lean(self, query: np.ndarray, k: int, allow: AllowSet | None, p: Any) -> SearchResult | None:
        """The answer for the raw ``query`` (dim,), or None where the general path must
        make it (see the module doc)."""
        idmap = self._ids                         # type: ignore[attr-defined]
        if not len(idmap):
            return None
        mask, use_allow = _NO_MASK, False
        if allow is not None:
            allow = self._slot_allow(allow)       # type: ignore[attr-defined]
            if not len(allow):
                return None
            mask, use_allow = allow.bitmap(idmap.n_slots), True
        ids = np.empty((1, k), np.int64)
        dists = np.empty((1, k), np.float32)
        with self._space.read(buffers=True) as txn:   # type: ignore[attr-defined]
            heads = self._heads_of(txn)             # type: ignore[attr-defined]
            if heads is None or self._overlay is not None:   # type: ignore[attr-defined]
                return None
            route = self._lean_route(heads, p, k)
            if route is None:
                return None
            done = self._mapped.search_one(     # type: ignore[attr-defined]
                txn, query, self._cosine, route, heads.count, k, idmap.slot_ids, idmap.is_identity, mask,  # type: ignore[attr-defined]
                use_allow, self._scan_code, self._codec, self._rerank_width(k, p.rerank), ids[0], dists[0])  # type: ignore[attr-defined]
        return SearchResult(ids, dists) if done else None

    def _lean_route(self, heads: "HeadState", p: Any, k: int) -> tuple | None:
        """What ``mapped.search_one`` routes by for ``heads`` and params ``p``: (exact, head
        rows, metric, grouped route arrays, slot ids, min groups, min heads, heads to read,
        eps2); None where routing is not one kernel (``routing.plan_one``'s other cases)."""
        graph = heads.graph
        rows, slot_ids, metric = graph.stored_rows()
        n = len(slot_ids)
        if not n or len(graph) != n:              # a free slot among the heads
            return None
        exact = n <= self.exact_heads             # type: ignore[attr-defined]
        if exact and metric not in _ROUTE_METRICS or not exact and self.head_route != "groups":   # type: ignore[attr-defined]
            return None
        nprobe, ef, eps2 = self._nprobe_ef_eps2(heads, p)   # type: ignore[attr-defined]
        code_route = _NO_ROUTE if exact else groups_of(graph, rows).code_route
        return exact, rows, metric, code_route, slot_ids, MIN_GROUPS, max(ef, nprobe), nprobe, float(eps2)
