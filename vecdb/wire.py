"""The one translation layer between vecdb's domain values and the vecdb.v1 protobuf messages.

Both the server (``vecdb/server/service.py``) and the clients (``vecdb/client.py``,
``vecdb/aio_client.py``) convert only through these functions, so the wire format is
defined in one place:

- numeric arrays travel as ``Matrix`` (packed little-endian bytes plus shape and dtype),
- ids as ``Ids`` (packed int64, or strings) and result ids as ``IdMatrix``,
- filters, payloads and index/search parameters as JSON text ("" means "not given");
  search hits' payloads as ``HitPayloads``: each distinct payload once plus an index.

Decoding is defensive because the server decodes whatever a client sends: every shape,
size and dtype inconsistency raises ``InvalidArgumentError`` with a message that says
what was expected and what arrived.

The call metadata keys both sides use (API key, error class) are defined here too, once.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from vecdb.api import CollectionInfo, CollectionStats, GetResult, Payload, QueryResult
from vecdb.errors import InvalidArgumentError
from vecdb.v1 import types_pb2 as pb
from vecdb.v1 import vecdb_pb2 as vpb

_DTYPES: dict[int, np.dtype[Any]] = {
    pb.FLOAT32: np.dtype("<f4"),
    pb.INT64: np.dtype("<i8"),
    pb.UINT8: np.dtype("u1"),
}
_PB_DTYPES = {np.dtype(np.float32): pb.FLOAT32, np.dtype(np.int64): pb.INT64, np.dtype(np.uint8): pb.UINT8}
#: the wire is little-endian: on such a machine an array's bytes are sent and read as they are
_LITTLE_ENDIAN = sys.byteorder == "little"
#: ``dtype=`` arguments of ``matrix_from_proto`` as numpy dtypes, so a decode skips ``np.dtype()``
_WANTED: dict[Any, np.dtype[Any]] = {np.float32: np.dtype(np.float32), np.int64: np.dtype(np.int64)}
_INT64_MAX = np.iinfo(np.int64).max

# ---- call metadata (gRPC headers and trailers) ------------------------------------------------
#: request header carrying the caller's API key
API_KEY_HEADER = "x-api-key"
#: request header also accepted for the key, as ``authorization: Bearer <key>``
AUTHORIZATION_HEADER = "authorization"
BEARER_PREFIX = "bearer "
#: trailer naming the vecdb exception class of a failed call (``vecdb.errors``)
ERROR_HEADER = "vecdb-error"


# ---- JSON --------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    """Let numpy scalars and arrays inside payloads/params encode as their Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-like")


def dumps(value: Any, *, what: str) -> str:
    """Encode a JSON-like value; InvalidArgumentError names ``what`` if it cannot be encoded."""
    try:
        return json.dumps(value, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{what} must be JSON-like (dicts with str keys, lists, str, int, float, bool, None): {exc}"
        ) from None


def loads(text: str, *, what: str) -> Any:
    """Decode JSON text sent for ``what``; InvalidArgumentError if it is not valid JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"{what} is not valid JSON text: {exc}") from None


def optional_json(value: Any, *, what: str) -> str:
    """Encode ``value`` as JSON text, or "" when it is None (the proto's "not given")."""
    return "" if value is None else dumps(value, what=what)


def loads_object(text: str, *, what: str) -> dict[str, Any] | None:
    """Decode optional JSON text that must hold an object; "" decodes to None."""
    if not text:
        return None
    value = loads(text, what=what)
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


# ---- matrices ----------------------------------------------------------------------------
def matrix_to_proto(array: np.ndarray) -> pb.Matrix:
    """Pack a 2-D float32/int64/uint8 array (any byte order) as a little-endian ``Matrix``."""
    message = pb.Matrix()
    fill_matrix(message, array)
    return message


def fill_matrix(message: pb.Matrix, array: np.ndarray) -> None:
    """``matrix_to_proto`` written into ``message`` (a field of the message being built): the
    request/response is filled in place instead of a sub-message being built and then copied."""
    if type(array) is np.ndarray and array.ndim == 2 and array.flags.c_contiguous and _LITTLE_ENDIAN:
        code = _PB_DTYPES.get(array.dtype)   # native float32 / int64 / uint8: its bytes are the wire's
        if code is not None:
            message.n_rows, message.n_cols = array.shape
            message.dtype = code
            message.data = array.tobytes()
            return
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"a Matrix must be 2-D, got shape {arr.shape}")
    code = _PB_DTYPES.get(arr.dtype)
    if code is None:
        code = _PB_DTYPES.get(arr.dtype.newbyteorder("="))
        if code is None:
            raise InvalidArgumentError(f"cannot send dtype {arr.dtype}; expected float32, int64 or uint8")
    message.n_rows, message.n_cols = arr.shape
    message.dtype = code
    message.data = arr.astype(_DTYPES[code], copy=False).tobytes()


