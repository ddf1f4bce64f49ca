"""Nearest-head search of SPANN: which postings a vector is stored in and a query reads.

Heads are posting centroids, and on clustered data they are not spread like the vectors
HNSW is built for: a Gaussian mixture with more components than heads gives heads between
components, and the graph over them splits into islands a greedy search does not leave
(128-d mixture, 1,304 heads: the graph's first head was the nearest one for ~50 % of the
vectors, even at ef = 1,500). A vector stored under a far head and a query reading far
postings then cap recall whatever ``max_postings`` is. Up to ``exact_heads`` heads the search
is an exact scan of the centroids (a graph search with ef = 64 computes about as many
distances), past it the HNSW over the heads, which has the same weakness: on that mixture
(500k rows, grouped by component) handing over to the graph at 2,048 heads left recall at
0.37, against 0.98 exact.

Past ``exact_heads`` the default route is therefore not the graph but a two-level exact
scan ("groups"): the heads are grouped by balanced k-means into about sqrt(n / MIN_GROUPS)
groups, each group also holding the nearest heads of its members (a cluster cut by the
balanced grouping is still found whole); a search ranks the group centroids and scans the
heads of the nearest groups exactly (at least ``MIN_GROUPS`` groups and ``ef`` heads). On
the 5M benchmark's 12,356 heads it returns the exact route's six nearest heads for all 200
queries with ~510 distances instead of 12,356 (the graph at ef 64: first head right for
0.945, 0.92 of the six). The graph route also degrades as splits re-centre heads
(a head carried into another cluster keeps links only from the old one): on a reduced
rebuild of the 5M set with the graph route, 1,327 splits left the graph finding 0.68 of
those heads at ef 64 (0.95 on the 5M run's trained heads before any split): recall@10
0.59-0.67 against 0.83-0.96 exact; groups on that same index: 0.98. Groups follow the
heads: new heads (splits) and moved ones join their nearest group; past twice the heads
they were made for, they are made again.

Searches rank the groups on SQ8 copies of their centroids and member rows (``RouteCodes``),
each row by one integer dot product, as format-4 postings are scanned: on the 5M benchmark
the same postings for 190 of 200 queries, the same recall@10 (0.9145), 6 us a query less.
Writes (which postings a vector is stored in) keep the float route.

One query's exact route over long head rows (``CODED_ROUTE_DIM`` components or more) ranks
7-bit copies of the heads first (``HeadCodes``: a quarter of the bytes, a row 32 components
an instruction) and the nearest two times the heads it returns, plus 16, again by their
float rows (``kernels.coded_route_topk``).
"""
from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field

import numpy as np

from vecdb.index.hnsw import HNSW
from vecdb.index.spann.clustering import centroids_of, split_until, sq_dists
from vecdb.quant.sq8 import SQ8, centred_norms, scalar_codes, scalar_ranges
from vecdb.index.spann.kernels import (exact_plan_one, plan_reads, route_codes, route_exact, route_groups,
                                      route_groups_serial, route_plan, route_plan_one)
from vecdb.kernels import topk
from vecdb.kernels.int_dot import WIDE_LANES

#: default ``exact_heads``: heads up to which nearest-head search is an exact scan
EXACT_HEADS = 4096
#: routes past ``exact_heads``: groups of heads scanned exactly, or the HNSW over the heads
ROUTES = ("groups", "graph")
#: groups a grouped route scans at least (the nearest heads of a query may sit in a few)
MIN_GROUPS = 4
#: groups are made again once the heads grew past this factor of those they were made for
REGROUP_GROWTH = 2.0
#: queries from which the exact scan runs in parallel over queries
PARALLEL_QUERIES = 16
#: metric codes of the head rows the one-query exact route ranks (squared L2, -ip)
_ROUTE_METRICS = (0, 1)
#: head rows of at least this many components: one query's exact route ranks their 7-bit
#: copies first (``HeadCodes``); shorter rows are cheaper to rank as floats than as codes
#: (glove's 50: 4.8 us float, 4.4 coded, before the shortlist's second ranking)
CODED_ROUTE_DIM = 128
#: rows from which the exact scan is matrix products (inserts come in batches)
BLAS_ROWS = 256
#: distances per block of the blocked scan (rows x heads; 64 MB of float32)
BLOCK_CELLS = 1 << 24


