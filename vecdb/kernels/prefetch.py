"""Software prefetch for graph walks: ask the CPU to start loading a row before it is read.

Graph search is bound by memory latency (each neighbour's vector is a random row); issuing
the loads of all neighbours of a node before computing any distance overlaps those misses,
as hnswlib does with ``_mm_prefetch``. A prefetch never faults and has no visible effect.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vecdb.kernels._jit import kernel


@intrinsic
def prefetch(typingctx, arr, row, col):
    """Prefetch the cache line holding ``arr[row, col]`` (2-D) or ``arr[row]`` (1-D, col ignored)."""
    if not isinstance(arr, types.Array) or not isinstance(row, types.Integer) or not isinstance(col, types.Integer):
        return None
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        indices = [idx]
        if arrty.ndim == 2:
            indices.append(context.cast(builder, args[2], signature.args[2], types.intp))
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, indices)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, rw = read, locality = keep in all cache levels, cache type = data)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


#: madvise(2) from jitted code: LLVM resolves the symbol in the process (libc), so the
#: kernels that call it stay cacheable (a ctypes function pointer would not be)
_madvise = types.ExternalFunction("madvise", types.int32(types.uintp, types.uintp, types.int32))
MADV_WILLNEED = 3
_OS_PAGE = 4096


@kernel(inline=True)
def will_need(arr, lo, hi):
    """Ask the kernel to start reading the file pages behind ``arr[lo:hi]`` (a file map) in
    the background: the reads of several ranges are then in flight together, where touching
    them would fault one page (or read-around window) at a time. Costs a system call even
    when the pages are cached."""
    base = arr.ctypes.data
    start = (base + lo) // _OS_PAGE * _OS_PAGE
    _madvise(start, base + hi - start, MADV_WILLNEED)
