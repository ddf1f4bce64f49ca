"""Allow-sets: the ids a search may return, as sorted unique int64 ids plus a lazily built
uint8 bitmap, so a caller can build one once (per tenant, per filter) and every search reuses
both forms instead of converting mask -> array -> mask on each call. A set made from a bitmap
(``of_bitmap``) lists its ids only if asked: a graph walk takes the bitmap alone."""
from __future__ import annotations

from typing import Any

import numpy as np

from vecdb.errors import InvalidArgumentError

#: the mask a search kernel takes when there is no allow-set (with its "filtered" flag off:
#: never read), one for every index
NO_MASK = np.zeros(1, np.uint8)


class AllowSet:
    """Ids an index may return: sorted unique int64 ids plus a lazily built uint8 bitmap.

    Immutable once built: ``ids`` is a read-only view and the operations return new sets.
    The bitmap is cached on first use; two threads building it at once both build the same
    bytes and one copy wins (a benign race: no lock on the search path).
    """

    __slots__ = ("_sorted", "_bitmap", "_count", "_max")

    def __init__(self, ids: np.ndarray, bitmap: np.ndarray | None = None) -> None:
        """Trusted constructor: ``ids`` sorted unique int64; ``bitmap`` (uint8) marks exactly them."""
        ids = ids.view()
        ids.flags.writeable = False
        self._sorted: np.ndarray | None = ids
        self._bitmap = bitmap
        self._count = len(ids)
        self._max: int | None = None

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_sorted(cls, ids: np.ndarray) -> "AllowSet":
        """Wrap ids that are already sorted, unique and int64 (not checked: the trusted path)."""
        return cls(np.ascontiguousarray(ids, np.int64))

    @classmethod
    def from_ids(cls, ids: Any) -> "AllowSet":
        """Any non-negative integer ids (array, list, set, range, scalar): sorted and uniqued here.

        Raises InvalidArgumentError for non-integer or negative ids.
        """
        if isinstance(ids, AllowSet):
            return ids
        if isinstance(ids, (set, frozenset, range)):
            ids = list(ids)
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.size == 0:
            return cls(np.zeros(0, np.int64))
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"allow ids must be a 1-D array of integers, got {arr.dtype} shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.max() > np.iinfo(np.int64).max:
            raise InvalidArgumentError("allow ids must fit in int64")
        arr = arr.astype(np.int64, copy=False)
        if arr[0] < 0 or (arr < 0).any():
            raise InvalidArgumentError("allow ids must be non-negative")
        if len(arr) > 1 and not (arr[1:] > arr[:-1]).all():
            return cls(np.unique(arr))
        return cls(np.array(arr))               # a copy: never alias the caller's array

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "AllowSet":
        """The positions where bool/uint8 ``mask`` is true; the mask itself becomes the bitmap
        (not copied: the caller must not change it afterwards)."""
        mask = np.asarray(mask)
        if mask.ndim != 1 or mask.dtype not in (np.bool_, np.uint8):
            raise InvalidArgumentError(f"allow mask must be a 1-D bool or uint8 array, got {mask.dtype} shape {mask.shape}")
        return cls.of_bitmap(np.ascontiguousarray(mask).view(np.uint8))

    @classmethod
    def of_bitmap(cls, bitmap: np.ndarray) -> "AllowSet":
        """The set a uint8 ``bitmap`` marks (trusted: 1-D, 0/1, not changed afterwards). Its
        sorted ids are made only if asked for: a search that takes the bitmap never pays the
        O(n) pass that lists them."""
        out = cls.__new__(cls)
        out._sorted, out._bitmap, out._count, out._max = None, bitmap, int(np.count_nonzero(bitmap)), None
        return out

    # ---- reading --------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """The members, sorted unique int64 (read-only view)."""
        ids = self._sorted
        if ids is None:   # a set made from its bitmap: listed on first use (a benign race, as the bitmap)
            assert self._bitmap is not None
            ids = np.flatnonzero(self._bitmap).astype(np.int64, copy=False)
            ids.flags.writeable = False
            self._sorted = ids
        return ids

    def __len__(self) -> int:
        return self._count

    def __contains__(self, ident: object) -> bool:
        ids = self.ids
        if not isinstance(ident, (int, np.integer)) or not len(ids):
            return False
        pos = int(np.searchsorted(ids, ident))
        return pos < len(ids) and int(ids[pos]) == int(ident)

    def __repr__(self) -> str:
        shown = ", ".join(str(i) for i in self.ids[:6].tolist()) + (", ..." if len(self.ids) > 6 else "")
        return f"AllowSet([{shown}], n={len(self.ids)})"

    def max_id(self) -> int:
        """Largest member, -1 when empty (found once: every search of an index asks for it)."""
        top = self._max
        if top is None:
            if not self._count:
                top = -1
            elif self._sorted is not None:
                top = int(self._sorted[-1])
            else:
                assert self._bitmap is not None
                top = len(self._bitmap) - 1 - int(np.argmax(self._bitmap[::-1] != 0))
            self._max = top
        return top

    def bitmap(self, size: int) -> np.ndarray:
        """A uint8 mask of length >= ``size`` with 1 exactly at the members (below its length),
        built on first use and cached; do not modify it."""
        bm = self._bitmap
        if bm is not None and len(bm) >= size:
            return bm
        grown = np.zeros(max(size, self.max_id() + 1, 1), np.uint8)
        if bm is not None:
            grown[: len(bm)] = bm
        else:
            grown[self.ids] = 1
        bm = grown
        self._bitmap = bm
        return bm

    # ---- deriving -------------------------------------------------------------------
    def intersect_mask(self, mask: np.ndarray) -> "AllowSet":
        """Members whose entry in bool/uint8 ``mask`` is true (members past its end are dropped)."""
        ids = self.ids
        if len(ids) and ids[-1] >= len(mask):
            ids = ids[: np.searchsorted(ids, len(mask))]
        return AllowSet(ids[np.asarray(mask)[ids] != 0])

    def without(self, ids: np.ndarray) -> "AllowSet":
        """Members not in ``ids`` (any int ids, e.g. stale staged rows); ``self`` when none go."""
        gone = np.asarray(ids, np.int64).reshape(-1)
        members = self.ids
        if not len(gone) or not len(members):
            return self
        pos = np.minimum(np.searchsorted(members, gone), len(members) - 1)   # O(len(ids) log n)
        pos = pos[members[pos] == gone]
        if not len(pos):
            return self
        return AllowSet(np.delete(members, pos))

    def intersect(self, other: "AllowSet") -> "AllowSet":
        """Members of both sets (e.g. a tenant's set and a filter's set)."""
        return AllowSet(np.intersect1d(self.ids, other.ids, assume_unique=True))

    @classmethod
    def union(cls, sets: "list[AllowSet]") -> "AllowSet":
        """Members of any of ``sets`` (e.g. the points of several tenants), each once."""
        if len(sets) == 1:
            return sets[0]
        return cls(np.unique(np.concatenate([s.ids for s in sets])) if sets else np.empty(0, np.int64))

    def nbytes(self) -> int:
        """Bytes held: the ids plus the bitmap once built."""
        listed = 0 if self._sorted is None else self._sorted.nbytes
        return int(listed + (0 if self._bitmap is None else self._bitmap.nbytes))


def as_allow(allow: Any) -> AllowSet:
    """``allow`` (AllowSet, array, list, set, range) as an AllowSet; InvalidArgumentError if bad."""
    if isinstance(allow, AllowSet):
        return allow
    if isinstance(allow, np.ndarray) and allow.dtype == np.bool_:
        raise InvalidArgumentError("allow must hold ids, not a bool mask; use AllowSet.from_mask(mask)")
    return AllowSet.from_ids(allow)