def nearest_heads(graph: HNSW, x: np.ndarray, k: int, ef: int, exact_heads: int,
                  route: str = "groups") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest heads of each row of ``x`` (C-contiguous float32): (ids (n, k) int64,
    routing distances (n, k) float32, squared L2 or -ip), sorted, -1 / +inf padded. An exact
    scan when the graph holds at most ``exact_heads`` heads; past it, by ``route``: the heads
    of the nearest groups scanned exactly (at least ``MIN_GROUPS`` groups and ``ef`` heads),
    or an HNSW search with beam ``ef``."""
    n_heads = len(graph)
    if n_heads == 0:
        return np.full((len(x), k), -1, np.int64), np.full((len(x), k), np.inf, np.float32)
    rows, slot_ids, metric = graph.stored_rows()
    if n_heads > exact_heads and (route == "graph" or n_heads < len(slot_ids)):
        found = graph.search_trusted(x, k, None, None, graph.resolve_params({"ef": max(ef, k)}))
        return found.ids, found.distances
    if n_heads < len(slot_ids):             # freed graph slots (SPANN frees none; a guard)
        slots, dists = topk.scan_subset(x, rows, np.flatnonzero(slot_ids >= 0).astype(np.int64), metric, k)
    elif n_heads > exact_heads:
        groups = groups_of(graph)
        slots = np.full((len(x), k), -1, np.int64)
        dists = np.full((len(x), k), np.inf, np.float32)
        kernel = route_groups_serial if len(x) < PARALLEL_QUERIES else route_groups
        kernel(x, groups.rows, groups.centroids, groups.offsets, groups.members, metric, MIN_GROUPS, max(ef, k), slots,
               dists)
    elif len(x) >= BLAS_ROWS:
        slots, dists = _blocked(x, rows, metric == 0, k)
    elif len(x) < PARALLEL_QUERIES and metric in _ROUTE_METRICS:   # as ``plan_one`` ranks one query
        slots, dists = route_exact(x, rows, metric, k)
    elif len(x) < PARALLEL_QUERIES:
        slots, dists = topk.scan_topk(x, rows, metric, k)
    else:
        slots, dists = topk.scan_topk_chunked(x, rows, metric, k, 1)
    return _ids_of(slots, slot_ids), dists


def _ids_of(slots: np.ndarray, slot_ids: np.ndarray) -> np.ndarray:
    """The head ids of graph ``slots`` (-1 stays -1)."""
    return np.where(slots >= 0, slot_ids[np.maximum(slots, 0)], -1).astype(np.int64, copy=False)


def plan_heads(graph: HNSW, x: np.ndarray, n_heads: int, ef: int, exact_heads: int, route: str, count: np.ndarray,
               eps2: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The postings queries ``x`` read: their ``n_heads`` nearest heads (``nearest_heads``),
    pruned by ``plan_reads`` (eps2, ``count`` entries per head, ``k``): (wanted, qptr, qlist).
    A few queries on the grouped route do both in one kernel call (one query: ``plan_one``)."""
    rows, slot_ids, metric = graph.stored_rows()
    n = len(slot_ids)
    if route == "groups" and exact_heads < n and len(graph) == n:     # the grouped route on codes
        arrays = groups_of(graph, rows).code_route
        mode = 0 if metric == 0 else 1
        if len(x) < PARALLEL_QUERIES:             # a few queries: route and plan in one call
            return route_plan(x, mode, *arrays, slot_ids, MIN_GROUPS, max(ef, n_heads), n_heads, count, float(eps2), k)
        slots = np.full((len(x), n_heads), -1, np.int64)
        dists = np.full((len(x), n_heads), np.inf, np.float32)
        route_codes(x, mode, *arrays, MIN_GROUPS, max(ef, n_heads), slots, dists)
        return plan_reads(_ids_of(slots, slot_ids), dists, count, _as_f32(eps2), k)
    hid, hd = nearest_heads(graph, x, n_heads, ef, exact_heads, route)
    return plan_reads(hid, hd, count, _as_f32(eps2), k)


def one_call_route(graph: HNSW, exact_heads: int, route: str
                   ) -> tuple[np.ndarray, np.ndarray, int, tuple | None, tuple | None] | None:
    """What one query's route and plan in one kernel call rank by: (head rows, slot ids,
    metric code, ``HeadGroups.code_route`` (None on the exact route), ``HeadCodes.arrays``
    (the exact route over long rows; else None)), when every head slot is live and the
    route is the exact one on a metric it ranks (up to ``exact_heads`` heads) or the grouped
    one past it; None where routing takes more calls."""
    rows, slot_ids, metric = graph.stored_rows()
    if len(graph) != len(slot_ids):
        return None
    if len(slot_ids) <= exact_heads:
        if metric not in _ROUTE_METRICS:
            return None
        codes = head_codes_of(graph, rows)
        return rows, slot_ids, metric, None, None if codes is None else codes.arrays
    return (rows, slot_ids, metric, groups_of(graph, rows).code_route, None) if route == "groups" else None


