"""HNSW layer-0 repair: every live node reachable from the entry point again.

Unlinking removed nodes re-selects the lists that pointed at them, but a node whose only
inbound links came from removed nodes (or were pruned away by that re-selection) is then
unreachable: no search can return it. Construction too leaves a few such nodes in sparse
graphs (a node, or a small clique, that no list outside it kept). ``reconnect`` walks the
graph from the entry point and links each node it did not reach from its nearest reached
node that can take it (a free place, or a link to a node that keeps another inbound link),
then walks on from there. O(n x M0) per call, the order of the unlink pass it follows.
Array layout: see ``graph``.
"""
from __future__ import annotations

import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.distances import distance
from vecdb.kernels.rows import row_of


@kernel
def _walk(start, levels, adj0, reached, queue):
    """Mark every node reachable from ``start`` at layer 0 (``reached`` kept across calls)."""
    if reached[start]:
        return
    reached[start] = 1
    queue[0] = start
    head, tail = 0, 1
    while head < tail:
        u = queue[head]
        head += 1
        row = adj0[u]
        for j in range(1, row[0] + 1):
            v = row[j]
            if not reached[v] and levels[v] >= 0:
                reached[v] = 1
                queue[tail] = v
                tail += 1


@kernel
def _link_from(v, y, dvy, vecs, adj0, indeg, metric, require_longer):
    """Put a link v -> y in v's layer-0 list: append when there is room, else replace v's
    farthest link to a node with another inbound link (only one longer than dist(v, y) when
    ``require_longer``). Returns True when linked."""
    row = adj0[v]
    c = row[0]
    if c < adj0.shape[1] - 1:
        row[c + 1] = y                      # entry first, then the count: lock-free readers stay valid
        row[0] = c + 1
        indeg[y] += 1
        return True
    far_j = -1
    far_d = np.float32(-np.inf)
    vv = row_of(vecs, v)
    for j in range(1, c + 1):
        z = row[j]
        if indeg[z] >= 2:
            dz = distance(vv, row_of(vecs, z), metric)
            if dz > far_d:
                far_d = dz
                far_j = j
    if far_j < 0 or (require_longer and far_d <= dvy):
        return False
    indeg[row[far_j]] -= 1
    row[far_j] = y
    indeg[y] += 1
    return True


@kernel
def _link_from_nearest(y, vecs, levels, adj0, indeg, reached, n, metric):
    """Link ``y`` from the nearest reached live node that can take it (a full scan and sort,
    for the rare node none of whose own neighbours could). Returns True when linked."""
    cand = np.empty(n, np.int64)
    dists = np.empty(n, np.float32)
    m = 0
    yv = row_of(vecs, y)
    for v in range(n):
        if reached[v] and levels[v] >= 0 and v != y:
            cand[m] = v
            dists[m] = distance(yv, row_of(vecs, v), metric)
            m += 1
    for o in np.argsort(dists[:m]):
        if _link_from(cand[o], y, dists[o], vecs, adj0, indeg, metric, False):
            return True
    return False


@kernel
def _attach(y, vecs, levels, adj0, indeg, reached, n, metric):
    """Link unreached node ``y`` from a reached node: its nearest reached out-neighbour that
    can take it, else the nearest reached node of all that can. Returns True when linked."""
    row = adj0[y]
    c = row[0]
    dists = np.empty(c, np.float32)
    yv = row_of(vecs, y)
    for j in range(c):
        dists[j] = distance(yv, row_of(vecs, row[j + 1]), metric)
    order = np.argsort(dists)
    for strict in (True, False):            # prefer replacing a longer link; else any spare one
        for o in order:
            v = row[o + 1]
            if reached[v] and levels[v] >= 0 and _link_from(v, y, dists[o], vecs, adj0, indeg, metric, strict):
                return True
    return _link_from_nearest(y, vecs, levels, adj0, indeg, reached, n, metric)


@kernel
def reconnect(vecs, levels, adj0, n, entry, metric, dead):
    """Make every live node (``levels >= 0`` and not flagged in ``dead``, slots below ``n``)
    reachable from ``entry`` at layer 0. ``dead`` (uint8 per slot, at least ``n``): nodes
    being removed, already unlinked (no live list leads to them, so no walk reaches them)
    but not yet freed, so the repair can run before they are. Returns (linked, left): nodes
    given an inbound link, and nodes that could not be (no reached node could take a link)."""
    indeg = np.zeros(n, np.int32)
    for u in range(n):
        if levels[u] >= 0 and not dead[u]:
            row = adj0[u]
            for j in range(1, row[0] + 1):
                indeg[row[j]] += 1
    reached = np.zeros(n, np.uint8)
    queue = np.empty(n, np.int64)
    _walk(entry, levels, adj0, reached, queue)
    linked = 0
    left = 0
    for y in range(n):
        if levels[y] < 0 or reached[y] or dead[y]:
            continue
        if _attach(y, vecs, levels, adj0, indeg, reached, n, metric):
            linked += 1
            _walk(y, levels, adj0, reached, queue)
        else:
            left += 1
    return linked, left


@kernel
def unreached(levels, adj0, n, entry):
    """How many live nodes a layer-0 walk from ``entry`` does not reach."""
    reached = np.zeros(n, np.uint8)
    if entry >= 0:
        _walk(entry, levels, adj0, reached, np.empty(n, np.int64))
    missing = 0
    for u in range(n):
        if levels[u] >= 0 and not reached[u]:
            missing += 1
    return missing
