"""SPANN's posting reads in Numba calls over LMDB's pages (``vecdb.kernels.lmdb_pages``): a
query's planned postings looked up in the B-tree, checked and ranked where the file is
mapped, and (SQ8 postings) the best candidates re-ranked with their float rows, looked up
the same way: one call for one query, one parallel call for a batch of float postings.
Through py-lmdb the same work is a Python call per posting and per re-ranked row (~1.5 us
each) plus a kernel call per ``RUN`` records. Where a snapshot's postings lie is noted as
they are found (``_locate``), so until the next commit a posting costs one tree walk; and
after a search waited on the disk the next ones ask for their pages ahead
(``MappedReads.COLD_SECONDS``).

Each kernel returns (position, code, ...): position -1 and code 0 when all went well; else
the posting (index into ``read``) or row that stopped it (``scan_codes``' ``BAD_ROW``: the
slot), and a code: a record problem of ``records`` (> 0), ``LOST`` (a posting that should hold entries
has no record), ``BAD_ROW`` (a float record of the wrong size), or a lookup code of
``lmdb_pages`` (< 0: ``BEYOND``, ``UNEXPECTED``) after which the caller maps the file again
or reads through py-lmdb (``MappedReads._on_pages``).
"""
from __future__ import annotations

import resource
from time import perf_counter
from typing import Any, Callable

import numpy as np
from numba import prange

from vecdb.errors import DataLossError
from vecdb.index.spann import postings
from vecdb.index.spann.kernels import HEADER_BYTES, exact_plan_one, fold_code_query, fold_int_query, route_plan_one
from vecdb.index.spann.records import OK, check_records, check_scan_codes_record, check_scan_record
from vecdb.kernels._jit import kernel
from vecdb.kernels.distances import dot, l2_sq, unit_row
from vecdb.kernels.heaps import after, heap_sort, max_sift_down
from vecdb.kernels.lmdb_pages import BEYOND, MISSING, find_many, put_key
from vecdb.kernels.prefetch import prefetch, will_need
from vecdb.kernels.views import view_as

#: codes besides ``records``' problems and ``pages``' lookup codes (see the module doc)
LOST = 16
BAD_ROW = 17


#: ``MappedReads``' note of where a snapshot's postings lie, one int64 a head: the record's
#: start times 2^``_SIZE_BITS`` plus its size (one word: a search reading it while another
#: writes it sees all of it or none), ``_KNOWN_MISSING`` (no record), or ``NOT_LOOKED_UP``
NOT_LOOKED_UP = -1
_KNOWN_MISSING = -2
_SIZE_BITS = 24
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_START_LIMIT = 1 << (63 - _SIZE_BITS)


@kernel(inline=True)
def _keys(values, n):
    """The 8-byte big-endian keys of ``values[:n]`` as rows of a (n, 8) array."""
    keys = np.empty((n, 8), np.uint8)
    for i in range(n):
        put_key(keys[i], values[i])
    return keys


@kernel(inline=True)
def _locate(pages, page_size, root, read, n, head_count, starts, sizes, advise, known):
    """Look up the records of postings ``read[:n]`` into ``starts``/``sizes`` (size -1: no
    record, an empty posting): from ``known`` (where this snapshot's postings were found
    before, a word per head, see ``NOT_LOOKED_UP``), the rest all at once
    (``find_many``) and noted there; with ``advise``, the reads of their pages are asked
    for together (``will_need``) before any is scanned. Returns (position, code) of the
    first that fails, or (-1, 0)."""
    todo = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        head = read[i]
        at = known[head] if head < known.shape[0] else NOT_LOOKED_UP
        if at == NOT_LOOKED_UP:
            todo[m] = i
            m += 1
        elif at == _KNOWN_MISSING:
            starts[i] = MISSING
        else:
            starts[i] = at >> _SIZE_BITS
            sizes[i] = at & _SIZE_MASK
    if m:
        heads = np.empty(m, np.int64)
        for j in range(m):
            heads[j] = read[todo[j]]
        found, lengths = np.empty(m, np.int64), np.empty(m, np.int64)
        find_many(pages, page_size, root, _keys(heads, m), found, lengths, advise)
        for j in range(m):
            i, head, start, size = todo[j], heads[j], found[j], lengths[j]
            starts[i] = start
            sizes[i] = size
            if head < known.shape[0] and (start == MISSING or (0 <= start < _START_LIMIT and size <= _SIZE_MASK)):
                known[head] = _KNOWN_MISSING if start == MISSING else (start << _SIZE_BITS) | size
    for i in range(n):
        if starts[i] == MISSING:
            if head_count[read[i]] > 0:
                return i, LOST
            starts[i] = 0
            sizes[i] = -1
        elif starts[i] < 0:
            return i, starts[i]
        elif advise:
            will_need(pages, starts[i], starts[i] + sizes[i])
    return -1, OK


