"""User ids <-> dense internal slots. Indexes work on slots; only this map knows ids."""
from __future__ import annotations

import numpy as np

from vecdb.types import I64Vector

_GROWTH = 1.5


class IdMap:
    """Maps int64 user ids to int64 slots (row numbers) and back.

    ``slot_ids[s]`` is the id stored in slot ``s`` or -1 when the slot is free. Slots are
    handed out by the index (append, reuse or compaction is the index's policy).
    """

    def __init__(self, slot_ids: I64Vector | None = None) -> None:
        self._slot_ids = np.full(16, -1, np.int64)
        self._n_slots = 0
        self._slot_of: dict[int, int] = {}
        if slot_ids is not None:
            self._reserve(len(slot_ids))
            self._slot_ids[: len(slot_ids)] = slot_ids
            self._n_slots = len(slot_ids)
            live = np.flatnonzero(slot_ids >= 0)
            self._slot_of = dict(zip(slot_ids[live].tolist(), live.tolist()))

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def n_slots(self) -> int:
        """Number of slots handed out so far (live or free)."""
        return self._n_slots

    @property
    def slot_ids(self) -> I64Vector:
        """View of slot -> id for the slots handed out (-1 = free)."""
        return self._slot_ids[: self._n_slots]

    def contains(self, ids: I64Vector) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        get = self._slot_of.__contains__
        return np.fromiter((get(i) for i in ids.tolist()), bool, len(ids))

    def lookup(self, ids: I64Vector) -> I64Vector:
        """Slots of ``ids``; -1 for ids not stored."""
        get = self._slot_of.get
        return np.fromiter((get(i, -1) for i in ids.tolist()), np.int64, len(ids))

    def next_free_ids(self, n: int) -> I64Vector:
        """``n`` fresh sequential ids after the largest stored one (faiss's default ids)."""
        start = max(self._slot_of, default=-1) + 1
        return np.arange(start, start + n, dtype=np.int64)

    def append(self, ids: I64Vector) -> I64Vector:
        """Store ``ids`` in new slots at the end; returns those slots."""
        slots = np.arange(self._n_slots, self._n_slots + len(ids), dtype=np.int64)
        self.assign(ids, slots)
        return slots

    def assign(self, ids: I64Vector, slots: I64Vector) -> None:
        """Store ``ids[i]`` in ``slots[i]`` (slots may be new or free ones)."""
        if len(slots):
            self._reserve(int(slots.max()) + 1)
            self._n_slots = max(self._n_slots, int(slots.max()) + 1)
        self._slot_ids[slots] = ids
        self._slot_of.update(zip(ids.tolist(), slots.tolist()))

    def release(self, ids: I64Vector) -> I64Vector:
        """Forget the stored ones among ``ids``; returns their freed slots."""
        slots = self.lookup(ids)
        slots = slots[slots >= 0]
        for i in self._slot_ids[slots].tolist():
            del self._slot_of[i]
        self._slot_ids[slots] = -1
        return slots

    def move(self, src: int, dst: int) -> None:
        """Move the id in slot ``src`` to the free slot ``dst`` (for compacting indexes)."""
        ident = int(self._slot_ids[src])
        self._slot_ids[dst] = ident
        self._slot_ids[src] = -1
        if ident >= 0:
            self._slot_of[ident] = dst

    def truncate(self, n_slots: int) -> None:
        """Drop trailing slots at or after ``n_slots`` (they must be free)."""
        self._n_slots = n_slots

    def ids_of(self, slots: np.ndarray) -> np.ndarray:
        """Ids of ``slots`` (any shape); -1 slots map to -1.

        One gather: the backing array always keeps a free (-1) entry at its end, which is
        exactly what index -1 reads.
        """
        return self._slot_ids[slots]

    def live_slots(self) -> I64Vector:
        """Sorted slots that hold an id."""
        return np.flatnonzero(self.slot_ids >= 0).astype(np.int64)

    def memory_bytes(self) -> int:
        """Approximate bytes held: the slot array plus the hash map (~100 B per entry in CPython)."""
        return int(self._slot_ids.nbytes + 100 * len(self._slot_of))

    def _reserve(self, n: int) -> None:
        if n + 1 > len(self._slot_ids):            # + 1: the spare -1 entry ids_of relies on
            grown = np.full(max(n + 1, int(len(self._slot_ids) * _GROWTH)), -1, np.int64)
            grown[: self._n_slots] = self._slot_ids[: self._n_slots]
            self._slot_ids = grown
