"""Automatic tiering of a Curator index: a tenant whose membership grows to ``threshold``
vectors is promoted to its own HNSW graph over its members (ids = the Curator's slots), and
demoted back to the shared tree when it shrinks below half of that. The tenant's shortlists
are kept either way, so demotion only drops the graph; membership stays exact in the
Curator's chains, and graph answers are checked against them before they are returned.

A tenant's graph stores no vectors: node ``i`` reads the Curator's row ``slot_ids[i]`` (its
id) through the graph kernels' mapped row source, so tiering costs only the links. Links are
stored in the narrowest type that numbers the graph's nodes (uint16 up to ``NARROW_NODES``
nodes, int32 beyond: the kernels compile per type), halving them for all but the largest
tenants, and the graphs share one pool of visited marks (one per concurrent search, sized to
the largest graph) instead of keeping one each."""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

from vecdb.index.allow import AllowSet
from vecdb.index.base import SearchParams
from vecdb.index.curator import search as kernels
from vecdb.index.curator.members import Memberships
from vecdb.index.hnsw import _GROWTH, HNSW, _grown
from vecdb.index.ids import IdMap
from vecdb.types import F32Matrix, I64Vector, Metric

_GRAPH_ARRAYS = ("levels", "adj0", "uoff", "adj_upper", "header", "slot_ids")
#: most nodes a graph numbers with uint16 links (nodes 0..65,535); a graph growing past it
#: is widened to int32 once.
NARROW_NODES = 1 << 16
_NARROW, _WIDE = np.dtype(np.uint16), np.dtype(np.int32)


class SharedScratch:
    """Visited marks (HNSW's per-thread rows and tags) shared by every tier graph of one
    Curator: a row sized to the largest graph serves a smaller one too (its marks are tags
    below the next search's), so memory is one scratch per concurrent search, not per graph."""

    def __init__(self) -> None:
        self._free: list[tuple[np.ndarray, np.ndarray]] = []

    def take(self, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """A scratch with rows of at least ``cap`` marks (a fresh one when none is free)."""
        free = self._free
        while free:
            try:
                scratch = free.pop()
            except IndexError:                          # a concurrent caller took the last one
                break
            if scratch[0].shape[1] >= cap:
                return scratch
        rows = numba.config.NUMBA_NUM_THREADS
        return np.zeros((rows, cap), np.uint16), np.zeros(rows, np.uint16)

    def give(self, scratch: tuple[np.ndarray, np.ndarray]) -> None:
        if len(self._free) < 4:
            self._free.append(scratch)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for scratch in list(self._free) for a in scratch))


