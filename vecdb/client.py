"""The gRPC client SDK: ``vecdb.connect(address, api_key=...)`` returns a database object with
exactly the embedded API (``vecdb.api.DatabaseAPI``): same method names, arguments,
defaults, result dataclasses and exception classes, numpy in and numpy out.

- Every call has a deadline (``timeout`` seconds, set at connect).
- Calls answered UNAVAILABLE (server starting, draining or unreachable) are retried with
  capped exponential back-off and jitter, at most ``retries`` times, always inside the
  call's deadline. Nothing else is retried.
- Errors are rebuilt as the vecdb exception class the server raised (trailing metadata
  ``vecdb-error``), or by status code when that is absent; DEADLINE_EXCEEDED becomes
  ``VecdbTimeoutError``.
- Upserts larger than ``stream_chunk_mb`` go through the client-streaming ``UpsertStream``
  RPC in chunks; each chunk is atomic (a single embedded upsert is atomic as a whole).

The request builders, response parsers and the transport policy (``TransportPolicy``:
deadline, retries with back-off, error mapping) below are shared with the asyncio client
(``vecdb.aio_client``), which differs only in how it waits.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import grpc
import numpy as np

from vecdb import wire
from vecdb.api import CollectionInfo, CollectionStats, Filter, GetResult, Payload, QueryResult, check_search_tenant
from vecdb.errors import InvalidArgumentError, VecdbError, VecdbTimeoutError, error_classes
from vecdb.v1 import vecdb_pb2 as pb
from vecdb.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.validation import as_k, as_matrix
from vecdb.wire import API_KEY_HEADER, ERROR_HEADER

logger = logging.getLogger(__name__)

MIB = 1 << 20


# ---- errors -----------------------------------------------------------------------------
def _class_for_code(code_name: str) -> type[VecdbError]:
    """The most general VecdbError class carrying ``code_name`` (VecdbError if none does)."""
    for cls in sorted(error_classes().values(), key=lambda c: len(c.__mro__)):
        if cls.grpc_code == code_name:
            return cls
    return VecdbError


def error_from_status(code: grpc.StatusCode, details: str | None, trailing: Iterable[tuple[str, Any]] | None) -> VecdbError:
    """Rebuild the vecdb exception a server answered with (by class name, else by code)."""
    name = None
    for key, value in trailing or ():
        if key == ERROR_HEADER:
            name = value.decode() if isinstance(value, bytes) else str(value)
    cls = error_classes().get(name or "") or _class_for_code(code.name)
    return cls(details or f"{code.name} from the vecdb server")


def error_from_rpc(exc: grpc.RpcError) -> VecdbError:
    """``error_from_status`` for a failed call of either client (``grpc.aio.AioRpcError`` is
    a ``grpc.RpcError`` with the same accessors)."""
    return error_from_status(exc.code(), exc.details(), exc.trailing_metadata())  # type: ignore[attr-defined]


# ---- the transport policy both clients follow ---------------------------------------------
@dataclass(frozen=True)
class TransportPolicy:
    """How every call of both clients runs: within ``timeout`` seconds in all (retries
    included); UNAVAILABLE retried at most ``retries`` times after ``initial * 2**attempt``
    seconds (at most ``cap``, times a random factor in [0.5, 1]) and never past the deadline;
    nothing else retried; every failure rebuilt as the vecdb exception the server raised."""

    timeout: float = 30.0
    retries: int = 3
    initial: float = 0.1
    cap: float = 2.0

    def start(self, method: str) -> "Attempts":
        """The attempts of one call of ``method``, its deadline starting now."""
        return Attempts(self, method)

    def pause(self, attempt: int, remaining: float) -> float | None:
        """Seconds to sleep before retry ``attempt`` (0-based), or None to give up."""
        if attempt >= self.retries:
            return None
        delay = min(self.cap, self.initial * (2 ** attempt)) * random.uniform(0.5, 1.0)
        return delay if delay < remaining else None


class Attempts:
    """One call's attempts under a ``TransportPolicy``: the time each attempt may take, and
    what follows a failed one (a pause before the next, or the error to raise). The sync
    and asyncio transports differ only in how they wait (``time.sleep``/``asyncio.sleep``)."""

    __slots__ = ("policy", "method", "deadline", "attempt")

    def __init__(self, policy: TransportPolicy, method: str) -> None:
        self.policy = policy
        self.method = method
        self.deadline = time.monotonic() + policy.timeout
        self.attempt = 0

    def remaining(self) -> float:
        """Seconds the next attempt may take; VecdbTimeoutError once the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise VecdbTimeoutError(f"{self.method}: no answer within {self.policy.timeout:g} s")
        return left

    def failed(self, exc: grpc.RpcError) -> float:
        """The pause before retrying after ``exc``; raises ``exc`` as its vecdb exception when
        it is not retriable, the retries are spent or the pause would pass the deadline."""
        err = error_from_rpc(exc)
        pause = self.policy.pause(self.attempt, self.deadline - time.monotonic()) if err.retriable else None
        if pause is None:
            raise err from None
        logger.debug("%s: %s, retry %d in %.2f s", self.method, type(err).__name__, self.attempt + 1, pause)
        self.attempt += 1
        return pause


