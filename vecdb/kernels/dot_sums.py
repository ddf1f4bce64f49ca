"""An SQ8 row's integer dot with the query's 16-bit terms and its checksum sums, in one pass.

Scanning a format-4 posting ranks each row by ``int_dot.dot_u8_i16`` and checks the record by
``word_sums`` over the same bytes: two passes, the second ~40 % of a 384-byte row's time hot
(arxiv: ~9.5 of ~25 ns). ``dot_sums`` loads each 32 bytes once and feeds both: two
``vpmaddwd`` for the dot (as ``dot_lanes``) and two adds for the word sums (as
``word_sums.lane_sums``: word j of the row to lane j % 8, running sums), for rows of a
multiple of 32 bytes.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils

from vecdb.kernels.int_dot import AVX2
from vecdb.kernels.vector_ir import codes_args, codes_intrinsic, lane_sum

#: bytes one step takes (a multiple of this is what ``dot_sums`` accepts)
STEP = 32
#: 4-byte words a step takes (the lanes of the running sums)
WORDS = STEP // 4


def _codegen(avx2: bool):
    """The body of ``dot_sums``: per 32 bytes, the codes widened in two halves of 16 and
    multiplied-and-paired with the terms (``vpmaddwd`` on AVX2, plain vector IR elsewhere),
    and the same bytes as 8 words added to the running sums t and u."""

    def codegen(context, builder, signature, args):
        u, codes, start, n = codes_args(context, builder, signature, args)
        i32 = ir.IntType(32)
        v32i8 = ir.VectorType(ir.IntType(8), STEP)
        v16i16, v8i32 = ir.VectorType(ir.IntType(16), STEP // 2), ir.VectorType(i32, WORDS)
        dot_type = v8i32 if avx2 else ir.VectorType(i32, STEP // 2)
        base = builder.gep(codes.data, [start])
        low = ir.Constant(ir.VectorType(i32, STEP // 2), list(range(STEP // 2)))
        high = ir.Constant(ir.VectorType(i32, STEP // 2), list(range(STEP // 2, STEP)))

        def products(c: ir.Value, i: ir.Value) -> ir.Value:
            q = builder.load(builder.bitcast(builder.gep(u.data, [i]), v16i16.as_pointer()), align=2)
            if avx2:
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                                    "llvm.x86.avx2.pmadd.wd")
                return builder.call(fn, [builder.zext(c, v16i16), q])
            return builder.mul(builder.zext(c, dot_type), builder.sext(q, dot_type))

        acc = cgutils.alloca_once_value(builder, ir.Constant(dot_type, None))
        t = cgutils.alloca_once_value(builder, ir.Constant(v8i32, None))
        w = cgutils.alloca_once_value(builder, ir.Constant(v8i32, None))
        with cgutils.for_range_slice(builder, ir.Constant(n.type, 0), n, ir.Constant(n.type, STEP)) as (i, _):
            c = builder.load(builder.bitcast(builder.gep(base, [i]), v32i8.as_pointer()), align=1)
            tv = builder.add(builder.load(t), builder.bitcast(c, v8i32))
            builder.store(tv, t)
            builder.store(builder.add(builder.load(w), tv), w)
            half0 = builder.shuffle_vector(c, c, low)
            half1 = builder.shuffle_vector(c, c, high)
            pair = builder.add(products(half0, i), products(half1, builder.add(i, ir.Constant(n.type, STEP // 2))))
            builder.store(builder.add(builder.load(acc), pair), acc)
        rounds = builder.trunc(builder.udiv(n, ir.Constant(n.type, STEP)), i32)
        tv, wv = builder.load(t), builder.load(w)
        total = lane_sum(builder, tv)
        runs = lane_sum(builder, wv)
        lanes = lane_sum(builder, builder.mul(tv, ir.Constant(v8i32, list(range(WORDS)))))
        weighted = builder.add(builder.mul(ir.Constant(i32, WORDS), builder.sub(builder.mul(rounds, total), runs)), lanes)
        return context.make_tuple(builder, signature.return_type, [lane_sum(builder, builder.load(acc)), total, weighted])

    return codegen


#: what ``dot_sums`` returns: the dot, S and T
_RESULT = types.Tuple((types.int32, types.uint32, types.uint32))

#: (sum_i u[i] * codes[start + i] (int32), S, T) over the ``n`` bytes from ``start``, ``n`` a
#: multiple of ``STEP``, for C-contiguous int16 ``u`` (``n`` long) and uint8 ``codes``: S and
#: T are ``word_sums`` of those bytes as 4-byte words (their sum and sum_j j w_j, mod 2^32)
dot_sums = codes_intrinsic(types.int16, _RESULT, _codegen(AVX2))
#: the same in plain vector IR (what other CPUs run; tests check it on any CPU)
dot_sums_generic = codes_intrinsic(types.int16, _RESULT, _codegen(False))
