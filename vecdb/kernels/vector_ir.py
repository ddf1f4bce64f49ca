"""LLVM IR helpers shared by the kernels that write their vector code by hand
(``int_dot``, ``word_sums``, ``dot_sums``)."""
from __future__ import annotations

from typing import Any, Callable

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def lane_sum(builder: ir.IRBuilder, vector: ir.Value) -> ir.Value:
    """The sum of an integer vector's lanes, by a tree of halves (not a lane at a time)."""
    i32 = ir.IntType(32)
    width = vector.type.count
    while width > 1:
        half = width // 2
        low = builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(i32, half), list(range(half))))
        high = builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(i32, half), list(range(half, width))))
        vector = builder.add(low, high)
        width = half
    return builder.extract_element(vector, ir.Constant(i32, 0))


def codes_intrinsic(term_dtype: Any, result: Any, codegen: Callable) -> Any:
    """A Numba intrinsic ``f(u, codes, start, n) -> result`` over a C-contiguous array of query
    terms of ``term_dtype`` and a uint8 array of codes, from byte ``start`` for ``n`` bytes,
    its body ``codegen``; other argument types do not match it."""

    def typer(typingctx, u, codes, start, n):
        if not (isinstance(u, types.Array) and u.dtype == term_dtype and isinstance(codes, types.Array)
                and codes.dtype == types.uint8 and isinstance(start, types.Integer) and isinstance(n, types.Integer)):
            return None
        return result(u, codes, start, n), codegen

    return intrinsic(typer)


def codes_args(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> tuple[Any, Any, ir.Value, ir.Value]:
    """A ``codes_intrinsic`` body's arguments: (terms array, codes array, start, n), the last
    two as intp."""
    u = context.make_array(signature.args[0])(context, builder, args[0])
    codes = context.make_array(signature.args[1])(context, builder, args[1])
    start = context.cast(builder, args[2], signature.args[2], types.intp)
    n = context.cast(builder, args[3], signature.args[3], types.intp)
    return u, codes, start, n
