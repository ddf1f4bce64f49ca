"""Input checks done once at the public boundary; everything beneath trusts its inputs."""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from vecdb.errors import DimensionMismatchError, InvalidArgumentError
from vecdb.types import F32Matrix, I64Vector


def as_matrix(vectors: Any, dim: int | None, *, what: str = "vectors") -> F32Matrix:
    """Return ``vectors`` as a C-contiguous float32 (n, dim) array; a 1-D input is one row.

    Raises InvalidArgumentError for non-numeric dtypes, wrong rank and NaN/inf, and
    DimensionMismatchError when ``dim`` is given and differs.
    """
    if (type(vectors) is np.ndarray and vectors.dtype == np.float32 and 0 < vectors.ndim <= 2
            and vectors.shape[-1] == dim and dim and vectors.flags.c_contiguous):
        # fast path for the common case (one small call per query matters for latency)
        if vectors.ndim == 1:
            vectors = vectors.reshape(1, dim)
        if not np.isfinite(vectors).all():
            bad = int(np.argwhere(~np.isfinite(vectors))[0, 0])
            raise InvalidArgumentError(f"{what} contain NaN or inf (first at row {bad})")
        return vectors
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{what} must be a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidArgumentError(f"{what} must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"{what} must be 1-D or 2-D (n, dim), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dim {arr.shape[1]}, expected {dim}")
    if arr.shape[1] == 0:
        raise InvalidArgumentError(f"{what} must have at least one dimension")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if out.size and not np.isfinite(out).all():
        bad = int(np.argwhere(~np.isfinite(out))[0, 0])
        raise InvalidArgumentError(f"{what} contain NaN or inf (first at row {bad})")
    return out


def checked_queries(queries: Any, dim: int) -> F32Matrix:
    """``queries`` as the trusted search path takes them (C-contiguous finite float32 (nq, dim)):
    the common case (such an array, or one such row) is checked in a microsecond or two, the
    rest goes through ``as_matrix`` (InvalidArgumentError / DimensionMismatchError)."""
    if (type(queries) is np.ndarray and queries.dtype == np.float32 and 0 < queries.ndim <= 2
            and queries.shape[-1] == dim and queries.flags.c_contiguous):
        q = queries if queries.ndim == 2 else queries.reshape(1, dim)
        if _finite(q.reshape(-1)):
            return q
    return as_matrix(queries, dim, what="queries")


#: numpy lets the GIL go in a reduction over more than 500 elements; a search thread that lets
#: it go waits to take it back behind every thread running Python (milliseconds under load,
#: for a microsecond of work), so a query of up to ``_CHUNKED_MAX`` values is summed in chunks
_GIL_CHUNK = 500
_CHUNKED_MAX = 8 * _GIL_CHUNK
_sum = np.add.reduce


def _finite(flat: np.ndarray) -> bool:
    """True when no value of the float32 vector ``flat`` is NaN or inf: their float64 sum is
    finite (finite float32 values cannot overflow it, NaN or inf anywhere makes it NaN or inf)."""
    n = len(flat)
    if n <= _GIL_CHUNK or n > _CHUNKED_MAX:
        return math.isfinite(_sum(flat, dtype=np.float64))
    total = 0.0
    for lo in range(0, n, _GIL_CHUNK):
        total += _sum(flat[lo:lo + _GIL_CHUNK], dtype=np.float64)
    return math.isfinite(total)


def as_ids(ids: Any, n: int, *, what: str = "ids") -> I64Vector:
    """Return ``ids`` as a 1-D int64 array of length ``n`` with no repeats."""
    arr = as_id_array(ids, what=what)
    if arr.shape[0] != n:
        raise InvalidArgumentError(f"got {arr.shape[0]} {what} for {n} vectors")
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.shape[0] != arr.shape[0]:
        raise InvalidArgumentError(f"duplicate {what} in one call: {uniq[counts > 1][:5].tolist()}")
    return arr


def as_id_array(ids: Any, *, what: str = "ids") -> I64Vector:
    """Return ``ids`` (a scalar, sequence or array of integers) as a 1-D int64 array."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(f"{what} must be a 1-D array of integers, got {arr.dtype} shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.max() > np.iinfo(np.int64).max:
        raise InvalidArgumentError(f"{what} must fit in int64")
    out = arr.astype(np.int64, copy=False)
    if (out < 0).any():
        raise InvalidArgumentError(f"{what} must be non-negative (-1 marks an empty result slot)")
    return out


def as_k(k: Any) -> int:
    """Return ``k`` as a positive int."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise InvalidArgumentError(f"k must be an integer, got {type(k).__name__}")
    if k <= 0:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    return int(k)


def as_positive_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int >= ``minimum`` (and <= ``maximum`` when given), for build and
    search knobs; a bound keeps huge values from reaching kernels that size arrays by them."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        shown = value if value.bit_length() <= 64 else f"a {len(str(abs(int(value))))}-digit number"
        raise InvalidArgumentError(f"{name} must be <= {maximum}, got {shown}")
    return int(value)


def as_finite_float(value: Any, name: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """Return ``value`` as a finite float >= ``minimum`` (> ``minimum`` when ``strict``), for
    build knobs and options; InvalidArgumentError for anything else (bools and strings too)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out < minimum or (strict and out == minimum):
        raise InvalidArgumentError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}")
    return out


def as_tenant(tenant: Any) -> int:
    """Return a tenant number (a collection's int64 tenant key, as indexes see tenants) as a
    non-negative int; InvalidArgumentError otherwise."""
    if type(tenant) is int and 0 <= tenant <= _INT64_MAX:
        return tenant
    return as_positive_int(tenant, "tenant", minimum=0, maximum=_INT64_MAX)


_INT64_MAX = int(np.iinfo(np.int64).max)


#: longest file-system path accepted (Linux PATH_MAX) and longest single component (NAME_MAX).
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def as_fs_path(path: Any, *, what: str = "path") -> str:
    """Return ``path`` (str or os.PathLike) as a str the OS can take: not empty, no NUL, no
    lone surrogate, at most 4096 bytes and 255 bytes per component (else InvalidArgumentError,
    instead of the ValueError/OSError the file system would raise half-way through)."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be a string path, got {type(path).__name__}") from None
    if not isinstance(text, str):
        raise InvalidArgumentError(f"{what} must be a string path, got bytes")
    if not text:
        raise InvalidArgumentError(f"{what} is empty")
    if "\0" in text:
        raise InvalidArgumentError(f"{what} contains a NUL character")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} is not valid text (it holds a lone surrogate)") from None
    if len(raw) > MAX_PATH_BYTES:
        raise InvalidArgumentError(f"{what} is {len(raw)} bytes long; at most {MAX_PATH_BYTES} are allowed")
    longest = max(len(part) for part in raw.split(b"/"))
    if longest > MAX_NAME_BYTES:
        raise InvalidArgumentError(f"{what} has a component of {longest} bytes; at most {MAX_NAME_BYTES} are allowed")
    return text