@kernel(inline=True)
def _rows_at(pages, page_size, root, slots, n, dim, starts, advise):
    """Look up the float records of ``slots[:n]`` all at once and ask for their bytes:
    ``starts`` gets each one's start (``MISSING``: none). Returns (position, code) of the
    first that fails (a lookup code, or ``BAD_ROW`` for a record that is not ``dim``
    floats), or (-1, 0). ``advise``: as ``_locate``'s."""
    sizes = np.empty(n, np.int64)
    find_many(pages, page_size, root, _keys(slots, n), starts, sizes, advise)
    for i in range(n):
        start = starts[i]
        if start == MISSING:
            continue
        if start < 0:
            return i, start
        if sizes[i] != 4 * dim:
            return i, BAD_ROW
        if advise:
            will_need(pages, start, start + sizes[i])
        for line in range(start, start + sizes[i], 64):
            prefetch(pages, line, 0)
    return -1, OK


@kernel
def locate(pages, page_size, root, read, head_count, starts, sizes, advise, known):
    """``_locate`` of all of ``read`` (a batch's postings)."""
    return _locate(pages, page_size, root, read, read.shape[0], head_count, starts, sizes, advise, known)


@kernel
def scan_floats(pages, page_size, root, read, n, head_count, dim, q, live, allow, use_allow, metric, counts, sizes,
                hd, hs, advise, known):
    """Top-k of ``q`` over the float32 postings ``read[:n]`` into the heap ``hd``/``hs``
    (sorted on success), entries of posting i counted in ``counts[i]``, its record's bytes
    in ``sizes[i]`` (-1: none)."""
    starts = np.empty(n, np.int64)
    bad, code = _locate(pages, page_size, root, read, n, head_count, starts, sizes, advise, known)
    if bad >= 0:
        return bad, code, 0, 0
    total = 0
    for i in range(n):
        if sizes[i] < 0:
            counts[i] = 0
            continue
        rec = pages[starts[i] : starts[i] + sizes[i]]
        problem, c = check_scan_record(rec, dim, q, live, allow, use_allow, metric, hd, hs)
        if problem != OK:
            return i, problem, 0, 0
        counts[i] = c
        total += sizes[i]
    heap_sort(hd, hs)
    return -1, OK, total, 0