def prepare(graph: HNSW, exact_heads: int, route: str) -> None:
    """Make now what one query's route over ``graph`` ranks by (its groups, or its heads'
    coded copies; ``one_call_route``), so that an index just opened or trained does not
    make them in its first search (5M, 12,355 heads: ~0.4 s)."""
    one_call_route(graph, exact_heads, route)


def plan_one(graph: HNSW, q: np.ndarray, n_heads: int, ef: int, exact_heads: int, route: str, count: np.ndarray,
             eps2: float, k: int) -> np.ndarray:
    """``plan_heads`` for the one query ``q`` (dim,): the heads whose postings it reads,
    nearest first. On the exact route and the grouped route on codes one kernel call that
    returns only a count."""
    one_call = one_call_route(graph, exact_heads, route)
    if one_call is not None:
        rows, slot_ids, metric, code_route, head_codes = one_call
        out = np.empty(n_heads, np.int64)
        if code_route is None:
            got = exact_plan_one(q[None], rows, metric, slot_ids, head_codes, n_heads, count, float(eps2), k, out)
        else:
            got = route_plan_one(q, 0 if metric == 0 else 1, *code_route, slot_ids, MIN_GROUPS, max(ef, n_heads),
                                 n_heads, count, float(eps2), k, out)
        return out[:got]
    wanted, _, qlist = plan_heads(graph, q[None], n_heads, ef, exact_heads, route, count, eps2, k)
    return wanted[qlist]


@functools.lru_cache(maxsize=64)
def _as_f32(value: float) -> np.float32:
    """``value`` as the float32 the kernels take (cached: a search makes one per call)."""
    return np.float32(value)


def _blocked(x: np.ndarray, rows: np.ndarray, l2: bool, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of many rows by blocks of matrix products (squared L2 from norms, or -ip),
    each block's top-k taken by a parallel heap kernel (numpy's argpartition cost 5-30x the
    product at 38k heads): (slots, dists) sorted, -1 / +inf padded."""
    n, m = len(x), len(rows)
    slots = np.empty((n, k), np.int64)
    dists = np.empty((n, k), np.float32)
    row_sq = np.einsum("ij,ij->i", rows, rows) if l2 else None
    block = max(16, BLOCK_CELLS // max(m, 1))
    for lo in range(0, n, block):
        xb = x[lo : lo + block]
        d = xb @ rows.T
        if l2:
            d *= -2.0
            d += row_sq[None, :]
            d += np.einsum("ij,ij->i", xb, xb)[:, None]
            np.maximum(d, 0.0, out=d)
        else:
            np.negative(d, out=d)
        slots[lo : lo + len(xb)], dists[lo : lo + len(xb)] = topk.topk_rows(d, k)
    return slots, dists


@dataclass(frozen=True)
class RouteCodes:
    """SQ8 copies of a HeadGroups' centroids and member rows (flat, a row of ``dim`` codes
    each, in the same order) with their centred norms, under a codec trained on both: what
    searches route by (``kernels.route_codes_query``)."""

    codec: SQ8
    centroid_codes: np.ndarray
    centroid_norms: np.ndarray
    member_codes: np.ndarray
    member_norms: np.ndarray

    @classmethod
    def of(cls, centroids: np.ndarray, rows: np.ndarray) -> "RouteCodes":
        """The copies of ``centroids`` and member ``rows`` (float32 (n, dim) each)."""
        codec = SQ8(centroids.shape[1])
        codec.train_trusted(np.concatenate([centroids, rows]))
        cc, mc = codec.encode_trusted(centroids), codec.encode_trusted(rows)
        return cls(codec, cc.reshape(-1), codec.centred_norms(cc), mc.reshape(-1), codec.centred_norms(mc))

    @property
    def nbytes(self) -> int:
        return int(self.centroid_codes.nbytes + self.centroid_norms.nbytes + self.member_codes.nbytes
                   + self.member_norms.nbytes + self.codec.vmin.nbytes + self.codec.step.nbytes)


@dataclass(frozen=True)
class HeadCodes:
    """7-bit copies of a head graph's rows (``kernels.fold_route_query`` explains the ranking
    by them): per component ``vmin`` and ``step`` over the rows' range in 127 steps, each row
    its codes (below 128) zero-padded to a multiple of ``WIDE_LANES`` (flat, in slot order),
    and its centred squared norm sum_i (step_i (c_i - 64))^2. What one query's exact route
    over long rows ranks first (``kernels.coded_route_topk``)."""

    vmin: np.ndarray
    step: np.ndarray
    codes: np.ndarray
    norms: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> "HeadCodes":
        """The copies of ``rows`` (float32 (n, dim), finite)."""
        n, dim = rows.shape
        vmin, step = scalar_ranges(rows, 127)
        codes = scalar_codes(rows, vmin, step, 127)
        padded = np.zeros((n, -(-dim // WIDE_LANES) * WIDE_LANES), np.uint8)
        padded[:, :dim] = codes
        return cls(vmin, step, padded.reshape(-1), centred_norms(codes, step.astype(np.float64), 64.0))

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What the route kernels take: (vmin, step, codes, norms)."""
        return self.vmin, self.step, self.codes, self.norms

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.norms.nbytes + self.vmin.nbytes + self.step.nbytes)


