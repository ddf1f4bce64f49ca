"""Typed views of byte buffers in kernels, without NumPy's checks.

``buf[lo:hi].view(np.int64)`` compiles in Numba to a call that re-derives the shape and
strides and checks the layout: ~20 ns each, and a posting scan took five to seven of them a
record (one more per re-ranked row). ``view_as`` is a pointer cast instead (~0 ns after
LLVM's clean-up), ``load_as`` one unaligned load. Neither checks bounds: callers pass byte
ranges they have already checked (a record's length against its header, a page against the
map).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array


def _item_type(dtype: types.Type) -> types.Type | None:
    """The scalar type named by a dtype argument (``np.int64`` or ``np.dtype(...)``)."""
    if isinstance(dtype, types.NumberClass):
        return dtype.instance_type
    if isinstance(dtype, types.DType):
        return dtype.dtype
    return None


def _is_bytes(buf: types.Type) -> bool:
    return isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C" and buf.dtype == types.uint8


@intrinsic
def view_as(typingctx, buf, lo, n, dtype):
    """The ``n`` items of ``dtype`` starting at byte ``lo`` of the C-contiguous byte array
    ``buf``, as a 1-D array sharing its memory (read-only when ``buf`` is)."""
    item = _item_type(dtype)
    if item is None or not _is_bytes(buf) or not isinstance(lo, types.Integer) or not isinstance(n, types.Integer):
        return None
    out_type = types.Array(item, 1, "C", readonly=not buf.mutable, aligned=buf.aligned)

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        out = context.make_array(out_type)(context, builder)
        start = context.cast(builder, args[1], signature.args[1], types.intp)
        count = context.cast(builder, args[2], signature.args[2], types.intp)
        size = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(item)))
        data = builder.bitcast(builder.gep(src.data, [start]), out.data.type)
        populate_array(out, data=data, shape=cgutils.pack_array(builder, [count]),
                       strides=cgutils.pack_array(builder, [size]), itemsize=size, meminfo=src.meminfo,
                       parent=src.parent)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return out_type(buf, lo, n, dtype), codegen


@intrinsic
def load_as(typingctx, buf, at, dtype):
    """The ``dtype`` value stored at byte ``at`` of the C-contiguous byte array ``buf``
    (any alignment)."""
    item = _item_type(dtype)
    if item is None or not _is_bytes(buf) or not isinstance(at, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        start = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = builder.bitcast(builder.gep(src.data, [start]), context.get_data_type(item).as_pointer())
        return builder.load(ptr, align=1)

    return item(buf, at, dtype), codegen


@intrinsic
def load_be_u64(typingctx, buf, at):
    """The big-endian uint64 at byte ``at`` of the C-contiguous byte array ``buf`` (any
    alignment): one load and a byte swap, so 8-byte keys compare as integers."""
    if not _is_bytes(buf) or not isinstance(at, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        start = context.cast(builder, args[1], signature.args[1], types.intp)
        i64 = ir.IntType(64)
        value = builder.load(builder.bitcast(builder.gep(src.data, [start]), i64.as_pointer()), align=1)
        swap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]), "llvm.bswap.i64")
        return builder.call(swap, [value])

    return types.uint64(buf, at), codegen
