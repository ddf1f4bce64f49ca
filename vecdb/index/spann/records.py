"""Numba kernels of the posting records (layout: ``vecdb.index.spann.postings``): their
checksums, their checks, and the one-query scan of a record where LMDB maps it.

Two record formats are read. Format 2 sums the body with four multiply-xorshift lanes over
its 8-byte words: each step waits on a multiply, so it reads ~10 GB/s, about as long as the
distances take. Format 3 (written now) sums the body's 4-byte words w_0..w_{n-1} twice,
s1 = sum w_i and s2 = sum (i + 1) w_i (mod 2^64, a Fletcher-style pair), then mixes both with
the length: plain reductions LLVM vectorises. A flipped bit or byte always changes s1 (one
word changes by less than 2^32, never 0 mod 2^64); words swapped or changed by amounts that
cancel in s1 change s2. s2 splits over any blocks of words (a block adds its start position
times its s1), so a one-query scan sums each vector while it ranks it (``check_scan_record``):
each entry is read from memory once. A record that fails its check raises before any result
of the search is returned (its entries may have been offered to the heap; the caller drops
the heap).

Format 4 (SQ8 postings only) stores each entry's norm beside its slot and takes format 3's
sums mod 2^32 (8 lanes a vector step instead of 4): its rows are ranked by one integer dot
product each (``kernels.fold_int_query``), ~21 ns an entry from memory against ~28 for
format 3's float form (``_scan_codes_v4``).
"""
from __future__ import annotations

import numpy as np

from vecdb.index.spann.kernels import (HEADER_BYTES, MAGIC, SHORT_BLOCK, SHORT_ROW, code_int_summed, fold_code_query,
                                       fold_int_query, offer_code_rows, offer_code_rows_v4, offer_codes, offer_entries,
                                       offer_unique, row_dists)
from vecdb.kernels._jit import kernel
from vecdb.kernels.dot_sums import STEP as DOT_STEP
from vecdb.kernels.distances import dot, l2_sq
from vecdb.kernels.heaps import after, heap_sort
from vecdb.kernels.prefetch import prefetch
from vecdb.kernels.views import load_as, view_as
from vecdb.kernels.word_sums import word_sums, word_sums64

OK, TRUNCATED, FOREIGN, WRONG_DIM, BAD_CHECKSUM = 0, 1, 2, 3, 4
#: the record formats read; ``LATEST`` is the one written for float32 postings,
#: ``LATEST_CODES`` for SQ8 ones (format 4: a norm per entry, see ``_scan_codes_v4``)
FORMATS = (2, 3, 4)
LATEST = 3
LATEST_CODES = 4
#: bytes a format-4 SQ8 entry carries besides its codes: the slot (int64) and the norm (float32)
V4_ENTRY = 12
#: bytes a one-query scan asks the CPU to load ahead of the row it sums and ranks: summing and
#: ranking a row stalls the hardware prefetcher's stream; 4 KB ahead (8 rows of 128 floats)
#: took a check and scan of records read from memory (not cache) from ~102 to ~72 ns per entry
AHEAD = 4096
#: records one ``check_scan_records`` call takes: its tuple of records always has this length
#: (a shorter run is padded), so one compiled kernel serves every run
RUN = 8
#: what pads a run of fewer than ``RUN`` records (never read: the kernels take the run's length)
RUN_PAD = memoryview(b"")
#: 4-byte words of float32 rows a format-3 scan sums in one ``_sums`` call (whole rows)
SUM_WORDS = 256
#: rows of SQ8 codes a one-query scan sums in one go before ranking them (a multiple of 4, so
#: that they are whole 4-byte words whatever the dimension)
CODE_ROWS = 8
_LINE = 64
_MIX = np.uint64(0xFF51AFD7ED558CCD)
_SEED = np.uint64(0x9E3779B97F4A7C15)


@kernel(inline=True)
def _mix(h, x):
    """One multiply-xorshift round folding ``x`` into ``h`` (uint64)."""
    h = (h ^ x) * _MIX
    return h ^ (h >> np.uint64(31))


