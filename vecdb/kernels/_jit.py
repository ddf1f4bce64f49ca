"""The one place that decides how vecdb kernels are compiled."""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any, Callable, Iterator

# Parallel kernels run on OpenMP (libgomp), whose threads spin ~300k rounds at every barrier
# before they sleep: on a loaded machine a spinning thread takes the core its partner waits
# for, and a 4-query batched search measured 32 ms instead of 0.1 ms. A short spin keeps the
# quiet-machine launch cost (0.14 ms for 4 queries, as the default) and bounds the loaded
# one. Set before libgomp loads (its first parallel kernel); a user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402 - after the OpenMP setting above
from numba import types as nt  # noqa: E402

from vecdb.kernels.jit_cache import KernelCache  # noqa: E402

F32 = nt.float32
I32 = nt.int32
I64 = nt.int64
F32_ROW = nt.Array(nt.float32, 1, "C", readonly=True)   # readonly accepts mutable arrays too
F32_MAT = nt.Array(nt.float32, 2, "C", readonly=True)
U64_ROW = nt.Array(nt.uint64, 1, "C", readonly=True)
U64_MAT = nt.Array(nt.uint64, 2, "C", readonly=True)

# fast-math without nnan/ninf: heap and search kernels compare against +inf sentinels.
ARITH = {"nsz", "arcp", "contract", "afn", "reassoc"}

METRIC_L2, METRIC_IP, METRIC_COSINE = 0, 1, 2


def kernel(signature: Any = None, *, fastmath: Any = False, parallel: bool = False, inline: bool = False,
           holds_gil: bool = False) -> Callable:
    """``numba.njit`` with vecdb's fixed policy: cached (stamped with every kernel source,
    ``jit_cache``), GIL released, fast-math only when asked.
    ``inline``: inlined into jitted callers at Numba IR level (for small helpers called in hot
    loops, where a call that LLVM does not inline costs more than the work). ``holds_gil``:
    keep the GIL, for checks of a microsecond on every search: releasing it means taking it
    back after, and with other threads running Python that wait is far longer than the work."""
    options = dict(nogil=not holds_gil, fastmath=fastmath, parallel=parallel, error_model="numpy",
                   inline="always" if inline else "never")
    bare = inspect.isfunction(signature)                      # ``@kernel`` without a call
    sigs = [] if signature is None or bare else signature if isinstance(signature, list) else [signature]

    def define(fn: Callable) -> Any:
        dispatcher = numba.njit(**options)(fn)
        if KernelCache is None:                               # Numba's own stamp only (jit_cache)
            dispatcher.enable_caching()
        else:                                                 # enable_caching, stamped (jit_cache)
            dispatcher._cache = KernelCache(dispatcher.py_func)
        for sig in sigs:                                      # compiled now, as njit(signature) does
            dispatcher.compile(sig)
        if sigs:
            dispatcher.disable_compile()
        return dispatcher

    return define(signature) if bare else define


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` Numba and BLAS threads (None: leave as is); restores on exit."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        numba.set_num_threads(previous)
