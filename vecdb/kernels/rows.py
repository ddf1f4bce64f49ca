"""Vector sources for the graph kernels: a plain float32 matrix (row ``i`` is ``vecs[i]``)
or a ``(rows, slot_map)`` tuple (row ``i`` is ``rows[slot_map[i]]``), so a graph can be built
and searched over rows another index owns without copying them.

The choice is made when Numba compiles a kernel (by the argument's type), so a kernel given
a matrix compiles to the same code as one that indexes the matrix directly.
"""
from __future__ import annotations

from typing import Any

from numba import types
from numba.extending import overload

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
