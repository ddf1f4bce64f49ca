"""HNSW: hierarchical navigable small-world graph index (Malkov & Yashunin, 2018), in Numba.

The graph lives in flat numpy arrays (see ``vecdb.kernels.graph``); Python only hands slots
to the kernels, grows capacity and picks the filtered-search strategy.
"""
from __future__ import annotations

import math
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

import numba
import numpy as np

from vecdb.errors import AlreadyExistsError, InvalidArgumentError
from vecdb.index.allow import NO_MASK, AllowSet
from vecdb.index.base import BaseIndex, FoldRows, Pace, SearchParams
from vecdb.index.ids import IdMap
from vecdb.kernels import graph, graph_build, graph_repair, topk
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult
from vecdb.validation import as_id_array, as_ids, as_matrix, as_positive_int

#: ef used when the caller gives none (raised to k when k is larger).
DEFAULT_EF = 64
#: largest ef a search may ask for: ef sizes per-query heaps, so an unbounded one (10**30,
#: 2**62) would overflow the kernel or exhaust memory. Far above any useful beam width.
MAX_EF = 100_000
#: nodes per insertion call (one parallel region each); the progress bar moves per chunk.
PROGRESS_CHUNK = 20_000
#: while a ``Pace`` rests, linking and unlinking go in chunks sized to take about this long
#: each (the caller's rests between them then interleave finely with searches: a search of
#: ~1-4 ms overlaps part of a chunk, not a whole step of work; ``_in_chunks``)
PACE_SECONDS = 0.001
#: below this many queries the serial kernel is used (no parallel-region launch per call).
SERIAL_QUERIES = 4
#: adds of at least this many vectors show a progress bar unless ``progress=False``.
PROGRESS_MIN = 50_000
MAX_LEVEL = 60
_GROWTH = 1.5
_NO_IDS = np.empty(0, np.int64)   # slot -> id map passed to kernels under the identity layout
_NO_FOLD = FoldRows(np.zeros((0, 1), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), 0)   # nothing to merge in
#: kernel distance + this = 1 - cos; a Python float: a numpy scalar argument takes Numba's slow typing path
_COSINE_SHIFT = 1.0
#: once the nodes linked since the last reachability repair reach 1/REPAIR_BATCH_SHARE of the
#: graph, the repair runs, whether they came in one batch or in many small ones (a collection's
#: indexer adds bounded steps). Its O(n) pass is single-threaded (300k x 128: 0.09 s, against
#: 1.4 s to insert the last n/64 nodes on 2 threads), and a graph grown in small steps runs
#: about REPAIR_BATCH_SHARE x ln(growth) of them: at 1/64 some 440 passes over a 1M collection
#: load, together ~64 full-size passes (~6-10 % of the build); at 1/16 a quarter of that. What is
#: left unrepaired at the end of a load is repaired once the owner idles (``maintain``).
REPAIR_BATCH_SHARE = 16
#: ``maintain`` repairs once the nodes linked since the last repair reach 1/REPAIR_IDLE_SHARE
#: of the graph (a trickle of single inserts then pays at most ~10 % for it)
REPAIR_IDLE_SHARE = 64
#: a removal from a graph of fewer nodes repairs reachability at once, however few it removes:
#: the pass is cheap there (100k x 128: ~0.03 s), and a small sparse graph is where a few
#: removed nodes can be the only ways into a whole cluster (300 points, M=4: 5 removed left
#: 51 more unreachable), which no search could find until the deferred repair ran
REPAIR_ALWAYS_BELOW = 100_000
#: filtered search scans the allowed set exactly when that costs fewer distance computations
#: than a filtered traversal is expected to need (about ef * 2M * FILTER_COST / selectivity).
FILTER_COST = 0.5
FILTER_MODES = ("auto", "scan", "graph")


@dataclass(frozen=True)
class HNSWParams(SearchParams):
    """HNSW search knobs: ``ef`` (beam width at layer 0; None = ``DEFAULT_EF``; raised to k)
    and ``filter_mode`` ("auto", "scan" or "graph": how ``allow=`` is served)."""

    ef: int | None = None
    filter_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.ef is not None:
            object.__setattr__(self, "ef", as_positive_int(self.ef, "ef", maximum=MAX_EF))
        if not isinstance(self.filter_mode, str) or self.filter_mode not in FILTER_MODES:
            raise InvalidArgumentError(f"filter_mode must be one of {', '.join(FILTER_MODES)}, got {self.filter_mode!r}")


