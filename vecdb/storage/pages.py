"""A read-only map of an LMDB environment's data file, for kernels that walk LMDB's B+trees in
it (``vecdb.kernels.lmdb_pages``): a record looked up without a Python call (py-lmdb's
lookup costs ~1.5 us a key, and a one-query SPANN search reads 5-30 postings and re-ranks
10-40 float rows).

Only committed pages are read, and only while a read transaction of the same environment is
open: LMDB reuses no page a live snapshot can reach (its MVCC rule), so the pages under the
root that snapshot gives (``Store.root``) stay as they are until the transaction ends; the
environment is opened without ``writemap``, so a page is in the file before its commit. Keys
compare as bytes in the kernels: sub-databases opened with other key orders are not read
that way (``root_of`` gives None). A page past the mapped length means the file grew:
``PageMap.remap`` maps it again.
"""
from __future__ import annotations

import mmap
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

#: the sub-database record LMDB keeps under the name in the main database (``MDB_db``):
#: pad, flags, depth, branch / leaf / overflow page counts, entries, root page
_DB = struct.Struct("<IHHQQQQQ")
#: key-order flags of ``MDB_db.md_flags`` this reader does not follow (reverse, dupsort,
#: integer keys, dupfixed, integer dups, reverse dups)
_OTHER_ORDER = 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40
_NO_ROOT = (1 << 64) - 1


def root_of(record: Any) -> int | None:
    """The root page of a sub-database from its ``MDB_db`` record in the main database, -1 for
    an empty one; None when the record is not one this reader follows."""
    if record is None or len(record) != _DB.size:
        return None
    _, flags, _, _, _, _, _, root = _DB.unpack(bytes(record))
    if flags & _OTHER_ORDER:
        return None
    return -1 if root == _NO_ROOT else int(root)


class PageMap:
    """A read-only map of an LMDB environment's data file, mapped again when the file has
    grown past it (``remap``). ``pages`` is the map as a uint8 array; an array handed out
    stays valid after a remap (its map is closed when the last array of it goes)."""

    def __init__(self, path: Path, page_size: int) -> None:
        self.path = path
        self.page_size = int(page_size)
        self._lock = threading.Lock()
        self.pages = self._map()

    def _map(self) -> np.ndarray:
        with open(self.path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                return np.zeros(0, np.uint8)
            return np.frombuffer(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ), np.uint8)

    def remap(self, seen: np.ndarray) -> np.ndarray:
        """The map after the file grew past ``seen`` (the array a lookup found too short)."""
        with self._lock:
            if self.pages is seen:
                self.pages = self._map()
            return self.pages
