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
``PageMap.remap`` lengthens the view (mapping the file again when it outgrew the map).
"""
from __future__ import annotations

import ctypes
import mmap
import os
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
    """A read-only map of an LMDB environment's data file. ``pages`` is the file's bytes as a
    uint8 array, as long as the file was when last looked at; the map reserves room past
    that (``SLACK``), so when the file grows ``remap`` only lengthens the view, and the page
    tables of what searches touched stay (a new map starts with none: every page a search
    touches again costs a fault). A new map is made when the file outgrows the reserve; an
    array handed out stays valid after that (its map is unmapped when the last array of it
    goes)."""

    #: bytes reserved past the file's length: as much again, at least 1 GiB (address space only)
    SLACK = 1 << 30

    def __init__(self, path: Path, page_size: int) -> None:
        self.path = path
        self.page_size = int(page_size)
        self._lock = threading.Lock()
        self._whole = np.zeros(0, np.uint8)
        self.pages = self._view()

    def _view(self) -> np.ndarray:
        """``pages`` for the file's length now, mapping it again when it outgrew the map."""
        size = os.stat(self.path).st_size
        if size > len(self._whole):
            self._whole = _map_file(self.path, max(2 * size, size + self.SLACK))
        return self._whole[:size]

    def remap(self, seen: np.ndarray) -> np.ndarray:
        """The map after the file grew past ``seen`` (the array a lookup found too short)."""
        with self._lock:
            if self.pages is seen:
                self.pages = self._view()
            return self.pages


class _Mapping:
    """One read-only shared map of ``length`` bytes of a file (past its end: reserved address
    space, never read), unmapped when the last array over it is collected."""

    def __init__(self, fd: int, length: int) -> None:
        addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), f"mmap of {length} bytes failed")
        self._addr, self._length = addr, length
        self.__array_interface__ = {"shape": (length,), "typestr": "|u1", "data": (addr, True), "version": 3}
        # reads here are lookups of a few pages each: without this, every fault on an uncached
        # page also reads the kernel's read-around window (5M SQ8 postings cold: 10.2 MB read
        # a query for 0.36 MB used; 4.1 -> 2.5 ms a query)
        _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(length), _MADV_RANDOM)

    def __del__(self) -> None:
        _libc.munmap(ctypes.c_void_p(self._addr), ctypes.c_size_t(self._length))


def _map_file(path: Path, length: int) -> np.ndarray:
    """``length`` bytes of ``path`` mapped read-only as a uint8 array."""
    with open(path, "rb") as f:
        return np.asarray(_Mapping(f.fileno(), length))   # the map outlives the descriptor


_MADV_RANDOM = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
