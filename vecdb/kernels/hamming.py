"""Hamming distance on packed binary codes (uint64 words) with a hardware popcount."""
from __future__ import annotations

import numba
import numpy as np
from numba import types as nt
from numba.extending import intrinsic

from vecdb.kernels._jit import I64, U64_MAT, U64_ROW, kernel
from vecdb.kernels.topk import heap_push, heap_sort, new_heaps


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


@kernel(parallel=True)
def hamming_topk(queries, codes, k):
    """Exact top-k by Hamming distance: (slots int64 (nq, k), dists float32 (nq, k)), sorted."""
    nq = queries.shape[0]
    hd, hs = new_heaps(nq, k)
    for i in numba.prange(nq):
        for j in range(codes.shape[0]):
            d = np.float32(hamming(queries[i], codes[j]))
            if d <= hd[i, 0]:
                heap_push(hd[i], hs[i], d, j)
        heap_sort(hd[i], hs[i])
    return hs, hd


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
