"""The vecdb exception tree. Each class knows its gRPC status name, so embedded and remote
callers see the same exception class for the same mistake."""
from __future__ import annotations

from typing import ClassVar


class VecdbError(Exception):
    """Base of every error vecdb raises on purpose."""

    grpc_code: ClassVar[str] = "UNKNOWN"
    retriable: ClassVar[bool] = False


class InvalidArgumentError(VecdbError, ValueError):
    """Bad shape, dtype, k, metric, NaN/inf, malformed filter or request."""

    grpc_code = "INVALID_ARGUMENT"


class DimensionMismatchError(InvalidArgumentError):
    """A vector's dimension differs from the index or collection dimension."""


class NotFoundError(VecdbError, LookupError):
    """Something named by the caller does not exist."""

    grpc_code = "NOT_FOUND"


class CollectionNotFoundError(NotFoundError):
    """No collection has that name."""


class TenantNotFoundError(NotFoundError):
    """No tenant has that name."""


class IdNotFoundError(NotFoundError):
    """One or more ids are not stored."""


class AlreadyExistsError(VecdbError):
    """A collection with that name exists, or an id was added twice."""

    grpc_code = "ALREADY_EXISTS"


class FailedPreconditionError(VecdbError):
    """The operation is valid but not now: untrained quantizer, closed database, read-only."""

    grpc_code = "FAILED_PRECONDITION"


class UnauthenticatedError(VecdbError):
    """No API key, or an unknown one."""

    grpc_code = "UNAUTHENTICATED"


class PermissionDeniedError(VecdbError):
    """The caller's key may not touch that collection or tenant."""

    grpc_code = "PERMISSION_DENIED"


class ResourceExhaustedError(VecdbError):
    """Storage cannot grow, or a request is over a size limit."""

    grpc_code = "RESOURCE_EXHAUSTED"


class VecdbTimeoutError(VecdbError, TimeoutError):
    """The call's deadline passed."""

    grpc_code = "DEADLINE_EXCEEDED"


class VecdbCancelledError(VecdbError):
    """The caller cancelled the call (or went away) while it was running."""

    grpc_code = "CANCELLED"


class UnavailableError(VecdbError):
    """The server is starting, draining or unreachable; retrying may help."""

    grpc_code = "UNAVAILABLE"
    retriable = True


class DataLossError(VecdbError):
    """A stored file is corrupt, truncated or of an unknown format version."""

    grpc_code = "DATA_LOSS"


class InternalError(VecdbError):
    """An unexpected failure inside vecdb (a bug); the message is generic on the wire."""

    grpc_code = "INTERNAL"


def error_classes() -> dict[str, type[VecdbError]]:
    """Every VecdbError subclass by class name, derived from the class tree (never hand-kept)."""
    found: dict[str, type[VecdbError]] = {}
    todo: list[type[VecdbError]] = [VecdbError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
