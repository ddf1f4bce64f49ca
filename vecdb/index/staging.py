"""Changes published to readers before they reach an index: rows staged for insertion and
ids whose indexed entry is stale.

A collection applies a committed batch to memory in one short exclusive step by staging it
here (new rows are searched exactly; replaced and deleted ids are hidden from the index's
answers); its background indexer then moves the staged work into the index in bounded
steps (``step``), each also exclusive, so no step blocks searches for long and every search
sees a batch whole or not at all: a point is answered from exactly one place, the staging
rows or the index.

Staged rows are kept in arrival order in append-only arrays, at absolute positions that
never change: the live rows lie between ``head`` and ``tail`` (rows replaced or deleted
while staged are marked dead), and the indexer always takes the oldest live rows, so moving
them out only advances ``head``. The writer copies a batch in beyond ``tail`` before its
exclusive step (``prepare``: no reader looks there; a grown copy of the small per-row
arrays is made then too), so publishing it (``stage``) and taking rows out are O(1) in the
rows held: neither copies rows under the exclusive lock.

The vectors themselves are kept in segments (``Segments``: arrays of up to about
``SEGMENT_BYTES`` each, each holding consecutive positions) that are never copied: a batch
that does not fit in the last segment starts a new one, and a segment is let go once the
indexer has taken all its rows. So a writer far ahead of the indexer (hundreds of thousands
of rows staged) writes each row once, instead of copying every staged row into a larger
array each time the arrays fill (about 3 extra copies of each row, plus the page faults of
the fresh arrays: some microseconds per point at 1M points). The per-row ids, norms and
dead flags (13 bytes a row) still grow by copying, as before.

An index that can link new rows while it is searched (``begin_add`` / ``finish_add``, e.g.
HNSW) drops stale entries in a ``Removal`` (unlinked while searches go on, by the index's
``prepare_remove``, and freed in one short exclusive step, ``finish_removal``; hidden from
answers until then) and takes new rows in a ``Move``: chosen and copied into the index's arrays while
searches go on (``plan``, then the index's ``prepare_add``), placed in one short exclusive
step (``begin``: it only publishes them), linked while searches go on (``link``), and
published in another short exclusive step (``finish``). Meanwhile those rows are still answered from here, and a search may also get
some of them from the index: answers are merged without duplicates. A moving row that is
replaced or deleted meanwhile has its new index entry hidden (the writer marks it stale),
and ``finish`` leaves its new staged row (if any) in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from vecdb.index.allow import AllowSet
from vecdb.index.base import BaseIndex, FoldRows, Pace, SearchParams
from vecdb.index.flat import BLAS_MIN_QUERIES, exact_search
from vecdb.kernels.distances import normalize_rows
from vecdb.kernels.merge import merge_rows, merge_sorted
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult

#: up to this many stale ids, a search over-fetches and drops them; beyond it, it passes the
#: index an allow-set of its ids minus the stale ones (one O(n) pass, only while staging).
OVERFETCH_LIMIT = 256
#: smallest row capacity allocated; growth allocates 1.5x the rows then held
_MIN_ROWS = 1024
_GROWTH = 1.5
#: most bytes of vectors in one segment (more rows when one batch needs them)
SEGMENT_BYTES = 32 << 20
_ONE = np.float32(1.0)


@dataclass
class Move:
    """Staged rows on their way into an index that links them while it is searched."""

    ids: I64Vector
    slots: I64Vector
    positions: I64Vector = field(default_factory=lambda: np.zeros(0, np.int64))   # absolute, ascending
    touched: list[I64Vector] = field(default_factory=list)   # ids unstaged meanwhile


@dataclass(frozen=True)
class Segments:
    """The staged vectors: ``arrays[i]`` holds the rows at absolute positions
    ``starts[i]`` onwards (up to ``starts[i + 1]``, or ``tail`` for the last). Never changed in
    place: ``Staging.prepare`` makes a new one when it adds or lets go of a segment."""

    starts: tuple[int, ...] = ()
    arrays: tuple[np.ndarray, ...] = ()

    @property
    def end(self) -> int:
        """The position after the last row the segments have room for."""
        return self.starts[-1] + len(self.arrays[-1]) if self.arrays else 0

    def spans(self, lo: int, hi: int) -> list[tuple[int, int, np.ndarray]]:
        """``(first, last + 1, array)`` of each segment's share of positions ``lo .. hi - 1``
        (array row ``p - start`` holds position ``p``); the starts are few, so a linear walk."""
        out = []
        starts = self.starts
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else hi
            a, b = max(lo, start), min(hi, end)
            if a < b:
                out.append((a, b, self.arrays[i][a - start:b - start]))
        return out

    def take(self, positions: I64Vector, dim: int) -> F32Matrix:
        """The rows at ascending absolute ``positions`` (a copy)."""
        if len(self.arrays) == 1 or not len(positions):
            base = self.starts[0] if self.starts else 0
            arr = self.arrays[0] if self.arrays else np.zeros((0, dim), np.float32)
            return arr[positions - base]
        out = np.empty((len(positions), dim), np.float32)
        bounds = np.searchsorted(positions, np.asarray(self.starts[1:], np.int64))
        lo = 0
        for i, hi in enumerate([*bounds.tolist(), len(positions)]):
            if hi > lo:
                out[lo:hi] = self.arrays[i][positions[lo:hi] - self.starts[i]]
            lo = max(lo, hi)
        return out

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays))


@dataclass
class Plan:
    """Staged rows chosen and copied out for the next ``begin`` (see ``Staging.plan``): their
    absolute positions, ids and rows, the arrays and base they were read from, and the
    index's placement of them (None when the index places rows in ``begin_add`` only)."""

    positions: I64Vector
    ids: I64Vector
    rows: F32Matrix
    vecs: Segments
    base: int
    placement: Any


