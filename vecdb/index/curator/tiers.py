"""Automatic tiering of a Curator index: a tenant whose membership grows to ``threshold``
vectors is promoted to its own HNSW graph over its members (ids = the Curator's slots), and
demoted back to the shared tree when it shrinks below half of that. The tenant's shortlists
are kept either way, so demotion only drops the graph; membership stays exact in the
Curator's chains, and graph answers are checked against them before they are returned."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.index.allow import AllowSet
from vecdb.index.hnsw import HNSW
from vecdb.index.ids import IdMap
from vecdb.types import F32Matrix, I64Vector, Metric

_GRAPH_ARRAYS = ("vectors", "levels", "adj0", "uoff", "adj_upper", "header", "slot_ids")


class Tiers:
    """The tenants served by their own HNSW (see the module docstring). ``threshold`` 0 turns
    tiering off; ``metric`` is the graph's metric (ip for a cosine Curator: rows are unit)."""

    def __init__(self, dim: int, metric: Metric, threshold: int, M: int, ef_construction: int, seed: int) -> None:
        self.dim, self.metric = dim, metric
        self.threshold, self.M, self.ef_construction, self.seed = threshold, M, ef_construction, seed
        self.graphs: dict[int, HNSW] = {}

    def __contains__(self, tenant: int) -> bool:
        return tenant in self.graphs

    def _new_graph(self) -> HNSW:
        return HNSW(self.dim, self.metric, M=self.M, ef_construction=self.ef_construction, seed=self.seed,
                    progress=False)

    def grew(self, tenant: int, new: I64Vector, size: int, rows: np.ndarray, members: Any) -> None:
        """``new`` slots joined ``tenant`` (now ``size`` members): add them to its graph, or
        promote it once it reaches the threshold (``members()`` gives every member slot)."""
        graph = self.graphs.get(tenant)
        if graph is not None:
            if len(new):
                graph.add(rows[new], new)
        elif self.threshold and size >= self.threshold:
            slots = np.sort(members())
            graph = self._new_graph()
            graph.reserve(len(slots))
            graph.add(rows[slots], slots)
            self.graphs[tenant] = graph

    def shrank(self, tenant: int, gone: I64Vector, size: int) -> None:
        """``gone`` slots left ``tenant`` (now ``size`` members): take them out of its graph,
        or demote it below half the threshold."""
        graph = self.graphs.get(tenant)
        if graph is None:
            return
        if size < self.threshold // 2 or size == 0:
            del self.graphs[tenant]
        elif len(gone):
            graph.remove(gone)

    def drop(self, tenant: int) -> None:
        self.graphs.pop(tenant, None)

    def search(self, tenant: int, queries: F32Matrix, k: int, allow: AllowSet | None,
               ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k Curator slots and kernel distances from the tenant's graph."""
        graph = self.graphs[tenant]
        res = graph.search_trusted(queries, k, allow, None, graph.resolve_params({} if ef is None else {"ef": ef}))
        return res.ids, res.distances

    def nbytes(self) -> int:
        return int(sum(g.memory_bytes() for g in self.graphs.values()))

    # ---- persistence ----------------------------------------------------------------
    def state(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """(tenants with a graph, their graphs' arrays as ``tier<t>.<name>``)."""
        arrays: dict[str, np.ndarray] = {}
        for tenant, graph in sorted(self.graphs.items()):
            _, own = graph._state()
            own = dict(own, slot_ids=graph._ids.slot_ids)
            arrays.update({f"tier{tenant}.{name}": own[name] for name in _GRAPH_ARRAYS})
        return sorted(self.graphs), arrays

    def restore(self, tenants: list[int], arrays: dict[str, np.ndarray]) -> None:
        """Graphs from ``state`` (ValueError / KeyError when arrays are missing or malformed)."""
        for tenant in tenants:
            own = {name: np.asarray(arrays[f"tier{tenant}.{name}"]) for name in _GRAPH_ARRAYS}
            graph = HNSW._from_state(self.dim, self.metric, {"M": self.M, "ef_construction": self.ef_construction,
                                                             "seed": self.seed}, own)
            slot_ids = np.asarray(own["slot_ids"], np.int64)
            if slot_ids.ndim != 1 or len(np.unique(slot_ids[slot_ids >= 0])) != int((slot_ids >= 0).sum()):
                raise ValueError(f"tier graph of tenant {tenant} has a malformed id map")
            graph._ids = IdMap(slot_ids)
            self.graphs[int(tenant)] = graph

    def check(self, tenant_slots: dict[int, np.ndarray], rows: np.ndarray) -> None:
        """ValueError unless each graph holds exactly its tenant's member slots, with their rows."""
        for tenant, graph in self.graphs.items():
            want = np.sort(tenant_slots.get(tenant, np.zeros(0, np.int64)))
            got = np.sort(graph.ids)
            if not np.array_equal(got, want):
                raise ValueError(f"the graph of tenant {tenant} holds other slots than its members")
            if len(want) and not np.array_equal(graph._vecs[graph._ids.lookup(want)], rows[want]):
                raise ValueError(f"the graph of tenant {tenant} holds other vectors than its members'")