# ---- calls: request builders and response parsers ------------------------------------------
class Call(NamedTuple):
    """One RPC to make: its name, its request (a list of messages for the streaming
    UpsertStream) and how to turn the response into the API's return value. A named tuple:
    one is built per call, and a tuple costs a fraction of a frozen dataclass."""

    method: str
    request: Any
    parse: Callable[[Any], Any]
    streaming: bool = False


def _none(_: Any) -> None:
    return None


def _build(fn: Callable[[], Any]) -> Any:
    """Build a request; protobuf's TypeError/ValueError for out-of-range or mistyped values
    become InvalidArgumentError, as the embedded database raises for the same input."""
    try:
        return fn()
    except VecdbError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(str(exc)) from None


def create_collection_call(name: str, dim: int, metric: str, index: str | None, index_params: Mapping[str, Any] | None,
                           id_type: str, multi_tenant: bool = False) -> Call:
    """CreateCollection (``index`` None: the server's default for ``multi_tenant``); parses
    to the new collection's info."""
    req = _build(lambda: pb.CreateCollectionRequest(
        name=name, dim=dim, metric=metric, index=index, id_type=id_type,
        multi_tenant=wire.flag(multi_tenant, what="multi_tenant"),
        index_params_json=wire.params_to_json(index_params, what="index_params")))
    return Call("CreateCollection", req, lambda r: wire.info_from_proto(r.info))


def upsert_calls(info: CollectionInfo, ids: Any, vectors: Any, payloads: Sequence[Payload | None] | None,
                 tenant: str | Sequence[str] | None, chunk_bytes: int) -> Call:
    """Upsert, or UpsertStream in chunks of about ``chunk_bytes`` for large batches."""
    x = _empty_rows(vectors) if np.asarray(vectors).size == 0 else as_matrix(vectors, None)
    pb_ids = wire.ids_to_proto(ids, id_type=info.id_type)
    id_list = wire.ids_from_proto(pb_ids)
    if payloads is not None and not isinstance(payloads, (list, tuple)):
        raise InvalidArgumentError("payloads must be a list with one dict (or None) per id")
    tenants = _build(lambda: wire.tenants_to_list(tenant))
    payloads_json = None if payloads is None else wire.payloads_to_json(payloads, len(id_list))
    size = x.nbytes + len(payloads_json or "") + len(pb_ids.int64) + sum(len(v) for v in pb_ids.str.values)
    if size <= chunk_bytes or len(id_list) != x.shape[0]:
        req = _build(lambda: pb.UpsertRequest(collection=info.name, ids=pb_ids, vectors=wire.matrix_to_proto(x),
                                              payloads_json=payloads_json, tenants=tenants))
        return Call("Upsert", req, _none)
    per_chunk = max(1, int(x.shape[0] * chunk_bytes / size))
    messages = []
    for start in range(0, x.shape[0], per_chunk):
        stop = start + per_chunk
        part = pb.UpsertRequest(
            collection=info.name, ids=wire.ids_to_proto(id_list[start:stop], id_type=info.id_type),
            vectors=wire.matrix_to_proto(x[start:stop]), tenants=tenants,
            payloads_json=None if payloads is None else wire.dumps(list(payloads[start:stop]), what="payloads"))
        messages.append(pb.UpsertStreamRequest(batch=part))
    return Call("UpsertStream", messages, _none, streaming=True)


def _empty_rows(vectors: Any) -> np.ndarray:
    """Vectors holding no values as an (n, 0) matrix that keeps their row count, so the
    server (like the embedded database) can refuse n > 0 rows that carry no values."""
    arr = np.asarray(vectors)
    return np.zeros((arr.shape[0] if arr.ndim else 0, 0), np.float32)


