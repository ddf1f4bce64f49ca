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
    #: a file up to this share of the memory the process may use is read with the kernel's
    #: read-around (``small_file``); a larger one page by page
    SMALL_SHARE = 1 / 16

    def __init__(self, path: Path, page_size: int) -> None:
        self.path = path
        self.page_size = int(page_size)
        self._lock = threading.Lock()
        self._whole = np.zeros(0, np.uint8)
        self._mapping: _Mapping | None = None
        self.pages = self._view()

    @property
    def random_reads(self) -> bool:
        """Whether the map is read page by page (a large file), not with read-around."""
        return bool(self._mapping is not None and self._mapping.random)

    def _view(self) -> np.ndarray:
        """``pages`` for the file's length now, mapping it again when it outgrew the map, and
        its read policy set for that length (``small_file``)."""
        size = os.stat(self.path).st_size
        if size > len(self._whole):
            self._mapping = _Mapping.of(self.path, max(2 * size, size + self.SLACK))
            self._whole = np.asarray(self._mapping)
        assert self._mapping is not None
        self._mapping.advise(random=not small_file(size, self.SMALL_SHARE))
        return self._whole[:size]

    def remap(self, seen: np.ndarray) -> np.ndarray:
        """The map after the file grew past ``seen`` (the array a lookup found too short)."""
        with self._lock:
            if self.pages is seen:
                self.pages = self._view()
            return self.pages


def small_file(size: int, share: float) -> bool:
    """Whether a file of ``size`` bytes is small against the memory this process may use
    (its cgroup's ``memory.max`` where set, else the machine's available memory): at most
    ``share`` of it. A search of such a file soon has all of it cached, and the kernel's
    read-around only brings forward pages it would read anyway (arxiv's 34 MB of SQ8
    postings, cold: the first queries fault 128 KB windows instead of single pages); in a
    larger one the window is mostly pages no query wants, which push out ones they do."""
    return size <= share * memory_limit()


def memory_limit() -> int:
    """Bytes this process may use: its cgroup v2 ``memory.max`` where set, else
    ``MemAvailable`` (0 when neither can be read: every file counts as large)."""
    limits = []
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            rel = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), None)
        if rel is not None:
            with open(f"/sys/fs/cgroup{rel.rstrip('/')}/memory.max", encoding="ascii") as f:
                text = f.read().strip()
            if text.isdigit():
                limits.append(int(text))
    except (OSError, IndexError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else 0


class _Mapping:
    """One read-only shared map of ``length`` bytes of a file (past its end: reserved address
    space, never read), unmapped when the last array over it is collected."""

    def __init__(self, fd: int, length: int) -> None:
        addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), f"mmap of {length} bytes failed")
        self._addr, self._length = addr, length
        self.random: bool | None = None
        self.__array_interface__ = {"shape": (length,), "typestr": "|u1", "data": (addr, True), "version": 3}

    @classmethod
    def of(cls, path: Path, length: int) -> "_Mapping":
        """``length`` bytes of ``path`` mapped read-only (the map outlives the descriptor)."""
        with open(path, "rb") as f:
            return cls(f.fileno(), length)

    def advise(self, random: bool) -> None:
        """Read the map page by page (``random``: reads of a large file are lookups of a few
        pages each, and read-around on every fault of an uncached page read 10.2 MB a query
        for 0.36 MB used: 5M SQ8 postings cold, 4.1 -> 2.5 ms a query) or with the kernel's
        read-around (a small file: ``small_file``)."""
        if random != self.random:
            _libc.madvise(ctypes.c_void_p(self._addr), ctypes.c_size_t(self._length),
                          _MADV_RANDOM if random else _MADV_NORMAL)
            self.random = random

    def __del__(self) -> None:
        _libc.munmap(ctypes.c_void_p(self._addr), ctypes.c_size_t(self._length))


_MADV_NORMAL = 0
_MADV_RANDOM = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