@kernel
def checksum_v2(buf, lo, hi):
    """Format 2's checksum of ``buf[lo:hi]`` (a multiple of 8 bytes): four independent
    multiply-xorshift lanes over the 8-byte words (so the multiplies overlap), then mixed."""
    m = np.uint64(0xFF51AFD7ED558CCD)
    s31 = np.uint64(31)
    h0 = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(hi - lo)
    h1 = np.uint64(0xC2B2AE3D27D4EB4F)
    h2 = np.uint64(0x165667B19E3779F9)
    h3 = np.uint64(0x27D4EB2F165667C5)
    words = view_as(buf, lo, (hi - lo) // 8, np.uint64)
    n = words.shape[0]
    n4 = n - n % 4
    for i in range(0, n4, 4):
        h0 = (h0 ^ words[i]) * m
        h1 = (h1 ^ words[i + 1]) * m
        h2 = (h2 ^ words[i + 2]) * m
        h3 = (h3 ^ words[i + 3]) * m
        h0 ^= h0 >> s31
        h1 ^= h1 >> s31
        h2 ^= h2 >> s31
        h3 ^= h3 >> s31
    for i in range(n4, n):
        h0 = (h0 ^ words[i]) * m
        h0 ^= h0 >> s31
    for h in (h1, h2, h3):
        h0 = (h0 ^ h) * m
        h0 ^= h0 >> s31
    return h0


@kernel(inline=True)
def _sums(w, pos, s1, s2):
    """Format 3's sums ``s1``, ``s2`` after the 4-byte words ``w`` at word positions
    ``pos``, ``pos`` + 1, ...: s1 += w_i, s2 += (i + 1) w_i (mod 2^64), as s1 += S and
    s2 += (pos + 1) S + T for the words' sum S and T = sum_i i w_i (``kernels.word_sums64``:
    adds only)."""
    total, weighted = word_sums64(w, 0, w.shape[0])
    return s1 + total, s2 + np.uint64(pos + 1) * total + weighted


@kernel(inline=True)
def _finish(s1, s2, nbytes):
    """Format 3's checksum from its sums and the body's length."""
    return _mix(_mix(_mix(_SEED, np.uint64(nbytes)), s1), s2)


@kernel
def checksum_v3(buf, lo, hi):
    """Format 3's checksum of ``buf[lo:hi]`` (a multiple of 8 bytes): over its 4-byte words
    w_0..w_{n-1}, the sums of w_i and of (i + 1) w_i (mod 2^64), mixed with the length."""
    s1, s2 = _sums(view_as(buf, lo, (hi - lo) // 4, np.uint32), 0, np.uint64(0), np.uint64(0))
    return _finish(s1, s2, hi - lo)


@kernel(inline=True)
def _sums32(w, pos, s1, s2):
    """Format 4's sums: ``_sums`` mod 2^32 (s1 += S, s2 += (pos + 1) S + T for the words'
    sum S and T = sum_i i w_i, ``kernels.word_sums``: adds only, no multiply a word)."""
    total, weighted = word_sums(w, 0, w.shape[0])
    s1 = np.uint32(s1 + total)
    s2 = np.uint32(np.uint32(s2 + np.uint32(np.uint32(pos + 1) * total)) + weighted)
    return s1, s2


@kernel
def checksum_v4(buf, lo, hi):
    """Format 4's checksum of ``buf[lo:hi]`` (a multiple of 8 bytes): format 3's sums of its
    4-byte words taken mod 2^32 (a flipped bit still changes s1), mixed with the length."""
    s1, s2 = _sums32(view_as(buf, lo, (hi - lo) // 4, np.uint32), 0, np.uint32(0), np.uint32(0))
    return _finish(np.uint64(s1), np.uint64(s2), hi - lo)


@kernel(inline=True)
def _header(rec, a, b, dim, width, flags):
    """(problem code, format, entry count) of the record ``rec[a:b]`` from its header and
    length (not its checksum)."""
    if b - a < HEADER_BYTES:
        return TRUNCATED, 0, 0
    version = np.int64(rec[a + 4]) + 256 * np.int64(rec[a + 5])
    if (rec[a] != MAGIC[0] or rec[a + 1] != MAGIC[1] or rec[a + 2] != MAGIC[2] or rec[a + 3] != MAGIC[3]
            or version < 2 or version > 4 or (version == 4 and flags != 1)
            or np.int64(rec[a + 6]) + 256 * np.int64(rec[a + 7]) != flags):
        return FOREIGN, 0, 0
    count = np.int64(load_as(rec, a + 8, np.uint32))
    if np.int64(load_as(rec, a + 12, np.uint32)) != dim:
        return WRONG_DIM, version, 0
    entry = (V4_ENTRY if version == 4 else 8) + width * dim
    if b - a != HEADER_BYTES + (count * entry + 7) // 8 * 8:
        return TRUNCATED, version, 0
    return OK, version, count


@kernel(inline=True)
def _sum_matches(rec, a, b, version):
    """Whether the record ``rec[a:b]`` (header sound) matches its stored checksum."""
    lo = a + HEADER_BYTES
    want = load_as(rec, a + 16, np.uint64)
    if version == 2:
        return checksum_v2(rec, lo, b) == want
    if version == 4:
        return checksum_v4(rec, lo, b) == want
    return checksum_v3(rec, lo, b) == want


@kernel
def check_records(buf, starts, ends, dim, width, flags, counts):
    """Check the posting records ``buf[starts[i]:ends[i]]`` (format 2 or 3; ``width`` bytes
    per vector component: 4 float32, 1 SQ8 codes, named by the header's ``flags``) and write
    their entry counts to ``counts``; returns (index of the first bad record or -1, its
    problem code)."""
    for i in range(starts.shape[0]):
        a = starts[i]
        b = ends[i]
        problem, version, count = _header(buf, a, b, dim, width, flags)
        if problem != OK:
            return i, problem
        if not _sum_matches(buf, a, b, version):
            return i, BAD_CHECKSUM
        counts[i] = count
    return -1, OK


@kernel
def gather_records(buf, starts, counts, offsets, dim, slots_out, vectors_out):
    """Copy the checked records' slots and vectors into ``slots_out`` (total,) and the flat
    ``vectors_out`` (total * dim,), record i at rows ``offsets[i]:offsets[i+1]``."""
    for i in range(starts.shape[0]):
        a = starts[i] + HEADER_BYTES
        c = counts[i]
        o = offsets[i]
        slots_out[o : o + c] = view_as(buf, a, c, np.int64)
        vectors_out[o * dim : (o + c) * dim] = view_as(buf, a + 8 * c, c * dim, np.float32)


@kernel
def check_scan_record(rec, dim, q, live, allow, use_allow, metric, hd, hs):
    """Check one float32 posting record ``rec`` (a whole LMDB value, read in place: no copy)
    and offer its entries to the top-k heap ``hd``/``hs`` of query ``q`` (the rules of
    ``kernels.scan_query``). Format 3: checked in the same pass (``_scan_summed``); format
    2: checked first, then scanned while in cache.
    Returns (problem code, entry count); on a problem the heap may hold entries of the bad
    record, so the caller must discard it."""
    n = rec.shape[0]
    problem, version, c = _header(rec, 0, n, dim, 4, 0)
    if problem != OK:
        return problem, 0
    if version == 3:
        if not _scan_summed(rec, c, dim, q, live, allow, use_allow, metric, hd, hs):
            return BAD_CHECKSUM, 0
        return OK, c
    if not _sum_matches(rec, 0, n, version):
        return BAD_CHECKSUM, 0
    offer_entries(rec, HEADER_BYTES, c, dim, q, live, allow, use_allow, metric, hd, hs)
    return OK, c


@kernel
def check_scan_records(recs, n, order, dim, q, live, allow, use_allow, metric, counts, hd, hs, finish):
    """``check_scan_record`` over the first ``n`` records of the tuple ``recs`` (``RUN``
    buffers, such as the memoryviews LMDB returns, viewed here as bytes: one call instead of
    one per record, ~1.5 us each, and no array made per record in Python), record i being
    posting ``order[i]`` of the caller's list (its entry count goes to ``counts[order[i]]``);
    the heap sorted at the end when ``finish``. Returns (index in ``recs`` of the first record
    that fails, or -1; its problem code): the heap may then hold its entries (to discard)."""
    for i in range(n):
        rec = np.frombuffer(recs[i], np.uint8)
        problem, c = check_scan_record(rec, dim, q, live, allow, use_allow, metric, hd, hs)
        if problem != OK:
            return i, problem
        counts[order[i]] = c
    if finish:
        heap_sort(hd, hs)
    return -1, OK


@kernel(inline=True)
def _prefetch(body, lo, hi):
    """Ask for the cache lines of ``body[lo:hi]`` (clipped to ``body``)."""
    for t in range(lo, min(hi, body.shape[0]), _LINE):
        prefetch(body, t, 0)


@kernel(inline=True)
def _prefetch_allowed(slots, lo, hi, allow):
    """Ask for the entries of ``allow`` that the rows ``lo:hi`` (clipped) of a record will
    look up (a filtered scan checks every entry's slot first: one random load per row into
    a byte per slot, which a scan of SQ8 codes otherwise waits for; ``live`` is read only
    for the entries that rank, ``kernels.LIVE_LAST``)."""
    for r in range(lo, min(hi, slots.shape[0])):
        s = slots[r]
        if s >= 0 and s < allow.shape[0]:
            prefetch(allow, s, 0)


@kernel
def _scan_summed(rec, c, dim, q, live, allow, use_allow, metric, hd, hs):
    """Offer the ``c`` entries of the format-3 float32 record ``rec`` (header checked) to the
    heap while summing its body (``_sums``), ``SUM_WORDS // dim`` rows (at least one) a call,
    or ``SHORT_BLOCK`` short ones: a short row alone is too short for a call of its own
    (glove's 50 floats: 62 ns an entry a row at a time, as slow as checking and scanning in
    two passes). Whether the sum matches."""
    n_live = live.shape[0]
    n_allow = allow.shape[0]
    body = rec[HEADER_BYTES:]
    split = 8 * c
    end = split + 4 * c * dim
    slots = view_as(body, 0, c, np.int64)
    s1, s2 = _sums(view_as(body, 0, 2 * c, np.uint32), 0, np.uint64(0), np.uint64(0))
    words = view_as(body, split, c * dim, np.uint32)
    vectors = view_as(body, split, c * dim, np.float32)
    pos = 2 * c
    short = dim <= SHORT_ROW
    step = SHORT_BLOCK if short else max(1, SUM_WORDS // dim)
    dists = np.empty(SHORT_BLOCK, np.float32)
    _prefetch(body, split, split + AHEAD)
    for lo in range(0, c, step):
        hi = min(lo + step, c)
        ahead = split + 4 * hi * dim + AHEAD
        _prefetch(body, ahead - 4 * (hi - lo) * dim, ahead)
        s1, s2 = _sums(words[lo * dim : hi * dim], pos + lo * dim, s1, s2)
        if short:
            row_dists(q, vectors, lo, hi, metric, dists)
        for r in range(lo, hi):
            slot = slots[r]
            if use_allow and (slot < 0 or slot >= n_allow or allow[slot] == 0):
                continue
            if short:
                d = dists[r - lo]
            else:
                row = vectors[r * dim : (r + 1) * dim]
                d = l2_sq(q, row) if metric == 0 else -dot(q, row)
            if after(hd[0], hs[0], d, slot) and slot >= 0 and slot < n_live and live[slot] >= 0:   # kernels.LIVE_LAST
                offer_unique(hd, hs, d, slot)
    s1, s2 = _sums(view_as(body, end, (body.shape[0] - end) // 4, np.uint32), pos + c * dim, s1, s2)
    return _finish(s1, s2, body.shape[0]) == load_as(rec, 16, np.uint64)


@kernel
def check_scan_codes_record(rec, dim, q, step, b, mode, live, allow, use_allow, hd, hs, ints):
    """``check_scan_record`` for a posting of SQ8 codes (header flags 1): its entries ranked
    on codes for the folded query ``q`` (bias ``b``, ``mode``: ``kernels.fold_code_query``;
    ``step``: the codec's), or, format 4, for its integer terms ``ints``
    (``kernels.fold_int_query``), into the candidate heap ``hd``/``hs``. Formats 3 and 4:
    checked in the same pass (``_scan_codes_summed``, ``_scan_codes_v4``); format 2:
    checked first. Returns (problem code, entry count); on a problem the heap may hold
    entries of the bad record, so the caller must discard it."""
    n = rec.shape[0]
    problem, version, c = _header(rec, 0, n, dim, 1, 1)
    if problem != OK:
        return problem, 0
    if version == 4:
        u, usum, scale, base = ints
        if not _scan_codes_v4(rec, c, u, usum, scale, base, mode, live, allow, use_allow, hd, hs):
            return BAD_CHECKSUM, 0
        return OK, c
    if version == 3:
        if not _scan_codes_summed(rec, c, dim, q, step, b, mode, live, allow, use_allow, hd, hs):
            return BAD_CHECKSUM, 0
        return OK, c
    if not _sum_matches(rec, 0, n, version):
        return BAD_CHECKSUM, 0
    offer_codes(rec, HEADER_BYTES, c, dim, q, step, b, mode, live, allow, use_allow, hd, hs)
    return OK, c


@kernel
def check_scan_codes_records(recs, n, order, dim, query, vmin, step, mode, live, allow, use_allow, counts, hd, hs,
                             finish):
    """``check_scan_records`` for postings of SQ8 codes (``check_scan_codes_record`` over the
    first ``n`` of the ``RUN`` buffers ``recs``, record i being posting ``order[i]``, for
    ``query`` folded here with the codec's ``vmin``/``step``, ``mode`` 0: squared L2, 1: -ip;
    the candidate heap ``hd``/``hs`` sorted at the end when ``finish``). Returns (index in
    ``recs`` of the first record that fails, or -1; its problem code)."""
    older = False                              # any record of format 2 or 3 (ranked in float form)?
    for i in range(n):
        head = np.frombuffer(recs[i], np.uint8)
        older = older or (head.shape[0] >= HEADER_BYTES and head[4] != 4)
    q, b = fold_code_query(query, vmin, step, mode) if older else (query, np.float32(0.0))
    ints = fold_int_query(query, vmin, step, mode)
    for i in range(n):
        rec = np.frombuffer(recs[i], np.uint8)
        problem, c = check_scan_codes_record(rec, dim, q, step, b, mode, live, allow, use_allow, hd, hs, ints)
        if problem != OK:
            return i, problem
        counts[order[i]] = c
    if finish:
        heap_sort(hd, hs)
    return -1, OK


@kernel(inline=True)
def _start_codes(body, slots, split, use_allow, allow):
    """Ask for the first ``AHEAD`` bytes of an SQ8 record's codes (from byte ``split`` of
    its ``body``) and, filtered, for the allow entries of its first rows."""
    _prefetch(body, split, split + AHEAD)
    if use_allow:
        _prefetch_allowed(slots, 0, 2 * CODE_ROWS, allow)


@kernel(inline=True)
def _next_codes(body, slots, split, lo, hi, c, dim, n_words, use_allow, allow):
    """Before the rows ``lo:hi`` of an SQ8 record are summed and ranked: ask for the codes
    ``AHEAD`` bytes past them and the allow entries of the rows after, and return the
    rows' 4-byte words (w_lo, w_hi) in the codes' words (the last rows take the padding)."""
    ahead = split + hi * dim + AHEAD
    _prefetch(body, ahead - CODE_ROWS * dim, ahead)
    if use_allow:
        _prefetch_allowed(slots, hi + CODE_ROWS, hi + 2 * CODE_ROWS, allow)
    return lo * dim // 4, hi * dim // 4 if hi < c else n_words


@kernel
def _scan_codes_summed(rec, c, dim, q, step, b, mode, live, allow, use_allow, hd, hs):
    """``_scan_summed`` for a format-3 record of SQ8 codes, ``CODE_ROWS`` rows at a time: the
    rows' words summed in one ``_sums`` call (a row of codes is a quarter of a float row, too
    short for a call of its own; ``CODE_ROWS`` rows are whole 4-byte words for any ``dim``),
    then ranked while in cache. Whether the sum matches."""
    body = rec[HEADER_BYTES:]
    split = 8 * c
    slots = view_as(body, 0, c, np.int64)
    s1, s2 = _sums(view_as(body, 0, 2 * c, np.uint32), 0, np.uint64(0), np.uint64(0))
    words = view_as(body, split, (body.shape[0] - split) // 4, np.uint32)   # the codes, then the padding
    codes = body[split : split + c * dim]
    pos = 2 * c
    _start_codes(body, slots, split, use_allow, allow)
    if c == 0:
        s1, s2 = _sums(words, pos, s1, s2)
    for lo in range(0, c, CODE_ROWS):
        hi = min(lo + CODE_ROWS, c)
        w_lo, w_hi = _next_codes(body, slots, split, lo, hi, c, dim, words.shape[0], use_allow, allow)
        s1, s2 = _sums(words[w_lo:w_hi], pos + w_lo, s1, s2)
        offer_code_rows(slots, codes, lo, hi, dim, q, step, b, mode, live, allow, use_allow, hd, hs)
    return _finish(s1, s2, body.shape[0]) == load_as(rec, 16, np.uint64)


@kernel
def _scan_codes_v4(rec, c, u, usum, scale, base, mode, live, allow, use_allow, hd, hs):
    """``_scan_codes_summed`` for a format-4 record (``c`` slots, ``c`` norms, then the
    codes): rows ranked by ``kernels.code_int`` (one integer dot each) with the query's
    terms (``kernels.fold_int_query``) while the body is summed ``CODE_ROWS`` rows at a
    time (``_sums32``). Whether the sum matches."""
    dim = u.shape[0]
    body = rec[HEADER_BYTES:]
    split = V4_ENTRY * c
    slots = view_as(body, 0, c, np.int64)
    norms = view_as(body, 8 * c, c, np.float32)
    s1, s2 = _sums32(view_as(body, 0, 3 * c, np.uint32), 0, np.uint32(0), np.uint32(0))
    words = view_as(body, split, (body.shape[0] - split) // 4, np.uint32)   # the codes, then the padding
    pos = 3 * c
    _start_codes(body, slots, split, use_allow, allow)
    if dim % DOT_STEP == 0:                    # each row ranked and summed in one pass (``dot_sums``)
        per_row = dim // 4
        n_live = live.shape[0]
        n_allow = allow.shape[0]
        for lo in range(0, c, CODE_ROWS):
            hi = min(lo + CODE_ROWS, c)
            _next_codes(body, slots, split, lo, hi, c, dim, words.shape[0], use_allow, allow)
            for r in range(lo, hi):
                d, total, weighted = code_int_summed(u, usum, scale, base, mode, body, split + r * dim, norms[r])
                s1 = np.uint32(s1 + total)
                s2 = np.uint32(np.uint32(s2 + np.uint32(np.uint32(pos + r * per_row + 1) * total)) + weighted)
                s = slots[r]                   # the offer as ``offer_code_rows_v4`` makes it
                if use_allow and (s < 0 or s >= n_allow or allow[s] == 0):
                    continue
                if after(hd[0], hs[0], d, s) and s >= 0 and s < n_live and live[s] >= 0:   # see LIVE_LAST
                    offer_unique(hd, hs, d, s)
        s1, s2 = _sums32(words[c * per_row :], pos + c * per_row, s1, s2)   # the padding after the codes
        return _finish(np.uint64(s1), np.uint64(s2), body.shape[0]) == load_as(rec, 16, np.uint64)
    if c == 0:
        s1, s2 = _sums32(words, pos, s1, s2)
    for lo in range(0, c, CODE_ROWS):
        hi = min(lo + CODE_ROWS, c)
        w_lo, w_hi = _next_codes(body, slots, split, lo, hi, c, dim, words.shape[0], use_allow, allow)
        s1, s2 = _sums32(words[w_lo:w_hi], pos + w_lo, s1, s2)
        offer_code_rows_v4(slots, norms, body, split, lo, hi, u, usum, scale, base, mode, live, allow, use_allow, hd,
                           hs)
    return _finish(np.uint64(s1), np.uint64(s2), body.shape[0]) == load_as(rec, 16, np.uint64)
