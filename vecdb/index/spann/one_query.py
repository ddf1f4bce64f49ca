"""SPANN's one-query search in one kernel call (``mapped.search_one``): the query normalised,
routed, its postings planned, looked up, checked and ranked (SQ8: re-ranked) and the answer
written as ids and final distances, between one read transaction's begin and end. The
general path (``SPANN._search_work``) makes the same answer in two kernel calls with ~15
Python steps between them and around them (result rows, plan and scan wrappers, the id map,
the distance finish).

Anything the lean path does not cover (no page map, an overlay of unwritten postings, a
route that is not one kernel, a record problem, pages the map reader does not follow) falls
back to the general path, which gives the same answer or raises.

``OneQuery`` is mixed into ``SPANN`` before ``BaseIndex``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vecdb.index.allow import NO_MASK, AllowSet
from vecdb.index.base import SearchParams
from vecdb.index.spann.routing import MIN_GROUPS, one_call_route
from vecdb.types import F32Matrix, SearchResult

if TYPE_CHECKING:
    from vecdb.index.spann.index import SPANN
    from vecdb.index.spann.updates import HeadState


class OneQuery:
    """The lean one-query search of ``SPANN`` (see the module doc)."""

    def search_trusted(self: "SPANN", queries: F32Matrix, k: int, allow: AllowSet | None, tenant: Any,
                       params: SearchParams) -> SearchResult:
        """``BaseIndex.search_trusted``; one query in one kernel call where it can."""
        if len(queries) == 1 and self._mapped is not None:
            got = self._search_lean(queries[0], k, allow, params)
            if got is not None:
                return got
        return super().search_trusted(queries, k, allow, tenant, params)

    def _search_lean(self: "SPANN", query: np.ndarray, k: int, allow: AllowSet | None, p: Any) -> SearchResult | None:
        """The answer for the raw ``query`` (dim,), or None where the general path must
        make it (see the module doc). The committed heads are remembered for the last read
        snapshot (transaction id) that found them: that snapshot's stored state never
        changes, so while they are still the committed ones ``_heads_of`` would find them
        again (~1 us: a lookup and a token compare)."""
        idmap = self._ids
        if not len(idmap):
            return None
        mask, use_allow = NO_MASK, False
        if allow is not None:
            allow = self._slot_allow(allow)
            if not len(allow):
                return None
            mask, use_allow = allow.bitmap(idmap.n_slots), True
        ids = np.empty((1, k), np.int64)
        dists = np.empty((1, k), np.float32)
        mapped = self._mapped
        assert mapped is not None and self._space is not None
        with self._space.read(buffers=True) as txn:
            tid, seen = txn.id(), self._lean_heads
            if seen[0] == tid and seen[1] is self._disk and self._overlay is None:
                heads = seen[1]
            else:
                heads = self._heads_of(txn)
                if heads is None or self._overlay is not None:
                    return None
                if heads is self._disk:
                    self._lean_heads = (tid, heads)
            route = self._lean_route(heads, p, k)
            if route is None or not mapped.search_one(txn, query, route, heads.count, k, idmap.slot_ids,
                                                      idmap.is_identity, mask, use_allow, ids, dists):
                return None
        return SearchResult(ids, dists)

    def _lean_route(self: "SPANN", heads: "HeadState", p: Any, k: int) -> tuple | None:
        """What ``mapped.search_one`` routes and ranks by for ``heads``, params ``p`` and
        ``k``: (cosine, head rows, metric, grouped route arrays (None: the exact route), the
        heads' coded copies (None: not ranked by them), slot ids, min groups, min heads, heads
        to read, eps2, scan mode, the codec's vmin and step (None: float postings), re-rank
        width); None where routing is not one kernel (``routing.one_call_route``).
        Remembered for the last (params, heads, k, route settings, codec): a committed
        state's head graph is not changed once searched (an update clones it), so its rows
        and groups stay those of the cached route; the codec's arrays are set only by
        training and opening, which make a new heads state."""
        last = self._lean_key
        settings = (self.exact_heads, self.head_route)
        if (last[0] is p and last[1] is heads and last[2] == k and last[3] == len(heads.count)
                and last[4] == settings and last[5] is self._codec):
            return last[6]
        one_call = one_call_route(heads.graph, self.exact_heads, self.head_route)
        route = None
        if one_call is not None and len(one_call[1]):
            rows, slot_ids, metric, code_route, head_codes = one_call
            nprobe, ef, eps2 = self._nprobe_ef_eps2(heads, p)
            codec = self._codec
            vmin, step = (codec.vmin, codec.step) if codec is not None else (None, None)
            route = (self._cosine, rows, metric, code_route, head_codes, slot_ids, MIN_GROUPS, max(ef, nprobe), nprobe,
                     float(eps2), self._scan_code, vmin, step, self._rerank_width(k, p.rerank))
        self._lean_key = (p, heads, k, len(heads.count), settings, self._codec, route)
        return route