@kernel(parallel=True)
def scan_floats_many(pages, page_size, root, wanted, qptr, qlist, head_count, queries, live, allow, use_allow, metric,
                     counts, sizes, out_s, out_d, advise, known):
    """``scan_floats`` for a batch, queries in parallel: query qi reads the postings
    ``wanted[qlist[qptr[qi]:qptr[qi+1]]]`` (each looked up once) into the heap rows
    ``out_s[qi]``/``out_d[qi]``; ``counts``/``sizes`` by position in ``wanted``. Returns
    (position in ``wanted``, code) of a failure, or (-1, 0)."""
    n = wanted.shape[0]
    starts = np.empty(n, np.int64)
    bad, code = _locate(pages, page_size, root, wanted, n, head_count, starts, sizes, advise, known)
    if bad >= 0:
        return bad, code
    nq, dim = queries.shape
    where = np.full(nq, -1, np.int64)
    problems = np.zeros(nq, np.int64)
    for qi in prange(nq):
        hd = out_d[qi]
        hs = out_s[qi]
        for t in range(qptr[qi], qptr[qi + 1]):
            p = qlist[t]
            if sizes[p] < 0:
                continue
            problem, c = check_scan_record(pages[starts[p] : starts[p] + sizes[p]], dim, queries[qi], live, allow,
                                           use_allow, metric, hd, hs)
            if problem != OK:
                where[qi] = p
                problems[qi] = problem
                break
            counts[p] = c                      # the same value from every query reading p
        heap_sort(hd, hs)
    for qi in range(nq):
        if problems[qi] != OK:
            return where[qi], problems[qi]
    return -1, OK


@kernel
def scan_codes(pages, page_size, root, vroot, read, n, head_count, query, vmin, step, mode, live, allow, use_allow,
               counts, sizes, width, hd, hs, advise, known):
    """Top-k of ``query`` over the SQ8 postings ``read[:n]``: the best ``width`` candidates
    on codes, then their float rows (tree ``vroot``, keyed by slot; a candidate with none
    was removed since) ranked exactly into the heap ``hd``/``hs``, sorted on success
    (``counts``, ``sizes``: as ``scan_floats``)."""
    dim = query.shape[0]
    cd = np.full(width, np.inf, np.float32)
    cs = np.full(width, -1, np.int64)
    starts = np.empty(n, np.int64)
    bad, code = _locate(pages, page_size, root, read, n, head_count, starts, sizes, advise, known)
    if bad >= 0:
        return bad, code, 0, 0
    older = False                              # a record of format 2 or 3 (ranked in float form)?
    for i in range(n):
        if sizes[i] >= HEADER_BYTES and pages[starts[i] + 4] != 4:
            older = True
    q, b = fold_code_query(query, vmin, step, mode) if older else (query, np.float32(0.0))
    ints = fold_int_query(query, vmin, step, mode)
    total = 0
    for i in range(n):
        if sizes[i] < 0:
            counts[i] = 0
            continue
        rec = pages[starts[i] : starts[i] + sizes[i]]
        problem, c = check_scan_codes_record(rec, dim, q, step, b, mode, live, allow, use_allow, cd, cs, ints)
        if problem != OK:
            return i, problem, 0, 0
        counts[i] = c
        total += sizes[i]
    heap_sort(cd, cs)
    m = 0
    while m < cs.shape[0] and cs[m] >= 0:      # sorted: the -1 sentinels last
        m += 1
    at = np.empty(m, np.int64)
    bad, code = _rows_at(pages, page_size, vroot, cs, m, dim, at, advise)
    if bad >= 0:
        return (cs[bad] if code == BAD_ROW else bad), code, 0, 0
    scratch = np.empty(dim, np.float32)
    scratch_bytes = scratch.view(np.uint8)
    floats = 0
    for j in range(m):
        start = at[j]
        if start == MISSING:                   # removed since: not a candidate
            continue
        size = 4 * dim
        if start % 4 == 0:                     # ranked where it lies (a copy of 1.5 KB costs ~1 us)
            d = _exact(query, view_as(pages, start, dim, np.float32), mode)
        else:                                  # a short record may sit in its leaf 2-byte aligned
            scratch_bytes[:] = pages[start : start + size]
            d = _exact(query, scratch, mode)
        slot = cs[j]
        if after(hd[0], hs[0], d, slot):
            max_sift_down(hd, hs, hs.shape[0], d, slot)
        floats += size
    heap_sort(hd, hs)
    return -1, OK, total, floats


@kernel(inline=True)
def _exact(q, row, mode):
    """The exact distance the float posting scan ranks by (mode 0: squared L2, else -<q, x>)."""
    return l2_sq(q, row) if mode == 0 else -dot(q, row)


