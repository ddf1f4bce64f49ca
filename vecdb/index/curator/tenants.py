"""One tenant's sub-tree of the shared clustering tree: where its members sit.

A tenant keeps a *shortlist* (its member slots, int32) at the nodes where it has few members
and marks the nodes above them *expanded* (with the count of its members beneath). For each
member exactly one node on its root-to-leaf path holds it, so at most one shortlist of a
tenant lies on any path. A shortlist longer than ``max_shortlist`` splits into the node's
children (leaves never split); an expanded node whose count falls to ``max_shortlist // 2``
or below collapses its sub-tree back into one shortlist (the gap avoids split/merge churn).

The expanded and shortlist nodes of a tenant are its exact per-node summary: a search walks
only them, so no node outside the tenant's sub-tree is ever visited and no false positive
exists to filter (an exact small set is cheaper than a Bloom filter per node here).
``view()`` packs them into sorted flat arrays for the search kernel (each shortlist's slots
ascending, so its rows are read in address order), cached until a change.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from vecdb.index.curator.tree import ClusterTree

_EMPTY32 = np.zeros(0, np.int32)
#: ``View.kind`` of an expanded node (shortlist nodes hold their shortlist's number, >= 0).
EXPANDED = -1


class View(NamedTuple):
    """A tenant's sub-tree for the search kernel: ``nodes`` sorted int32, ``kind`` int64 per
    node (EXPANDED or a shortlist number), shortlists ``slots`` int32 in CSR form by ``ptr``."""

    nodes: np.ndarray
    kind: np.ndarray
    ptr: np.ndarray
    slots: np.ndarray

    def nbytes(self) -> int:
        return int(self.nodes.nbytes + self.kind.nbytes + self.ptr.nbytes + self.slots.nbytes)


class TenantLists:
    """Shortlists and expanded nodes of one tenant (see the module docstring)."""

    __slots__ = ("expanded", "lists", "_view")

    def __init__(self) -> None:
        self.expanded: dict[int, int] = {}
        self.lists: dict[int, np.ndarray] = {}
        self._view: View | None = None

    def __len__(self) -> int:
        """Members placed in the tree."""
        if 0 in self.expanded:
            return self.expanded[0]
        root = self.lists.get(0)
        return 0 if root is None else len(root)

    def slots(self) -> np.ndarray:
        """Every member slot (int64, in shortlist order)."""
        if not self.lists:
            return np.zeros(0, np.int64)
        return np.concatenate(list(self.lists.values())).astype(np.int64)

    # ---- changes ------------------------------------------------------------------------
    def insert(self, slots: np.ndarray, leaves: np.ndarray, tree: ClusterTree, leaf_of: np.ndarray,
               max_shortlist: int) -> None:
        """Place new members ``slots`` (not members yet) whose leaves are ``leaves``."""
        if not len(slots):
            return
        self._view = None
        slots = slots.astype(np.int32)
        if not self.expanded:                           # no split yet: every member is at the root
            old = self.lists.get(0)
            self.lists[0] = slots if old is None else np.concatenate([old, slots])
            if len(self.lists[0]) > max_shortlist and not tree.is_leaf(0):
                self._split(0, tree, leaf_of, max_shortlist)
            return
        touched: list[int] = []
        for node, rows in self._walk(leaves, tree, +1):
            old = self.lists.get(node)
            self.lists[node] = slots[rows] if old is None else np.concatenate([old, slots[rows]])
            touched.append(node)
        for node in touched:
            if len(self.lists[node]) > max_shortlist and not tree.is_leaf(node):
                self._split(node, tree, leaf_of, max_shortlist)

    def delete(self, slots: np.ndarray, leaves: np.ndarray, tree: ClusterTree, max_shortlist: int) -> None:
        """Take out members ``slots`` (all members) whose leaves are ``leaves``, merging
        sub-trees that shrank back into one shortlist."""
        if not len(slots):
            return
        self._view = None
        slots = slots.astype(np.int32)
        touched: set[int] = set()
        for node, rows in self._walk(leaves, tree, -1, touched):
            kept = self.lists[node]
            kept = kept[~np.isin(kept, slots[rows], assume_unique=True)]
            if len(kept):
                self.lists[node] = kept
            else:
                del self.lists[node]
        merge_at = max_shortlist // 2
        for node in sorted(touched, key=lambda n: int(tree.depth[n])):
            count = self.expanded.get(node)
            if count is not None and count <= merge_at:
                self._collapse(node, tree)

    def _walk(self, leaves: np.ndarray, tree: ClusterTree, step: int,
              touched: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Follow each leaf's path down through the expanded nodes, adding ``step`` to their
        counts (and noting them in ``touched``); yields (node, row positions) for the first
        non-expanded node of each path, where the member's shortlist is."""
        rows = np.arange(len(leaves))
        paths = tree.anc[leaves]
        for d in range(tree.height):
            if not len(rows):
                break
            here = paths[rows, d].astype(np.int64)
            if self.expanded:
                keys = np.fromiter(self.expanded, np.int64, len(self.expanded))
                down = np.isin(here, keys)
            else:
                down = np.zeros(len(rows), bool)
            stop = ~down
            if stop.any():
                stop_rows, stop_nodes = rows[stop], here[stop]
                order = np.argsort(stop_nodes, kind="stable")
                nodes, starts = np.unique(stop_nodes[order], return_index=True)
                bounds = np.append(starts, len(order))
                for j, node in enumerate(nodes.tolist()):
                    yield node, stop_rows[order[bounds[j] : bounds[j + 1]]]
            if down.any():
                nodes, counts = np.unique(here[down], return_counts=True)
                for node, count in zip(nodes.tolist(), counts.tolist()):
                    self.expanded[node] += step * count
                    if touched is not None:
                        touched.add(node)
            rows = rows[down]

    def _split(self, node: int, tree: ClusterTree, leaf_of: np.ndarray, max_shortlist: int) -> None:
        """Turn an overflowing shortlist into the node's children's shortlists (recursively)."""
        members = self.lists.pop(node)
        self.expanded[node] = len(members)
        child = tree.anc[leaf_of[members], int(tree.depth[node]) + 1]
        order = np.argsort(child, kind="stable")
        kids, starts = np.unique(child[order], return_index=True)
        bounds = np.append(starts, len(order))
        for j, kid in enumerate(kids.tolist()):
            part = members[order[bounds[j] : bounds[j + 1]]]
            self.lists[kid] = part
            if len(part) > max_shortlist and not tree.is_leaf(kid):
                self._split(kid, tree, leaf_of, max_shortlist)

    def _collapse(self, node: int, tree: ClusterTree) -> None:
        """Gather the shortlists beneath expanded ``node`` into one shortlist at ``node``."""
        parts: list[np.ndarray] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if self.expanded.pop(n, None) is not None:
                stack.extend(tree.children(n))
            else:
                part = self.lists.pop(n, None)
                if part is not None:
                    parts.append(part)
        if parts:
            self.lists[node] = np.concatenate(parts)

    # ---- reading ------------------------------------------------------------------------
    def view(self) -> View | None:
        """The sub-tree as flat arrays for the search kernel (None when the tenant has no members)."""
        view = self._view
        if view is None and self.lists:
            nodes = np.array(sorted([*self.expanded, *self.lists]), np.int32)
            kind = np.full(len(nodes), EXPANDED, np.int64)
            pos = {node: i for i, node in enumerate(nodes.tolist())}
            parts: list[np.ndarray] = []
            ptr = [0]
            for node, part in sorted(self.lists.items()):      # shortlists numbered in node order
                kind[pos[node]] = len(parts)
                parts.append(np.sort(part))                     # rows read in address order
                ptr.append(ptr[-1] + len(part))
            view = self._view = View(nodes, kind, np.array(ptr, np.int64), np.concatenate(parts).astype(np.int32))
        return view

    def nbytes(self) -> int:
        """Bytes held: shortlists, the cached view, and about 100 B per dict entry."""
        lists = sum(a.nbytes for a in self.lists.values())
        view = 0 if self._view is None else self._view.nbytes()
        return int(lists + view + 100 * (len(self.lists) + len(self.expanded)))

    def check(self, tree: ClusterTree, leaf_of: np.ndarray, max_shortlist: int) -> None:
        """Raise ValueError unless the invariants hold: each shortlist is non-empty, lies under
        expanded ancestors only and holds members of its own sub-tree, at most one shortlist
        per path, none longer than ``max_shortlist`` except at a leaf, expanded counts exact."""
        beneath = np.zeros(tree.n_nodes, np.int64)
        for node, part in self.lists.items():
            d = int(tree.depth[node])
            if not len(part):
                raise ValueError(f"empty shortlist at node {node}")
            if len(part) > max_shortlist and not tree.is_leaf(node):
                raise ValueError(f"shortlist of {len(part)} at inner node {node}")
            if ((part < 0) | (part >= len(leaf_of))).any() or (leaf_of[part] < 0).any():
                raise ValueError(f"shortlist at node {node} holds free or unknown slots")
            if (tree.anc[leaf_of[part], d] != node).any():
                raise ValueError(f"shortlist at node {node} holds slots of other sub-trees")
            for a in tree.anc[node, :d].tolist():
                if a not in self.expanded:
                    raise ValueError(f"shortlist at node {node} under non-expanded ancestor {a}")
                beneath[a] += len(part)
        for node, count in self.expanded.items():
            if not 0 <= node < tree.n_nodes or node in self.lists or tree.is_leaf(node):
                raise ValueError(f"expanded node {node} is unknown, a leaf or a shortlist")
            if beneath[node] != count:
                raise ValueError(f"expanded node {node} counts {count}, holds {beneath[node]}")
            for a in tree.anc[node, : int(tree.depth[node])].tolist():
                if a not in self.expanded:
                    raise ValueError(f"expanded node {node} under non-expanded ancestor {a}")
        everyone = self.slots()
        if len(np.unique(everyone)) != len(everyone):
            raise ValueError("a member sits in two shortlists")