def matrix_from_proto(message: pb.Matrix, *, what: str, dtype: Any = np.float32) -> np.ndarray:
    """Unpack a ``Matrix`` into a writable native-endian array of ``dtype``, checking the
    dtype tag and that the byte length equals ``n_rows * n_cols * itemsize``."""
    want = _WANTED.get(dtype) or np.dtype(dtype)
    code = _PB_DTYPES[want]
    rows, cols, data = message.n_rows, message.n_cols, message.data
    if message.dtype != code:
        got = pb.DType.Name(message.dtype) if message.dtype in pb.DType.values() else str(message.dtype)
        raise InvalidArgumentError(f"{what} must be a {pb.DType.Name(code)} Matrix, got dtype {got}")
    if len(data) != rows * cols * want.itemsize:
        raise InvalidArgumentError(f"{what} Matrix has {len(data)} bytes of data but shape ({rows}, {cols}) of "
                                   f"{want} needs {rows * cols * want.itemsize}")
    if _LITTLE_ENDIAN:  # the wire's bytes are the native layout: one copy, one array over it
        return np.ndarray((rows, cols), want, bytearray(data))
    return np.frombuffer(data, dtype=_DTYPES[code]).reshape(rows, cols).astype(want)


# ---- ids ---------------------------------------------------------------------------------
def ids_to_proto(ids: Any, *, id_type: str = "int") -> pb.Ids:
    """Encode point ids as given by a caller: integers as packed int64, strings as strings.

    The collection's ``id_type`` only decides how an empty list is sent; whether the ids
    suit the collection is the database's call, so remote and embedded agree on errors.
    """
    if isinstance(ids, str):
        return pb.Ids(str=pb.StringList(values=[ids]))
    if isinstance(ids, (list, tuple)) and any(isinstance(x, str) for x in ids):
        if not all(isinstance(x, str) for x in ids):
            raise InvalidArgumentError("ids must be all integers or all strings, not a mix")
        return pb.Ids(str=pb.StringList(values=list(ids)))
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        if id_type == "str":
            return pb.Ids(str=pb.StringList(values=[]))
        return pb.Ids(int64=b"")
    if arr.ndim != 1:
        raise InvalidArgumentError(f"ids must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "US" or (arr.dtype == object and all(isinstance(x, str) for x in arr)):
        return pb.Ids(str=pb.StringList(values=[str(x) for x in arr]))
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"ids must be integers or strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > _INT64_MAX:
        raise InvalidArgumentError("ids must fit in int64")
    return pb.Ids(int64=np.ascontiguousarray(arr, dtype="<i8").tobytes())


def ids_from_proto(message: pb.Ids, *, what: str = "ids") -> np.ndarray | list[str]:
    """Decode ``Ids`` into an int64 array or a list of str, as the database accepts them."""
    kind = message.WhichOneof("kind")
    if kind == "str":
        return list(message.str.values)
    if kind != "int64":
        raise InvalidArgumentError(f"{what} are missing: set either int64 or str")
    if len(message.int64) % 8:
        raise InvalidArgumentError(f"{what} int64 data has {len(message.int64)} bytes, not a multiple of 8")
    return np.frombuffer(message.int64, dtype="<i8").astype(np.int64, copy=True)


def _ids_array(ids: Any) -> np.ndarray:
    """Decoded ids as the result types carry them: int64 array or object array of str."""
    if isinstance(ids, list):
        out = np.empty(len(ids), dtype=object)
        out[:] = ids
        return out
    return ids


def result_ids_to_proto(ids: np.ndarray) -> pb.IdMatrix:
    """Encode search-result ids (n, k): int64 padded with -1, or str padded with None."""
    message = pb.IdMatrix()
    fill_result_ids(message, ids)
    return message


def fill_result_ids(message: pb.IdMatrix, ids: np.ndarray) -> None:
    """``result_ids_to_proto`` written into ``message`` (a field of the response being built)."""
    if (type(ids) is np.ndarray and ids.dtype == np.int64 and ids.ndim == 2 and ids.flags.c_contiguous
            and _LITTLE_ENDIAN):
        message.n_rows, message.n_cols = ids.shape
        message.int64 = ids.tobytes()
        return
    arr = np.asarray(ids)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"result ids must be 2-D, got shape {arr.shape}")
    message.n_rows, message.n_cols = arr.shape
    if arr.dtype.kind in "iu":
        message.int64 = np.ascontiguousarray(arr, dtype="<i8").tobytes()
        return
    flat = arr.ravel()
    present = np.fromiter((x is not None for x in flat), dtype=np.uint8, count=flat.size)
    cells = message.str
    cells.values.extend("" if x is None else str(x) for x in flat)
    cells.present = present.tobytes()