class SlotGraph(HNSW):
    """An HNSW graph whose ids are slots of an owner's row matrix and whose nodes read those
    rows in place (``bind(rows)`` before each use: the owner reallocates its rows when it
    grows). Adds take slots, not vectors (``add_slots``); searches with ``allow`` must use
    ``filter_mode="graph"`` (the exact scan reads a row matrix of its own). Links are uint16
    while the capacity is at most ``narrow_nodes``, int32 after (see the module docstring);
    visited marks come from ``scratch``, shared with the owner's other graphs."""

    narrow_nodes = NARROW_NODES

    def __init__(self, *args: Any, scratch: SharedScratch | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._adj0 = self._adj0.astype(_NARROW)
        self._adjU = self._adjU.astype(_NARROW)
        self._shared = SharedScratch() if scratch is None else scratch

    @property
    def link_dtype(self) -> np.dtype:
        """uint16 or int32: the type of the stored links."""
        return self._adj0.dtype

    def _reserve(self, n: int) -> None:
        """HNSW's geometric growth, held at ``narrow_nodes`` while ``n`` fits narrow links;
        beyond it the links are widened to int32 (once)."""
        if n <= self.capacity:
            return
        narrow = self._adj0.dtype == _NARROW
        cap = max(n, int(self.capacity * _GROWTH), 16)
        if narrow and n <= self.narrow_nodes:
            cap = min(cap, self.narrow_nodes)
        used = self._ids.n_slots
        self._levels = _grown(self._levels, cap, used, -1)
        self._adj0 = _grown(self._adj0, cap, used, 0)
        self._uoff = _grown(self._uoff, cap, used, -1)
        if narrow and cap > self.narrow_nodes:
            self._adj0, self._adjU = self._adj0.astype(_WIDE), self._adjU.astype(_WIDE)

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        return self._shared.take(self._levels.shape[0])

    def _give_back(self, scratch: tuple[np.ndarray, np.ndarray]) -> None:
        self._shared.give(scratch)

    def bind(self, rows: np.ndarray) -> None:
        """Read node vectors from ``rows`` (the owner's current matrix) from now on."""
        self._rows = rows
        self._vecs = (rows, self._ids.slot_ids)

    def search_slots(self, queries: F32Matrix, k: int, params: SearchParams,
                     rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered top-k owner slots and kernel distances of prepared ``queries`` over
        ``rows`` (HNSW's ``search_trusted`` minus what a graph of slots needs not: the metric
        takes the rows as they are, and the graph is never empty while promoted)."""
        if self._rows is not rows:
            self.bind(rows)
        slots, dists = self._search_slots(queries, k, None, None, params)
        return self._ids.ids_of(slots), dists

    @property
    def linked(self) -> bool:
        """True once the graph has an entry point (what ``search_members`` needs)."""
        return self._entry >= 0

    def search_members(self, queries: F32Matrix, k: int, ef: int, rows: np.ndarray, unit: bool, tenant: int,
                       members: Memberships, slot_ids: np.ndarray, shift: np.float32, ids: np.ndarray,
                       dists: np.ndarray) -> None:
        """The owner's whole answer for a few raw (not normalised: ``unit`` for cosine)
        ``queries`` of ``tenant`` in one kernel call (``graph_members``): the walk at beam width
        ``ef`` (raised to k), members checked, into ``ids`` (owner ids through ``slot_ids``) and
        ``dists`` (final: + ``shift``), both (nq, k). The graph must be ``linked``."""
        if self._rows is not rows:
            self.bind(rows)
        work = np.empty((len(queries), 2), np.int64)
        scratch = self._scratch()
        kernels.graph_members(queries, k, max(ef, k), self._vecs, self._adj0, self._adjU, self._uoff,
                              self._metric_code, self._entry, self._max_level, scratch[0], scratch[1], unit, tenant,
                              members.head, members.cell_tenant, members.cell_next, slot_ids, shift, ids, dists, work)
        self._give_back(scratch)

    def add_slots(self, slots: I64Vector, rows: np.ndarray) -> None:
        """Link the owner's ``slots`` (new to the graph; their rows already in ``rows``). Nodes
        are numbered in the order given, but linked in a seeded random order: the owner's
        slots follow its clustering, and an HNSW built one cluster after another links worse."""
        self._rows = rows
        placed = self._place(np.empty((len(slots), 0), np.float32), np.asarray(slots, np.int64))
        self.bind(rows)                                 # the id map may have grown with the new ids
        self._link(placed[self._rng.permutation(len(placed))])

    def remove_slots(self, slots: I64Vector, rows: np.ndarray) -> None:
        self.bind(rows)
        self.remove(slots)

    def _grow_rows(self, cap: int, used: int) -> None:
        return None                                     # the rows live in the owner's matrix

    def _put_rows(self, slots: I64Vector, x: F32Matrix) -> None:
        return None

    def _writable(self) -> None:
        for name in ("_levels", "_adj0", "_uoff", "_adjU"):
            arr = getattr(self, name)
            if not arr.flags.writeable:
                setattr(self, name, np.array(arr))

    def _memory_bytes(self) -> int:
        """Links, levels and upper offsets (the shared scratch is the owner's ``Tiers``')."""
        return int(sum(a.nbytes for a in (self._levels, self._adj0, self._uoff, self._adjU)))

    def graph_arrays(self) -> dict[str, np.ndarray]:
        """The links and the id map (no vectors), named as ``from_arrays`` reads them."""
        n = self._ids.n_slots
        header = np.array([self._entry, self._max_level, self._n_up], np.int64)
        return {"levels": self._levels[:n], "adj0": self._adj0[:n], "uoff": self._uoff[:n],
                "adj_upper": self._adjU[: max(self._n_up, 1)], "header": header, "slot_ids": self._ids.slot_ids}

    @classmethod
    def from_arrays(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray],
                    rows: np.ndarray, scratch: SharedScratch | None = None) -> "SlotGraph":
        """The graph ``graph_arrays`` saved, reading ``rows`` (ValueError when malformed).
        Links saved wide (int32) for a graph that fits narrow ones are narrowed."""
        slot_ids = np.asarray(arrays["slot_ids"], np.int64)
        n = len(slot_ids)
        live = slot_ids[slot_ids >= 0]
        if slot_ids.ndim != 1 or len(np.unique(live)) != len(live) or (live >= len(rows)).any():
            raise ValueError("a tier graph has a malformed id map")
        links = {name: np.asarray(arrays[name]) for name in ("adj0", "adj_upper")}
        kinds = {a.dtype for a in links.values()}
        if len(kinds) != 1 or not kinds <= {_NARROW, _WIDE}:
            raise ValueError(f"a tier graph's links must be both uint16 or both int32, got {sorted(map(str, kinds))}")
        if n <= cls.narrow_nodes:
            if _WIDE in kinds:
                if any(len(a) and (a.min() < 0 or a.max() >= cls.narrow_nodes) for a in links.values()):
                    raise ValueError("a tier graph's links name nodes it does not have")
                links = {name: a.astype(_NARROW) for name, a in links.items()}
        elif _NARROW in kinds:
            raise ValueError(f"a tier graph of {n} nodes has uint16 links")
        # HNSW's loader checks a vector array's shape: a zero-stride stand-in (no memory) passes it
        stand_in = np.broadcast_to(np.zeros((1, dim), np.float32), (n, dim))
        graph = super()._from_state(dim, metric, params, dict(arrays, vectors=stand_in, **links))
        assert isinstance(graph, SlotGraph)
        if scratch is not None:
            graph._shared = scratch
        graph._ids = IdMap(slot_ids)
        graph.bind(rows)
        return graph


class Tiers:
    """The tenants served by their own HNSW (see the module docstring). ``threshold`` 0 turns
    tiering off; ``metric`` is the graph's metric (ip for a cosine Curator: rows are unit)."""

    def __init__(self, dim: int, metric: Metric, threshold: int, M: int, ef_construction: int, seed: int) -> None:
        self.dim, self.metric = dim, metric
        self.threshold, self.M, self.ef_construction, self.seed = threshold, M, ef_construction, seed
        self.graphs: dict[int, SlotGraph] = {}
        self.scratch = SharedScratch()
        self._params: dict[int | None, SearchParams] = {}          # resolved graph knobs per ef

    def __contains__(self, tenant: int) -> bool:
        return tenant in self.graphs

    def _new_graph(self) -> SlotGraph:
        return SlotGraph(self.dim, self.metric, M=self.M, ef_construction=self.ef_construction, seed=self.seed,
                         progress=False, scratch=self.scratch)

    def grew(self, tenant: int, new: I64Vector, size: int, rows: np.ndarray, members: Any) -> None:
        """``new`` slots joined ``tenant`` (now ``size`` members): add them to its graph, or
        promote it once it reaches the threshold (``members()`` gives every member slot)."""
        graph = self.graphs.get(tenant)
        if graph is not None:
            if len(new):
                graph.add_slots(new, rows)
        elif self.threshold and size >= self.threshold:
            slots = np.sort(members())
            graph = self._new_graph()
            graph.reserve(len(slots))
            graph.add_slots(slots, rows)
            self.graphs[tenant] = graph

    def shrank(self, tenant: int, gone: I64Vector, size: int, rows: np.ndarray) -> None:
        """``gone`` slots left ``tenant`` (now ``size`` members): take them out of its graph,
        or demote it below half the threshold."""
        graph = self.graphs.get(tenant)
        if graph is None:
            return
        if size < self.threshold // 2 or size == 0:
            del self.graphs[tenant]
        elif len(gone):
            graph.remove_slots(gone, rows)

    def drop(self, tenant: int) -> None:
        self.graphs.pop(tenant, None)

    def search(self, tenant: int, queries: F32Matrix, k: int, allow: AllowSet | None, ef: int | None,
               rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k Curator slots and kernel distances from the tenant's graph over ``rows`` (a
        filter is always served by a filtered traversal: see ``SlotGraph``)."""
        graph = self.graphs[tenant]
        params = self._params.get(ef)
        if params is None:
            if len(self._params) >= 64:                 # a sweep over many ef values: start again
                self._params.clear()
            knobs = {"filter_mode": "graph"} if ef is None else {"ef": ef, "filter_mode": "graph"}
            params = self._params[ef] = graph.resolve_params(knobs)
        if allow is None and len(graph):
            return graph.search_slots(queries, k, params, rows)
        graph.bind(rows)
        res = graph.search_trusted(queries, k, allow, None, params)
        return res.ids, res.distances

    def prefers_exact(self, tenant: int, n_allowed: int, ef: int | None) -> bool:
        """True when a filter admitting ``n_allowed`` of the tenant's members is cheaper to
        scan exactly than to traverse the tenant's graph for (HNSW's estimate)."""
        graph = self.graphs[tenant]
        return graph.prefers_exact(n_allowed) if ef is None else graph.prefers_exact(n_allowed, ef)

    def nbytes(self) -> int:
        """The graphs' links, levels and id maps, and the shared visited marks."""
        return int(sum(g.memory_bytes() for g in self.graphs.values()) + self.scratch.nbytes())

    def parts(self) -> dict[str, int]:
        """``nbytes`` by part: links, levels (and upper-row offsets), id maps, visited marks."""
        graphs = list(self.graphs.values())
        return {"tier_links": sum(g._adj0.nbytes + g._adjU.nbytes for g in graphs),
                "tier_levels": sum(g._levels.nbytes + g._uoff.nbytes for g in graphs),
                "tier_ids": sum(g._ids.memory_bytes() for g in graphs), "tier_scratch": self.scratch.nbytes()}

    # ---- persistence ----------------------------------------------------------------
    def state(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """(tenants with a graph, their graphs' arrays as ``tier<t>.<name>``)."""
        arrays: dict[str, np.ndarray] = {}
        for tenant, graph in sorted(self.graphs.items()):
            arrays.update({f"tier{tenant}.{name}": arr for name, arr in graph.graph_arrays().items()})
        return sorted(self.graphs), arrays

    def restore(self, tenants: list[int], arrays: dict[str, np.ndarray], rows: np.ndarray) -> None:
        """Graphs from ``state`` over ``rows`` (ValueError / KeyError when arrays are missing or
        malformed)."""
        params = {"M": self.M, "ef_construction": self.ef_construction, "seed": self.seed}
        for tenant in tenants:
            own = {name: np.asarray(arrays[f"tier{tenant}.{name}"]) for name in _GRAPH_ARRAYS}
            graph = SlotGraph.from_arrays(self.dim, self.metric, params, own, rows, self.scratch)
            graph.progress = False
            self.graphs[int(tenant)] = graph

    def check(self, tenant_slots: dict[int, np.ndarray]) -> None:
        """ValueError unless each graph holds exactly its tenant's member slots."""
        for tenant, graph in self.graphs.items():
            want = np.sort(tenant_slots.get(tenant, np.zeros(0, np.int64)))
            got = np.sort(graph.ids)
            if not np.array_equal(got, want):
                raise ValueError(f"the graph of tenant {tenant} holds other slots than its members")
