"""User ids <-> dense internal slots, in numpy arrays only (no Python dict: a dict costs about
100 B per id). Indexes work on slots; only this map knows ids.

Three layouts, picked from the stored ids and switched as they change:
  - identity: every live slot ``s`` holds id ``s`` (a collection's dense internal ids, or
    default ids never compacted): lookups check liveness only and results need no translation;
  - dense: an int32 array indexed by id (ids up to about twice the count);
  - hash: an open-addressing table (linear probing, load <= 0.7) of int32 slots, the key of a
    bucket being read from ``slot_ids`` (so a bucket costs 4 B, about 6-11 B per id).
Per id: 8 B for ``slot_ids`` plus at most 8 B (dense) or 11.4 B (hash), below 24 B.
"""
from __future__ import annotations

import copy

import numpy as np

from vecdb.errors import ResourceExhaustedError
from vecdb.kernels._jit import kernel
from vecdb.types import I64Vector

_GROWTH = 1.5
#: slots are int32 in the lookup tables (as in the HNSW adjacency arrays).
MAX_SLOTS = 2**31 - 2
#: hash table load that triggers growth; after a rebuild the load is at most half.
_MAX_LOAD = 0.7
_EMPTY_I32 = np.zeros(0, np.int32)

IDENTITY, DENSE, HASH = 0, 1, 2


# ---- kernels (one compile policy: vecdb.kernels._jit) --------------------------------
@kernel
def _home(key, shift):
    """Bucket of ``key``: Fibonacci hashing, the top bits of key * 2^64/phi."""
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))


@kernel
def _hash_find(table, slot_ids, key, shift):
    """Bucket holding ``key``'s slot, or -1 - (the empty bucket where it would go)."""
    mask = len(table) - 1
    b = _home(key, shift)
    while True:
        s = table[b]
        if s < 0:
            return -1 - b
        if slot_ids[s] == key:
            return b
        b = (b + 1) & mask


@kernel
def _hash_insert(table, slot_ids, keys, slots, shift):
    """Point ``keys[i]`` at ``slots[i]`` (keys already written into ``slot_ids``)."""
    for i in range(len(keys)):
        b = _hash_find(table, slot_ids, keys[i], shift)
        table[b if b >= 0 else -1 - b] = slots[i]


@kernel
def _hash_delete(table, slot_ids, keys, shift):
    """Remove ``keys`` (still present in ``slot_ids``) by backward-shift deletion: no tombstones,
    so probe lengths never degrade."""
    mask = len(table) - 1
    for i in range(len(keys)):
        hole = _hash_find(table, slot_ids, keys[i], shift)
        if hole < 0:
            continue
        j = (hole + 1) & mask
        while table[j] >= 0:
            home = _home(slot_ids[table[j]], shift)
            if ((j - home) & mask) >= ((j - hole) & mask):   # home lies at or before the hole
                table[hole] = table[j]
                hole = j
            j = (j + 1) & mask
        table[hole] = -1


@kernel
def _lookup(mode, slot_ids, n_slots, dense, table, shift, keys, out):
    """Slots of ``keys`` (-1 when absent) under the map's layout."""
    for i in range(len(keys)):
        key = keys[i]
        s = -1
        if mode == IDENTITY:
            if 0 <= key < n_slots and slot_ids[key] == key:
                s = key
        elif mode == DENSE:
            if 0 <= key < len(dense):
                s = dense[key]
        else:
            b = _hash_find(table, slot_ids, key, shift)
            if b >= 0:
                s = table[b]
        out[i] = s


@kernel
def _move(mode, slot_ids, dense, table, shift, srcs, dsts):
    """Move the id in slot ``srcs[i]`` to free slot ``dsts[i]``, in order, updating the table."""
    for i in range(len(srcs)):
        src, dst = srcs[i], dsts[i]
        key = slot_ids[src]
        if key < 0 or src == dst:
            continue
        if mode == DENSE:
            dense[key] = dst
        elif mode == HASH:
            b = _hash_find(table, slot_ids, key, shift)
            table[b] = dst
        slot_ids[dst] = key
        slot_ids[src] = -1


