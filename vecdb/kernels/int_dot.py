"""Integer dot products of byte codes with 16-bit query terms, 16 components per step; and of
7-bit codes with 8-bit terms, 32 per step.

Scanning SQ8 codes in float form costs ~12 ns a 128-byte row (each byte widened to float,
then a multiply-add and a square); as a dot of the codes with the query rounded to int16
it is one ``vpmaddwd`` per 16 bytes. Numba's vectoriser picks 4-lane multiplies for that
loop (~7.7 ns a row), so ``dot_u8_i16`` writes the vector code itself: ~4.5 ns a row on
AVX2, and plain vector IR (correct on any CPU) elsewhere. ``dot_u7_i8`` takes codes below
128 and terms in [-127, 127], so that ``vpmaddubsw``'s pairs of products never saturate
(2 * 127 * 127 < 2^15): twice the components an instruction, for ranking where a coarser
query is enough (SPANN's route over long head rows, checked again in floats).
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils

from vecdb.kernels._jit import kernel
from vecdb.kernels.vector_ir import codes_args, codes_intrinsic, lane_sum

#: components one vector step takes
LANES = 16


def _has_avx2() -> bool:
    """Whether the code Numba compiles may use AVX2 (the host's features, or those Numba was
    told to compile for)."""
    if numba.config.CPU_NAME not in (None, "host"):
        return "+avx2" in (numba.config.CPU_FEATURES or "")
    return "avx2" in llvm.get_host_cpu_features().flatten()


AVX2 = _has_avx2()


def _dot_codegen(avx2: bool):
    """The body of ``sum_{i < n} u[i] * codes[start + i]`` (int32; n a multiple of ``LANES``
    or at least ``LANES``): two accumulators of 16 products each per loop step; the last
    n % 16 components as one more step over the 16 that end the row, its first lanes' terms
    masked to 0 (a scalar loop for them cost ~3 ns a 50-byte row: a third of its scan);
    ``avx2`` selects ``vpmaddwd``."""

    def codegen(context, builder, signature, args):
        u, codes, start, n = codes_args(context, builder, signature, args)
        i32 = ir.IntType(32)
        v16i8, v16i16 = ir.VectorType(ir.IntType(8), LANES), ir.VectorType(ir.IntType(16), LANES)
        acc_type = ir.VectorType(i32, LANES // 2 if avx2 else LANES)
        base = builder.gep(codes.data, [start])

        def products(i, keep=None):
            c = builder.load(builder.bitcast(builder.gep(base, [i]), v16i8.as_pointer()), align=1)
            q = builder.load(builder.bitcast(builder.gep(u.data, [i]), v16i16.as_pointer()), align=2)
            if keep is not None:
                q = builder.select(keep, q, ir.Constant(v16i16, None))
            if avx2:
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc_type, [v16i16, v16i16]),
                                                    "llvm.x86.avx2.pmadd.wd")
                return builder.call(fn, [builder.zext(c, v16i16), q])
            return builder.mul(builder.zext(c, acc_type), builder.sext(q, acc_type))

        zero = ir.Constant(acc_type, None)
        acc0 = cgutils.alloca_once_value(builder, zero)
        acc1 = cgutils.alloca_once_value(builder, zero)
        lanes = ir.Constant(n.type, LANES)
        whole = builder.and_(n, ir.Constant(n.type, -LANES))
        pairs = builder.and_(n, ir.Constant(n.type, -2 * LANES))
        with cgutils.for_range_slice(builder, ir.Constant(n.type, 0), pairs, ir.Constant(n.type, 2 * LANES)) as (i, _):
            builder.store(builder.add(builder.load(acc0), products(i)), acc0)
            builder.store(builder.add(builder.load(acc1), products(builder.add(i, lanes))), acc1)
        with builder.if_then(builder.icmp_signed("<", pairs, whole)):
            builder.store(builder.add(builder.load(acc0), products(pairs)), acc0)
        with builder.if_then(builder.icmp_signed("<", whole, n)):   # the tail: lanes j >= 16 - n % 16 of the last 16
            i16 = ir.IntType(16)
            first = builder.trunc(builder.sub(builder.add(whole, lanes), n), i16)
            splat = builder.shuffle_vector(builder.insert_element(ir.Constant(v16i16, None), first, ir.Constant(i32, 0)),
                                           ir.Constant(v16i16, None), ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))
            keep = builder.icmp_unsigned(">=", ir.Constant(v16i16, list(range(LANES))), splat)
            builder.store(builder.add(builder.load(acc1), products(builder.sub(n, lanes), keep)), acc1)
        return lane_sum(builder, builder.add(builder.load(acc0), builder.load(acc1)))

    return codegen


#: ``sum_{i < n} u[i] * codes[start + i]`` for C-contiguous int16 ``u`` and uint8 ``codes``,
#: ``n`` a multiple of ``LANES`` or at least ``LANES`` (below, the caller sums the rest): AVX2
#: where compiled for it
dot_lanes = codes_intrinsic(types.int16, types.int32, _dot_codegen(AVX2))
#: the same in plain vector IR (what other CPUs run; tests check it on any CPU)
dot_lanes_generic = codes_intrinsic(types.int16, types.int32, _dot_codegen(False))


@kernel(inline=True)
def dot_u8_i16(u, codes, start):
    """sum_i u[i] * codes[start + i] over the ``len(u)`` components (int32: the caller keeps
    ``len(u) * 255 * max|u|`` below 2^31)."""
    n = u.shape[0]
    if n >= LANES:
        return dot_lanes(u, codes, start, n)
    acc = np.int32(0)
    for i in range(n):
        acc = np.int32(acc + np.int32(np.int32(u[i]) * np.int32(codes[start + i])))
    return acc


#: components one step of ``dot_u7_i8`` takes
WIDE_LANES = 32


def _dot7_codegen(avx2: bool):
    """The body of ``sum_{i < n} u[i] * codes[start + i]`` (int32) for uint8 codes below 128
    and int8 terms, ``n`` a multiple of ``WIDE_LANES``: two accumulators, each step one
    ``vpmaddubsw`` (products summed in pairs, exact for these ranges) and one ``vpmaddwd``
    by ones on AVX2; the same sums in plain vector IR elsewhere."""

    def codegen(context, builder, signature, args):
        u, codes, start, n = codes_args(context, builder, signature, args)
        i32 = ir.IntType(32)
        v32i8, v32i16 = ir.VectorType(ir.IntType(8), WIDE_LANES), ir.VectorType(ir.IntType(16), WIDE_LANES)
        v16i16, v8i32 = ir.VectorType(ir.IntType(16), WIDE_LANES // 2), ir.VectorType(i32, WIDE_LANES // 4)
        acc_type = v8i32 if avx2 else ir.VectorType(i32, WIDE_LANES)
        base = builder.gep(codes.data, [start])

        def products(i):
            c = builder.load(builder.bitcast(builder.gep(base, [i]), v32i8.as_pointer()), align=1)
            q = builder.load(builder.bitcast(builder.gep(u.data, [i]), v32i8.as_pointer()), align=1)
            if avx2:
                pairs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                                       "llvm.x86.avx2.pmadd.ub.sw")
                widen = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                                       "llvm.x86.avx2.pmadd.wd")
                return builder.call(widen, [builder.call(pairs, [c, q]), ir.Constant(v16i16, [1] * 16)])
            return builder.sext(builder.mul(builder.zext(c, v32i16), builder.sext(q, v32i16)), acc_type)

        zero = ir.Constant(acc_type, None)
        acc0 = cgutils.alloca_once_value(builder, zero)
        acc1 = cgutils.alloca_once_value(builder, zero)
        step = ir.Constant(n.type, WIDE_LANES)
        pairs_end = builder.and_(n, ir.Constant(n.type, -2 * WIDE_LANES))
        with cgutils.for_range_slice(builder, ir.Constant(n.type, 0), pairs_end, ir.Constant(n.type, 2 * WIDE_LANES)) \
                as (i, _):
            builder.store(builder.add(builder.load(acc0), products(i)), acc0)
            builder.store(builder.add(builder.load(acc1), products(builder.add(i, step))), acc1)
        with builder.if_then(builder.icmp_signed("<", pairs_end, n)):
            builder.store(builder.add(builder.load(acc0), products(pairs_end)), acc0)
        return lane_sum(builder, builder.add(builder.load(acc0), builder.load(acc1)))

    return codegen


#: ``sum_{i < n} u[i] * codes[start + i]`` for C-contiguous int8 ``u`` (in [-127, 127]) and
#: uint8 ``codes`` (below 128), ``n`` a multiple of ``WIDE_LANES``: AVX2 where compiled for it
dot_u7_i8 = codes_intrinsic(types.int8, types.int32, _dot7_codegen(AVX2))
#: the same in plain vector IR (what other CPUs run; tests check it on any CPU)
dot_u7_i8_generic = codes_intrinsic(types.int8, types.int32, _dot7_codegen(False))