def delete_call(info: CollectionInfo, ids: Any, tenant: str | None) -> Call:
    """Delete; parses to the number deleted."""
    req = _build(lambda: pb.DeleteRequest(collection=info.name, ids=wire.ids_to_proto(ids, id_type=info.id_type),
                                          tenant=tenant))
    return Call("Delete", req, lambda r: int(r.deleted))


def get_call(info: CollectionInfo, ids: Any, tenant: str | None = None) -> Call:
    """Get; parses to a GetResult."""
    req = _build(lambda: pb.GetRequest(collection=info.name, ids=wire.ids_to_proto(ids, id_type=info.id_type),
                                       tenant=tenant))
    return Call("Get", req, lambda r: wire.get_result_from_proto(r.ids, r.vectors, r.payloads_json))


def _queries(queries: Any, dim: int) -> np.ndarray:
    """Queries to send, as a float32 matrix. The server validates them once (finite values, the
    collection's current dim), as the embedded path does, so the common call (a C-contiguous float32
    array of rows of ``dim``) is sent as it is, with no second check here; anything else goes
    through ``as_matrix`` with no dim, so the server decides on a mismatch, as for the same input."""
    if (type(queries) is np.ndarray and queries.dtype == np.float32 and queries.flags.c_contiguous
            and 0 < queries.ndim <= 2 and queries.shape[-1] == dim):
        return queries if queries.ndim == 2 else queries.reshape(1, dim)
    return as_matrix(queries, None, what="queries")


def search_call(info: CollectionInfo, queries: Any, k: int, filter: Filter | None, tenant: str | Sequence[str] | None,
                params: Mapping[str, Any] | None, with_payloads: bool) -> Call:
    """Search (``tenant``: one name, or several for the union of their points); parses to a
    QueryResult. The request is filled in place, optional fields only when given."""
    q = _queries(queries, info.dim)
    k = as_k(k)
    return Call("Search", _build(lambda: _search_request(info.name, q, k, filter, tenant, params, with_payloads)),
                wire.search_response_to_result)


def _search_request(collection: str, q: np.ndarray, k: int, filter: Filter | None,
                    tenant: str | Sequence[str] | None, params: Mapping[str, Any] | None,
                    with_payloads: bool) -> pb.SearchRequest:
    req = pb.SearchRequest(collection=collection, k=k)
    wire.fill_matrix(req.queries, q)
    if filter is not None:
        req.filter_json = wire.dumps(filter, what="filter")
    if tenant is not None:
        names = tenant if isinstance(tenant, str) else check_search_tenant(tenant)
        if isinstance(names, tuple):
            req.tenants.extend(names)
        else:
            req.tenant = names
    if params is not None:
        req.params_json = wire.params_to_json(params, what="params")
    if with_payloads:
        req.with_payloads = bool(with_payloads)
    return req


def ids_call(method: str, info: CollectionInfo, tenant: str, ids: Any, write: bool = False) -> Call:
    """Grant (``write``: with write access) or Revoke."""
    pb_ids = wire.ids_to_proto(ids, id_type=info.id_type)
    if method == "Grant":
        req = _build(lambda: pb.GrantRequest(collection=info.name, tenant=tenant, ids=pb_ids, write=wire.flag(write, what="write")))
    else:
        req = _build(lambda: pb.RevokeRequest(collection=info.name, tenant=tenant, ids=pb_ids))
    return Call(method, req, _none)


def tenant_call(method: str, info: CollectionInfo, tenant: str) -> Call:
    """CreateTenant or DropTenant."""
    request_cls = pb.CreateTenantRequest if method == "CreateTenant" else pb.DropTenantRequest
    return Call(method, _build(lambda: request_cls(collection=info.name, tenant=tenant)), _none)


def train_call(info: CollectionInfo) -> Call:
    """Train: (re)build the collection's index, training it first; parses to None."""
    return Call("Train", _build(lambda: pb.TrainRequest(collection=info.name)), _none)


def wait_indexed_call(info: CollectionInfo, timeout: float | None) -> Call:
    """WaitIndexed: wait (at most ``timeout`` s, and within the call's deadline) until nothing
    of the collection waits for its background indexer; parses to that bool."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise InvalidArgumentError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r:.80}")
    req = _build(lambda: pb.WaitIndexedRequest(collection=info.name, timeout_seconds=timeout))
    return Call("WaitIndexed", req, lambda r: bool(r.indexed))


def simple_call(method: str, request: Any, parse: Callable[[Any], Any] = _none) -> Call:
    """Any other call whose request is built by the caller."""
    return Call(method, request, parse)


def stub_methods(channel: Any) -> dict[str, Any]:
    """Every RPC's multi-callable by method name, from the generated stubs."""
    methods: dict[str, Any] = {}
    for name, service in pb.DESCRIPTOR.services_by_name.items():
        stub = getattr(pb_grpc, f"{name}Stub")(channel)
        for method in service.methods:
            methods[method.name] = getattr(stub, method.name)
    return methods


