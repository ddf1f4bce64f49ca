"""The server's error boundary: every failure leaves a servicer as a gRPC status.

A ``VecdbError`` keeps its class: its ``grpc_code`` becomes the status code, its message
the details, and the trailing metadata ``vecdb-error`` carries the class name so the
client raises the same class as the embedded database would. ``MemoryError`` becomes
RESOURCE_EXHAUSTED; anything else is a bug: it is logged with its traceback and the
client gets INTERNAL with a generic message and an incident id to quote.
"""
from __future__ import annotations

import logging
import uuid
from typing import NoReturn

import grpc

from vecdb.errors import InternalError, ResourceExhaustedError, VecdbError
from vecdb.wire import ERROR_HEADER

logger = logging.getLogger(__name__)


def as_vecdb_error(exc: BaseException, method: str) -> VecdbError:
    """The VecdbError a caller should see for ``exc`` raised while serving ``method``."""
    if isinstance(exc, VecdbError):
        return exc
    if isinstance(exc, MemoryError):
        return ResourceExhaustedError(
            f"{method}: the server ran out of memory for this request; send fewer or smaller vectors, or a smaller k"
        )
    incident = uuid.uuid4().hex[:12]
    logger.error("unexpected error in %s", method, exc_info=exc, extra={"event": "internal_error",
                                                                       "method": method, "incident": incident})
    return InternalError(f"{method}: internal server error (incident {incident}; the server log has details)")


def abort(context: grpc.ServicerContext, err: VecdbError) -> NoReturn:
    """End the RPC with ``err``'s status code, message and class name."""
    context.set_trailing_metadata(((ERROR_HEADER, type(err).__name__),))
    context.abort(grpc.StatusCode[err.grpc_code], str(err) or type(err).__name__)
    raise AssertionError("grpc context.abort returned")  # abort always raises
