"""Vector sources for the graph kernels: a plain float32 matrix (row ``i`` is ``vecs[i]``)
or a ``(rows, slot_map)`` tuple (row ``i`` is ``rows[slot_map[i]]``), so a graph can be built
and searched over rows another index owns without copying them.

The choice is made when Numba compiles a kernel (by the argument's type), so a kernel given
a matrix compiles to the same code as one that indexes the matrix directly. Also the answer
tail the one-call search kernels share (``finish_answer``: slots to ids, distance shift).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import types
from numba.extending import overload

from vecdb.kernels._jit import kernel
from vecdb.kernels.prefetch import prefetch


def _is_mapped(vecs: Any) -> bool:
    return isinstance(vecs, types.BaseTuple)


def row_of(vecs: Any, i: int) -> Any:
    """Row ``i`` of the vector source ``vecs`` (see the module docstring)."""
    if isinstance(vecs, tuple):
        return vecs[0][vecs[1][i]]
    return vecs[i]


def dims(vecs: Any) -> int:
    """Vector dimension of the source."""
    if isinstance(vecs, tuple):
        return vecs[0].shape[1]
    return vecs.shape[1]


def prefetch_row(vecs: Any, i: int, col: int) -> None:
    """Start loading the cache line of row ``i``'s element ``col`` (no effect outside Numba)."""
    return None


@overload(row_of, inline="always")
def _row(vecs, i):
    if _is_mapped(vecs):
        return lambda vecs, i: vecs[0][vecs[1][i]]
    return lambda vecs, i: vecs[i]


@overload(dims, inline="always")
def _dims(vecs):
    if _is_mapped(vecs):
        return lambda vecs: vecs[0].shape[1]
    return lambda vecs: vecs.shape[1]


@overload(prefetch_row, inline="always")
def _prefetch_row(vecs, i, col):
    if _is_mapped(vecs):
        def mapped(vecs, i, col):
            prefetch(vecs[0], vecs[1][i], col)
        return mapped

    def plain(vecs, i, col):
        prefetch(vecs, i, col)
    return plain


@kernel(inline=True)
def finish_answer(ids, dists, slot_ids, shift):
    """An answer row's last step, in place: its slots (sorted, -1 padded) become ids through
    ``slot_ids`` (left as they are when it is empty: the identity layout) and ``shift`` is added
    to each found distance (cosine: 1 - cos = -<q, x> + 1; 0 for the other metrics). The tail
    every one-call search kernel ends with."""
    for j in range(ids.shape[0]):
        s = ids[j]
        if s < 0:
            break
        if slot_ids.shape[0]:
            ids[j] = slot_ids[s]
        dists[j] += shift


_EXPONENT = np.uint32(0x7F800000)


@kernel(holds_gil=True)
def all_finite(x):
    """True when no element of the C-contiguous float32 array ``x`` is NaN or infinite (an
    all-ones exponent), tested on the bits so the loop vectorises: a call for one 384-d row
    costs ~0.35 us, against ~1.1 us for a numpy reduction's, and keeps the GIL (a search
    that let it go here would wait to get it back behind every thread running Python)."""
    bits = x.reshape(-1).view(np.uint32)
    bad = 0
    for i in range(bits.shape[0]):
        bad += (bits[i] & _EXPONENT) == _EXPONENT
    return bad == 0