@dataclass(frozen=True)
class SearchStats:
    """Work one ``HNSW.search_with_stats`` call did, per query, counted inside the kernels.

    distances : int64 (nq,), distance computations (entry point, descent and layer 0).
    expanded : int64 (nq,), nodes whose neighbour list was read (0 for an exact scan).
    strategy : "graph", "filtered-graph", "scan" (exact scan of the allowed ids) or
        "none" (nothing to search: empty index, no queries or nothing allowed).
    """

    distances: np.ndarray
    expanded: np.ndarray
    strategy: str


@dataclass(frozen=True)
class Placement:
    """New rows placed by ``HNSW.prepare_add`` but not yet published (``begin_add``): their
    slots, ids, levels, upper-layer row starts (for ``fresh``: slots that get new upper rows)
    and upper rows to clear, planned against id-map version ``version``, ``capacity`` slots
    and ``n_up_before`` upper rows; ``id_map``: the id map with these rows assigned, built
    ahead when assigning them in place would be an O(n) step (else None)."""

    slots: I64Vector
    ids: I64Vector
    levels: np.ndarray
    starts: np.ndarray
    fresh: np.ndarray
    upper_rows: np.ndarray
    version: int
    capacity: int
    n_up_before: int
    n_up: int
    id_map: IdMap | None
    n_free: int = 0   # how many of ``slots`` (the first ones) were free slots reused


@dataclass(frozen=True)
class Removal:
    """Nodes unlinked by ``HNSW.prepare_remove`` but not yet freed (``finish_remove``): their
    ids and slots, the entry point and top level the graph has without them, planned against
    id-map version ``version`` and ``capacity`` slots."""

    ids: I64Vector
    slots: I64Vector
    entry: int
    max_level: int
    version: int
    capacity: int
    repaired: bool   # the reachability repair ran in the unlink (else it is counted as owed)


#: where ``_search`` reports its work while ``search_with_stats`` runs in this thread/task
#: (a context variable, so concurrent calls never see each other's counts).
_STATS_SINK: ContextVar[list[SearchStats] | None] = ContextVar("hnsw_stats_sink", default=None)