@dataclass(frozen=True)
class HeadGroups:
    """The heads (graph slots) grouped for the grouped route: group g holds the slots
    ``members[offsets[g]:offsets[g+1]]`` around ``centroids[g]``: the heads clustered into it
    and the ``NEIGHBOURS`` nearest heads of each of those (so a group scanned also holds the
    near side of its boundary: a component cut by the balanced clustering is found whole).
    ``rows``: a copy of each member's head row in member order, so a search reads a group
    sequentially instead of gathering ~65 random rows of the head table per group (a copy:
    a head whose row changes must be reported, ``moved``). ``label``: each slot's own group;
    ``made_for``: the heads the groups were clustered from; ``moved``: slots whose vectors
    changed since (regrouped on next use); ``codes``: what searches route by."""

    centroids: np.ndarray
    offsets: np.ndarray
    members: np.ndarray
    rows: np.ndarray
    label: np.ndarray
    made_for: int
    codes: RouteCodes
    moved: set[int] = field(default_factory=set, compare=False)

    @functools.cached_property
    def code_route(self) -> tuple[np.ndarray, ...]:
        """What the code route kernels take after the query and mode (``kernels.route_codes``,
        ``route_plan``, ``route_plan_one``): the codec's vmin and step, the centroids' and
        members' codes and norms, the offsets and members (one tuple: a one-query route
        splats it instead of reading ten attributes)."""
        c = self.codes
        return (c.codec.vmin, c.codec.step, c.centroid_codes, c.centroid_norms, c.member_codes, c.member_norms,
                self.offsets, self.members)

    @property
    def nbytes(self) -> int:
        return int(self.centroids.nbytes + self.offsets.nbytes + self.members.nbytes + self.rows.nbytes
                   + self.label.nbytes + self.codes.nbytes)


#: the groups of each head graph in use (a plan's copy of a graph inherits them: ``inherit``)
_GROUPS: "weakref.WeakKeyDictionary[HNSW, HeadGroups]" = weakref.WeakKeyDictionary()
#: a head is also a member of the groups of its this many nearest heads
NEIGHBOURS = 3


