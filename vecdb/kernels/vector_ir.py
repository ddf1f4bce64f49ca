"""LLVM IR helpers shared by the kernels that write their vector code by hand
(``int_dot``, ``word_sums``)."""
from __future__ import annotations

from llvmlite import ir


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
