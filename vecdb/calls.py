"""The context of the call being served: its deadline, whether its caller cancelled it, and
how many payload bytes it may still read.

The gRPC server opens one ``call_scope`` around each RPC; long loops below it (filter
evaluation, payload reads) call ``check()`` / ``spend_payload_bytes()`` so a request stops
at its deadline or cancellation and is refused before it allocates more than its budget.
Outside any scope (embedded use) both are no-ops. The context lives in a ``ContextVar``,
so it follows the thread (or task) serving the call and never leaks into another.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

from vecdb.errors import ResourceExhaustedError, VecdbCancelledError, VecdbTimeoutError


@dataclass
class CallContext:
    """Limits of one call. ``deadline`` is a ``time.monotonic()`` instant or None;
    ``cancelled`` answers True once the caller has gone away; ``payload_bytes`` is what
    the call may still read of stored payloads (None: unlimited), ``payload_flag`` names
    the setting that sets it (quoted in the error)."""

    what: str = "call"
    deadline: float | None = None
    cancelled: Callable[[], bool] | None = None
    payload_bytes: int | None = None
    payload_flag: str = "the payload byte limit"
    spent: int = field(default=0)


_CURRENT: ContextVar[CallContext | None] = ContextVar("vecdb_call", default=None)


@contextmanager
def call_scope(context: CallContext) -> Iterator[CallContext]:
    """Make ``context`` the current call's context for the duration of the block."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def current() -> CallContext | None:
    """The current call's context, or None outside any scope."""
    return _CURRENT.get()


def check() -> None:
    """Raise VecdbTimeoutError past the deadline and VecdbCancelledError once cancelled."""
    ctx = _CURRENT.get()
    if ctx is None:
        return
    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
        raise VecdbTimeoutError(f"{ctx.what}: the deadline passed while the server was working on the call")
    if ctx.cancelled is not None and ctx.cancelled():
        raise VecdbCancelledError(f"{ctx.what}: the caller cancelled the call")


def spend_payload_bytes(n: int) -> None:
    """Count ``n`` more payload bytes read for this call; ResourceExhaustedError once the
    call's budget is exceeded (checked before the payload is decoded)."""
    ctx = _CURRENT.get()
    if ctx is None or ctx.payload_bytes is None:
        return
    ctx.spent += n
    if ctx.spent > ctx.payload_bytes:
        raise ResourceExhaustedError(
            f"{ctx.what}: the payloads of this answer exceed {ctx.payload_bytes} bytes ({ctx.payload_flag}); "
            "ask for fewer hits or points, or leave payloads out"
        )
