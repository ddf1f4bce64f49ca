"""RowStore: the growable dense row array under every flat index (float vectors or codes)."""
from __future__ import annotations

from typing import Any

import numpy as np

_MIN_CAPACITY = 64
_GROWTH = 1.5


class RowStore:
    """Fixed-width rows of one dtype in one dense array, rows ``[0, n)`` live.

    Appends are amortised O(1) (capacity grows 1.5x by copying); removals are the caller's
    ``move`` of tail rows into holes followed by ``truncate``. With ``sqnorms=True`` (float
    rows) the squared L2 norm of each row is kept beside it (flat search's BLAS path uses it).

    A store built over a read-only array (``load_index(mmap=True)`` maps saved arrays) reads
    from it and copies it into memory on the first write (copy-on-write). Growth copies and
    then swaps arrays, so a search running meanwhile sees the old or the new arrays, both
    holding every live row: ``reserve`` is safe next to readers (never next to writers).
    """

    def __init__(self, width: int, dtype: Any = np.float32, rows: np.ndarray | None = None, *,
                 sqnorms: bool = False) -> None:
        self.width = int(width)
        self.dtype = np.dtype(dtype)
        if rows is None:
            rows = np.zeros((0, self.width), self.dtype)
        elif rows.ndim != 2 or rows.shape[1] != self.width or rows.dtype != self.dtype:
            raise ValueError(f"rows array has shape {rows.shape} {rows.dtype}, expected (n, {self.width}) {self.dtype}")
        self._rows = np.ascontiguousarray(rows)
        self._n = len(self._rows)
        self._sqnorms = self._norms_of(self._rows) if sqnorms else None

    # ---- reading ----------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of live rows."""
        return self._n

    @n.setter
    def n(self, n: int) -> None:
        self.truncate(n)

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> np.ndarray:
        """The live rows (a view; do not modify)."""
        return self._rows[: self._n]

    @property
    def sqnorms(self) -> np.ndarray:
        """Squared L2 norms of the live rows, float32 (only for stores built with ``sqnorms=True``)."""
        if self._sqnorms is None:
            raise AttributeError("this RowStore keeps no norms (built with sqnorms=False)")
        return self._sqnorms[: self._n]

    @property
    def capacity(self) -> int:
        """Rows the backing array holds before it must grow."""
        return len(self._rows)

    def nbytes(self) -> int:
        """Bytes held by the backing arrays (spare capacity included)."""
        return int(self._rows.nbytes + (0 if self._sqnorms is None else self._sqnorms.nbytes))

    # ---- writing ----------------------------------------------------------------------
    def reserve(self, need: int) -> None:
        """Grow the backing arrays to hold at least ``need`` rows (geometrically, by copying)."""
        if need <= len(self._rows):
            return
        cap = max(int(need), int(len(self._rows) * _GROWTH), _MIN_CAPACITY)
        grown = np.empty((cap, self.width), self.dtype)
        grown[: self._n] = self._rows[: self._n]
        if self._sqnorms is not None:
            norms = np.empty(cap, np.float32)
            norms[: self._n] = self._sqnorms[: self._n]
            self._rows, self._sqnorms = grown, norms
        else:
            self._rows = grown

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` (m, width) after the live rows."""
        need = self._n + len(rows)
        self.reserve(need)
        self._make_writable()
        self._rows[self._n : need] = rows
        if self._sqnorms is not None:
            self._sqnorms[self._n : need] = self._norms_of(self._rows[self._n : need])
        self._n = need

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Copy rows ``src`` onto rows ``dst`` (fills holes left by removals)."""
        if len(src) == 0:
            return
        self._make_writable()
        self._rows[dst] = self._rows[src]
        if self._sqnorms is not None:
            self._sqnorms[dst] = self._sqnorms[src]

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows; the rest become spare capacity."""
        if not 0 <= n <= self._n:
            raise ValueError(f"cannot truncate {self._n} rows to {n}")
        self._n = int(n)

    # ---- internals ----------------------------------------------------------------------
    def _make_writable(self) -> None:
        """Copy a read-only (memory-mapped) backing array into memory before the first write."""
        if not self._rows.flags.writeable:
            self._rows = np.array(self._rows)

    @staticmethod
    def _norms_of(rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", rows, rows, dtype=np.float32) if len(rows) else np.zeros(0, np.float32)
