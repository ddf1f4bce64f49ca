"""Position-weighted sums of 4-byte words, the checksum of SQ8 posting records (format 4):
S = sum_i w_i and T = sum_i i w_i, mod 2^32.

Written as a loop, T costs a 32-bit multiply a word (plus the index vector): 5 ns of a 13 ns
entry when scanning 128-d SQ8 rows. Here eight lanes keep running sums instead: word i goes
to lane l = i % 8, whose t_l sums its words and u_l its running sums, so after M rounds
sum_m m w_(8m+l) = M t_l - u_l and T = 8 (M S - sum_l u_l) + sum_l l t_l: two vector adds a
round. Numba's vectoriser does not pack the eight scalar chains of that form (measured: 18 ns
an entry, slower than the multiplies), so ``lane_sums`` writes the vector code itself.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vecdb.kernels._jit import kernel
from vecdb.kernels.vector_ir import lane_sum

#: words a round takes (one AVX2 vector of uint32)
LANES = 8


def _lane_sums(bits: int):
    """The intrinsic ``lane_sums`` (``bits`` 32) or ``lane_sums64`` (sums mod 2^64: each
    word widened before it is added)."""
    result = types.uint32 if bits == 32 else types.uint64

    def typer(typingctx, w, start, rounds):
        if not (isinstance(w, types.Array) and w.ndim == 1 and w.dtype == types.uint32
                and isinstance(start, types.Integer) and isinstance(rounds, types.Integer)):
            return None
        out_type = types.UniTuple(result, 3)

        def codegen(context, builder, signature, args):
            words = context.make_array(signature.args[0])(context, builder, args[0])
            first = context.cast(builder, args[1], signature.args[1], types.intp)
            count = context.cast(builder, args[2], signature.args[2], types.intp)
            acc_int = ir.IntType(bits)
            vec32, vec = ir.VectorType(ir.IntType(32), LANES), ir.VectorType(acc_int, LANES)
            base = builder.gep(words.data, [first])
            t = cgutils.alloca_once_value(builder, ir.Constant(vec, None))
            u = cgutils.alloca_once_value(builder, ir.Constant(vec, None))
            with cgutils.for_range(builder, count) as loop:
                at = builder.gep(base, [builder.mul(loop.index, ir.Constant(loop.index.type, LANES))])
                v = builder.load(builder.bitcast(at, vec32.as_pointer()), align=4)
                if bits != 32:
                    v = builder.zext(v, vec)
                tv = builder.add(builder.load(t), v)
                builder.store(tv, t)
                builder.store(builder.add(builder.load(u), tv), u)
            tv, uv = builder.load(t), builder.load(u)
            weights = ir.Constant(vec, list(range(LANES)))
            parts = [lane_sum(builder, tv), lane_sum(builder, uv), lane_sum(builder, builder.mul(tv, weights))]
            return context.make_tuple(builder, out_type, parts)

        return out_type(w, start, rounds), codegen

    return intrinsic(typer)


#: (S, sum_l u_l, sum_l l t_l) of the ``rounds * LANES`` words of the C-contiguous uint32
#: array ``w`` from ``start`` (see the module doc), mod 2^32
lane_sums = _lane_sums(32)
#: the same mod 2^64 (uint64)
lane_sums64 = _lane_sums(64)


@kernel(inline=True)
def word_sums(w, start, n):
    """(S, T) of the ``n`` words ``w[start:start + n]``: their sum and sum_i i w_(start+i),
    mod 2^32 (uint32)."""
    rounds = n // LANES
    total, runs, lanes = lane_sums(w, start, rounds)
    weighted = np.uint32(np.uint32(LANES * np.uint32(np.uint32(np.uint32(rounds) * total) - runs)) + lanes)
    for i in range(LANES * rounds, n):
        x = w[start + i]
        total = np.uint32(total + x)
        weighted = np.uint32(weighted + np.uint32(np.uint32(i) * x))
    return total, weighted


@kernel(inline=True)
def word_sums64(w, start, n):
    """``word_sums`` mod 2^64 (uint64): format 3's sums of float32 records."""
    rounds = n // LANES
    total, runs, lanes = lane_sums64(w, start, rounds)
    weighted = np.uint64(LANES) * (np.uint64(rounds) * total - runs) + lanes
    for i in range(LANES * rounds, n):
        x = np.uint64(w[start + i])
        total += x
        weighted += np.uint64(i) * x
    return total, weighted
