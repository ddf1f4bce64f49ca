"""Curator: a multi-tenant index (after Jin et al., "Curator: Efficient Indexing for
Multi-Tenant Vector Databases", 2024). One clustering tree is shared by every tenant; each
tenant keeps shortlists of its members at the nodes where it has few, so a tenant search
walks only that tenant's sub-tree. Vectors are stored once however many tenants share them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.index.allow import NO_MASK, AllowSet
from vecdb.index.base import BaseIndex, SearchParams
from vecdb.index.curator import search as kernels
from vecdb.index.curator.members import Memberships, member_mask
from vecdb.index.curator.tenants import TenantLists
from vecdb.index.curator.tiers import Tiers
from vecdb.index.curator.tree import TREE_ARRAYS, ClusterTree, train_tree
from vecdb.index.hnsw import DEFAULT_EF, MAX_EF
from vecdb.quant.sq8 import SQ8
from vecdb.types import F32Matrix, I64Vector, Metric, SearchResult
from vecdb.validation import as_id_array, as_positive_int

#: candidates scanned per query when the call names no ``budget`` (raised to k).
DEFAULT_BUDGET = 2048
MAX_BUDGET = 1 << 40
#: below this many queries the serial kernel runs (no parallel-region launch per call).
SERIAL_QUERIES = 4
_GROWTH = 1.5
#: stand-ins for the code arguments of a float scan
_NO_CODES = np.zeros((1, 1), np.uint8)
_NO_FOLD = np.zeros((1, 1), np.float32)
_NO_WEIGHTS = np.zeros(1, np.float32)
_NO_IDS = np.zeros(0, np.int64)   # the kernels' slot -> id map under the identity layout
#: candidates re-ranked on float rows per query when the scan reads codes: this many times k
RERANK_FACTOR = 4
CODES = ("float", "sq8")
#: tenant number under which the shortlists of every stored vector (the admin view) are saved.
_ALL = -1


@dataclass(frozen=True)
class CuratorParams(SearchParams):
    """Curator search knobs: ``budget``, the candidates scanned per query before the walk
    stops (None = ``DEFAULT_BUDGET``; raised to k), higher raising recall and cost; ``ef``,
    the beam width of a tenant promoted to its own HNSW (None = HNSW's default); ``rerank``,
    with ``codes="sq8"`` the candidates best by code whose float rows are scored again (None =
    ``RERANK_FACTOR`` * k; raised to k)."""

    budget: int | None = None
    ef: int | None = None
    rerank: int | None = None

    def __post_init__(self) -> None:
        if self.budget is not None:
            object.__setattr__(self, "budget", as_positive_int(self.budget, "budget", maximum=MAX_BUDGET))
        if self.ef is not None:
            object.__setattr__(self, "ef", as_positive_int(self.ef, "ef", maximum=MAX_EF))
        if self.rerank is not None:
            object.__setattr__(self, "rerank", as_positive_int(self.rerank, "rerank", maximum=MAX_EF))


class Curator(BaseIndex):
    """Multi-tenant approximate k-NN over a shared hierarchical k-means tree.

    Parameters
    ----------
    dim, metric : vector dimension; "l2", "ip" or "cosine".
    n_root : clusters at the root (the paper uses 16-48). >= 2.
    branching : clusters per node below the root. >= 2.
    max_depth : levels below the root, at most. >= 1.
    max_shortlist : most members a tenant keeps at one inner node before the shortlist
        splits into the children (64-256 in the paper); merged back at half of it.
    min_points_per_centroid : a node whose training sample gives fewer points per child
        stays a leaf.
    n_iter, seed : k-means iterations per node and seed.
    tier_threshold : members at which a tenant is promoted to its own HNSW graph (demoted
        below half of it); 0 (the default) keeps every tenant in the shared tree.
    tier_M, tier_ef_construction : build knobs of those graphs.
    codes : "float" (the default) scans candidates' float rows; "sq8" scans their SQ8 codes
        (a quarter of the bytes per candidate, trained with the tree) and re-ranks the best
        ``rerank`` on float rows; the codes cost ``dim`` bytes per vector more.

    Needs training (``train(sample)`` before ``add``). Tenants: ``add(..., tenant=)``,
    ``grant``, ``revoke``, ``drop_tenant``; ``search(q, k, tenant=t)`` sees only t's members
    (with ``allow=`` as a further filter), ``search(q, k, tenant=(t1, t2))`` the union of
    several tenants' members (each vector once), ``search`` without a tenant every vector.
    Membership is a relation over ids: a removed id keeps its tenants, and they apply again
    if it is added back (a collection replaces a point by remove + add); grants of ids not
    stored are kept the same way. Search knobs (``CuratorParams``): ``budget`` (candidates
    scanned in the tree) and ``ef`` (beam width for a promoted tenant's graph).
    """

    kind = "curator"
    params_type = CuratorParams
    needs_training = True
    tenant_aware = True
    multi_tenant_search = True

    def __init__(self, dim: int, metric: Metric | str = Metric.L2, *, n_root: int = 32, branching: int = 8,
                 max_depth: int = 3, max_shortlist: int = 128, min_points_per_centroid: int = 8, n_iter: int = 20,
                 seed: int = 0, tier_threshold: int = 0, tier_M: int = 16, tier_ef_construction: int = 100,
                 codes: str = "float") -> None:
        super().__init__(dim, metric)
        self.n_root = as_positive_int(n_root, "n_root", minimum=2, maximum=65_536)
        self.branching = as_positive_int(branching, "branching", minimum=2, maximum=65_536)
        self.max_depth = as_positive_int(max_depth, "max_depth", minimum=1, maximum=16)
        self.max_shortlist = as_positive_int(max_shortlist, "max_shortlist", minimum=2, maximum=1 << 20)
        self.min_points_per_centroid = as_positive_int(min_points_per_centroid, "min_points_per_centroid")
        self.n_iter = as_positive_int(n_iter, "n_iter", maximum=1000)
        self.seed = as_positive_int(seed, "seed", minimum=0, maximum=2**31 - 1)
        self._tree_metric = Metric.IP.code if self.metric is Metric.IP else Metric.L2.code
        self._scan_metric = Metric.L2.code if self.metric is Metric.L2 else Metric.IP.code
        self._tree: ClusterTree | None = None
        self._rows = np.zeros((0, self.dim), np.float32)
        if codes not in CODES:
            raise InvalidArgumentError(f"codes must be one of {', '.join(CODES)}, got {codes!r}")
        self.codes = codes
        self._codec = SQ8(self.dim) if codes == "sq8" else None
        self._codes = np.zeros((0, self.dim if codes == "sq8" else 0), np.uint8)
        self._leaf = np.full(0, -1, np.int32)
        self._members = Memberships()
        self._tenants: dict[int, TenantLists] = {}
        self._all = TenantLists()
        self._pending: dict[int, set[int]] = {}
        #: tenant -> (its view, its TenantLists, the view's member-checked slots): ``_lean_entry``
        self._lean: dict[int, tuple[Any, TenantLists, np.ndarray]] = {}
        self._shift = np.float32(1.0 if self.metric is Metric.COSINE else 0.0)
        self.tier_threshold = as_positive_int(tier_threshold, "tier_threshold", minimum=0)
        self.tier_M = as_positive_int(tier_M, "tier_M", minimum=2, maximum=1024)
        self.tier_ef_construction = as_positive_int(tier_ef_construction, "tier_ef_construction", maximum=MAX_EF)
        self._tiers = Tiers(self.dim, Metric.L2 if self.metric is Metric.L2 else Metric.IP, self.tier_threshold,
                            self.tier_M, self.tier_ef_construction, self.seed)

    # ---- training -------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        """True once the clustering tree is built; ``add`` requires it."""
        return self._tree is not None

    @property
    def min_train_points(self) -> int:
        """Points a collection gathers before training: 39 per root cluster, at least 1000."""
        return max(1000, 39 * self.n_root)

    def _train(self, sample: F32Matrix) -> None:
        """Build the tree from prepared sample rows; only while the index is empty (stored
        vectors would sit in leaves of the old tree)."""
        if len(self._ids):
            raise FailedPreconditionError(f"Curator already holds {len(self)} vectors; train before adding")
        self._tree = train_tree(sample, self._tree_metric, n_root=self.n_root, branching=self.branching,
                                max_depth=self.max_depth, min_points_per_centroid=self.min_points_per_centroid,
                                n_iter=self.n_iter, seed=self.seed)
        if self._codec is not None:
            self._codec.train(sample)

    @property
    def tree(self) -> ClusterTree:
        """The clustering tree (FailedPreconditionError before training)."""
        if self._tree is None:
            raise FailedPreconditionError("Curator is not trained; call train(vectors) before add")
        return self._tree

    # ---- capacity -------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Grow the row store to ``n`` slots now (see ``BaseIndex.reserve``)."""
        if n > len(self._leaf):
            cap = max(n, int(len(self._leaf) * _GROWTH), 16)
            rows = np.zeros((cap, self.dim), np.float32)
            used = self._ids.n_slots
            rows[:used] = self._rows[:used]
            if self._codec is not None:
                codes = np.zeros((cap, self.dim), np.uint8)
                codes[:used] = self._codes[:used]
                self._codes = codes
            leaf = np.full(cap, -1, np.int32)
            leaf[:used] = self._leaf[:used]
            self._rows, self._leaf = rows, leaf
            self._members.reserve_slots(cap)

    # ---- vectors --------------------------------------------------------------------
    def _add(self, vectors: F32Matrix, ids: I64Vector) -> None:
        tree = self.tree
        n = len(vectors)
        used = self._ids.n_slots
        free = np.flatnonzero(self._leaf[:used] < 0)[:n]
        slots = np.concatenate([free, np.arange(used, used + n - len(free))]).astype(np.int64)
        self.reserve(used + n - len(free))
        leaves = tree.leaves_of(vectors)
        # the batch's rows in leaf order get ascending slots: a shortlist's rows (and a tier
        # graph's neighbours) then lie close together in the row matrix, not scattered over it
        by_leaf = np.empty_like(slots)
        by_leaf[np.argsort(leaves, kind="stable")] = slots
        slots = by_leaf
        if not self._rows.flags.writeable:
            self._rows = np.array(self._rows)
        self._rows[slots] = vectors
        if self._codec is not None:
            self._codes[slots] = self._codec.encode(vectors)
        self._leaf[slots] = leaves
        self._ids.assign(ids, slots)
        self._all.insert(slots, leaves, tree, self._leaf, self.max_shortlist)
        if self._pending:
            back: dict[int, list[int]] = {}
            for ident, slot in zip(ids.tolist(), slots.tolist()):
                for tenant in self._pending.pop(ident, ()):
                    back.setdefault(tenant, []).append(slot)
            for tenant, got in sorted(back.items()):
                self._place(tenant, np.array(got, np.int64))

    def remove(self, ids: Any) -> int:
        """Remove the stored ones among ``ids``; returns how many were removed. Their tenant
        memberships are kept by id and apply again if the ids are added back."""
        wanted = np.unique(as_id_array(ids))
        slots = self._ids.lookup(wanted)
        found = slots >= 0
        if found.any():
            self._detach_members(wanted[found], slots[found])
        return super().remove(wanted)

    def _detach_members(self, ids: I64Vector, slots: I64Vector) -> None:
        """Take slots about to be removed out of their tenants' shortlists, keeping the
        memberships by id (``_pending``)."""
        pos, tenants = self._members.pop_all(slots)
        for tenant in np.unique(tenants).tolist():
            mine = pos[tenants == tenant]
            gone = slots[mine]
            self._lean.pop(tenant, None)
            lists = self._tenants[tenant]
            lists.delete(gone, self._leaf[gone], self.tree, self.max_shortlist)
            self._tiers.shrank(tenant, gone, len(lists), self._rows)
            for ident in ids[mine].tolist():
                self._pending.setdefault(ident, set()).add(tenant)

    def _remove(self, slots: I64Vector) -> None:
        self._all.delete(slots, self._leaf[slots], self.tree, self.max_shortlist)
        self._leaf[slots] = -1

    # ---- tenants --------------------------------------------------------------------
    def _place(self, tenant: int, slots: I64Vector) -> None:
        """Make stored ``slots`` members of ``tenant`` (those already members are skipped)."""
        new = slots[self._members.add(tenant, slots)]
        self._lean.pop(tenant, None)
        lists = self._tenants.setdefault(tenant, TenantLists())
        lists.insert(new, self._leaf[new], self.tree, self._leaf, self.max_shortlist)
        self._tiers.grew(tenant, new, len(lists), self._rows, lists.slots)

    def _create_tenant(self, tenant: int) -> None:
        self._tenants.setdefault(tenant, TenantLists())

    def _drop_tenant(self, tenant: int) -> None:
        lists = self._tenants.pop(tenant, None)
        self._lean.pop(tenant, None)
        self._tiers.drop(tenant)
        if lists is not None and len(lists):
            self._members.remove(tenant, lists.slots())
        for ident in [i for i, owners in self._pending.items() if tenant in owners]:
            owners = self._pending[ident]
            owners.discard(tenant)
            if not owners:
                del self._pending[ident]

    def _grant(self, tenant: int, ids: I64Vector) -> None:
        self._tenants.setdefault(tenant, TenantLists())
        ids = np.unique(ids)
        slots = self._ids.lookup(ids)
        stored = slots >= 0
        for ident in ids[~stored].tolist():
            self._pending.setdefault(ident, set()).add(tenant)
        if stored.any():
            self._place(tenant, slots[stored])

    def _revoke(self, tenant: int, ids: I64Vector) -> None:
        ids = np.unique(ids)
        slots = self._ids.lookup(ids)
        stored = slots >= 0
        for ident in ids[~stored].tolist():
            owners = self._pending.get(ident)
            if owners is not None:
                owners.discard(tenant)
                if not owners:
                    del self._pending[ident]
        lists = self._tenants.get(tenant)
        if lists is not None and stored.any():
            slots = slots[stored]
            gone = slots[self._members.remove(tenant, slots)]
            self._lean.pop(tenant, None)
            lists.delete(gone, self._leaf[gone], self.tree, self.max_shortlist)
            self._tiers.shrank(tenant, gone, len(lists), self._rows)

    def tenants(self) -> list[int]:
        """Tenant numbers the index keeps (created or granted to, not dropped), sorted."""
        return sorted(self._tenants)

    def promoted(self, tenant: int) -> bool:
        """True while ``tenant`` is served by its own HNSW graph (see ``tier_threshold``)."""
        return tenant in self._tiers

    def tenant_size(self, tenant: int) -> int:
        """Stored vectors ``tenant`` can access (0 for an unknown tenant)."""
        lists = self._tenants.get(tenant)
        return 0 if lists is None else len(lists)

    # ---- search ---------------------------------------------------------------------
    def search_trusted(self, queries: F32Matrix, k: int, allow: AllowSet | None,
                       tenant: int | tuple[int, ...] | None, params: SearchParams) -> SearchResult:
        """``BaseIndex.search_trusted``, with two lean paths for a few queries of one tenant
        and no filter, each one kernel call from the raw queries to ids and final distances
        (for a small tenant the per-call Python and kernel entries are what a search costs):
        a promoted tenant's graph walk (``SlotGraph.search_members``), and the scan of a tenant
        whose members all fit the budget (float scan; ``scan_members``)."""
        if allow is None and type(tenant) is int and len(queries) < SERIAL_QUERIES:
            graph = self._tiers.graphs.get(tenant)
            if graph is None:
                lean = self._lean.get(tenant)
                budget = params.budget  # type: ignore[attr-defined]
                budget = max(k, DEFAULT_BUDGET if budget is None else budget)
                if lean is None or lean[0] is not lean[1]._view:   # none yet, or the tenant changed since
                    lean = self._lean_entry(tenant, budget)
                if lean is not None and len(lean[2]) <= budget:
                    nq = len(queries)
                    ids, dists = np.empty((nq, k), np.int64), np.empty((nq, k), np.float32)
                    kernels.scan_members(queries, lean[2], self._rows, self._scan_metric, self._cosine,
                                         self._slot_map(), self._shift, ids, dists)
                    return SearchResult(ids, dists)
            elif graph.linked:
                nq = len(queries)
                ids, dists = np.empty((nq, k), np.int64), np.empty((nq, k), np.float32)
                ef = params.ef  # type: ignore[attr-defined]
                graph.search_members(queries, k, DEFAULT_EF if ef is None else ef, self._rows, self._cosine, tenant,
                                     self._members, self._slot_map(), self._shift, ids, dists)
                return SearchResult(ids, dists)
        return super().search_trusted(queries, k, allow, tenant, params)

    def _slot_map(self) -> np.ndarray:
        """slot -> id for the kernels' ``finish_answer`` (empty under the identity layout)."""
        idmap = self._ids
        return _NO_IDS if idmap.is_identity else idmap.slot_ids

    def _lean_entry(self, tenant: int, budget: int) -> tuple[Any, TenantLists, np.ndarray] | None:
        """(view, lists, member slots) of ``tenant`` for ``scan_members`` (None without members,
        with more than ``budget``, or with SQ8 codes: that scan reads float rows). Each slot of
        the view is checked against the exact membership chains once per view (a view is rebuilt
        after every change of the tenant's members), and one that is no member is left out, so
        the scan needs no check per search and never sees a vector the tenant cannot access."""
        lists = self._tenants.get(tenant)
        if lists is None or self._codec is not None:
            return None
        view = lists.view()
        if view is None or len(view.slots) > budget:
            return None
        members = self._members
        ok = np.empty((1, len(view.slots)), np.uint8)
        member_mask(members.head, members.cell_tenant, members.cell_next, view.slots.reshape(1, -1), tenant, ok)
        entry = (view, lists, view.slots if ok.all() else view.slots[ok[0] == 1])
        self._lean[tenant] = entry
        return entry

    def _search_slots(self, queries: F32Matrix, k: int, allow: AllowSet | None,
                      tenant: int | tuple[int, ...] | None, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        p: CuratorParams = params  # type: ignore[assignment]
        if isinstance(tenant, tuple):
            return self._union_search(queries, k, allow, tenant, p)
        return self._tenant_search(queries, k, allow, tenant, p)

    def _union_search(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenants: tuple[int, ...],
                      p: CuratorParams) -> tuple[np.ndarray, np.ndarray]:
        """Top k over the union of several tenants' members: each tenant's own top k (tree or
        graph, same knobs), merged with a vector two of them share kept once."""
        parts = [self._tenant_search(queries, k, allow, t, p) for t in tenants]
        return merge_unique(np.concatenate([s for s, _ in parts], axis=1),
                            np.concatenate([d for _, d in parts], axis=1), k)

    def _tenant_search(self, queries: F32Matrix, k: int, allow: AllowSet | None, tenant: int | None,
                       p: CuratorParams) -> tuple[np.ndarray, np.ndarray]:
        """One tenant's (or, for None, every vector's) top k in slots and kernel distances."""
        budget = max(k, DEFAULT_BUDGET if p.budget is None else p.budget)
        nq = len(queries)
        if tenant is not None and tenant in self._tiers:
            if allow is None or not self._tiers.prefers_exact(tenant, len(allow), p.ef):
                return self._graph_search(tenant, queries, k, allow, p.ef)
            budget = max(budget, len(allow))            # a selective filter: scan its members exactly
        lists = self._all if tenant is None else self._tenants.get(tenant)
        view = None if lists is None else lists.view()
        tree = self._tree
        if view is None or tree is None:
            return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
        out_s = np.empty((nq, k), np.int64)            # the kernels fill every row
        out_d = np.empty((nq, k), np.float32)
        bitmap = NO_MASK if allow is None else allow.bitmap(self._ids.n_slots)
        members = self._members
        scanned = np.empty(nq, np.int64)
        codec = self._codec
        if codec is None:
            codes, qt, weights, bias, mode, rerank = _NO_CODES, _NO_FOLD, _NO_WEIGHTS, _NO_WEIGHTS, 0, k
        else:
            qt, weights, bias, mode = codec.fold_queries(queries, Metric.L2 if self.metric is Metric.L2 else Metric.IP)
            codes, rerank = self._codes, max(k, RERANK_FACTOR * k if p.rerank is None else p.rerank)
        run = kernels.search_serial if nq < SERIAL_QUERIES or numba.get_num_threads() == 1 else kernels.search_batch
        run(queries, budget, tree.centroids, tree.first_child, tree.n_children, self._tree_metric, self._scan_metric,
            view.nodes, view.kind, view.ptr, view.slots, self._rows, -1 if tenant is None else tenant, members.head,
            members.cell_tenant, members.cell_next, bitmap, allow is not None, out_s, out_d, scanned, codes, qt,
            weights, bias, mode, codec is not None, rerank)
        return out_s, out_d

    def _graph_search(self, tenant: int, queries: F32Matrix, k: int, allow: AllowSet | None,
                      ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        """A promoted tenant's answer from its graph, every slot checked against the exact
        membership chains first (a slot that is no member is dropped)."""
        slots, dists = self._tiers.search(tenant, queries, k, allow, ef, self._rows)
        members = self._members
        kernels.keep_members_rows(dists, slots, tenant, members.head, members.cell_tenant, members.cell_next)
        return slots, dists

    # ---- invariants, memory, persistence ----------------------------------------------
    def check(self, n_slots: int | None = None) -> None:
        """Raise ValueError unless every tenant's sub-tree (and the all-vectors one) keeps the
        shortlist invariants (``TenantLists.check``) and memberships agree with shortlists
        (``n_slots``: slots handed out, default the id map's)."""
        n = self._ids.n_slots if n_slots is None else n_slots
        if self._tree is None:
            if (self._leaf[:n] >= 0).any() or any(len(t) for t in self._tenants.values()):
                raise ValueError("an untrained Curator holds vectors")
            return
        live = np.flatnonzero(self._leaf[:n] >= 0)
        self._all.check(self._tree, self._leaf, self.max_shortlist)
        if not np.array_equal(np.sort(self._all.slots()), live):
            raise ValueError("the all-vectors shortlists do not hold exactly the stored slots")
        total = 0
        for tenant, lists in self._tenants.items():
            lists.check(self._tree, self._leaf, self.max_shortlist)
            slots = lists.slots().reshape(1, -1)
            ok = np.empty(slots.shape, np.uint8)
            member_mask(self._members.head, self._members.cell_tenant, self._members.cell_next, slots, tenant, ok)
            if not ok.all():
                raise ValueError(f"slot {int(slots[ok == 0][0])} in a shortlist of tenant {tenant} is no member")
            total += len(lists)
        if total != self._members.count:
            raise ValueError(f"memberships count {self._members.count}, shortlists hold {total}")
        self._tiers.check({t: self._tenants[t].slots() for t in self._tiers.graphs if t in self._tenants})
        if self.tier_threshold == 0 and self._tiers.graphs:
            raise ValueError("tier graphs with tiering off")

    def _memory_bytes(self) -> int:
        parts = self.memory_parts()
        return int(sum(parts.values()) - parts["id_map"])

    def memory_parts(self) -> dict[str, int]:
        """``memory_bytes`` by part (they sum to it): ``rows`` (float vectors), ``codes``,
        ``leaf`` (slot -> leaf), ``tree``, ``memberships`` (the exact chains), ``all_lists``
        and ``tenant_lists`` (shortlists and cached views, ~100 B per dict entry),
        ``pending`` (kept memberships of absent ids), the tier graphs' ``tier_links``
        (adjacency), ``tier_levels`` (levels, upper-row offsets), ``tier_ids`` (node -> slot
        maps) and ``tier_scratch`` (shared visited marks), and the ``id_map``."""
        tree = 0 if self._tree is None else self._tree.nbytes()
        codes = 0 if self._codec is None else self._codes.nbytes + self._codec.memory_bytes()
        parts = {"rows": self._rows.nbytes, "codes": codes, "leaf": self._leaf.nbytes, "tree": tree,
                 "memberships": self._members.nbytes(), "all_lists": self._all.nbytes(),
                 "tenant_lists": sum(t.nbytes() for t in self._tenants.values()),
                 "pending": 200 * sum(len(v) for v in self._pending.values())}
        parts.update(self._tiers.parts())
        parts["id_map"] = self._ids.memory_bytes()
        return {name: int(v) for name, v in parts.items()}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        n = self._ids.n_slots
        params = {"n_root": self.n_root, "branching": self.branching, "max_depth": self.max_depth,
                  "max_shortlist": self.max_shortlist, "min_points_per_centroid": self.min_points_per_centroid,
                  "n_iter": self.n_iter, "seed": self.seed, "tier_threshold": self.tier_threshold, "tier_M": self.tier_M,
                  "tier_ef_construction": self.tier_ef_construction, "codes": self.codes,
                  "trained": self._tree is not None}
        arrays: dict[str, np.ndarray] = {"vectors": self._rows[:n], "leaf": self._leaf[:n]}
        if self._tree is not None:
            arrays.update(self._tree.arrays())
            if self._codec is not None:                 # the codes are encoded again on load
                arrays.update({f"sq8.{name}": arr for name, arr in self._codec.arrays().items()})
        owners = [(_ALL, self._all)] + sorted(self._tenants.items())
        sl = [(t, node, part) for t, lists in owners for node, part in sorted(lists.lists.items())]
        ex = [(t, node, count) for t, lists in owners for node, count in sorted(lists.expanded.items())]
        arrays["sl_tenant"] = np.array([t for t, _, _ in sl], np.int64)
        arrays["sl_node"] = np.array([node for _, node, _ in sl], np.int64)
        arrays["sl_ptr"] = np.cumsum([0] + [len(part) for _, _, part in sl]).astype(np.int64)
        arrays["sl_slots"] = np.concatenate([part for _, _, part in sl]).astype(np.int32) if sl else np.zeros(0, np.int32)
        arrays["ex"] = np.array(ex, np.int64).reshape(-1, 3)
        arrays["tenants"] = np.array(sorted(self._tenants), np.int64)
        pend = [(i, t) for i, owners_ in sorted(self._pending.items()) for t in sorted(owners_)]
        arrays["pending"] = np.array(pend, np.int64).reshape(-1, 2)
        promoted, graphs = self._tiers.state()
        arrays["tiers"] = np.array(promoted, np.int64)
        arrays.update(graphs)
        return params, arrays

    @classmethod
    def _from_state(cls, dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Curator":
        trained = params.pop("trained")
        if not isinstance(trained, bool):
            raise ValueError("params.trained must be a bool")
        try:
            index = cls(dim, metric, **params)
        except InvalidArgumentError as exc:
            raise ValueError(f"bad Curator parameters: {exc}") from None
        slot_ids = np.asarray(arrays["slot_ids"], np.int64)
        n = len(slot_ids)
        rows, leaf = np.asarray(arrays["vectors"]), np.asarray(arrays["leaf"])
        if rows.shape != (n, dim) or rows.dtype != np.float32 or leaf.shape != (n,) or leaf.dtype != np.int32:
            raise ValueError(f"vectors {rows.shape} / leaf {leaf.shape} do not match {n} slots of dim {dim}")
        if not np.array_equal(leaf >= 0, slot_ids >= 0):
            raise ValueError("leaf assignments do not match the stored slots")
        if trained:
            index._tree = ClusterTree.from_arrays(*(arrays[name] for name in TREE_ARRAYS), index._tree_metric)
            if index._tree.centroids.shape[1] != dim:
                raise ValueError("tree centroids have the wrong dimension")
            placed = leaf[leaf >= 0]
            if (placed >= index._tree.n_nodes).any() or (index._tree.n_children[placed] != 0).any():
                raise ValueError("a vector sits in a node that is not a leaf")
        elif n and (slot_ids >= 0).any():
            raise ValueError("an untrained Curator holds vectors")
        index.reserve(n)
        index._rows[:n] = rows
        if trained and index._codec is not None:
            index._codec = SQ8.from_state({"dim": dim, "trained": True}, {name: arrays[f"sq8.{name}"] for name in ("vmin", "step")})
            if not (np.isfinite(index._codec.vmin).all() and np.isfinite(index._codec.step).all()):
                raise ValueError("sq8 ranges must be finite")
            index._codes[:n] = index._codec.encode(rows)
        index._leaf[:n] = leaf
        index._tenants = {int(t): TenantLists() for t in np.asarray(arrays["tenants"]).tolist()}
        owners = {_ALL: index._all, **index._tenants}
        tenant_of, node_of, ptr = (np.asarray(arrays[name]) for name in ("sl_tenant", "sl_node", "sl_ptr"))
        slots = np.asarray(arrays["sl_slots"], np.int32)
        if len(ptr) != len(tenant_of) + 1 or len(node_of) != len(tenant_of) or ptr[0] != 0 or ptr[-1] != len(slots) \
                or (np.diff(ptr) <= 0).any():
            raise ValueError("malformed shortlist arrays")
        for j, (t, node) in enumerate(zip(tenant_of.tolist(), node_of.tolist())):
            if t not in owners:
                raise ValueError(f"shortlist of unknown tenant {t}")
            owners[t].lists[int(node)] = slots[ptr[j] : ptr[j + 1]].copy()
        for t, node, count in np.asarray(arrays["ex"], np.int64).reshape(-1, 3).tolist():
            if t not in owners:
                raise ValueError(f"expanded node of unknown tenant {t}")
            owners[t].expanded[int(node)] = int(count)
        for t, lists in index._tenants.items():
            got = lists.slots()
            if len(got) and not index._members.add(t, got).all():
                raise ValueError(f"tenant {t} holds a slot twice")
        for ident, t in np.asarray(arrays["pending"], np.int64).reshape(-1, 2).tolist():
            index._pending.setdefault(int(ident), set()).add(int(t))
        if index._pending and np.isin(np.fromiter(index._pending, np.int64), slot_ids).any():
            raise ValueError("kept memberships name stored ids")
        index._tiers.restore(np.asarray(arrays["tiers"], np.int64).tolist(), arrays, index._rows)
        index.check(n)
        return index


def merge_unique(slots: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``k`` of (nq, m) candidate slots (-1 padded) by (distance, slot), each
    slot kept once (its first occurrence in slot order); -1 / +inf padded."""
    order = np.argsort(slots, axis=1, kind="stable")
    slots, dists = np.take_along_axis(slots, order, 1), np.take_along_axis(dists, order, 1)
    dup = np.zeros(slots.shape, bool)
    dup[:, 1:] = (slots[:, 1:] == slots[:, :-1]) & (slots[:, 1:] >= 0)
    slots = np.where(dup, -1, slots)
    dists = np.where(slots < 0, np.inf, dists).astype(np.float32)
    key = np.where(slots < 0, np.iinfo(np.int64).max, slots)
    order = np.lexsort((key, dists), axis=1)[:, :k]
    return np.take_along_axis(slots, order, 1), np.take_along_axis(dists, order, 1)