@kernel
def gather_rows(pages, page_size, root, slots, rows, advise):
    """The float32 records of ``slots`` (tree ``root``, keyed by slot) into the rows of
    ``rows`` (len(slots), dim); a NaN row for a slot with none (removed). Returns (position,
    code) of the first that fails (``BAD_ROW`` or a lookup code), or (-1, 0)."""
    n, dim = rows.shape
    size = 4 * dim
    flat = rows.reshape(rows.size).view(np.uint8)   # for a record 2-byte aligned in its leaf
    at = np.empty(n, np.int64)
    bad, code = _rows_at(pages, page_size, root, slots, n, dim, at, advise)
    if bad >= 0:
        return bad, code
    for i in range(n):
        start = at[i]
        if start == MISSING:
            rows[i, :] = np.nan
        elif start % 4 == 0:                   # as floats: a byte loop copies 1.5 KB in ~1 us
            rows[i, :] = view_as(pages, start, dim, np.float32)
        else:
            flat[i * size : (i + 1) * size] = pages[start : start + size]
    return -1, OK


@kernel
def search_one(query, cosine, rows, metric, route, head_codes, slot_ids, min_groups, min_heads, n_heads, count, eps2, k,
               pages, page_size, proot, vroot, live, identity, mask, use_allow, mode, vmin, step, width, advise, known,
               ids, dists):
    """A whole one-query search in one call: ``query`` unit-normalised when ``cosine``, its
    postings planned (``route`` None: the exact route over the head ``rows``, by their 7-bit
    copies first unless ``head_codes`` is None, ``kernels.exact_plan_one``; else the
    grouped route on codes, ``route`` being
    ``HeadGroups.code_route``, ``kernels.route_plan_one``), ranked as ``scan_floats`` rank
    them (``vmin`` None) or as ``scan_codes`` do (SQ8, ``vmin``/``step`` the codec's), and
    the top ``k`` written as ids (``live`` maps slots, or ``identity``: a slot is its id)
    and distances as the metric defines them (cosine: 1 - cos) into the rows ``ids``/
    ``dists`` (1, k). Returns ``scan_*``'s (position, code, posting bytes, float bytes); on
    a code the rows are partial (the caller searches again by the longer path, which raises
    or reads through py-lmdb). The routes and scans are chosen by None arguments, so each
    compiled form holds only its own (one holding all four took 75 s to compile on a fresh
    machine, past a client's deadline for a first search)."""
    dim = query.shape[0]
    q = np.empty(dim, np.float32)
    if cosine:
        unit_row(query, q)
    else:
        q[:] = query
    read = np.empty(n_heads, np.int64)
    if route is None:
        n = exact_plan_one(q.reshape((1, dim)), rows, metric, slot_ids, head_codes, n_heads, count, eps2, k, read)
    else:
        n = route_plan_one(q, 0 if metric == 0 else 1, route[0], route[1], route[2], route[3], route[4], route[5],
                           route[6], route[7], slot_ids, min_groups, min_heads, n_heads, count, eps2, k, read)
    counts = np.zeros(n, np.int64)
    sizes = np.empty(n, np.int64)
    hd = np.full(k, np.inf, np.float32)
    hs = np.full(k, -1, np.int64)
    if vmin is None:
        bad, code, nbytes, floats = scan_floats(pages, page_size, proot, read, n, count, dim, q, live, mask, use_allow,
                                                mode, counts, sizes, hd, hs, advise, known)
    else:
        bad, code, nbytes, floats = scan_codes(pages, page_size, proot, vroot, read, n, count, q, vmin, step, mode, live,
                                               mask, use_allow, counts, sizes, width, hd, hs, advise, known)
    if code != OK:
        return bad, code, 0, 0
    for j in range(k):
        s = hs[j]
        if s < 0:
            ids[0, j] = -1
            dists[0, j] = np.inf
        else:
            ids[0, j] = s if identity else live[s]
            dists[0, j] = hd[j] + np.float32(1.0) if cosine else hd[j]
    return -1, OK, nbytes, floats