# ---- the map ------------------------------------------------------------------------
class IdMap:
    """Maps int64 user ids to int64 slots (row numbers) and back, in numpy arrays only.

    ``slot_ids[s]`` is the id stored in slot ``s`` or -1 when the slot is free. Slots are
    handed out by the index (append, reuse or compaction is the index's policy). The backing
    array keeps at least one free (-1) entry past ``n_slots``, so ``ids_of(-1)`` reads -1.
    ``version`` counts changes (assign, release, move, truncate): a cache keyed by it (such
    as an index's translated allow-sets) stays valid while it is unchanged.
    """

    def __init__(self, slot_ids: I64Vector | None = None) -> None:
        self._slot_ids = np.full(16, -1, np.int64)
        self._n_slots = 0
        self._count = 0
        self._max_id: int | None = -1
        self._mode = IDENTITY
        self._dense = _EMPTY_I32
        self._table = _EMPTY_I32
        self._shift = 64
        self.version = 0
        if slot_ids is not None and len(slot_ids):
            slot_ids = np.asarray(slot_ids, np.int64)
            self._reserve(len(slot_ids))
            self._slot_ids[: len(slot_ids)] = slot_ids
            self._n_slots = len(slot_ids)
            self._count = int(np.count_nonzero(slot_ids >= 0))
            self._max_id = None
            self._rebuild()

    # ---- reading --------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def n_slots(self) -> int:
        """Number of slots handed out so far (live or free)."""
        return self._n_slots

    @property
    def slot_ids(self) -> I64Vector:
        """View of slot -> id for the slots handed out (-1 = free)."""
        return self._slot_ids[: self._n_slots]

    @property
    def is_identity(self) -> bool:
        """True when every stored id equals its slot: lookups and ``ids_of`` are then no-ops."""
        return self._mode == IDENTITY

    @property
    def layout(self) -> str:
        """"identity", "dense" or "hash" (see the module docstring)."""
        return ("identity", "dense", "hash")[self._mode]

    def lookup(self, ids: I64Vector) -> I64Vector:
        """Slots of ``ids``; -1 for ids not stored."""
        out = np.empty(len(ids), np.int64)
        _lookup(self._mode, self._slot_ids, self._n_slots, self._dense, self._table, self._shift,
                np.ascontiguousarray(ids, np.int64), out)
        return out

    def contains(self, ids: I64Vector) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        return self.lookup(ids) >= 0

    def ids_of(self, slots: np.ndarray) -> np.ndarray:
        """Ids of ``slots`` (any shape; -1 slots map to -1). Under the identity layout this is
        ``slots`` itself (no copy): callers pass arrays they own."""
        if self._mode == IDENTITY:
            return slots
        return self._slot_ids[slots]

    def id_mask(self) -> np.ndarray:
        """A new uint8 mask over ids, 1 at the stored ones (at least ``max_id() + 1`` long):
        under the identity layout one vectorised pass over the slots, no scatter."""
        if self._mode == IDENTITY:
            return (self.slot_ids >= 0).view(np.uint8)
        live = self.slot_ids
        mask = np.zeros(self.max_id() + 1, np.uint8)
        mask[live[live >= 0]] = 1
        return mask

    def live_slots(self) -> I64Vector:
        """Sorted slots that hold an id."""
        return np.flatnonzero(self.slot_ids >= 0).astype(np.int64)

    def max_id(self) -> int:
        """Largest stored id, -1 when empty."""
        if self._max_id is None:
            live = self.slot_ids
            live = live[live >= 0]
            self._max_id = int(live.max()) if len(live) else -1
        return self._max_id

    def next_free_ids(self, n: int) -> I64Vector:
        """``n`` fresh sequential ids after the largest stored one (faiss's default ids)."""
        start = self.max_id() + 1
        return np.arange(start, start + n, dtype=np.int64)

    def memory_bytes(self) -> int:
        """Bytes held: the slot array plus the lookup table (none under the identity layout)."""
        return int(self._slot_ids.nbytes + self._dense.nbytes + self._table.nbytes)

    # ---- changes --------------------------------------------------------------------
    def append(self, ids: I64Vector) -> I64Vector:
        """Store ``ids`` in new slots at the end; returns those slots."""
        slots = np.arange(self._n_slots, self._n_slots + len(ids), dtype=np.int64)
        self.assign(ids, slots)
        return slots

    def assign(self, ids: I64Vector, slots: I64Vector) -> None:
        """Store ``ids[i]`` in ``slots[i]`` (new or free slots; ids not stored yet)."""
        if not len(slots):
            return
        ids = np.ascontiguousarray(ids, np.int64)
        top = int(slots.max()) + 1
        self.version += 1
        self._reserve(top)
        self._n_slots = max(self._n_slots, top)
        self._slot_ids[slots] = ids
        self._count += len(ids)
        big = int(ids.max())
        if self._max_id is not None and big > self._max_id:
            self._max_id = big
        if self._mode == IDENTITY:
            if not np.array_equal(ids, slots):
                self._rebuild()
        elif self._mode == DENSE:
            if big >= len(self._dense):
                if not self._dense_fits(big):
                    self._rebuild()
                    return
                grown = np.full(max(big + 1, int(len(self._dense) * _GROWTH)), -1, np.int32)
                grown[: len(self._dense)] = self._dense
                self._dense = grown
            self._dense[ids] = slots
        else:
            if self._count > _MAX_LOAD * len(self._table):
                self._rebuild()
                return
            _hash_insert(self._table, self._slot_ids, ids, np.ascontiguousarray(slots, np.int64), self._shift)

    def planned(self, ids: I64Vector, slots: I64Vector) -> "IdMap | None":
        """A copy of this map with ``ids[i]`` stored in ``slots[i]`` when ``assign`` would take
        an O(n) step here (a layout switch or a grown array), so that a caller can build it
        beside readers and only swap it in while they wait; None when ``assign`` is O(len(ids))."""
        if not len(slots) or not self._assign_is_linear(np.ascontiguousarray(ids, np.int64), slots):
            return None
        twin = copy.copy(self)                   # scalars shared, then the arrays it changes copied
        twin._slot_ids, twin._dense, twin._table = self._slot_ids.copy(), self._dense.copy(), self._table.copy()
        twin.assign(ids, slots)
        return twin

    def _assign_is_linear(self, ids: I64Vector, slots: I64Vector) -> bool:
        """True when ``assign(ids, slots)`` would rebuild the layout or grow an array."""
        if int(slots.max()) + 2 > len(self._slot_ids):
            return True
        if self._mode == IDENTITY:
            return not np.array_equal(ids, slots)
        if self._mode == DENSE:
            return int(ids.max()) >= len(self._dense)
        return self._count + len(ids) > _MAX_LOAD * len(self._table)

    def release(self, ids: I64Vector) -> I64Vector:
        """Forget the stored ones among ``ids`` (unique); returns their freed slots."""
        slots = self.lookup(ids)
        found = slots >= 0
        slots = slots[found]
        if not len(slots):
            return slots
        gone = np.ascontiguousarray(ids, np.int64)[found]
        self.version += 1
        if self._mode == DENSE:
            self._dense[gone] = -1
        elif self._mode == HASH:
            _hash_delete(self._table, self._slot_ids, gone, self._shift)
        self._slot_ids[slots] = -1
        self._count -= len(slots)
        if self._max_id is not None and int(gone.max()) >= self._max_id:
            self._max_id = None
        if self._mode != IDENTITY and (self._count == 0 or (self._mode == DENSE and len(self._dense) > 4 * self._count + 1024)
                                       or (self._mode == HASH and len(self._table) > 8 * self._count + 1024)):
            self._rebuild()                      # shrink a mostly empty table (an empty map is identity)
        return slots

    def move(self, src: int, dst: int) -> None:
        """Move the id in slot ``src`` to the free slot ``dst`` (for compacting indexes)."""
        self.move_many(np.array([src], np.int64), np.array([dst], np.int64))

    def move_many(self, srcs: I64Vector, dsts: I64Vector) -> None:
        """Move the ids in slots ``srcs[i]`` to free slots ``dsts[i]``, in order."""
        if not len(srcs):
            return
        srcs = np.ascontiguousarray(srcs, np.int64)
        self.version += 1
        dsts = np.ascontiguousarray(dsts, np.int64)
        self._reserve(int(dsts.max()) + 1)
        self._n_slots = max(self._n_slots, int(dsts.max()) + 1)
        _move(self._mode, self._slot_ids, self._dense, self._table, self._shift, srcs, dsts)
        if self._mode == IDENTITY:
            self._rebuild()       # ids no longer sit in their own slots (unless all moves were no-ops)

    def truncate(self, n_slots: int) -> None:
        """Drop trailing slots at or after ``n_slots`` (they must be free)."""
        self._slot_ids[n_slots : self._n_slots] = -1
        self._n_slots = n_slots
        self.version += 1

    # ---- layout ---------------------------------------------------------------------
    def _dense_fits(self, max_id: int) -> bool:
        """A dense table up to ``max_id`` costs no more than about 8 B per stored id."""
        return max_id + 1 <= 2 * self._count + 1024

    def _rebuild(self) -> None:
        """Choose the layout for the stored ids and build its table from ``slot_ids``."""
        sid = self.slot_ids
        live = np.flatnonzero(sid >= 0)
        ids = sid[live]
        self._dense, self._table, self._shift = _EMPTY_I32, _EMPTY_I32, 64
        if np.array_equal(ids, live):
            self._mode = IDENTITY
            return
        big = int(ids.max())
        if self._dense_fits(big):
            self._mode = DENSE
            self._dense = np.full(big + 1, -1, np.int32)
            self._dense[ids] = live
            return
        self._mode = HASH
        bits = max(4, int(np.ceil(np.log2(max(2 * len(ids), 16)))))
        self._table = np.full(1 << bits, -1, np.int32)
        self._shift = 64 - bits
        _hash_insert(self._table, self._slot_ids, ids, live.astype(np.int64), self._shift)

    def _reserve(self, n: int) -> None:
        if n > MAX_SLOTS:
            raise ResourceExhaustedError(f"an index holds at most {MAX_SLOTS} slots, asked for {n}")
        if n + 1 > len(self._slot_ids):            # + 1: the spare -1 entry ids_of relies on
            grown = np.full(max(n + 1, int(len(self._slot_ids) * _GROWTH)), -1, np.int64)
            grown[: self._n_slots] = self._slot_ids[: self._n_slots]
            self._slot_ids = grown
