"""LMDB's B+tree walked in Numba, over a map of the data file's pages (``vecdb.storage.pages``
maps it and gives a sub-database's root page for a read snapshot).

The page layout is LMDB 0.9's (``mdb.c``): a 16-byte page header (page number, pad, flags,
lower / upper free bounds or the overflow page count), then 2-byte node offsets; a node is
its data size (lo, hi 16 bits), flags, key size, the key, then the data or, ``F_BIGDATA``,
the number of its first overflow page; a branch node's child page number is its lo, hi and
flags words. Keys compare as bytes (memcmp, then length).

A lookup gives a byte range of the map, or a negative code: ``MISSING`` (no such key),
``BEYOND`` (a page past the mapped length: the file grew; map it again and retry) or
``UNEXPECTED`` (a page that is not what the tree says it is — a corrupt page, or a layout
this reader does not know): the caller then reads through py-lmdb, the reference path.
Every page number is checked against the map before it is read.
"""
from __future__ import annotations

import numpy as np

from vecdb.kernels._jit import kernel
from vecdb.kernels.prefetch import prefetch, will_need
from vecdb.kernels.views import load_be_u64

MISSING, BEYOND, UNEXPECTED = -1, -2, -3
PAGE_HEADER = 16
NODE_HEADER = 8
P_BRANCH, P_LEAF, P_OVERFLOW = 0x01, 0x02, 0x04
F_BIGDATA = 0x01
#: deepest tree walked (LMDB's cursor stack is 32 deep)
MAX_DEPTH = 32


@kernel(inline=True)
def _u16(pages, at):
    return np.int64(pages[at]) | (np.int64(pages[at + 1]) << 8)


@kernel(inline=True)
def _u64(pages, at):
    v = np.int64(0)
    for b in range(8):
        v |= np.int64(pages[at + b]) << (8 * b)
    return v


@kernel(inline=True)
def _compare(pages, at, size, key):
    """memcmp order of the node key ``pages[at:at+size]`` against ``key``: <0, 0, >0. Two
    8-byte keys (vecdb's, big-endian integers) compare as one integer each: a byte loop
    that exits at the first difference mispredicts on most nodes of a binary search."""
    if size == 8 and key.shape[0] == 8:
        a = load_be_u64(pages, at)
        b = load_be_u64(key, 0)
        return np.int64(a > b) - np.int64(a < b)
    n = min(size, key.shape[0])
    for b in range(n):
        x = np.int64(pages[at + b]) - np.int64(key[b])
        if x != 0:
            return x
    return size - key.shape[0]


@kernel(inline=True)
def _node(pages, p, i, page_size):
    """(offset in ``pages``, key size) of node ``i`` of the page at ``p``, or (-1, 0) when
    the node or its key would reach past the page (a damaged page)."""
    at = _u16(pages, p + PAGE_HEADER + 2 * i)
    if at < PAGE_HEADER or at + NODE_HEADER > page_size:
        return -1, 0
    ksize = _u16(pages, p + at + 6)
    if at + NODE_HEADER + ksize > page_size:
        return -1, 0
    return p + at, ksize


#: what ``_step`` found on a page besides a value: a child page to descend to
_CHILD = -4
#: ``_last_at_most`` on a page whose nodes reach past it
_DAMAGED = -2


@kernel(inline=True)
def _last_at_most(pages, p, lo, hi, page_size, key):
    """The last node in ``lo..hi`` of the page at ``p`` whose key is <= ``key`` (``lo`` - 1:
    none; ``_DAMAGED``: a node reaches past the page), by binary search. With 8-byte keys
    (vecdb's: big-endian integers, mostly dense) the first probe is where the key's value
    places it between the range's end keys, and the second its neighbour on the side the
    key lies: a cold page's probes are cache misses one after another, and a float row's
    lookup for a re-rank took ~5 of them per leaf (10 rows: 4-6 us a query)."""
    if hi < lo:
        return lo - 1
    ans = lo - 1
    guess = -1
    if key.shape[0] == 8 and hi > lo:
        a, sa = _node(pages, p, lo, page_size)
        b, sb = _node(pages, p, hi, page_size)
        if a < 0 or b < 0:
            return _DAMAGED
        if sa == 8 and sb == 8:
            kv = load_be_u64(key, 0)
            ka = load_be_u64(pages, a + NODE_HEADER)
            kb = load_be_u64(pages, b + NODE_HEADER)
            if kv < ka:
                return lo - 1
            if kv >= kb:
                return hi
            if ka < kb:                         # node lo <= key < node hi: the answer is in lo..hi - 1
                frac = np.float64(kv - ka) / np.float64(kb - ka)
                guess = lo + min(max(np.int64(frac * np.float64(hi - lo)), 0), hi - lo - 1)
                ans = lo
                lo += 1
                hi -= 1
                guess = min(max(guess, lo), hi)  # node lo is known: its right neighbour first
    step = 0
    while lo <= hi:
        if guess >= lo and guess <= hi:         # the interpolated probe, then its neighbour
            mid = guess
        else:
            mid = (lo + hi) >> 1
        node, ksize = _node(pages, p, mid, page_size)
        if node < 0:
            return _DAMAGED
        if _compare(pages, node + NODE_HEADER, ksize, key) <= 0:
            ans = mid
            lo = mid + 1
            guess = mid + 1 if step == 0 else -1
        else:
            hi = mid - 1
            guess = mid - 1 if step == 0 else -1
        step += 1
    return ans


