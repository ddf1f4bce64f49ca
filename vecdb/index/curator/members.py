"""Exact tenant membership of stored slots: for each slot a chain of (tenant) cells in flat
int arrays, so "is slot s a member of tenant t", "grant" and "revoke" cost a walk of s's few
tenants, and a removed slot yields the tenants it belonged to. About 8 B per membership
plus 4 B per slot, with no Python object per entry."""
from __future__ import annotations

import numpy as np

from vecdb.kernels._jit import kernel

_GROWTH = 1.5
#: ``state`` entries: head of the free-cell list, cells handed out so far (high-water mark).
FREE, USED = 0, 1


@kernel
def chain_has(head, cell_tenant, cell_next, slot, tenant):
    """True when ``tenant`` is in the chain of ``slot``."""
    p = head[slot]
    while p >= 0:
        if cell_tenant[p] == tenant:
            return True
        p = cell_next[p]
    return False


@kernel
def chain_add(head, cell_tenant, cell_next, state, slots, tenant, added):
    """Add ``tenant`` to the chain of each slot not holding it yet (``added[i]`` = 1 then);
    the caller guarantees room for ``len(slots)`` new cells."""
    for i in range(slots.shape[0]):
        s = slots[i]
        if chain_has(head, cell_tenant, cell_next, s, tenant):
            added[i] = 0
            continue
        q = state[FREE]
        if q >= 0:
            state[FREE] = cell_next[q]
        else:
            q = state[USED]
            state[USED] += 1
        cell_tenant[q] = tenant
        cell_next[q] = head[s]
        head[s] = q
        added[i] = 1


@kernel
def chain_remove(head, cell_tenant, cell_next, state, slots, tenant, removed):
    """Take ``tenant`` out of each slot's chain (``removed[i]`` = 1 when it was there)."""
    for i in range(slots.shape[0]):
        s = slots[i]
        prev = -1
        p = head[s]
        removed[i] = 0
        while p >= 0:
            if cell_tenant[p] == tenant:
                if prev < 0:
                    head[s] = cell_next[p]
                else:
                    cell_next[prev] = cell_next[p]
                cell_next[p] = state[FREE]
                state[FREE] = p
                removed[i] = 1
                break
            prev = p
            p = cell_next[p]


@kernel
def chain_pop_all(head, cell_tenant, cell_next, state, slots, out_pos, out_tenant):
    """Empty the chains of ``slots``; returns how many (position in ``slots``, tenant) pairs
    were written to ``out_pos``/``out_tenant`` (sized by the caller: every membership fits)."""
    n = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        p = head[s]
        while p >= 0:
            nxt = cell_next[p]
            out_pos[n] = i
            out_tenant[n] = cell_tenant[p]
            n += 1
            cell_next[p] = state[FREE]
            state[FREE] = p
            p = nxt
        head[s] = -1
    return n


class Memberships:
    """Which tenants each stored slot belongs to (see the module docstring)."""

    def __init__(self) -> None:
        self.head = np.full(0, -1, np.int32)
        self.cell_tenant = np.zeros(0, np.int64)
        self.cell_next = np.zeros(0, np.int32)
        self.state = np.array([-1, 0], np.int64)
        self.count = 0

    def reserve_slots(self, n: int) -> None:
        """Room for slots ``0 .. n-1``."""
        if n > len(self.head):
            grown = np.full(max(n, int(len(self.head) * _GROWTH), 64), -1, np.int32)
            grown[: len(self.head)] = self.head
            self.head = grown

    def _reserve_cells(self, extra: int) -> None:
        need = int(self.state[USED]) + extra
        if need > len(self.cell_next):
            cap = max(need, int(len(self.cell_next) * _GROWTH), 64)
            for name, dtype in (("cell_tenant", np.int64), ("cell_next", np.int32)):
                old = getattr(self, name)
                grown = np.zeros(cap, dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)

    def add(self, tenant: int, slots: np.ndarray) -> np.ndarray:
        """Make ``slots`` members of ``tenant``; returns the mask of those that were not yet."""
        slots = np.ascontiguousarray(slots, np.int64)
        self._reserve_cells(len(slots))
        added = np.zeros(len(slots), np.uint8)
        chain_add(self.head, self.cell_tenant, self.cell_next, self.state, slots, np.int64(tenant), added)
        mask = added.view(np.bool_)
        self.count += int(mask.sum())
        return mask

    def remove(self, tenant: int, slots: np.ndarray) -> np.ndarray:
        """Take ``slots`` out of ``tenant``; returns the mask of those that were members."""
        slots = np.ascontiguousarray(slots, np.int64)
        removed = np.zeros(len(slots), np.uint8)
        chain_remove(self.head, self.cell_tenant, self.cell_next, self.state, slots, np.int64(tenant), removed)
        mask = removed.view(np.bool_)
        self.count -= int(mask.sum())
        return mask

    def pop_all(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forget every membership of ``slots``; returns (positions in ``slots``, tenants) pairs."""
        slots = np.ascontiguousarray(slots, np.int64)
        pos = np.empty(self.count, np.int64)
        ten = np.empty(self.count, np.int64)
        n = chain_pop_all(self.head, self.cell_tenant, self.cell_next, self.state, slots, pos, ten)
        self.count -= int(n)
        return pos[:n], ten[:n]

    def has(self, slot: int, tenant: int) -> bool:
        return bool(slot < len(self.head) and chain_has(self.head, self.cell_tenant, self.cell_next, slot, tenant))

    def nbytes(self) -> int:
        return int(self.head.nbytes + self.cell_tenant.nbytes + self.cell_next.nbytes)


@kernel
def member_mask(head, cell_tenant, cell_next, slots, tenant, out):
    """``out[i, j]`` = 1 when ``slots[i, j]`` (a (nq, k) result, -1 padded) is a member of ``tenant``."""
    for i in range(slots.shape[0]):
        for j in range(slots.shape[1]):
            s = slots[i, j]
            out[i, j] = 1 if 0 <= s < head.shape[0] and chain_has(head, cell_tenant, cell_next, s, tenant) else 0