def result_ids_from_proto(message: pb.IdMatrix) -> np.ndarray:
    """Decode ``IdMatrix`` into an int64 array or an object array of str/None."""
    rows, cols = int(message.n_rows), int(message.n_cols)
    kind = message.WhichOneof("kind")
    if kind == "str":
        cells = message.str
        if len(cells.values) != rows * cols or len(cells.present) != rows * cols:
            raise InvalidArgumentError(f"result ids do not fill a ({rows}, {cols}) grid")
        out = np.empty(rows * cols, dtype=object)
        present = np.frombuffer(cells.present, dtype=np.uint8)
        for i, (value, here) in enumerate(zip(cells.values, present, strict=True)):
            out[i] = value if here else None
        return out.reshape(rows, cols)
    data = message.int64
    if len(data) != rows * cols * 8:
        raise InvalidArgumentError(f"result ids have {len(data)} bytes, ({rows}, {cols}) int64 needs {rows * cols * 8}")
    if _LITTLE_ENDIAN:
        return np.ndarray((rows, cols), np.int64, bytearray(data))
    return np.frombuffer(data, dtype="<i8").reshape(rows, cols).astype(np.int64)


def flag(value: Any, *, what: str) -> bool:
    """A bool argument (numpy bools too); InvalidArgumentError for anything else, as the
    embedded database raises, instead of protobuf's truthiness."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{what} must be True or False, got {value!r:.80}")
    return bool(value)


def tenants_to_list(tenant: str | Sequence[str] | None) -> list[str]:
    """The ``tenant=`` of an upsert (one name, several, or None) as a list of names."""
    if tenant is None:
        return []
    if isinstance(tenant, str):
        return [tenant]
    return [str(t) for t in tenant]


# ---- collection descriptions -------------------------------------------------------------
def info_to_proto(info: CollectionInfo) -> pb.CollectionInfo:
    """Encode a ``CollectionInfo``."""
    return pb.CollectionInfo(
        name=info.name, dim=int(info.dim), metric=str(info.metric), index=str(info.index),
        index_params_json=dumps(dict(info.index_params), what="index_params"), id_type=info.id_type,
        multi_tenant=bool(info.multi_tenant),
    )


def info_from_proto(message: pb.CollectionInfo) -> CollectionInfo:
    """Decode a ``CollectionInfo``."""
    return CollectionInfo(
        name=message.name, dim=int(message.dim), metric=message.metric, index=message.index,
        index_params=loads_object(message.index_params_json, what="index_params") or {},
        id_type=message.id_type, multi_tenant=bool(message.multi_tenant),
    )


def stats_to_proto(stats: CollectionStats) -> pb.CollectionStats:
    """Encode a ``CollectionStats``."""
    return pb.CollectionStats(
        count=int(stats.count), memory_bytes=int(stats.memory_bytes), disk_bytes=int(stats.disk_bytes),
        index=str(stats.index), index_params_json=dumps(dict(stats.index_params), what="index_params"),
        n_tenants=int(stats.n_tenants), trained=bool(stats.trained), indexed=int(stats.indexed),
        pending=int(stats.pending),
    )


def stats_from_proto(message: pb.CollectionStats) -> CollectionStats:
    """Decode a ``CollectionStats``."""
    return CollectionStats(
        count=int(message.count), memory_bytes=int(message.memory_bytes), disk_bytes=int(message.disk_bytes),
        index=message.index, index_params=loads_object(message.index_params_json, what="index_params") or {},
        n_tenants=int(message.n_tenants), trained=bool(message.trained), indexed=int(message.indexed),
        pending=int(message.pending),
    )


# ---- payloads and results ------------------------------------------------------------------
def payloads_to_json(payloads: Sequence[Payload | None] | None, n: int) -> str | None:
    """Encode per-point payloads as one JSON array (None stays None: "no payloads given")."""
    if payloads is None:
        return None
    if isinstance(payloads, (dict, str, bytes)):
        raise InvalidArgumentError("payloads must be a sequence with one dict (or None) per point")
    items = list(payloads)
    if len(items) != n:
        raise InvalidArgumentError(f"got {len(items)} payloads for {n} points")
    return dumps(items, what="payloads")


def payloads_from_json(text: str, *, what: str = "payloads") -> list[Payload | None]:
    """Decode a JSON array of payload objects or nulls."""
    value = loads(text, what=what)
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def get_result_to_proto(result: GetResult) -> tuple[pb.Ids, pb.Matrix, str]:
    """Encode a ``GetResult`` as (ids, vectors, payloads_json) fields of a GetResponse."""
    ids = np.asarray(result.ids)
    vectors = np.asarray(result.vectors, dtype=np.float32)
    if vectors.ndim != 2:
        vectors = vectors.reshape(len(ids), -1)
    return ids_to_proto(ids), matrix_to_proto(vectors), dumps(list(result.payloads), what="payloads")


def get_result_from_proto(ids: pb.Ids, vectors: pb.Matrix, payloads_json: str) -> GetResult:
    """Decode the fields of a GetResponse into a ``GetResult``."""
    decoded = _ids_array(ids_from_proto(ids))
    return GetResult(
        ids=decoded,
        vectors=matrix_from_proto(vectors, what="vectors"),
        payloads=payloads_from_json(payloads_json) if payloads_json else [None] * len(decoded),
    )


def hit_payloads_to_proto(payloads: Sequence[Sequence[Payload | None]], n_rows: int, n_cols: int) -> vpb.HitPayloads:
    """Encode per-hit payloads with each distinct payload once: a point hit by many queries
    (the same object in ``payloads``, as the database returns it) or equal payloads of
    different points are encoded and sent one time, plus an (nq, k) index into them."""
    index = np.full(n_rows * n_cols, -1, dtype=np.int64)
    blobs: list[str] = []
    by_object: dict[int, int] = {}
    by_text: dict[str, int] = {}
    if len(payloads) != n_rows:
        raise InvalidArgumentError(f"got payloads for {len(payloads)} queries, expected {n_rows}")
    for row, hits in enumerate(payloads):
        if len(hits) > n_cols:
            raise InvalidArgumentError(f"query {row} has {len(hits)} payloads for {n_cols} hits")
        for col, payload in enumerate(hits):
            if payload is None:
                continue
            at = by_object.get(id(payload))
            if at is None:
                text = dumps(payload, what="payloads")
                at = by_text.setdefault(text, len(blobs))
                if at == len(blobs):
                    blobs.append(text)
                by_object[id(payload)] = at
            index[row * n_cols + col] = at
    return vpb.HitPayloads(distinct_json=blobs, index=matrix_to_proto(index.reshape(n_rows, n_cols)))


def hit_payloads_from_proto(message: vpb.HitPayloads, n_rows: int, n_cols: int) -> list[list[Payload | None]]:
    """Decode ``HitPayloads``: each distinct payload is parsed once and shared by every hit
    that points at it (as the embedded database shares one dict per point)."""
    index = matrix_from_proto(message.index, what="payload index", dtype=np.int64)
    if index.shape != (n_rows, n_cols):
        raise InvalidArgumentError(f"payload index has shape {index.shape}, expected ({n_rows}, {n_cols})")
    distinct: list[Payload | None] = []
    for i, text in enumerate(message.distinct_json):
        value = loads(text, what=f"payload {i}")
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"payload {i} must be a JSON object, got {type(value).__name__}")
        distinct.append(value)
    if index.size and (index.min() < -1 or index.max() >= len(distinct)):
        raise InvalidArgumentError(f"payload index points outside the {len(distinct)} payloads sent")
    table = distinct + [None]  # -1 picks the trailing None
    return [[table[j] for j in row] for row in index.tolist()]


def query_result_to_proto(result: QueryResult) -> tuple[pb.IdMatrix, pb.Matrix, vpb.HitPayloads | None]:
    """Encode a ``QueryResult`` as (ids, distances, payloads) fields of a SearchResponse."""
    response = vpb.SearchResponse()
    fill_search_response(response, result)
    return response.ids, response.distances, response.payloads if response.HasField("payloads") else None


def fill_search_response(response: vpb.SearchResponse, result: QueryResult) -> None:
    """Write a ``QueryResult`` into an empty ``SearchResponse`` in place (ids, distances and,
    when the search asked for them, payloads)."""
    distances = result.distances
    if type(distances) is not np.ndarray or distances.dtype != np.float32:
        distances = np.asarray(distances, dtype=np.float32)
    fill_result_ids(response.ids, result.ids)
    fill_matrix(response.distances, distances)
    if result.payloads is not None:
        response.payloads.CopyFrom(hit_payloads_to_proto(result.payloads, *distances.shape))


def query_result_from_proto(ids: pb.IdMatrix, distances: pb.Matrix, payloads: vpb.HitPayloads | None) -> QueryResult:
    """Decode the fields of a SearchResponse into a ``QueryResult``."""
    dist = matrix_from_proto(distances, what="distances")
    return QueryResult(
        ids=result_ids_from_proto(ids), distances=dist,
        payloads=None if payloads is None else hit_payloads_from_proto(payloads, *dist.shape),
    )


def search_response_to_result(response: vpb.SearchResponse) -> QueryResult:
    """Decode a whole ``SearchResponse`` (``query_result_from_proto`` of its fields)."""
    return query_result_from_proto(response.ids, response.distances,
                                   response.payloads if response.HasField("payloads") else None)


def params_to_json(params: Mapping[str, Any] | None, *, what: str) -> str:
    """Encode optional index/search parameters (a mapping) as JSON text."""
    if params is None:
        return ""
    if not isinstance(params, Mapping):
        raise InvalidArgumentError(f"{what} must be a mapping of names to values, got {type(params).__name__}")
    return dumps(dict(params), what=what)