class HNSW(BaseIndex):
    """Approximate k-NN on a layered proximity graph.

    Parameters
    ----------
    dim : vector dimension.
    metric : "l2", "ip" or "cosine" (cosine stores unit rows and ranks by inner product).
    M : links per node on upper layers, 2M on layer 0 (paper's M, M_max0 = 2M); more links
        raise recall and memory (about 8M bytes per vector) and slow the build. >= 2.
    ef_construction : beam width while inserting; higher builds a better graph, slower. >= 1.
    seed : seeds the level draws; with a fixed seed and one thread the graph is deterministic
        (with more threads, insertion order varies as in hnswlib).
    progress : show a tqdm bar while adding; None shows it for adds of >= 50,000 vectors.

    Search knobs (per call, resolved once into ``HNSWParams``): ``ef`` — beam width at layer 0 (default 64, at least k, at most
    ``MAX_EF`` = 100,000);
    ``filter_mode`` — how ``allow=`` is served: "auto" (by estimated cost), "scan" (exact scan
    of the allowed ids) or "graph" (filtered traversal). ``search_with_stats`` also returns
    each query's distance computations and expanded nodes (``SearchStats``).
    """

    kind = "hnsw"
    params_type = HNSWParams
    links_while_searched = True

    def __init__(self, dim: int, metric: Metric | str = Metric.L2, M: int = 16, ef_construction: int = 200,
                 *, seed: int = 0, progress: bool | None = None) -> None:
        super().__init__(dim, metric)
        self.M = as_positive_int(M, "M", minimum=2)
        self.ef_construction = as_positive_int(ef_construction, "ef_construction")
        self.seed = as_positive_int(seed, "seed", minimum=0)
        if progress is not None and not isinstance(progress, bool):
            raise InvalidArgumentError(f"progress must be True, False or None, got {progress!r}")
        self.progress = progress
        self._level_mult = 1.0 / math.log(self.M)
        self._rng = np.random.default_rng(self.seed)
        self._metric_code = Metric.L2.code if self.metric is Metric.L2 else Metric.IP.code
        self._vecs = np.zeros((0, self.dim), np.float32)
        self._levels = np.full(0, -1, np.int8)
        self._adj0 = np.zeros((0, 2 * self.M + 1), np.int32)
        self._uoff = np.full(0, -1, np.int32)
        self._adjU = np.zeros((16, self.M + 1), np.int32)
        self._n_up = 0
        self._entry = -1
        self._max_level = -1
        self._pool: list[tuple[np.ndarray, np.ndarray]] = []
        self._unrepaired = 0   # nodes linked or removed since the last reachability repair
        self._free_slots: I64Vector | None = None   # freed slots, ascending (None: not listed yet)

    # ---- capacity -------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Slots allocated; grows geometrically so repeated adds do not copy the graph each time."""
        return int(self._levels.shape[0])

    def _reserve(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = max(n, int(self.capacity * _GROWTH), 16)
        used = self._ids.n_slots
        self._grow_rows(cap, used)
        self._levels = _grown(self._levels, cap, used, -1)
        self._adj0 = _grown(self._adj0, cap, used, 0)
        self._uoff = _grown(self._uoff, cap, used, -1)
        self._pool.clear()

    def _grow_rows(self, cap: int, used: int) -> None:
        """Room for ``cap`` vectors (a subclass whose nodes read another index's rows keeps none)."""
        self._vecs = _grown(self._vecs, cap, used, 0)

    def _put_rows(self, slots: I64Vector, x: F32Matrix) -> None:
        """Store the vectors of newly placed nodes (see ``_grow_rows``)."""
        self._vecs[slots] = x

    def reserve(self, n: int) -> None:
        """Grow capacity to ``n`` nodes now (see ``BaseIndex.reserve``): ``add`` reuses freed
        slots first, so ``len(self) + n_new`` nodes fit without a copy."""
        if n > self.capacity:
            self._writable()
            self._reserve(n)

    def _reserve_upper(self, rows: int) -> None:
        if rows > len(self._adjU):
            self._adjU = _grown(self._adjU, max(rows, int(len(self._adjU) * _GROWTH)), self._n_up, 0)

    def _writable(self) -> None:
        """Arrays loaded with mmap=True are read-only; copy them before the first change."""
        for name in ("_vecs", "_levels", "_adj0", "_uoff", "_adjU"):
            arr = getattr(self, name)
            if not arr.flags.writeable:
                setattr(self, name, np.array(arr))

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """Visited marks (one row per Numba thread) and their tags, from a small pool so that
        concurrent callers never share a row."""
        pool = self._pool
        cap = self._levels.shape[0]
        while pool:
            try:
                scratch = pool.pop()
            except IndexError:
                break
            if scratch[0].shape[1] == cap:
                return scratch
        rows = numba.config.NUMBA_NUM_THREADS
        return np.zeros((rows, cap), np.uint16), np.zeros(rows, np.uint16)

    def _give_back(self, scratch: tuple[np.ndarray, np.ndarray]) -> None:
        pool = self._pool
        if len(pool) < 4 and scratch[0].shape[1] == self._levels.shape[0]:
            pool.append(scratch)

    # ---- add ------------------------------------------------------------------------
    def _add(self, x: F32Matrix, ids: I64Vector) -> None:
        self._link(self._place(x, ids))

    def prepare_add(self, vectors: Any, ids: Any) -> "Placement":
        """The part of ``begin_add`` that searches may run beside (same checks): slots and
        levels are chosen, the index grows, and the rows are copied into their slots, all
        where no search looks (a slot is reached only once ``begin_add`` publishes it), so
        the exclusive step only publishes. Valid until the index next changes."""
        x = as_matrix(vectors, self.dim)
        ids_arr = as_ids(ids, len(x))
        present = self._ids.contains(ids_arr)
        if present.any():
            raise AlreadyExistsError(f"ids already in the index: {ids_arr[present][:5].tolist()}")
        return self._plan(self._prepare_vectors(x), ids_arr)

    def begin_add(self, vectors: Any, ids: Any, placement: "Placement | None" = None) -> I64Vector:
        """First half of ``add`` (same checks), for a caller that keeps searches out meanwhile:
        the rows get slots, levels and ids (grown arrays are swapped in here) but no links,
        so no search reaches them yet. ``placement``: these rows from ``prepare_add``, made
        with searches going on (made here when None or outdated). Returns the slots for
        ``finish_add``."""
        if placement is None or not self._unchanged(placement.version, placement.capacity, placement.n_up_before):
            placement = self.prepare_add(vectors, ids)
        if not len(placement.slots):
            return placement.slots
        self._publish(placement)
        return placement.slots

    def _unchanged(self, version: int, capacity: int, n_up: int | None = None) -> bool:
        """True while the index has not changed since a plan made at id-map ``version``,
        ``capacity`` slots (and ``n_up`` upper rows): its slots are as planned and the rows
        copied for it still in its arrays (a growth copies only the used slots)."""
        return self._ids.version == version and self.capacity == capacity and (n_up is None or self._n_up == n_up)

    def finish_add(self, slots: I64Vector, pace: Pace | None = None) -> None:
        """Second half of ``add``: link the placed ``slots`` into the graph with the parallel
        build, while searches run (they read the lists without locks, as the build's own
        searches do; a search may already return some of these ids), with ``pace`` called
        after each chunk (``_in_chunks``). No other change of this index may run meanwhile."""
        if len(slots):
            self._link(slots, pace)

    def _place(self, x: F32Matrix, ids: I64Vector) -> I64Vector:
        """Slots, levels, vectors and ids for new rows, unlinked (upper-layer rows reserved)."""
        placement = self._plan(x, ids)
        self._publish(placement)
        return placement.slots

    def _plan(self, x: F32Matrix, ids: I64Vector) -> "Placement":
        """Choose slots (free ones first), draw levels and reserve upper-layer rows for new
        rows, and copy their vectors in; changes nothing a search reads (see ``prepare_add``)."""
        self._writable()
        n = len(x)
        used = self._ids.n_slots
        free = self._freed()[:n] if len(self._ids) < used else np.zeros(0, np.int64)
        slots = np.concatenate([free, np.arange(used, used + n - len(free))]).astype(np.int64)
        self._reserve(used + n - len(free))
        rows_free = (-1 - self._levels[slots].astype(np.int64))  # upper rows a freed slot still owns
        levels = np.minimum(np.floor(-np.log1p(-self._rng.random(n)) * self._level_mult), MAX_LEVEL).astype(np.int64)
        fresh = levels > rows_free
        starts = self._n_up + np.concatenate([[0], np.cumsum(levels[fresh])[:-1]]).astype(np.int64)
        n_up = self._n_up + int(levels[fresh].sum())
        self._reserve_upper(n_up)
        uoff = self._uoff[slots].astype(np.int64)
        uoff[fresh] = starts
        up = levels > 0
        rows = np.repeat(uoff[up], levels[up])
        rows += np.arange(len(rows)) - np.repeat(np.cumsum(levels[up]) - levels[up], levels[up])
        self._put_rows(slots, x)
        return Placement(slots, ids, levels, starts, fresh, rows, self._ids.version, self.capacity, self._n_up, n_up,
                         self._ids.planned(ids, slots), len(free))

    def _freed(self) -> I64Vector:
        """The freed slots (levels < 0 below the used ones), ascending: listed by one O(n) scan
        the first time (a loaded graph), then kept up to date by ``_drop`` and ``_publish``,
        so placing rows after removals costs O(rows), not a scan of every slot per step."""
        if self._free_slots is None:
            self._free_slots = np.flatnonzero(self._levels[:self._ids.n_slots] < 0).astype(np.int64)
        return self._free_slots

    def _publish(self, p: "Placement") -> None:
        """Make a planned placement part of the index: levels, upper rows and ids (no links)."""
        self._uoff[p.slots[p.fresh]] = p.starts
        self._n_up = p.n_up
        self._adjU[p.upper_rows, 0] = 0
        self._levels[p.slots] = p.levels
        self._adj0[p.slots, 0] = 0
        if p.n_free and self._free_slots is not None:
            self._free_slots = self._free_slots[p.n_free:]
        if p.id_map is None:
            self._ids.assign(p.ids, p.slots)
        else:
            self._ids = p.id_map

    def _link(self, slots: I64Vector, pace: Pace | None = None) -> None:
        """Insert ``slots`` concurrently, in chunks so the progress bar can move (and, with
        ``pace``, so the caller can rest between them: ``_in_chunks``)."""
        show = self.progress if self.progress is not None else len(slots) >= PROGRESS_MIN
        scratch = self._scratch()
        locks = np.zeros(self.capacity + 1, np.int32)
        state = np.array([self._entry, self._max_level], np.int64)
        workers = numba.get_num_threads()
        with _progress_bar(show, len(slots)) as bar:
            def insert(lo: int, hi: int) -> None:
                graph_build.insert_nodes(slots[lo:hi], self._vecs, self._levels, self._adj0, self._adjU, self._uoff,
                                         self._metric_code, state, self.M, self.ef_construction, scratch[0],
                                         scratch[1], locks, workers)
                bar.update(hi - lo)

            _in_chunks(len(slots), insert, PROGRESS_CHUNK, pace)
        # entry first: a search reading the two in between starts at a node with that many levels
        self._entry, self._max_level = int(state[0]), int(state[1])
        self._give_back(scratch)
        self._unrepaired += len(slots)
        if self._unrepaired * REPAIR_BATCH_SHARE >= self._ids.n_slots:
            self._reconnect()

    def _reconnect(self) -> None:
        """Make every live node reachable from the entry point at layer 0 again (construction
        of a sparse graph leaves a few nodes no list links to; removals strand more): an
        O(n x M0) pass, run after removals and after batches large enough to pay for it.
        Safe while searches run (each write puts one valid node in one list entry). Not for
        inner product: there a low-norm point is nobody's neighbour by design, and links to it
        taken from the hubs that carry the search cost recall."""
        self._unrepaired = 0
        if self._entry >= 0 and self.metric is not Metric.IP:
            n = self._ids.n_slots
            graph_repair.reconnect(self._vecs, self._levels, self._adj0, n, self._entry, self._metric_code,
                                   np.zeros(n, np.uint8))

    def maintain(self) -> bool:
        """The background step of an owner that has caught up (a collection's indexer with
        nothing staged): the reachability repair (``_reconnect``) when the nodes linked or
        removed since the last one reach 1/``REPAIR_IDLE_SHARE`` of the graph, so a finished
        load ends repaired. Safe while searches run. Returns False: nothing more is due."""
        if self._unrepaired and self._unrepaired * REPAIR_IDLE_SHARE >= self._ids.n_slots:
            self._reconnect()
        return False

    def repair(self) -> None:
        """Reconnect nodes no search reaches (see ``_reconnect``): for an owner that changes
        the graph in adds too small to run it themselves (SPANN's head graph after a split)."""
        self._reconnect()

    def stored_rows(self) -> tuple[np.ndarray, I64Vector, int]:
        """(row of each slot, id of each slot (-1: free), kernel metric code the rows are
        compared with): views of the live arrays, for an owner that scans them exactly."""
        n = self._ids.n_slots
        return self._vecs[:n], self._ids.slot_ids, self._metric_code

    def unreachable(self) -> int:
        """How many stored points no search can reach (no path from the entry point at the
        bottom layer); 0 in a healthy graph. A diagnostic: an O(n) walk of the graph."""
        return int(graph_repair.unreached(self._levels, self._adj0, self._ids.n_slots, self._entry))

    # ---- search ---------------------------------------------------------------------
    def search_trusted(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                       params: SearchParams) -> SearchResult:
        """The base's ``search_trusted``, with the common case of a few queries in one kernel
        entry (``_serial``)."""
        res = self._serial(queries, k, allow, params, _NO_FOLD)
        return res if res is not None else super().search_trusted(queries, k, allow, tenant, params)

    def search_folded(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams, fold: FoldRows) -> SearchResult | None:
        """See ``BaseIndex.search_folded``: the rows are merged in by the one-kernel path's
        entry (``_serial``), for a few queries walked on the graph."""
        return self._serial(queries, k, allow, params, fold)

    def _serial(self, queries: F32Matrix, k: int, allow: AllowSet | None, params: SearchParams,
                fold: FoldRows) -> SearchResult | None:
        """A few queries in one kernel entry (normalisation, walk, id mapping, distance fix-up
        and ``fold``'s rows merged in): at small ef a one-query call is ~50 us, and the Python
        steps between kernels were a tenth of it. A filter the graph is walked under (not
        scanned exactly, see ``_search_slots``) goes the same way: e.g. a collection hiding
        the stale entries of replaced points from every search. None where the general path
        serves (more queries, an empty graph, stats collected, an exact scan)."""
        nq = len(queries)
        if nq >= SERIAL_QUERIES or nq == 0 or self._entry < 0 or not len(self._ids) or _STATS_SINK.get() is not None:
            return None
        p: HNSWParams = params  # type: ignore[assignment]
        ef = max(DEFAULT_EF if p.ef is None else p.ef, k)
        mask, filtered = NO_MASK, False
        if allow is not None:
            slots = self._slot_allow(allow)   # cached per allow-set: the base's call reuses it
            if not len(slots) or len(slots) < len(self._ids) and self._scans(p, len(slots), ef):
                return None
            if len(slots) < len(self._ids):
                mask, filtered = slots.bitmap(self._ids.n_slots), True
        idmap = self._ids
        ids = np.empty((nq, k), np.int64)
        dists = np.empty((nq, k), np.float32)
        work = np.empty((nq, 2), np.int64)
        scratch = self._scratch()
        graph.search_serial_ids(queries, k, ef, self._vecs, self._adj0, self._adjU, self._uoff, self._metric_code,
                                self._entry, self._max_level, scratch[0], scratch[1], mask, filtered,
                                self._cosine, _NO_IDS if idmap.is_identity else idmap.slot_ids,
                                _COSINE_SHIFT if self._cosine else 0.0, ids, dists, work, *fold)
        self._give_back(scratch)
        return SearchResult(ids, dists)

    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        p: HNSWParams = params  # type: ignore[assignment]
        ef = DEFAULT_EF if p.ef is None else p.ef
        if ef < k:
            ef = k
        sink = _STATS_SINK.get()
        if allow is not None and len(allow) >= len(self._ids):
            allow = None
        if allow is not None and self._scans(p, len(allow), ef):
            slots, dists = topk.scan_subset(queries, self._vecs, allow.ids, self._metric_code, k)
            if sink is not None:
                sink.append(SearchStats(np.full(len(queries), len(allow), np.int64), np.zeros(len(queries), np.int64), "scan"))
            return slots, dists
        mask = NO_MASK if allow is None else allow.bitmap(self._ids.n_slots)
        nq = len(queries)
        entry, max_level = self._entry, self._max_level
        if entry < 0:   # rows placed by begin_add, none linked yet: the graph has no entry point
            return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
        # outputs allocated here: a kernel that returns its three arrays costs ~3 us more per call
        slots = np.empty((nq, k), np.int64)
        dists = np.empty((nq, k), np.float32)
        work = np.empty((nq, 2), np.int64)
        scratch = self._scratch()
        if nq < SERIAL_QUERIES:
            graph.search_serial(queries, k, ef, self._vecs, self._adj0, self._adjU, self._uoff, self._metric_code,
                                entry, max_level, scratch[0], scratch[1], mask, allow is not None,
                                slots, dists, work)
        else:
            graph.search_batch(queries, k, ef, self._vecs, self._adj0, self._adjU, self._uoff, self._metric_code,
                               entry, max_level, scratch[0], scratch[1], mask, allow is not None,
                               slots, dists, work, numba.get_num_threads())
        self._give_back(scratch)
        if sink is not None:
            sink.append(SearchStats(work[:, graph.WORK_DISTANCES].copy(), work[:, graph.WORK_EXPANDED].copy(),
                                    "graph" if allow is None else "filtered-graph"))
        return slots, dists

    def search_with_stats(self, queries: Any, k: int, *, allow: Any = None,
                          **params: Any) -> tuple[SearchResult, SearchStats]:
        """``search`` (same arguments, checks and results) plus the work each query did, as
        counted by the kernels: what shows that a search visits a small part of the graph."""
        sink: list[SearchStats] = []
        token = _STATS_SINK.set(sink)
        try:
            result = self.search(queries, k, allow=allow, **params)
        finally:
            _STATS_SINK.reset(token)
        if sink:
            return result, sink[0]
        zeros = np.zeros(len(result.ids), np.int64)
        return result, SearchStats(zeros, zeros.copy(), "none")

    def _scans(self, p: HNSWParams, n_allowed: int, ef: int) -> bool:
        """Whether a filter admitting ``n_allowed`` slots is served by an exact scan of them
        (``filter_mode`` "scan", or "auto" and ``prefers_exact``) rather than a walk."""
        return p.filter_mode == "scan" or (p.filter_mode == "auto" and self.prefers_exact(n_allowed, ef))

    def prefers_exact(self, n_allowed: int, ef: int = DEFAULT_EF) -> bool:
        """True when a filter admitting ``n_allowed`` ids is searched by an exact scan of those
        ids rather than a filtered graph traversal (the cheaper one by estimated distance count).

        A filtered traversal has to walk about ef / selectivity nodes before its result list
        holds ef allowed ones; a scan costs one distance per allowed id.
        """
        n = max(len(self), 1)
        selectivity = max(n_allowed, 1) / n
        traversal = ef * 2 * self.M * FILTER_COST / selectivity
        return n_allowed <= traversal

    # ---- remove ---------------------------------------------------------------------
    def _remove(self, slots: I64Vector) -> None:
        self._drop(self._unlink(_NO_IDS, slots, defer_repair=False))

    def prepare_remove(self, ids: Any, pace: Pace | None = None) -> Removal:
        """The O(n) part of removing ``ids``, run while searches go on (no other change of this
        index meanwhile): they are taken out of every list that leads to them (see
        ``graph_build.unlink``) and the nodes left unreachable are linked again, at once when
        the nodes linked or removed since the last repair reach 1/``REPAIR_BATCH_SHARE`` of
        the graph or the entry point is among them, else later as after adds (``maintain``): a
        stream of small replacements pays that O(n) pass once per many batches (5,000 of 1M,
        idle: unlink ~0.85 s, the pass ~0.35 s, finding 0-3 nodes to link); below
        ``REPAIR_ALWAYS_BELOW`` nodes it always runs at once. They stay stored, and a
        search may still return them, until ``finish_remove`` frees them (the caller hides them
        meanwhile, as a collection's staging does). With ``pace``, the unlinking goes in
        chunks of nodes with ``pace`` called after each (``_in_chunks``)."""
        ids_arr = np.unique(as_id_array(ids))
        slots = self._ids.lookup(ids_arr)
        found = slots >= 0
        return self._unlink(ids_arr[found], slots[found], defer_repair=True, pace=pace)

    def finish_remove(self, ids: Any, prepared: Any = None) -> int:
        """Remove ``ids`` (caller keeps searches out): with ``prepared`` from ``prepare_remove``
        of the same ids, and the index unchanged since, only their slots are freed, O(ids);
        else the whole ``remove``. Returns how many were removed."""
        if not isinstance(prepared, Removal) or not self._unchanged(prepared.version, prepared.capacity):
            return self.remove(ids)
        self._ids.release(prepared.ids)
        self._drop(prepared)
        return int(len(prepared.slots))

    def _unlink(self, ids: I64Vector, slots: I64Vector, defer_repair: bool, pace: Pace | None = None) -> Removal:
        """Unlink ``slots`` (see ``graph_build.unlink``; with ``pace``, by ``_in_chunks`` of
        nodes) and repair reachability without them (``defer_repair``: only when due, see
        ``prepare_remove``); searches may run meanwhile. The entry point moves off them in
        ``_drop``."""
        self._writable()
        cap = self.capacity
        dead = np.zeros(cap, np.uint8)
        dead[slots] = 1
        entry, max_level = self._entry, self._max_level
        if len(slots):
            scratch = self._scratch()

            def unlink(lo: int, hi: int) -> None:
                graph_build.unlink(dead, self._vecs, self._levels, self._adj0, self._adjU, self._uoff,
                                   self._metric_code, self.M, scratch[0], scratch[1], lo, hi)

            _in_chunks(cap, unlink, cap, pace)
            self._give_back(scratch)
            n = self._ids.n_slots
            if entry >= 0 and dead[entry]:
                levels = np.where(dead[:n] == 0, self._levels[:n], -1)
                entry = int(np.argmax(levels)) if n and levels.max() >= 0 else -1
                max_level = int(levels[entry]) if entry >= 0 else -1
            due = (not defer_repair or entry != self._entry or n < REPAIR_ALWAYS_BELOW
                   or (self._unrepaired + len(slots)) * REPAIR_BATCH_SHARE >= n)
            if not due:
                return Removal(ids, slots, entry, max_level, self._ids.version, self.capacity, False)
            if entry >= 0 and self.metric is not Metric.IP:   # see _reconnect
                graph_repair.reconnect(self._vecs, self._levels, self._adj0, n, entry, self._metric_code, dead[:n])
        return Removal(ids, slots, entry, max_level, self._ids.version, self.capacity, True)

    def _drop(self, removal: Removal) -> None:
        """Free unlinked slots (their ids released already): lists emptied, levels marked free,
        the entry point moved off them. O(slots): the exclusive part of a removal."""
        if not len(removal.slots):
            return
        graph_build.drop_nodes(removal.slots, self._levels, self._adj0, self._adjU, self._uoff)
        if self._free_slots is not None:
            self._free_slots = np.union1d(self._free_slots, removal.slots).astype(np.int64)
        self._entry, self._max_level = removal.entry, removal.max_level
        self._unrepaired = 0 if removal.repaired else self._unrepaired + len(removal.slots)

    # ---- persistence ----------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """``BaseIndex.save``, after the reachability repair if one is owed (``prepare_remove``
        and small adds defer it): a saved graph has every stored point reachable, as the
        count of what is owed is not saved with it."""
        if self._unrepaired:
            self._reconnect()
        super().save(path)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        n = self._ids.n_slots
        params = {"M": self.M, "ef_construction": self.ef_construction, "seed": self.seed}
        header = np.array([self._entry, self._max_level, self._n_up], np.int64)
        arrays = {"vectors": self._vecs[:n], "levels": self._levels[:n], "adj0": self._adj0[:n],
                  "uoff": self._uoff[:n], "adj_upper": self._adjU[: max(self._n_up, 1)], "header": header}
        return params, arrays

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> "HNSW":
        index = cls(dim, metric, M=int(params["M"]), ef_construction=int(params["ef_construction"]),
                    seed=int(params["seed"]))
        n = len(arrays["slot_ids"])
        expect = {"vectors": (n, dim), "levels": (n,), "adj0": (n, 2 * index.M + 1), "uoff": (n,), "header": (3,)}
        for name, shape in expect.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{name} array has shape {arrays[name].shape}, expected {shape}")
        if arrays["adj_upper"].ndim != 2 or arrays["adj_upper"].shape[1] != index.M + 1:
            raise ValueError(f"adj_upper array has shape {arrays['adj_upper'].shape}, expected (rows, {index.M + 1})")
        entry, max_level, n_up = (int(v) for v in arrays["header"])
        if not (-1 <= entry < max(n, 1)) or n_up > len(arrays["adj_upper"]):
            raise ValueError("header (entry point, levels) is inconsistent with the arrays")
        index._vecs = np.asarray(arrays["vectors"])
        index._levels = np.asarray(arrays["levels"])
        index._adj0 = np.asarray(arrays["adj0"])
        index._uoff = np.asarray(arrays["uoff"])
        index._adjU = np.asarray(arrays["adj_upper"])
        index._entry, index._max_level, index._n_up = entry, max_level, n_up
        index._rng = np.random.default_rng([index.seed, n])
        return index

    def _memory_bytes(self) -> int:
        arrays = [self._vecs, self._levels, self._adj0, self._uoff, self._adjU]
        arrays += [a for scratch in self._pool for a in scratch]
        return int(sum(a.nbytes for a in arrays))


class _NoBar:
    """Stands in for a tqdm bar that is not shown (tqdm, ~5 MB, is only imported to show one)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(show: bool, total: int) -> Any:
    """A tqdm bar over ``total`` vectors when ``show``, else a silent stand-in."""
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="hnsw add", unit="vec", mininterval=1.0)


