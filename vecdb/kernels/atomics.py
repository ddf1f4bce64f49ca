"""Atomic array operations and spin locks for Numba kernels (LLVM atomics via intrinsics).

Numba's CPU target has no atomics; concurrent graph construction needs a per-node lock
(a 32-bit word, 0 = free) and a shared work counter, as hnswlib uses a mutex per node.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vecdb.kernels._jit import kernel


def _item_ptr(context, builder, arrty, arr, idx, idxty):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [i])


@intrinsic
def atomic_cas(typingctx, arr, idx, expected, new):
    """Compare-and-swap ``arr[idx]`` (1-D int array): store ``new`` if it equals ``expected``;
    returns the value seen before."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)):
        return None
    sig = arr.dtype(arr, idx, expected, new)

    def codegen(context, builder, signature, args):
        arrty, idxty, ety, nty = signature.args
        ptr = _item_ptr(context, builder, arrty, args[0], args[1], idxty)
        exp = context.cast(builder, args[2], ety, arrty.dtype)
        val = context.cast(builder, args[3], nty, arrty.dtype)
        pair = builder.cmpxchg(ptr, exp, val, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


@intrinsic
def atomic_add(typingctx, arr, idx, value):
    """Atomically add ``value`` to ``arr[idx]`` (1-D int array); returns the previous value."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)):
        return None
    sig = arr.dtype(arr, idx, value)

    def codegen(context, builder, signature, args):
        arrty, idxty, vty = signature.args
        ptr = _item_ptr(context, builder, arrty, args[0], args[1], idxty)
        val = context.cast(builder, args[2], vty, arrty.dtype)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return sig, codegen


@intrinsic
def atomic_exchange(typingctx, arr, idx, value):
    """Atomically store ``value`` in ``arr[idx]`` (1-D int array); returns the previous value."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)):
        return None
    sig = arr.dtype(arr, idx, value)

    def codegen(context, builder, signature, args):
        arrty, idxty, vty = signature.args
        ptr = _item_ptr(context, builder, arrty, args[0], args[1], idxty)
        val = context.cast(builder, args[2], vty, arrty.dtype)
        return builder.atomic_rmw("xchg", ptr, val, "seq_cst")

    return sig, codegen


@kernel
def lock(locks, i):
    """Spin until lock word ``locks[i]`` is taken by the caller."""
    while atomic_cas(locks, i, 0, 1) != 0:
        pass


@kernel
def unlock(locks, i):
    """Release lock word ``locks[i]`` (publishes the writes made while holding it)."""
    atomic_exchange(locks, i, 0)
