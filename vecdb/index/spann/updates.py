"""SPFresh-style updates of a SPANN index, computed as a ``Plan`` without touching memory:
new vectors go to their nearest postings under the closure rule, tombstones are purged from
every posting rewritten, a posting over its limit is split by balanced k-means and the
boundary vectors of its neighbours are reassigned (LIRE).

A ``Work`` sees its index only through a ``Source``: the settings a plan follows and the
committed state it starts from, handed over by the index (``SPANN._source``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vecdb.errors import DataLossError
from vecdb.index.hnsw import HNSW
from vecdb.index.spann import postings
from vecdb.index.spann.clustering import centroids_of, split_until, sq_dists
from vecdb.index.spann import routing
from vecdb.types import F32Matrix, I64Vector, Metric

if TYPE_CHECKING:
    from vecdb.quant.sq8 import SQ8
    from vecdb.storage.space import IndexSpace

#: neighbouring postings whose boundary vectors are re-checked after a split (LIRE)
LIRE_NEIGHBORS = 8
#: fan-out of the balanced k-means tree (training, and splitting an oversized posting)
FANOUT = 8
_EMPTY_IDS = np.zeros(0, np.int64)


@dataclass
class HeadState:
    """The resident part matching one committed state of the postings: the head graph, the
    entries of each head's posting (replicas and tombstones included) and the token written
    with that state."""

    graph: HNSW
    count: np.ndarray
    token: bytes | None


@dataclass
class Plan:
    """One change of a SPANN index, computed without touching memory (see the module doc).
    The slot -> id map after it is the committed one with ``rem_slots`` freed and ``ids``
    appended at ``new_slots`` (never copied whole: a batch costs its own size)."""

    removed: I64Vector                       # ids leaving (unique, stored)
    ids: I64Vector                           # ids entering
    new_slots: I64Vector                     # their slots
    rem_slots: I64Vector                     # the committed slots of ``removed``
    postings: dict[int, tuple[I64Vector, F32Matrix]]  # rewritten postings (head -> slots, vectors)
    state: HeadState                         # heads after the change
    splits: int = 0
    written: bool = False
    oversized: tuple[int, ...] = ()          # postings left over the limit for the background pass
    purged: int = 0                          # tombstones dropped from the postings rewritten
    dequeued: tuple[int, ...] = ()           # queued splits this plan did (they leave the queue)
    sweep: tuple[int, int] | None = None     # the purge sweep after it: (next head or -1, removals it covers)
    rows: F32Matrix | None = None            # the vectors of ``ids`` (kept apart with SQ8 postings)


@dataclass(frozen=True)
class Source:
    """What a plan reads of its SPANN index: the settings it follows (as the index's
    attributes of the same names; ``route``: the metric heads are found by) and the committed
    state it starts from (entries per head, slot -> id map, postings not yet written, and
    where the written ones are: ``space``'s sub-database ``pdb``)."""

    dim: int
    route: Metric
    codec: "SQ8 | None"
    posting_limit: int
    eps1: float
    seed: int
    exact_heads: int
    head_route: str
    base: np.ndarray | None                  # entries per head of the committed postings (None: untrained)
    committed: np.ndarray                    # slot -> id of the committed state (a view)
    overlay: dict[int, tuple[I64Vector, F32Matrix]] | None
    space: "IndexSpace | None"
    pdb: Any


class Work:
    """A plan being computed: postings read (through the transaction, the overlay or a read
    transaction) and rewritten, and the head graph, copied on its first change."""

    def __init__(self, source: Source, plan: Plan, txn: Any) -> None:
        self.source = source
        self.plan = plan
        self.txn = txn
        self.graph: HNSW = plan.state.graph
        self.base = source.base if source.base is not None else plan.state.count
        self.cloned = False
        self.committed = source.committed

    def alive(self, slots: I64Vector) -> np.ndarray:
        """Which ``slots`` hold a live id after the plan: committed and not removed by it, or
        entering with it (slots past the committed ones)."""
        committed = self.committed
        inside = slots < len(committed)
        ok = ~inside
        ok[inside] = committed[slots[inside]] >= 0
        if len(self.plan.rem_slots):
            ok &= ~np.isin(slots, self.plan.rem_slots)
        return ok

    # ---- heads ---------------------------------------------------------------------
    def centroids(self, heads: np.ndarray) -> F32Matrix:
        """Centroids of ``heads`` as the plan's head graph holds them."""
        graph = self.graph
        return graph.stored_rows()[0][graph.slots_of(heads)]

    def nearest(self, x: F32Matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest heads of each row (ids, routing distances), from the plan's graph."""
        graph = self.graph
        if not len(graph):
            return np.full((len(x), 0), -1, np.int64), np.zeros((len(x), 0), np.float32)
        k = max(1, min(k, len(graph)))
        return routing.nearest_heads(graph, np.ascontiguousarray(x, np.float32), k, max(32, 2 * k),
                                     self.source.exact_heads, self.source.head_route)

    def route_dists(self, x: F32Matrix, centroids: F32Matrix) -> np.ndarray:
        """Routing distances (n, m) of rows to centroids: squared L2, or -ip for ip."""
        if self.source.route is Metric.IP:
            return -(x @ centroids.T)
        return sq_dists(x, centroids)

    def _clone(self) -> None:
        """Copy the head graph before the plan's first change to it (memory keeps the original)."""
        if not self.cloned:
            self.graph = clone_graph(self.graph)
            self.cloned = True
            self.plan.state.graph = self.graph

    # ---- postings ------------------------------------------------------------------
    def get(self, head: int) -> tuple[I64Vector, F32Matrix]:
        """Posting ``head`` as the plan sees it, tombstones purged."""
        plan = self.plan
        if head in plan.postings:
            return plan.postings[head]
        source = self.source
        overlay = source.overlay
        if overlay is not None and head in overlay:
            slots, vectors = overlay[head]
        elif head < len(self.base) and self.base[head] <= 0:
            slots, vectors = _EMPTY_IDS, np.zeros((0, source.dim), np.float32)
        else:
            raw = self._raw(head)
            if raw is None:
                raise DataLossError(f"SPANN posting {head} is missing ({self.base[head]} entries expected)")
            slots, vectors = postings.decode(raw, source.dim, head, source.codec)
        keep = self.alive(slots)
        if not keep.all():
            self.plan.purged += int(len(keep) - np.count_nonzero(keep))
            slots, vectors = slots[keep], vectors[keep]
        return slots, vectors

    def _raw(self, head: int) -> Any:
        """The stored record of posting ``head`` (None when absent)."""
        source = self.source
        if self.txn is not None:
            return self.txn.get(postings.key(head), db=source.pdb)
        if source.space is None:
            return None
        with source.space.read() as txn:
            return txn.get(postings.key(head), db=source.pdb)

    def put(self, head: int, slots: I64Vector, vectors: F32Matrix) -> None:
        """Rewrite posting ``head`` in the plan."""
        self.plan.postings[head] = (slots, vectors)
        self.plan.state.count[head] = len(slots)

    # ---- splits (SPFresh) ----------------------------------------------------------
    def oversized(self) -> list[int]:
        """Postings of the plan over the limit."""
        limit = self.source.posting_limit
        return [h for h, (s, _) in self.plan.postings.items() if len(s) > limit]

    def split_oversized(self, *, lire: bool, heads: list[int] | None = None) -> None:
        """Split ``heads`` (default: every posting of the plan over the limit) by balanced
        k-means (recursively, until every part fits), reassigning boundary vectors of
        neighbouring postings when ``lire`` (postings those grow past the limit split too).
        A head graph the splits grew is copied once more at its size: adding heads grows its
        arrays by half again, which the committed heads would hold (arxiv as built: 3.07 MB
        resident against 2.30 once reopened)."""
        limit = self.source.posting_limit
        queue = self.oversized() if heads is None else list(heads)
        budget = 4 * len(queue) + 64
        while queue and budget > 0:
            head = queue.pop()
            slots, vectors = self.plan.postings.get(head, (_EMPTY_IDS, None))
            if len(slots) <= limit:
                continue
            budget -= 1
            born = self._split(head)
            if lire:
                for h in self._reassign(head, born):
                    if len(self.plan.postings[h][0]) > limit:
                        queue.append(h)
        if self.cloned:                         # the heads it commits keep no room grown for new heads
            self.graph = self.plan.state.graph = clone_graph(self.graph)

    def _split(self, head: int) -> list[int]:
        """Split posting ``head`` by balanced k-means: the first part keeps the head (its graph
        node is re-linked at the part's centroid, under the same id), the others become new
        heads. Returns all parts."""
        source, plan = self.source, self.plan
        slots, vectors = plan.postings[head]
        self._old_centroid = self.centroids(np.array([head]))[0].copy()
        rng = np.random.default_rng([source.seed, head])
        groups = split_until(vectors, source.posting_limit // 2, rng, fanout=FANOUT)
        centroids = centroids_of(vectors, groups)
        self._clone()
        graph = self.graph
        # the head is re-linked at its new centroid, not only moved: links chosen for the old
        # place lead nowhere near the new one, and on clustered data a split can carry a head
        # into another cluster, where no node links to it and the graph never finds it
        # (mixture, 6,000 heads, 1,000 heads moved: the graph's first head right for 0.92 of
        # the queries, 1.00 re-linked). Removal keeps the graph reachable (HNSW repairs it).
        graph.remove(np.array([head], np.int64))
        graph.add(centroids[:1], np.array([head], np.int64))
        routing.moved(graph, int(graph.slots_of(np.array([head], np.int64))[0]))
        self.put(head, slots[groups[0]], vectors[groups[0]])
        first = len(plan.state.count)
        born = list(range(first, first + len(groups) - 1))
        plan.state.count = np.concatenate([plan.state.count, np.zeros(len(born), np.int64)])
        if born:
            graph.add(centroids[1:], np.array(born, np.int64))
            # a small add skips the graph's reachability repair, and the back-links it made
            # re-selected neighbour lists, which can drop another head's last inbound link
            # (5M mixture: 33 -> 197 unreachable heads over 761 one-head adds); repair here
            graph.repair()
        for h, rows in zip(born, groups[1:]):
            self.put(h, slots[rows], vectors[rows])
        plan.splits += 1
        return [head] + born

    def _reassign(self, head: int, born: list[int]) -> set[int]:
        """LIRE after splitting ``head`` into ``born``: vectors of nearby postings now closer
        to a new head join it; vectors of the new postings closer to a neighbour join that
        one. A vector leaves its posting when that is no longer within the closure rule of
        its nearest head. Returns the postings that grew."""
        eps = self.source.eps1
        born_arr = np.array(born, np.int64)
        near, _ = self.nearest(self._old_centroid[None, :], LIRE_NEIGHBORS + len(born))
        neigh = [h for h in near[0].tolist() if h >= 0 and h not in set(born)][:LIRE_NEIGHBORS]
        grew: set[int] = set()
        if not neigh:
            return grew
        born_c = self.centroids(born_arr)
        neigh_arr = np.array(neigh, np.int64)
        neigh_c = self.centroids(neigh_arr)
        for pool, pool_c, targets, targets_c in ((neigh_arr, neigh_c, born_arr, born_c),
                                                 (born_arr, born_c, neigh_arr, neigh_c)):
            moves: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
            for i, h in enumerate(pool.tolist()):
                slots, vectors = self.get(h)
                if not len(slots):
                    continue
                own = self.route_dists(vectors, pool_c[i : i + 1])[:, 0]
                other = self.route_dists(vectors, targets_c)
                best = other.argmin(1)
                best_d = other[np.arange(len(best)), best]
                move = best_d < own
                if not move.any():
                    continue
                # judged against each vector's nearest head of all, not only the posting it
                # sits in: a far replica compared with its own far posting would be copied on
                # at every nearby split and never leave (replicas spreading without bound)
                d1 = self.nearest(vectors[move], 1)[1][:, 0]
                d1 = np.minimum(d1, best_d[move])
                near = np.zeros(len(move), bool)
                stay = np.ones(len(move), bool)
                near[move] = best_d[move] - d1 <= eps * np.abs(d1)
                stay[move] = own[move] - d1 <= eps * np.abs(d1)
                join = move & (near | ~stay)          # a vector that leaves always joins its best target
                for t in np.unique(best[join]).tolist():
                    rows = np.flatnonzero(join & (best == t))
                    moves.setdefault(int(targets[t]), []).append((slots[rows], vectors[rows]))
                if not stay.all():
                    self.put(h, slots[stay], vectors[stay])
            for t, parts in moves.items():
                slots, vectors = self.get(t)
                add_s = np.concatenate([p[0] for p in parts])
                add_v = np.concatenate([p[1] for p in parts])
                fresh = ~np.isin(add_s, slots)
                if fresh.any():
                    self.put(t, np.concatenate([slots, add_s[fresh]]), np.concatenate([vectors, add_v[fresh]]))
                    grew.add(t)
        return grew


def clone_graph(graph: HNSW) -> HNSW:
    """An independent copy of a head graph (the plan changes the copy, memory keeps the original)."""
    params, arrays = graph.state()
    copy = graph_from(graph.dim, graph.metric, params, {f"g_{n}": a for n, a in arrays.items()})
    routing.inherit(copy, graph)
    return copy


def graph_from(dim: int, metric: Metric, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> HNSW:
    """The head graph held by ``arrays`` (names prefixed ``g_``)."""
    graph_arrays = {name[2:]: np.array(arr) for name, arr in arrays.items() if name.startswith("g_")}
    graph = HNSW.from_state(dim, metric, params, graph_arrays)
    graph.progress = False
    return graph