def channel_options(max_message_mb: int) -> list[tuple[str, Any]]:
    """Channel options shared by both clients: message limits; gRPC's own retries off
    (ours are explicit and deadline-bound)."""
    return [("grpc.max_send_message_length", max_message_mb * MIB),
            ("grpc.max_receive_message_length", max_message_mb * MIB),
            ("grpc.enable_retries", 0),
            # reconnect soon after a server (re)start, so our retries can reach it
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000)]


def credentials(tls: bool, root_certificates: bytes | None) -> grpc.ChannelCredentials | None:
    """TLS credentials when asked for (system roots unless ``root_certificates`` is given)."""
    if not tls and root_certificates is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


# ---- the sync client ------------------------------------------------------------------------
class Transport:
    """What both clients' transports hold: the channel, its RPCs, the API key metadata and
    the ``TransportPolicy`` every call follows."""

    def __init__(self, channel: Any, api_key: str | None, policy: TransportPolicy) -> None:
        self.channel = channel
        self.policy = policy
        self._methods = stub_methods(channel)
        self._metadata = ((API_KEY_HEADER, api_key),) if api_key else ()


class SyncTransport(Transport):
    """Runs ``Call``s on a blocking channel, sleeping between attempts."""

    def run(self, call: Call) -> Any:
        fn = self._methods[call.method]
        attempts = self.policy.start(call.method)
        while True:
            request = iter(call.request) if call.streaming else call.request
            try:
                response = fn(request, timeout=attempts.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                time.sleep(attempts.failed(exc))
                continue
            return call.parse(response)


class CollectionHandle:
    """What the sync and asyncio remote collections share: a transport and the collection info."""

    def __init__(self, transport: Any, info: CollectionInfo, chunk_bytes: int) -> None:
        self._t = transport
        self._info = info
        self._chunk_bytes = chunk_bytes

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def info(self) -> CollectionInfo:
        return self._info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._info.name!r}, dim={self._info.dim}, index={self._info.index!r})"


class RemoteCollection(CollectionHandle):
    """A collection on a vecdb server; the same methods as the embedded ``Collection``."""

    def upsert(self, ids: Sequence[int | str] | np.ndarray, vectors: Any,
               payloads: Sequence[Payload | None] | None = None, tenant: str | Sequence[str] | None = None) -> None:
        """Insert or replace points; acknowledged once durable on the server."""
        self._t.run(upsert_calls(self._info, ids, vectors, payloads, tenant, self._chunk_bytes))

    def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        """Delete points (with ``tenant``: only that tenant's); returns how many."""
        return int(self._t.run(delete_call(self._info, ids, tenant)))

    def count(self, tenant: str | None = None) -> int:
        """Number of points (of ``tenant`` when given)."""
        req = _build(lambda: pb.CountRequest(collection=self._info.name, tenant=tenant))
        return int(self._t.run(simple_call("Count", req, lambda r: int(r.count))))

    def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        """Fetch points in the order asked; IdNotFoundError if any is missing (or not ``tenant``'s)."""
        return self._t.run(get_call(self._info, ids, tenant))  # type: ignore[no-any-return]

    def search(self, queries: Any, k: int = 10, filter: Filter | None = None,
               tenant: str | Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
               with_payloads: bool = False) -> QueryResult:
        """The ``k`` nearest points to each query row (see ``CollectionAPI.search``)."""
        return self._t.run(search_call(self._info, queries, k, filter, tenant, params, with_payloads))  # type: ignore[no-any-return]

    def create_tenant(self, tenant: str) -> None:
        self._t.run(tenant_call("CreateTenant", self._info, tenant))

    def drop_tenant(self, tenant: str) -> None:
        self._t.run(tenant_call("DropTenant", self._info, tenant))

    def list_tenants(self) -> list[str]:
        req = pb.ListTenantsRequest(collection=self._info.name)
        return self._t.run(simple_call("ListTenants", req, lambda r: list(r.tenants)))  # type: ignore[no-any-return]

    def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray, write: bool = False) -> None:
        """Give ``tenant`` read access (``write=True``: also replace) to existing points."""
        self._t.run(ids_call("Grant", self._info, tenant, ids, write))

    def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Take away all of ``tenant``'s access to points, ownership included (the points stay)."""
        self._t.run(ids_call("Revoke", self._info, tenant, ids))

    def stats(self) -> CollectionStats:
        req = pb.StatsRequest(collection=self._info.name)
        return self._t.run(simple_call("Stats", req, lambda r: wire.stats_from_proto(r.stats)))  # type: ignore[no-any-return]

    def train(self) -> None:
        """Train (or retrain) the index on the stored points and rebuild it; searches are
        served meanwhile (admin keys only). The wait is bounded by the connection's
        ``timeout``: on a VecdbTimeoutError the server abandons the build at its next step and
        the index in place keeps serving."""
        self._t.run(train_call(self._info))

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait until every committed point is in the index, at most ``timeout`` seconds and
        within the connection's ``timeout`` (admin keys only); True when nothing is staged."""
        return bool(self._t.run(wait_indexed_call(self._info, timeout)))