class MappedReads:
    """One index's reads through the page map of its space: the roots of its
    posting and float-row trees per read snapshot (cached by transaction id: a snapshot's
    roots never change), the kernels above, the map renewed when the file has grown."""

    #: a scan slower than ``COLD_SECONDS`` plus ``COLD_SECONDS_PER_BYTE`` for each byte it
    #: read (a warm one reads ~1 GB/s or more), when the process has taken major page faults
    #: since the last such scan, met pages the page cache did not hold: the next
    #: ``ADVISE_SCANS`` scans ask the kernel for all their pages at once (``will_need``: a
    #: system call a page looked up, ~0.5 us when cached, so not while the cache holds
    #: them). 5M SQ8, mp 5 rerank 10, cold: 4.1 -> 0.7 ms a query.
    COLD_SECONDS = 200e-6
    COLD_SECONDS_PER_BYTE = 2e-9
    ADVISE_SCANS = 256

    def __init__(self, space: Any, codes: bool) -> None:
        self._space = space
        self._map = space.page_map()
        self._codes = codes
        self._seen: tuple[int, tuple[int, int] | None, np.ndarray] = (-1, None, _NOTHING_KNOWN)
        self._advise_left = 0                  # scans left that ask for their pages ahead
        self._faults = _major_faults()

    def memory_bytes(self) -> int:
        """Bytes this reader keeps besides the map: the note of where postings lie."""
        return int(self._seen[2].nbytes)

    def _timed(self, seconds: float, nbytes: int, advised: bool) -> None:
        """Account a scan that took ``seconds`` for ``nbytes``: see ``COLD_SECONDS``.
        (Threads race on the count: it only steers a hint.)"""
        if seconds > self.COLD_SECONDS + nbytes * self.COLD_SECONDS_PER_BYTE:
            before, self._faults = self._faults, _major_faults()
            if self._faults > before:          # slow, and the disk was read: not a preempted warm scan
                self._advise_left = self.ADVISE_SCANS
                return
        if advised:
            self._advise_left -= 1

    def _roots(self, txn: Any, n_heads: int = 0) -> tuple[int, int, np.ndarray] | None:
        """The roots of the posting and float-row trees in the snapshot of ``txn`` and the
        note of where its postings lie (for heads below ``n_heads``; see ``_locate``), or
        None when this reader does not follow its trees. Kept per snapshot (transaction id:
        a read snapshot's pages never change, and the next commit gives a new id)."""
        tid = txn.id()
        seen = self._seen
        if seen[0] != tid:
            proot = self._space.root(txn, "postings")
            vroot = self._space.root(txn, "vectors") if self._codes else -1
            roots = None if proot is None or vroot is None else (proot, vroot)
            seen = self._seen = (tid, roots, _NOTHING_KNOWN)
        if seen[1] is None:
            return None
        if len(seen[2]) < n_heads:             # threads may each make one: either serves
            seen = self._seen = (tid, seen[1], np.full(n_heads, NOT_LOOKED_UP, np.int64))
        return seen[1][0], seen[1][1], seen[2]

    def _on_pages(self, run: Callable[[np.ndarray], tuple], reset: Callable[[], None] | None = None) -> tuple | None:
        """``run(pages)`` (a kernel call returning (position, code, ...)) on the current map,
        and once more on the map made again when a page lay past it (the file grew). Its
        result, or None after a lookup code (``reset`` called first: the outputs are
        partial): pages this reader does not follow, the caller reads through py-lmdb."""
        pmap = self._map
        for _ in range(2):
            pages = pmap.pages
            got = run(pages)
            if got[1] >= 0:
                return got
            if reset is not None:
                reset()
            if got[1] != BEYOND:
                return None
            pmap.remap(pages)
        return None

    def scan(self, txn: Any, read: np.ndarray, head_count: np.ndarray, query: np.ndarray, live: np.ndarray,
             mask: np.ndarray, use_allow: bool, mode: int, codec: Any, width: int, counts: np.ndarray,
             sizes: np.ndarray, out_s: np.ndarray, out_d: np.ndarray) -> tuple[int, int] | None:
        """Top-k of ``query`` over the postings ``read`` in the snapshot of ``txn`` into the
        heap rows ``out_s``/``out_d`` (+inf / -1), entries counted in ``counts``, record bytes
        in ``sizes`` (-1: no record); SQ8 postings (``codec``) ranked on codes, the best
        ``width`` re-ranked with float rows. Returns (posting bytes, float bytes read), or
        None when the pages are not ones this reader follows (the caller reads through
        py-lmdb; the rows are reset). DataLossError for a corrupt, truncated or lost posting
        or a float record of the wrong size."""
        roots = self._roots(txn, len(head_count))
        if roots is None:
            return None
        size, (proot, vroot, known), n, advise = self._map.page_size, roots, len(read), self._advise_left > 0
        if codec is None:
            run = lambda pages: scan_floats(pages, size, proot, read, n, head_count, len(query), query, live,  # noqa: E731
                                            mask, use_allow, mode, counts, sizes, out_d, out_s, advise, known)
        else:
            run = lambda pages: scan_codes(pages, size, proot, vroot, read, n, head_count, query,  # noqa: E731
                                           codec.vmin, codec.step, mode, live, mask, use_allow, counts, sizes, width,
                                           out_d, out_s, advise, known)
        began = perf_counter()
        got = self._on_pages(run, lambda: _reset(out_s, out_d))
        if got is None:
            return None
        bad, code, nbytes, floats = got
        if code == BAD_ROW:
            raise DataLossError(postings.bad_row_message(int(bad), len(query)))
        if code != OK:
            raise DataLossError(_problem(int(code), int(read[bad]), head_count))
        self._timed(perf_counter() - began, nbytes + floats, advise)
        return nbytes, floats

    def search_one(self, txn: Any, query: np.ndarray, route: tuple, head_count: np.ndarray, k: int, live: np.ndarray,
                   identity: bool, mask: np.ndarray, use_allow: bool, ids: np.ndarray, dists: np.ndarray) -> bool:
        """The whole search of one ``query`` in the snapshot of ``txn`` (kernel
        ``search_one``; ``route``: see ``SPANN._lean_route``) into the result rows ``ids``/
        ``dists`` (1, k). False when the search stopped on anything but success (a problem
        record, pages this reader does not follow): the caller searches again by the longer
        path, which raises or reads through py-lmdb."""
        roots = self._roots(txn, len(head_count))
        if roots is None:
            return False
        proot, vroot, known = roots
        cosine, rows, metric, code_route, head_codes, slot_ids, min_groups, min_heads, n_heads, eps2, mode, vmin, step, \
            width = route
        pmap = self._map
        advise = self._advise_left > 0
        for _ in range(2):                     # ``_on_pages``, inline (no closure to make)
            pages = pmap.pages
            began = perf_counter()
            got = search_one(query, cosine, rows, metric, code_route, head_codes, slot_ids, min_groups, min_heads,
                             n_heads, head_count, eps2, k, pages, pmap.page_size, proot, vroot, live, identity, mask,
                             use_allow, mode, vmin, step, width, advise, known, ids, dists)
            if got[1] == OK:
                self._timed(perf_counter() - began, got[2] + got[3], advise)
                return True
            if got[1] != BEYOND:
                return False
            pmap.remap(pages)
        return False

    def scan_many(self, txn: Any, wanted: np.ndarray, qptr: np.ndarray, qlist: np.ndarray, head_count: np.ndarray,
                  queries: np.ndarray, live: np.ndarray, mask: np.ndarray, use_allow: bool, mode: int,
                  counts: np.ndarray, sizes: np.ndarray, out_s: np.ndarray, out_d: np.ndarray) -> bool:
        """``scan`` of float32 postings for a batch in one parallel kernel call
        (``scan_floats_many``); False when the pages are not ones this reader follows (the
        rows are reset)."""
        roots = self._roots(txn, len(head_count))
        if roots is None:
            return False
        size, advise = self._map.page_size, self._advise_left > 0
        began = perf_counter()
        got = self._on_pages(lambda pages: scan_floats_many(pages, size, roots[0], wanted, qptr, qlist, head_count,
                                                            queries, live, mask, use_allow, mode, counts, sizes,
                                                            out_s, out_d, advise, roots[2]),
                             lambda: (_reset(out_s, out_d), counts.fill(0)))
        if got is None:
            return False
        bad, code = got
        if code != OK:
            raise DataLossError(_problem(int(code), int(wanted[bad]), head_count))
        self._timed(perf_counter() - began, int(sizes[sizes > 0].sum()), advise)
        return True

    def records(self, txn: Any, wanted: np.ndarray, head_count: np.ndarray, dim: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
        """The SQ8 posting records of ``wanted`` where the map holds them, checked, as
        ``postings.check_many`` gives copies of them: (the map, record starts, entry counts,
        bytes of the records; an empty posting counts 0), or None when the pages are not
        ones this reader follows. Valid only while ``txn`` is open. DataLossError for a
        corrupt, truncated or lost one."""
        roots = self._roots(txn, len(head_count))
        if roots is None:
            return None
        n, size = len(wanted), self._map.page_size
        starts = np.empty(n, np.int64)
        sizes = np.empty(n, np.int64)
        advise = self._advise_left > 0
        got = self._on_pages(lambda pages: (*locate(pages, size, roots[0], wanted, head_count, starts, sizes, advise,
                                                    roots[2]), pages))
        if got is None:
            return None
        bad, code, pages = got
        if code != OK:
            raise DataLossError(_problem(int(code), int(wanted[bad]), head_count))
        held = np.flatnonzero(sizes >= 0)
        held_starts, held_sizes = starts[held], sizes[held]
        held_counts = np.zeros(len(held), np.int64)
        bad, code = check_records(pages, held_starts, held_starts + held_sizes, dim, 1, 1, held_counts)
        if bad >= 0:
            raise DataLossError(_problem(int(code), int(wanted[held[bad]]), head_count))
        counts = np.zeros(n, np.int64)
        counts[held] = held_counts
        return pages, starts, counts, int(held_sizes.sum())

    def rows(self, txn: Any, slots: np.ndarray, dim: int) -> np.ndarray | None:
        """Float32 rows (len(slots), dim) of ``slots`` in the snapshot of ``txn``, NaN rows
        for slots without a record; None when the pages are not ones this reader follows.
        DataLossError for a record of the wrong size."""
        roots = self._roots(txn)
        if roots is None or not self._codes:
            return None
        out = np.empty((len(slots), dim), np.float32)
        size = self._map.page_size
        advise = self._advise_left > 0
        got = self._on_pages(lambda pages: gather_rows(pages, size, roots[1], slots, out, advise))
        if got is None:
            return None
        bad, code = got
        if code == BAD_ROW:
            raise DataLossError(postings.bad_row_message(int(slots[bad]), dim))
        return out


_NOTHING_KNOWN = np.full(0, NOT_LOOKED_UP, np.int64)


def _major_faults() -> int:
    """Page faults of this process that read the disk, so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


def _reset(out_s: np.ndarray, out_d: np.ndarray) -> None:
    """Heap rows back to empty (-1 / +inf) after a scan that stopped part way."""
    out_s.fill(-1)
    out_d.fill(np.inf)


def _problem(code: int, head: int, head_count: np.ndarray) -> str:
    """The DataLossError message of posting ``head`` failing a scan with ``code``."""
    if code == LOST:
        return postings.lost_message(head, int(head_count[head]))
    return postings.problem_message(head, code)