def groups_of(graph: HNSW, rows: np.ndarray | None = None) -> HeadGroups:
    """The groups of ``graph``'s heads (all slots live), made or brought up to date: new
    slots and moved ones join their nearest group and those of their nearest heads; past
    ``REGROUP_GROWTH`` times the heads the groups were made for, they are clustered again.
    Never changes a HeadGroups a search may be reading: an update is a new object.
    ``rows``: ``graph.stored_rows()[0]`` when the caller has it already."""
    if rows is None:
        rows = graph.stored_rows()[0]
    n = len(rows)
    got = _GROUPS.get(graph)
    if got is not None and len(got.label) == n and not got.moved:
        return got
    if got is None or n > REGROUP_GROWTH * got.made_for:
        target = max(1, round(math.sqrt(n / MIN_GROUPS)))
        clusters = split_until(rows, target, np.random.default_rng(graph.seed))
        label = np.empty(n, np.int64)
        for g, members in enumerate(clusters):
            label[members] = g
        centroids = np.ascontiguousarray(centroids_of(rows, clusters), np.float32)
        own = _csr(label, np.arange(n, dtype=np.int64), len(centroids))
        fresh, kept_g, kept_h, made_for = np.arange(n, dtype=np.int64), _EMPTY, _EMPTY, n
    else:
        centroids, made_for = got.centroids, got.made_for
        label = np.concatenate([got.label, np.zeros(n - len(got.label), np.int64)])
        fresh = np.union1d(np.arange(len(got.label), n), np.fromiter(got.moved, np.int64, len(got.moved)))
        label[fresh] = sq_dists(rows[fresh], centroids).argmin(1)
        kept_g = np.repeat(np.arange(len(centroids), dtype=np.int64), np.diff(got.offsets))
        kept_h = got.members
        keep = ~np.isin(kept_h, fresh)
        kept_g, kept_h = kept_g[keep], kept_h[keep]
        own = _csr(np.concatenate([kept_g, label[fresh]]), np.concatenate([kept_h, fresh]), len(centroids))
    # the nearest heads of the fresh ones, by the grouped route over their own groups
    near = np.full((len(fresh), NEIGHBOURS + 1), -1, np.int64)
    near_d = np.full((len(fresh), NEIGHBOURS + 1), np.inf, np.float32)
    x = np.ascontiguousarray(rows[fresh])
    kernel = route_groups_serial if len(fresh) < PARALLEL_QUERIES else route_groups
    kernel(x, np.ascontiguousarray(rows[own[1]]), centroids, own[0], own[1], 0, MIN_GROUPS, 0, near, near_d)
    near_g = np.where(near >= 0, label[np.maximum(near, 0)], -1)
    pair_g = np.concatenate([kept_g, label[fresh], near_g.ravel()])
    pair_h = np.concatenate([kept_h, fresh, np.repeat(fresh, near.shape[1])])
    ok = pair_g >= 0
    offsets, members = _csr(pair_g[ok], pair_h[ok], len(centroids))
    member_rows = np.ascontiguousarray(rows[members])
    out = HeadGroups(centroids, offsets, members, member_rows, label, made_for, RouteCodes.of(centroids, member_rows))
    _GROUPS[graph] = out
    return out


_EMPTY = np.zeros(0, np.int64)


def _csr(groups: np.ndarray, heads: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, members) of the distinct (group, head) pairs, by group then head."""
    n = int(heads.max()) + 1 if len(heads) else 1
    code = np.unique(groups * n + heads)
    members = code % n
    offsets = np.searchsorted(code // n, np.arange(n_groups + 1)).astype(np.int64)
    return offsets, members.astype(np.int64)


#: the coded copies of each head graph's rows in use (``head_codes_of``)
_HEAD_CODES: "weakref.WeakKeyDictionary[HNSW, HeadCodes]" = weakref.WeakKeyDictionary()


def head_codes_of(graph: HNSW, rows: np.ndarray) -> HeadCodes | None:
    """The 7-bit copies of ``graph``'s head ``rows`` (``graph.stored_rows()[0]``) that one
    query's exact route ranks first, made when missing or out of date (heads added; a moved
    head drops them: ``moved``); None for rows shorter than ``CODED_ROUTE_DIM``. Never
    changes copies a search may be reading: an update is a new object."""
    if rows.shape[1] < CODED_ROUTE_DIM or not len(rows):
        return None
    got = _HEAD_CODES.get(graph)
    if got is None or len(got.norms) != len(rows):
        got = _HEAD_CODES[graph] = HeadCodes.of(rows)
    return got


def moved(graph: HNSW, slot: int) -> None:
    """Head ``slot`` of ``graph`` moved (a split re-centred it): it rejoins its nearest group,
    and the heads' coded copies are made again."""
    got = _GROUPS.get(graph)
    if got is not None:
        got.moved.add(int(slot))
    _HEAD_CODES.pop(graph, None)


def inherit(copy: HNSW, graph: HNSW) -> None:
    """``copy`` (a plan's copy of ``graph``) starts from ``graph``'s groups and coded copies."""
    got = _GROUPS.get(graph)
    if got is not None:
        _GROUPS[copy] = HeadGroups(got.centroids, got.offsets, got.members, got.rows, got.label, got.made_for,
                                   got.codes, set(got.moved))
    codes = _HEAD_CODES.get(graph)
    if codes is not None:
        _HEAD_CODES[copy] = codes


def route_bytes(graph: HNSW, exact_heads: int) -> int:
    """Resident bytes of what routes over ``graph``'s heads besides the graph: its groups
    (0 until made) and, where one query's route ranks them (``one_call_route``), the coded
    copies of its rows, made here if a search has not made them yet."""
    groups = _GROUPS.get(graph)
    total = 0 if groups is None else groups.nbytes
    one_call = one_call_route(graph, exact_heads, "graph")
    codes = None if one_call is None else head_codes_of(graph, one_call[0])
    return total + (0 if codes is None else codes.nbytes)