class RemoteDatabase:
    """A vecdb server seen through ``vecdb.api.DatabaseAPI``; build with ``vecdb.connect``."""

    def __init__(self, address: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 3,
                 tls: bool = False, root_certificates: bytes | None = None, max_message_mb: int = 64,
                 stream_chunk_mb: float = 8.0) -> None:
        creds = credentials(tls, root_certificates)
        options = channel_options(max_message_mb)
        channel = grpc.secure_channel(address, creds, options) if creds else grpc.insecure_channel(address, options)
        self.address = address
        self._t = SyncTransport(channel, api_key, TransportPolicy(timeout=timeout, retries=retries))
        self._chunk_bytes = int(stream_chunk_mb * MIB)

    def __repr__(self) -> str:
        return f"RemoteDatabase({self.address!r})"

    def _collection(self, info: CollectionInfo) -> RemoteCollection:
        return RemoteCollection(self._t, info, self._chunk_bytes)

    def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str | None = None,
                          index_params: Mapping[str, Any] | None = None, id_type: str = "int",
                          multi_tenant: bool = False) -> RemoteCollection:
        """Create a collection (admin keys only); AlreadyExistsError if the name is taken.
        ``index`` None: "hnsw", or "curator" when ``multi_tenant``."""
        return self._collection(self._t.run(create_collection_call(name, dim, metric, index, index_params, id_type,
                                                                   multi_tenant)))

    def get_collection(self, name: str) -> RemoteCollection:
        """A handle on an existing collection; CollectionNotFoundError if there is none."""
        req = _build(lambda: pb.GetCollectionRequest(name=name))
        return self._collection(self._t.run(simple_call("GetCollection", req, lambda r: wire.info_from_proto(r.info))))

    def list_collections(self) -> list[CollectionInfo]:
        parse = lambda r: [wire.info_from_proto(c) for c in r.collections]  # noqa: E731
        return self._t.run(simple_call("ListCollections", pb.ListCollectionsRequest(), parse))  # type: ignore[no-any-return]

    def drop_collection(self, name: str) -> None:
        """Drop a collection and its points (admin keys only)."""
        self._t.run(simple_call("DropCollection", _build(lambda: pb.DropCollectionRequest(name=name))))

    def snapshot(self, path: str) -> None:
        """Write a consistent copy of the database under the server's snapshot directory
        (``path`` is relative to it, or absolute inside it). Admin keys only."""
        self._t.run(simple_call("Snapshot", _build(lambda: pb.SnapshotRequest(path=str(path)))))

    def close(self) -> None:
        """Close the channel; in-flight calls are cancelled."""
        self._t.channel.close()

    def __enter__(self) -> "RemoteDatabase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: str = "localhost:50051", api_key: str | None = None, *, timeout: float = 30.0, retries: int = 3,
            tls: bool = False, root_certificates: bytes | None = None, max_message_mb: int = 64) -> RemoteDatabase:
    """Connect to a vecdb server; the result has exactly the embedded database's API.

    ``timeout`` bounds every call (retries included); ``retries`` is how many times an
    UNAVAILABLE answer is retried; ``tls``/``root_certificates`` enable TLS (a custom CA);
    ``max_message_mb`` should match the server's ``--max-message-mb``. The channel
    connects lazily: an unreachable server shows as UnavailableError on the first call.
    """
    return RemoteDatabase(address, api_key, timeout=timeout, retries=retries, tls=tls,
                          root_certificates=root_certificates, max_message_mb=max_message_mb)
