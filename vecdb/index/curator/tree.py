"""The shared clustering tree of a Curator index: hierarchical k-means trained on a sample
(a wide root, a fixed branching below, a bounded depth, no split of a node holding too few
sample points per centroid); every vector descends greedily to one leaf.

Nodes are numbered breadth-first from the root (node 0), so a node's children are the
contiguous range ``first_child[n] .. first_child[n] + n_children[n]``; leaves have no
children. ``anc[n, d]`` is the ancestor of node ``n`` at depth ``d`` (``n`` itself at its own
depth, -1 below it), so the child of ``n`` towards a leaf ``l`` is ``anc[l, depth[n] + 1]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.distances import distance
from vecdb.types import F32Matrix

#: k-means samples at most this many points per centroid at each node (faiss's default is 256).
MAX_POINTS_PER_CENTROID = 256
TREE_ARRAYS = ("centroids", "first_child", "n_children")


@kernel
def descend(x, centroids, first_child, n_children, metric, out):
    """Leaf of each row of ``x``: from the root, step to the nearest child (metric code 0 l2 /
    1 ip) until a leaf; written to ``out``."""
    for i in range(x.shape[0]):
        node = 0
        while n_children[node] > 0:
            best = np.inf
            pick = first_child[node]
            for c in range(first_child[node], first_child[node] + n_children[node]):
                d = distance(x[i], centroids[c], metric)
                if d < best:
                    best = d
                    pick = c
            node = pick
        out[i] = node


@dataclass(frozen=True)
class ClusterTree:
    """The trained tree: ``centroids`` float32 (n_nodes, dim) (the root's is the sample mean),
    ``first_child``/``n_children`` int32 (n_nodes,), plus the derived ``depth`` and ``anc``.
    ``metric`` is the kernel code nodes are compared by (0 l2 for l2 and cosine, 1 ip)."""

    centroids: np.ndarray
    first_child: np.ndarray
    n_children: np.ndarray
    depth: np.ndarray
    anc: np.ndarray
    metric: int

    @classmethod
    def from_arrays(cls, centroids: np.ndarray, first_child: np.ndarray, n_children: np.ndarray,
                    metric: int) -> "ClusterTree":
        """A tree from its stored arrays; ValueError when they do not form a breadth-first tree."""
        centroids = np.ascontiguousarray(centroids, np.float32)
        first_child = np.ascontiguousarray(first_child, np.int32)
        n_children = np.ascontiguousarray(n_children, np.int32)
        n = len(centroids)
        if centroids.ndim != 2 or n < 1 or first_child.shape != (n,) or n_children.shape != (n,):
            raise ValueError("tree arrays must be centroids (n, dim) and first_child, n_children (n,)")
        if not np.isfinite(centroids).all():
            raise ValueError("tree centroids must be finite")
        parent = np.full(n, -1, np.int64)
        expect = 1
        for node in range(n):                           # children ranges must tile 1..n in order
            count = int(n_children[node])
            if count < 0 or (count and int(first_child[node]) != expect):
                raise ValueError(f"tree node {node} has a malformed child range")
            if count and expect + count > n:
                raise ValueError(f"tree node {node} has children past the last node")
            if count and node >= expect:
                raise ValueError(f"tree node {node} is not reachable from the root")
            parent[expect : expect + count] = node
            expect += count
        if expect != n:
            raise ValueError("tree arrays hold nodes no parent points to")
        depth = np.zeros(n, np.int32)
        for node in range(1, n):
            depth[node] = depth[parent[node]] + 1
        height = int(depth.max()) + 1
        anc = np.full((n, height), -1, np.int32)
        for node in range(n):
            a = node
            while a >= 0:
                anc[node, depth[a]] = a
                a = int(parent[a])
        return cls(centroids, first_child, n_children, depth, anc, int(metric))

    @property
    def n_nodes(self) -> int:
        return len(self.centroids)

    @property
    def height(self) -> int:
        """Number of levels (1 for a root-only tree)."""
        return int(self.anc.shape[1])

    def is_leaf(self, node: int) -> bool:
        return bool(self.n_children[node] == 0)

    def children(self, node: int) -> range:
        start = int(self.first_child[node])
        return range(start, start + int(self.n_children[node]))

    def leaves_of(self, x: F32Matrix) -> np.ndarray:
        """The leaf each prepared row of ``x`` descends to, int32 (n,)."""
        out = np.empty(len(x), np.int32)
        if len(x):
            descend(np.ascontiguousarray(x, np.float32), self.centroids, self.first_child, self.n_children,
                    self.metric, out)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids, "first_child": self.first_child, "n_children": self.n_children}

    def nbytes(self) -> int:
        return int(self.centroids.nbytes + self.first_child.nbytes + self.n_children.nbytes
                   + self.depth.nbytes + self.anc.nbytes)


def train_tree(sample: F32Matrix, metric: int, *, n_root: int, branching: int, max_depth: int,
               min_points_per_centroid: int, n_iter: int, seed: int) -> ClusterTree:
    """Hierarchical k-means over prepared ``sample`` rows, breadth-first: the root splits into
    ``n_root`` clusters, every other node into ``branching``, down to depth ``max_depth``; a
    node whose sample share is below ``min_points_per_centroid`` per child stays a leaf (the
    root then takes as many children as its points allow, if at least two)."""
    x = np.ascontiguousarray(sample, np.float32)
    dim = x.shape[1]
    root = x.mean(axis=0, dtype=np.float64).astype(np.float32) if len(x) else np.zeros(dim, np.float32)
    centroids: list[np.ndarray] = [root[None, :]]
    first_child: list[int] = [0]
    n_children: list[int] = [0]
    depths = [0]
    members: list[np.ndarray | None] = [np.arange(len(x))]
    node = 0
    while node < len(members):
        rows = members[node]
        members[node] = None
        fan = n_root if depths[node] == 0 else branching
        if depths[node] == 0:
            fan = min(fan, len(rows) // min_points_per_centroid)
        if depths[node] >= max_depth or fan < 2 or len(rows) < fan * min_points_per_centroid:
            node += 1
            continue
        cents = _kmeans(x[rows], fan, n_iter, seed + node)
        start = sum(len(c) for c in centroids)
        first_child[node], n_children[node] = start, fan
        centroids.append(cents)
        assign = _nearest(x[rows], cents, metric)
        for c in range(fan):
            first_child.append(0)
            n_children.append(0)
            depths.append(depths[node] + 1)
            members.append(rows[assign == c])
        node += 1
    return ClusterTree.from_arrays(np.concatenate(centroids), np.array(first_child, np.int32),
                                   np.array(n_children, np.int32), metric)


def _kmeans(x: F32Matrix, k: int, n_iter: int, seed: int) -> np.ndarray:
    """``k`` k-means centroids of ``x`` (faiss, seeded, at most 256 sampled points per centroid)."""
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, verbose=False,
                      max_points_per_centroid=MAX_POINTS_PER_CENTROID)
    km.cp.min_points_per_centroid = 1
    km.train(np.ascontiguousarray(x))
    return np.ascontiguousarray(km.centroids, np.float32)


def _nearest(x: F32Matrix, cents: np.ndarray, metric: int) -> np.ndarray:
    """Index of the nearest centroid of each row, picked exactly as ``descend`` picks a child
    (the centroids form a one-level tree: root 0, children 1..k)."""
    k = len(cents)
    first_child = np.zeros(k + 1, np.int32)
    n_children = np.zeros(k + 1, np.int32)
    first_child[0], n_children[0] = 1, k
    out = np.empty(len(x), np.int32)
    descend(np.ascontiguousarray(x), np.concatenate([cents[:1], cents]), first_child, n_children, metric, out)
    return out - 1