@dataclass(frozen=True)
class Removal:
    """Stale ids on their way out of an index (``Staging.plan_removal``): the ids and the
    index's own plan for them (``prepare_remove``; None when it has none)."""

    ids: I64Vector
    prepared: Any


@dataclass
class Prepared:
    """A batch copied in beyond ``tail`` by ``Staging.prepare``, for ``stage`` to publish."""

    owner: "Staging"
    tail: int
    n: int
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None   # grown (norms, ids, dead, base)
    staged_before: I64Vector    # absolute positions of live staged rows holding the batch's ids
    segments: Segments          # the vector segments holding the batch (new when one was added or let go)


class Staging:
    """Rows waiting to enter an index (searched by exact scan meanwhile) and ids whose entry
    in the index is outdated (hidden from its answers until ``step`` removes them).

    Mutated under the collection's exclusive lock (``stage``, ``unstage``, ``hide``, ``step``,
    ``begin``, ``finish``), except ``prepare``, which the single writer runs before its
    exclusive step and which writes only beyond ``tail``; searched under the shared lock.
    ``plan`` (the indexer, before its exclusive step) only reads."""

    def __init__(self, dim: int, metric: Metric | str) -> None:
        self.dim = int(dim)
        self.metric = Metric.parse(metric)
        self._code = Metric.L2.code if self.metric is Metric.L2 else Metric.IP.code
        self._vecs = Segments()
        self._segment_rows = max(_MIN_ROWS, SEGMENT_BYTES // (4 * max(self.dim, 1)))
        self._norms = np.zeros(0, np.float32)
        self._ids = np.zeros(0, np.int64)
        self._dead = np.zeros(0, bool)
        self._base = 0          # absolute position of array row 0
        self._head = 0          # absolute positions [head, tail) may hold live rows
        self._tail = 0
        self._live = 0          # live rows in [head, tail)
        self._live_rows: np.ndarray | None = None   # array rows of the live ones, cached between changes
        self.stale = np.zeros(0, np.int64)
        self.moving: Move | None = None
        self._visible_cache: tuple[I64Vector, int, AllowSet] | None = None   # see _visible

    @property
    def busy(self) -> bool:
        """True while staged work remains to be moved into the index."""
        return bool(len(self.stale) or self._live or self.moving is not None)

    def __len__(self) -> int:
        """Staged rows (points searched exactly until they reach the index)."""
        return self._live

    # ---- the writer ------------------------------------------------------------------
    def prepare(self, x: F32Matrix, ids: I64Vector, known: I64Vector | None = None) -> Prepared:
        """Copy rows ``x`` (ids ``ids``) in beyond ``tail``, growing into new arrays when they
        do not fit, and find the live staged rows of the same ids (of ``known``, when given:
        the batch's ids that may have been staged before; a new id never was); no reader or
        indexer step looks there, so the caller (the one writer) runs this outside the
        exclusive lock."""
        n = len(ids)
        tail, head = self._tail, self._head
        norms, row_ids, dead, base = self._norms, self._ids, self._dead, self._base
        arrays = None
        if tail - base + n > len(row_ids):
            keep = tail - head   # rows before head have left for good: the copy starts there
            cap = max(_MIN_ROWS, int(_GROWTH * (keep + n)))
            lo, hi = head - base, tail - base
            grown = (np.empty(cap, np.float32), np.empty(cap, np.int64), np.zeros(cap, bool))
            grown[0][:keep], grown[1][:keep], grown[2][:keep] = norms[lo:hi], row_ids[lo:hi], dead[lo:hi]
            norms, row_ids, dead, base = *grown, head
            arrays = (*grown, head)
        segments = self._segments_for(n)
        at = tail - base
        block = segments.arrays[-1][tail - segments.starts[-1]:][:n] if n else np.zeros((0, self.dim), np.float32)
        block[:] = normalize_rows(x) if self.metric is Metric.COSINE else x
        norms[at:at + n] = np.einsum("ij,ij->i", block, block, dtype=np.float32) if n else 0
        row_ids[at:at + n] = ids
        dead[at:at + n] = False
        before = np.zeros(0, np.int64)
        if known is None:
            known = ids
        if self._live and len(known):
            span = slice(head - base, tail - base)
            hit = np.isin(row_ids[span], known) & ~dead[span]
            before = np.flatnonzero(hit).astype(np.int64) + head
        return Prepared(self, tail, n, arrays, before, segments)

    def _segments_for(self, n: int) -> Segments:
        """The segments with room for ``n`` rows from ``tail`` in the last one: the current
        ones, or a new last segment (sized for the rows staged, within ``_MIN_ROWS`` and
        ``SEGMENT_BYTES``, at least ``n``); segments wholly before ``head`` are let go."""
        segs, tail, head = self._vecs, self._tail, self._head
        starts, arrays = segs.starts, segs.arrays
        drop = 0
        while drop + 1 < len(starts) and starts[drop + 1] <= head:
            drop += 1   # all its rows have left (the last segment always stays)
        if n and segs.end - tail < n:
            cap = max(n, min(self._segment_rows, max(_MIN_ROWS, 2 * (self._live + n))))
            # a segment let go is written again rather than a new one faulted in: no search
            # or indexer step reads it (it holds only positions before head)
            spare = [a for a in arrays[:drop] if len(a) >= cap]
            starts, arrays = (*starts, tail), (*arrays, spare[0] if spare else np.empty((cap, self.dim), np.float32))
        elif not drop:
            return segs
        return Segments(starts[drop:], arrays[drop:])

    def stage(self, x: F32Matrix, ids: I64Vector, stale: I64Vector, prepared: Prepared | None = None) -> None:
        """Stage rows ``x`` under ``ids`` (replacing staged rows of the same ids) and hide the
        index's current entries of ``stale``. ``prepared``: the same batch from ``prepare``
        (made again here unless it is for this staging's current tail)."""
        if prepared is None or prepared.owner is not self or prepared.tail != self._tail or prepared.n != len(ids):
            prepared = self.prepare(x, ids)
        if prepared.arrays is not None:
            self._norms, self._ids, self._dead, self._base = prepared.arrays
        self._vecs = prepared.segments
        self._kill(prepared.staged_before[prepared.staged_before >= self._head])
        self.hide(stale)
        self._tail += prepared.n
        self._live += prepared.n
        self._live_rows = None

    def hide(self, ids: I64Vector) -> None:
        """Hide the index's entries of ``ids`` until ``step`` removes them."""
        if len(ids):
            self.stale = np.union1d(self.stale, ids)

    def unstage(self, ids: I64Vector) -> None:
        """Drop staged rows of ``ids`` (deleted or replaced before they reached the index)."""
        if not self._live or not len(ids):
            return
        span = slice(self._head - self._base, self._tail - self._base)
        hit = np.isin(self._ids[span], ids) & ~self._dead[span]
        self._kill(np.flatnonzero(hit).astype(np.int64) + self._head)

    def _kill(self, positions: I64Vector) -> None:
        """Mark the live rows at absolute ``positions`` dead (noting them on a move in flight)."""
        positions = positions[~self._dead[positions - self._base]] if len(positions) else positions
        if not len(positions):
            return
        rows = positions - self._base
        if self.moving is not None:
            self.moving.touched.append(self._ids[rows].copy())
        self._dead[rows] = True
        self._live -= len(rows)
        self._live_rows = None

    # ---- the indexer -----------------------------------------------------------------
    def reserve(self, index: BaseIndex) -> None:
        """Let ``index`` grow for the staged rows ahead of time (outside the exclusive steps)."""
        index.reserve(len(index) + self._live)

    def _oldest(self, budget: int) -> I64Vector:
        """Absolute positions of the (up to) ``budget`` oldest live rows, ascending."""
        span = slice(self._head - self._base, self._tail - self._base)
        return np.flatnonzero(~self._dead[span])[:budget].astype(np.int64) + self._head

    def _advance(self, positions: I64Vector) -> None:
        """The rows at ``positions`` (the oldest live ones) have left: ``head`` moves past them."""
        if len(positions):
            alive = ~self._dead[positions - self._base]
            self._live -= int(alive.sum())
            self._head = int(positions[-1]) + 1
            self._live_rows = None

    def step(self, index: BaseIndex, budget: int) -> None:
        """Move up to ``budget`` units of staged work into ``index``: stale entries first
        (an id's new row can only enter once its old entry is gone), then staged rows. If
        the index raises, the staged state is unchanged (the work stays hidden / staged)."""
        if len(self.stale):
            take = self.stale[:budget]
            index.remove(take)
            self.stale = self.stale[budget:]
            self._visible_cache = None
            return
        if not self._live:
            return
        pos = self._oldest(budget)
        index.add(self._vecs.take(pos, self.dim), self._ids[pos - self._base])
        self._advance(pos)

    def plan_removal(self, index: BaseIndex, pace: Pace | None = None) -> "Removal":
        """The stale entries' removal, prepared beside searches and the writer (the indexer
        runs it before its exclusive step; the index may still return them meanwhile: they
        stay hidden until ``finish_removal``). All of them at once: an index's removal
        costs O(n) whatever the count (see ``index.prepare_remove``)."""
        ids = self.stale   # never changed in place: the writer swaps in a new array
        return Removal(ids, index.prepare_remove(ids, pace))

    def finish_removal(self, index: BaseIndex, removal: "Removal") -> None:
        """Publish a planned removal (caller excludes searches): the entries leave the index
        (only freed, when the plan still holds) and stop being hidden; ids hidden since the
        plan stay hidden for the next one."""
        index.finish_remove(removal.ids, removal.prepared)
        self.stale = np.setdiff1d(self.stale, removal.ids, assume_unique=True)
        self._visible_cache = None

    def plan(self, index: BaseIndex, budget: int) -> "Plan | None":
        """What ``begin`` would take next, prepared with searches and the writer going on
        (the indexer runs it before its exclusive step): the oldest live rows, copied out,
        and the index's placement of them (``prepare_add``: the copy into its arrays, or
        None when the index has no work to do ahead). None when stale entries go first or nothing is staged.
        ``begin`` checks that the plan still holds (it takes published rows only, which do
        not change, so it holds unless one of them was unstaged since)."""
        vecs, ids, dead, base = self._vecs, self._ids, self._dead, self._base   # the writer may swap them in
        head, tail = self._head, self._tail
        if len(self.stale) or not self._live or head < base or tail - base > len(ids) or tail > vecs.end \
                or not vecs.starts or head < vecs.starts[0]:
            return None
        pos = np.flatnonzero(~dead[head - base:tail - base])[:budget].astype(np.int64) + head
        if not len(pos):
            return None
        take, x = ids[pos - base], vecs.take(pos, self.dim)
        if self._vecs is not vecs or self._ids is not ids or self._base != base:
            return None   # the writer swapped arrays while they were read: maybe a torn read
        return Plan(pos, take, x, vecs, base, index.prepare_add(x, take))

    def begin(self, index: BaseIndex, budget: int, plan: "Plan | None" = None) -> Move | None:
        """Start moving up to ``budget`` staged rows into ``index`` (one that links while it is
        searched; caller excludes searches): None when stale entries must go first (the
        caller removes them beside searches: ``plan_removal``, ``finish_removal``; the
        writer may have hidden some since ``plan``) or nothing is staged; else the rows are
        placed in the index, unlinked, and the returned ``Move`` is for ``link`` then
        ``finish``. ``plan``: from ``plan``, used when it still holds (else the rows are
        taken here)."""
        if len(self.stale) or not self._live:
            return None
        # the plan's rows were read from one generation of the arrays (``plan`` checks it);
        # a row at a position never changes once published, and arrays the writer has swapped
        # in since hold the same rows there, so the plan holds while its rows are all live
        if plan is not None and int(plan.positions[0]) >= self._head \
                and not self._dead[plan.positions - self._base].any():
            pos, take, x, placement = plan.positions, plan.ids, plan.rows, plan.placement
        else:
            pos = self._oldest(budget)
            take, x, placement = self._ids[pos - self._base].copy(), self._vecs.take(pos, self.dim), None
        slots = index.begin_add(x, take, placement)  # type: ignore[attr-defined]
        self.moving = Move(take, slots, pos)
        return self.moving

    @staticmethod
    def link(index: BaseIndex, move: Move, pace: Pace | None = None) -> None:
        """Link the moving rows into ``index`` (searches go on meanwhile; ``Pace``)."""
        index.finish_add(move.slots, pace)  # type: ignore[attr-defined]

    def finish(self, move: Move) -> None:
        """Publish a linked move (caller excludes searches): its rows are answered by the
        index alone; those unstaged meanwhile were dropped then (their index entries are
        stale), and a replacement staged meanwhile sits past them, so it stays."""
        self._advance(move.positions)
        self.moving = None

    # ---- searches --------------------------------------------------------------------
    def _scan(self, queries: F32Matrix, k: int, allow: AllowSet | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact top-k ids / distances over the live staged rows (those in ``allow``)."""
        if not self._live:
            return None
        base, head, tail = self._base, self._head, self._tail
        lo, hi = head - base, tail - base
        norms, ids = self._norms, self._ids
        # cosine: the raw queries rank the unit rows as their unit rows would (-<q, x> is
        # |q| times -<q/|q|, x>); the distances are scaled below. The index normalises the
        # queries itself (the graph kernel in the same pass), so they are normalised once.
        q = queries
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        if allow is None and self._live == hi - lo:
            for a, b, arr in self._vecs.spans(head, tail):   # each segment's rows scanned where they lie
                slots, dists = exact_search(arr, norms[a - base:b - base], q, k, self._code)
                parts.append((np.where(slots >= 0, ids[a - base:b - base][np.maximum(slots, 0)], -1), dists))
        else:
            rows = self._live_rows
            if rows is None:
                rows = np.flatnonzero(~self._dead[lo:hi]).astype(np.int64) + lo
                self._live_rows = rows   # benign race: concurrent readers build the same array
            if allow is not None:
                bm = allow.bitmap(0)
                rid = ids[rows]
                inside = rid < len(bm)
                ok = np.zeros(len(rows), bool)
                ok[inside] = bm[rid[inside]] != 0
                rows = rows[ok]
            if not len(rows):
                return None
            for a, b, arr in self._vecs.spans(head, tail):
                i, j = np.searchsorted(rows, [a - base, b - base])
                if j > i:
                    slots, dists = exact_search(arr, norms[a - base:b - base], q, k, self._code, rows[i:j] - (a - base))
                    parts.append((np.where(slots >= 0, ids[a - base:b - base][np.maximum(slots, 0)], -1), dists))
        if not parts:
            return None
        found, dists = parts[0]
        for more_ids, more_d in parts[1:]:   # segments in position order: on ties the older row first
            out_ids, out_d = np.empty((len(q), k), np.int64), np.empty((len(q), k), np.float32)
            merge_sorted(found, dists, more_ids, more_d, out_ids, out_d)
            found, dists = out_ids, out_d
        if self.metric is Metric.COSINE:
            _cosine_of_raw(queries, dists)
        return found, dists

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
                in_index = self._visible(index, stale)
        foldable = allow is None and len(queries) < BLAS_MIN_QUERIES and self.metric is not Metric.COSINE
        if foldable and fetch == k:
            parts = self._fold_parts()
            if len(parts) == 1:    # the index merges the staged rows in within its own kernel entry
                folded = index.search_folded(queries, k, in_index, tenant, params, parts[0])
                if folded is not None:
                    return folded
        res = index.search_trusted(queries, fetch, in_index, tenant, params)
        ids, dists = res.ids, res.distances
        if fetch > k:
            hidden = np.isin(ids, stale)
            ids, dists = _first_k(np.where(hidden, -1, ids), np.where(hidden, np.inf, dists).astype(np.float32), k)
        if foldable:
            return self._fold_in(queries, ids, dists)
        extra = self._scan(queries, k, allow)
        if extra is not None:   # both sorted: one merge (a moving row may come from both: kept once)
            out_ids, out_d = np.empty((len(ids), k), np.int64), np.empty((len(ids), k), np.float32)
            merge_sorted(ids, dists, extra[0], extra[1], out_ids, out_d)
            ids, dists = out_ids, out_d
        return SearchResult(ids, dists)

    def _visible(self, index: BaseIndex, stale: I64Vector) -> AllowSet:
        """The index's ids minus ``stale``: built once (an O(n) pass) and reused by every
        search until the stale set or the index's ids change, so hiding many stale entries
        (while a removal is unlinked, or a burst of replacements waits) costs a search nothing."""
        version = index.ids_version
        cached = self._visible_cache
        if cached is not None and cached[0] is stale and cached[1] == version:
            return cached[2]
        mask = index.id_mask()                  # vectorised passes: no list of the ~n ids
        mask[stale[stale < len(mask)]] = 0
        visible = AllowSet.of_bitmap(mask)
        self._visible_cache = (stale, version, visible)   # benign race: searches build the same set
        return visible

    def _fold_parts(self) -> list[FoldRows]:
        """The live staged rows as one ``FoldRows`` per segment they lie in (none when nothing
        is staged; one in the common case: a segment holds up to ``SEGMENT_BYTES`` of rows)."""
        if not self._live:
            return []
        base, code = self._base, self._code
        return [FoldRows(arr, self._ids[a - base:b - base], self._dead[a - base:b - base], code)
                for a, b, arr in self._vecs.spans(self._head, self._tail)]

    def _fold_in(self, queries: F32Matrix, ids: np.ndarray, dists: np.ndarray) -> SearchResult:
        """The index's answer with every live staged row folded in by exact distance, for a
        few unfiltered l2 / ip queries: one kernel call per segment (``merge_rows``), the
        same answer as ``_scan`` and ``merge_sorted`` (one search's Python, and its waits for
        the GIL between kernels, is a large part of its latency while a writer stages rows).
        ``ids``/``dists`` are the index's fresh answer (a search result is its caller's):
        changed in place."""
        for part in self._fold_parts():
            merge_rows(queries, *part, ids, dists)
        return SearchResult(ids, dists)

    def memory_bytes(self) -> int:
        """Bytes held by the staged rows' arrays (spare capacity included), the stale set and
        the cached set of ids not stale (``_visible``)."""
        arrays = self._vecs.nbytes() + self._norms.nbytes + self._ids.nbytes + self._dead.nbytes
        cached = self._visible_cache
        return int(arrays + self.stale.nbytes + (cached[2].nbytes() if cached is not None else 0))


def _cosine_of_raw(queries: F32Matrix, dists: np.ndarray) -> None:
    """Scan distances of raw cosine queries (-<q, x> on unit rows) made 1 - cos in place:
    divided by |q| (a zero query has cosine 0 to everything, as its unit row gives), plus 1;
    padding (+inf) stays +inf."""
    norm = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
    if norm.all():
        dists *= (1.0 / norm).astype(np.float32)[:, None]
    else:
        zero = norm == 0
        dists[~zero] *= (1.0 / norm[~zero]).astype(np.float32)[:, None]
        dists[zero] = np.where(np.isfinite(dists[zero]), np.float32(0), np.float32(np.inf))
    dists += _ONE


def _first_k(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances of each row with their ids, closest first (stable, so
    equal distances keep their column order); -1 / +inf fill rows with fewer hits."""
    order = np.argsort(dists, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(dists, order, axis=1)
