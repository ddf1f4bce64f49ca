"""Hamming distance on packed binary codes (uint64 words) with a hardware popcount."""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import types as nt
from numba.extending import intrinsic

from vecdb.kernels._jit import I64, U64_MAT, U64_ROW, kernel
from vecdb.kernels.heaps import heap_push
from vecdb.kernels.scan import no_subset, row_scanner, topk_scan


@intrinsic
def _ctpop_u64(typingctx, x):
    """LLVM's ``ctpop`` on one 64-bit word (compiles to POPCNT where the CPU has it)."""
    sig = nt.uint64(nt.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@kernel(nt.int64(nt.uint64))
def popcount64(x):
    """Number of set bits in one uint64 word."""
    return np.int64(_ctpop_u64(x))


@kernel(I64(U64_ROW, U64_ROW))
def hamming(a, b):
    """Number of differing bits between two packed codes of equal word count."""
    acc = 0
    for i in range(a.shape[0]):
        acc += _ctpop_u64(a[i] ^ b[i])
    return np.int64(acc)


@kernel(numba.int32[::1](U64_ROW, U64_MAT))
def hamming_one_to_many(q, codes):
    """Hamming distance from one packed code to every row of ``codes``: int32 (n,)."""
    n = codes.shape[0]
    out = np.empty(n, np.int32)
    for j in range(n):
        out[j] = hamming(q, codes[j])
    return out


@kernel(numba.int32[:, ::1](U64_MAT, U64_MAT), parallel=True)
def hamming_many_to_many(queries, codes):
    """Hamming distance matrix: int32 (n_queries, n_codes)."""
    nq = queries.shape[0]
    n = codes.shape[0]
    out = np.empty((nq, n), np.int32)
    for i in numba.prange(nq):
        for j in range(n):
            out[i, j] = hamming(queries[i], codes[j])
    return out


class HammingQueries(NamedTuple):
    """Scan context of packed codes ranked by plain Hamming distance: query codes (nq, words)."""

    codes: np.ndarray


@kernel
def _kept(dh, sh, h, j, bound):
    """Offer row ``j`` at Hamming distance ``h`` (under ``bound``) to one heap; returns the bound
    for the next rows: the heap's worst distance once the heap is full, else ``bound``."""
    heap_push(dh, sh, np.float32(h), j)
    return np.uint64(dh[0]) if sh[0] >= 0 else bound


@kernel
def _row_hamming(q, codes, j):
    """Hamming distance between the packed query ``q`` and code row ``j`` (all its words)."""
    h = np.uint64(0)
    for w in range(codes.shape[1]):
        h += _ctpop_u64(q[w] ^ codes[j, w])
    return h


@row_scanner(HammingQueries)
@kernel
def _hamming_rows(ctx, qi, codes, subset, use_subset, lo, hi, dh, sh):
    """Offer code rows to one heap by Hamming distance (see ``vecdb.kernels.scan``).

    Kept as separate tight loops (contiguous vs subset, one word vs many) so LLVM sees no
    branch inside the per-row loop; the integer bound avoids float work for rejected rows. The
    push is ``_kept``, called only for a kept row: a helper that also made the test, called for
    every row, measured 10-25x slower.
    """
    q = ctx.codes[qi]
    n_words = codes.shape[1]
    bound = np.uint64(n_words * 64 + 1)
    if not use_subset and n_words == 1:
        q0 = q[0]
        for j in range(lo, hi):
            h = _ctpop_u64(q0 ^ codes[j, 0])
            if h < bound:
                bound = _kept(dh, sh, h, j, bound)
    elif not use_subset:
        for j in range(lo, hi):
            h = _row_hamming(q, codes, j)
            if h < bound:
                bound = _kept(dh, sh, h, j, bound)
    else:
        for r in range(lo, hi):
            j = subset[r]
            h = _row_hamming(q, codes, j)
            if h < bound:
                bound = _kept(dh, sh, h, j, bound)


@kernel
def hamming_scan_topk(queries, codes, subset, use_subset, k, n_chunks):
    """Top-k rows per query by plain Hamming distance over all words of the codes.

    Returns (slots int64 (nq, k), Hamming distances as float32 (nq, k)), sorted by
    (distance, slot), padded with -1/+inf. ``subset`` restricts the scan when ``use_subset``.
    """
    return topk_scan(HammingQueries(queries), queries.shape[0], codes, subset, use_subset, k, n_chunks)


@kernel
def hamming_topk(queries, codes, k):
    """Exact top-k by Hamming distance: (slots int64 (nq, k), dists float32 (nq, k)), sorted."""
    return hamming_scan_topk(queries, codes, no_subset(), False, k, 1)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a (n, n_bits) 0/1 array into (n, ceil(n_bits / 64)) uint64 words, bit i of a row
    in word i // 64 at position i % 64 (little-endian bit order); padding bits are 0."""
    bits = np.asarray(bits, dtype=bool)
    n, n_bits = bits.shape
    n_words = (n_bits + 63) // 64
    padded = np.zeros((n, n_words * 64), dtype=bool)
    padded[:, :n_bits] = bits
    as_bytes = np.packbits(padded, axis=1, bitorder="little")
    return np.ascontiguousarray(as_bytes).view(np.uint64).reshape(n, n_words).copy()


def unpack_bits(words: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of ``pack_bits``: (n, n_words) uint64 -> (n, n_bits) uint8 of 0/1."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    as_bytes = words.view(np.uint8).reshape(words.shape[0], -1)
    return np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :n_bits]