def _in_chunks(n: int, run: Callable[[int, int], None], chunk: int, pace: Pace | None) -> None:
    """``run(lo, hi)`` over the items ``0:n`` in chunks of ``chunk`` items; with ``pace``,
    each chunk is followed by ``pace(seconds it took)``, and while the pace rests the chunks
    are sized to take about ``PACE_SECONDS`` (while it does not, they double up to ``chunk``:
    many small parallel calls would slow the work down; the first one is small). The seconds
    are the calling thread's CPU time, which its share of the parallel work takes: a chunk
    whose thread was preempted by searches meanwhile took no more of the memory than its work
    needs, and resting for the wall time would starve the work under a full search load."""
    if pace is None:
        for lo in range(0, n, chunk):
            run(lo, min(n, lo + chunk))
        return
    lo, size = 0, 8
    while lo < n:
        hi = min(n, lo + size)
        start = time.thread_time()
        run(lo, hi)
        took = time.thread_time() - start
        lo = hi
        if pace(took) > 0:
            size = max(1, min(2 * size, int(size * PACE_SECONDS / max(took, 1e-6))))
        else:
            size = min(chunk, 2 * size)


def _grown(arr: np.ndarray, cap: int, used: int, fill: int) -> np.ndarray:
    """Copy of the first ``used`` rows of ``arr`` in an array of ``cap`` rows, rest = ``fill``."""
    out = np.full((cap,) + arr.shape[1:], fill, arr.dtype)
    out[:used] = arr[:used]
    return out