@kernel(inline=True)
def _step(pages, page_size, n_pages, pgno, key):
    """One level of a lookup at page ``pgno``: (``_CHILD``, child page) on a branch page,
    (start, length) of the value on a leaf page, or (code, 0): ``MISSING``, ``BEYOND``,
    ``UNEXPECTED``."""
    if pgno >= n_pages:
        return BEYOND, 0
    p = pgno * page_size
    flags = _u16(pages, p + 10)
    if _u64(pages, p) != pgno or flags & (P_BRANCH | P_LEAF) == 0 or flags & P_OVERFLOW:
        return UNEXPECTED, 0
    lower = _u16(pages, p + 12)
    upper = _u16(pages, p + 14)
    n = (lower - PAGE_HEADER) >> 1
    if n <= 0 or lower > upper or upper > page_size:
        return UNEXPECTED, 0
    if flags & P_BRANCH:
        at = _last_at_most(pages, p, 1, n - 1, page_size, key)   # the first branch key is implicit (the lowest)
        if at == _DAMAGED:
            return UNEXPECTED, 0
        node, _ = _node(pages, p, at, page_size)
        if node < 0:
            return UNEXPECTED, 0
        return _CHILD, _u16(pages, node) | (_u16(pages, node + 2) << 16) | (_u16(pages, node + 4) << 32)
    at = _last_at_most(pages, p, 0, n - 1, page_size, key)
    if at == _DAMAGED:
        return UNEXPECTED, 0
    if at >= 0:
        node, ksize = _node(pages, p, at, page_size)
        if node < 0:
            return UNEXPECTED, 0
        if _compare(pages, node + NODE_HEADER, ksize, key) == 0:
            size = _u16(pages, node) | (_u16(pages, node + 2) << 16)
            data = node + NODE_HEADER + ksize
            node_flags = _u16(pages, node + 4)
            if node_flags & ~F_BIGDATA:         # a sub-database or duplicates: not a value
                return UNEXPECTED, 0
            if node_flags == 0:
                if data + size > p + page_size:
                    return UNEXPECTED, 0
                return data, size
            if data + 8 > p + page_size:
                return UNEXPECTED, 0
            first = _u64(pages, data)
            if first < 0:
                return UNEXPECTED, 0
            if first >= n_pages or first + (PAGE_HEADER + size + page_size - 1) // page_size > n_pages:
                return BEYOND, 0                # past the map, even a value longer than all of it: the file grew
            o = first * page_size
            if _u64(pages, o) != first or _u16(pages, o + 10) & P_OVERFLOW == 0:
                return UNEXPECTED, 0
            return o + PAGE_HEADER, size
    return MISSING, 0


@kernel
def find(pages, page_size, root, key):
    """(start, length) of the value of ``key`` (uint8 array) in the tree rooted at page
    ``root`` of ``pages``, or (code, 0): ``MISSING``, ``BEYOND``, ``UNEXPECTED``."""
    if root < 0:
        return MISSING, 0
    n_pages = pages.shape[0] // page_size
    pgno = root
    for _ in range(MAX_DEPTH):
        got, value = _step(pages, page_size, n_pages, pgno, key)
        if got != _CHILD:
            return got, value
        pgno = value
    return UNEXPECTED, 0


@kernel
def find_many(pages, page_size, root, keys, starts, sizes, advise):
    """``find`` of every row of ``keys`` ((n, key bytes) uint8) into ``starts``/``sizes``
    (a code of ``find`` in ``starts``, size 0, where it gives one), level by level: each key
    descends one level per round and the page it will read next is prefetched, so the
    cache and TLB misses of different keys overlap instead of following one another (a
    random lookup in a large tree is a chain of misses: ~2 us a record alone). With
    ``advise`` (``pages`` a file map whose pages may not be cached), the file reads of a
    round's pages are asked for together (``will_need``) before any of them is read."""
    n = keys.shape[0]
    n_pages = pages.shape[0] // page_size
    pgno = np.full(n, root, np.int64)
    todo = n
    for i in range(n):
        sizes[i] = 0
        if root < 0:
            starts[i] = MISSING
            todo -= 1
        else:
            starts[i] = _CHILD
    for _ in range(MAX_DEPTH):
        if todo == 0:
            return
        for i in range(n):
            if starts[i] != _CHILD:
                continue
            got, value = _step(pages, page_size, n_pages, pgno[i], keys[i])
            if got == _CHILD:
                pgno[i] = value
                if 0 <= value < n_pages:
                    if advise:
                        will_need(pages, value * page_size, (value + 1) * page_size)
                    prefetch(pages, value * page_size, 0)          # its header
                    prefetch(pages, value * page_size + 64, 0)     # and the first node offsets
                continue
            starts[i] = got
            sizes[i] = value
            todo -= 1
            if got >= 0:
                prefetch(pages, got, 0)                          # the value's first line
    for i in range(n):
        if starts[i] == _CHILD:
            starts[i] = UNEXPECTED
            sizes[i] = 0


@kernel(inline=True)
def put_key(key, value):
    """Write ``value`` into the 8-byte ``key`` big-endian (the order of ``struct ">Q"`` keys)."""
    for b in range(8):
        key[7 - b] = np.uint8((value >> (8 * b)) & 0xFF)
