"""The vecdb.v1 servicer: each RPC decodes its request with ``vecdb.wire``, applies the
caller's key scope, calls one ``DatabaseAPI`` method and encodes the answer.

Every RPC passes through ``VecdbServicer._run``, which in one place:
  refuses new work while draining (UNAVAILABLE), authenticates the API key, rejects
  requests whose bytes did not parse or that carry fields this server does not know
  (INVALID_ARGUMENT: a field it would silently ignore could be a filter or a tenant),
  checks the deadline, maps every exception to a status (``vecdb.server.errors``),
  records metrics and logs failures.

Tenant keys (see ``vecdb.server.auth``) are scoped here, whatever the request says: every
point call of a tenant key runs as the key's tenant (a named foreign tenant is
PERMISSION_DENIED), ``list_tenants`` shows only the key's tenants, and collection/tenant/
access management, stats and snapshots need an admin key. What a tenant may then do with
points (owners, read and write grants; gets that answer a hidden id exactly as a missing
one; upserts that cannot take over another tenant's id) is enforced by the collection,
inside its write lock (semantics in ``vecdb.api``): the servicer only passes the tenant.
"""
from __future__ import annotations

import errno
import functools
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
import numpy as np
from google.protobuf import message_factory, unknown_fields
from google.protobuf.message import Message

from vecdb import calls, filters, wire
from vecdb.api import CollectionAPI, DatabaseAPI, QueryResult, SearchRequest, check_tenant
from vecdb.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    VecdbError,
    VecdbTimeoutError,
)
from vecdb.index.warmup import Warmer
from vecdb.server.auth import OPEN_ACCESS, Principal
from vecdb.server.config import ServerConfig
from vecdb.server.errors import abort, as_vecdb_error
from vecdb.server.metrics import ServerMetrics
from vecdb.validation import as_fs_path
from vecdb.v1 import vecdb_pb2 as pb

logger = logging.getLogger(__name__)

SERVICES = tuple(pb.DESCRIPTOR.services_by_name.values())
SERVICE_NAMES = tuple(s.full_name for s in SERVICES)


class _Malformed:
    """Stands in for a request whose bytes are not a valid message of the RPC's type."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason


class _Unverified:
    """A parsed request whose bytes may hold fields this server does not know: checked field
    by field (``_check_request``) before it is served."""

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        self.message = message


def _parser(cls: type[Message]) -> Callable[[bytes], Message | _Malformed | _Unverified]:
    """A request deserializer that turns undecodable bytes into ``_Malformed`` (answered
    INVALID_ARGUMENT by ``_run``) instead of gRPC's generic INTERNAL.

    It also settles the common case of the unknown-field check in two C calls: with unknown
    fields dropped, the message re-encodes to exactly the bytes received only if there were
    none (a canonical encoding, as every protobuf library writes, is the shortest one of its
    known fields). Anything else (unknown fields, or a valid but non-canonical encoding)
    arrives ``_Unverified``, parsed again with its unknown fields, for the field-by-field check."""
    def parse(data: bytes) -> Message | _Malformed | _Unverified:
        try:
            message = cls.FromString(data)
        except Exception as exc:  # protobuf raises DecodeError, or RuntimeError on bad nesting
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)
        message.DiscardUnknownFields()
        if message.ByteSize() == len(data):
            return message
        return _Unverified(cls.FromString(data))
    return parse


def _check_request(request: Any, path: str = "request") -> Message:
    """The request to serve; InvalidArgumentError if it did not parse or holds unknown fields
    (at any depth). A plain message is one the parser has already found free of them."""
    if isinstance(request, _Malformed):
        raise InvalidArgumentError(f"request bytes are not a valid {request.type_name} message: {request.reason}")
    if isinstance(request, _Unverified):
        _check_fields(request.message, path)
        return request.message
    return request  # type: ignore[no-any-return]


def _check_fields(message: Message, path: str) -> None:
    """InvalidArgumentError if ``message`` holds fields this server does not know (at any depth)."""
    unknown = unknown_fields.UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({f.field_number for f in unknown})
        raise InvalidArgumentError(
            f"{path} has fields this server does not know (field numbers {numbers}); "
            "use a client built for the same vecdb.v1 API as the server"
        )
    for fd, value in message.ListFields():
        if fd.message_type is None:
            continue
        if fd.is_repeated:
            for i, item in enumerate(value):
                _check_fields(item, f"{path}.{fd.name}[{i}]")
        else:
            _check_fields(value, f"{path}.{fd.name}")


def _snake(name: str) -> str:
    """RPC name to servicer method name: ``CreateCollection`` -> ``create_collection``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _optional(message: Message, field: str) -> str | None:
    """The value of an ``optional string`` field, or None when unset."""
    return getattr(message, field) if message.HasField(field) else None


#: work of one search step (see ``_rows_per_step``), in units of one vector component
#: compared; about 10-30 ms of one core, so a step holds a collection's read lock briefly.
STEP_WORK = 20_000_000
#: per-distance overhead in the same units (memory access, heap update), which dominates at small dims.
DISTANCE_OVERHEAD = 32
#: cost of one result cell (top-k selection, exact rescoring, id translation; ~1 us measured
#: for flat k=1000), in the same units.
RESULT_COST = 600
#: WaitIndexed stops waiting this long before the call's deadline, to answer in time.
WAIT_MARGIN_SECONDS = 0.25


def _search_tenant(req: pb.SearchRequest, who: Principal) -> str | list[str] | None:
    """The tenant(s) a search runs under: ``tenant`` or the list ``tenants`` (not both), each
    one the key may access; a tenant key naming none searches as its single tenant."""
    names = req.tenants
    if not names:
        return who.scope_tenant(req.tenant if req.HasField("tenant") else None)
    if req.HasField("tenant"):
        raise InvalidArgumentError("a search names either tenant or tenants, not both")
    return [who.scope_tenant(check_tenant(name)) for name in names]


def _rows_per_step(coll: CollectionAPI, search: SearchRequest) -> int:
    """How many query rows one search step may take so that it does about ``STEP_WORK``:
    a query costs about ``candidates x (dim + DISTANCE_OVERHEAD) + k x RESULT_COST``, where an
    unfiltered HNSW search compares at most ef x 2M candidates and any other search up to
    every point. A single query is never split, so one step is at least one query."""
    info = coll.info
    k = search.k
    if info.index == "hnsw" and search.filter is None and search.tenant is None:
        # bounded by the beam: no need to count the points
        ef = search.params.get("ef", 64)
        ef = ef if isinstance(ef, int) and not isinstance(ef, bool) and ef > 0 else 64
        m = info.index_params.get("M", 16)
        m = m if isinstance(m, int) and m > 0 else 16
        candidates = max(ef, k) * 2 * m
    else:
        candidates = max(coll.count(), 1)
    per_query = candidates * (info.dim + DISTANCE_OVERHEAD) + max(k, 0) * RESULT_COST
    return max(1, STEP_WORK // per_query)


class VecdbServicer:
    """Serves every vecdb.v1 RPC from one ``DatabaseAPI``; register with ``add_to_server``.

    Each instance has its own draining flag: two servers never share one servicer.
    """

    def __init__(self, db: DatabaseAPI, config: ServerConfig, metrics: ServerMetrics | None = None,
                 warmer: Warmer | None = None) -> None:
        self._db = db
        self._config = config
        self._metrics = metrics
        self._warmer = warmer            # told each new collection's index kind
        self._draining = threading.Event()
        self._payload_flag = f"--max-response-payload-mb={config.max_response_payload_mb}"

    def drain(self) -> None:
        """Answer new RPCs with UNAVAILABLE (retriable) while in-flight ones finish."""
        self._draining.set()

    # ---- the one wrapper every RPC goes through -----------------------------------------
    def _run(self, method: str, handler: Callable[[Any, Principal], Message], streaming: bool, request: Any,
             context: grpc.ServicerContext) -> Message:
        start = time.perf_counter()
        code = "OK"
        who: Principal | None = None
        # read before the call counts as in flight: a call the gauge shows is never then
        # turned away by a drain that began meanwhile (it is served to its end)
        draining = self._draining.is_set()
        if self._metrics is not None:
            self._metrics.started()
        try:
            if draining:
                raise UnavailableError("the server is shutting down; retry in a moment or against another replica")
            keys = self._config.keys
            who = OPEN_ACCESS if keys is None else keys.authenticate(context.invocation_metadata())
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise VecdbTimeoutError(f"{method}: the deadline passed before the server started the call")
            if not streaming:  # a stream's messages are checked one by one as they are read
                request = _check_request(request)
            call = calls.CallContext(
                what=method, deadline=None if remaining is None else time.monotonic() + remaining,
                cancelled=lambda: not context.is_active(), payload_bytes=self._config.max_response_payload_bytes,
                payload_flag=self._payload_flag)
            with calls.call_scope(call):
                return handler(request, who)
        except Exception as exc:
            err = as_vecdb_error(exc, method)
            code = err.grpc_code
            logger.info("%s failed: %s %s", method, code, err, extra={
                "event": "rpc_error", "method": method, "code": code, "error": type(err).__name__,
                "principal": who.name if who else None})
            abort(context, err)
        finally:
            elapsed = time.perf_counter() - start
            if self._metrics is not None:
                self._metrics.finished(method, code, elapsed)
            if code == "OK" and logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s ok", method, extra={"event": "rpc", "method": method, "seconds": round(elapsed, 6)})

    # ---- helpers ----------------------------------------------------------------------
    def _collection(self, name: str) -> CollectionAPI:
        return self._db.get_collection(name)

    def _check_search_sizes(self, reqs: Iterable[pb.SearchRequest]) -> None:
        """ResourceExhaustedError, before anything is decoded or allocated, when the searches
        of one request together ask for more than the server's limits (each names its flag)."""
        cfg = self._config
        queries = cells = 0
        for req in reqs:
            k = int(req.k)
            if k > cfg.max_k:
                raise ResourceExhaustedError(f"k={k} is over this server's limit of {cfg.max_k} (--max-k); "
                                             "ask for fewer neighbours")
            rows = int(req.queries.n_rows)
            queries += rows
            cells += rows * max(k, 0)
        if queries > cfg.max_queries:
            raise ResourceExhaustedError(
                f"{queries} queries in one request is over this server's limit of {cfg.max_queries} "
                "(--max-queries); split them into smaller requests")
        if cells > cfg.max_result_cells:
            raise ResourceExhaustedError(
                f"{queries} queries x k ask for {cells} results, over this server's limit of {cfg.max_result_cells} "
                "results per request (--max-result-cells); split the queries or ask for a smaller k")

    def _filter(self, text: str) -> dict[str, Any] | None:
        """The request's filter, refused (RESOURCE_EXHAUSTED, naming the flag) when it is larger
        than the server allows, so its evaluation under the collection's lock stays short."""
        if not text:
            return None
        cfg = self._config
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > cfg.max_filter_bytes:
            raise ResourceExhaustedError(f"the filter is {size} bytes of JSON, over this server's limit of "
                                         f"{cfg.max_filter_bytes} (--max-filter-bytes)")
        spec = wire.loads_object(text, what="filter")
        if spec is None:
            return None
        conditions, values = filters.filter_size(spec, stop_at=max(cfg.max_filter_conditions, cfg.max_filter_values))
        if conditions > cfg.max_filter_conditions:
            raise ResourceExhaustedError(f"the filter has over {cfg.max_filter_conditions} conditions "
                                         "(--max-filter-conditions); simplify it")
        if values > cfg.max_filter_values:
            raise ResourceExhaustedError(f"the filter lists over {cfg.max_filter_values} values "
                                         "(--max-filter-values); split the 'in' list over several requests")
        return spec

    def _search_one(self, req: pb.SearchRequest, who: Principal) -> pb.SearchResponse:
        """One search, validated once (``SearchRequest.build``) and run by the collection's
        trusted ``execute`` in steps of ``_rows_per_step`` query rows: each step takes the
        collection's read lock on its own, so a large request never holds off writers (and
        the searches queued behind them) for longer than one bounded step. Steps may see
        writes that land between them; each query row sees one consistent state."""
        queries = wire.matrix_from_proto(req.queries, what="queries")
        coll = self._collection(req.collection)
        search = SearchRequest.build(coll.info, queries, req.k, self._filter(req.filter_json),
                                     _search_tenant(req, who),
                                     wire.loads_object(req.params_json, what="params"), req.with_payloads)
        rows = len(search.queries)
        calls.check()
        step = 1 if rows <= 1 else _rows_per_step(coll, search)  # a single query is never split
        if rows <= step:  # one step (always so for one query): no slicing, no merge
            result = coll.execute(search)  # type: ignore[attr-defined]  # the served database is embedded
        else:
            parts = []
            for start in range(0, rows, step):
                if start:
                    calls.check()
                part = search._replace(queries=search.queries[start:start + step])
                parts.append(coll.execute(part))  # type: ignore[attr-defined]
            result = QueryResult(
                ids=np.concatenate([p.ids for p in parts]), distances=np.concatenate([p.distances for p in parts]),
                payloads=None if parts[0].payloads is None else [row for p in parts for row in p.payloads or []])
        response = pb.SearchResponse()
        wire.fill_search_response(response, result)
        return response

    def _upsert_one(self, req: pb.UpsertRequest, who: Principal) -> int:
        coll = self._collection(req.collection)
        ids = wire.ids_from_proto(req.ids)
        vectors = wire.matrix_from_proto(req.vectors, what="vectors")
        payloads = wire.payloads_from_json(req.payloads_json) if req.HasField("payloads_json") else None
        tenants = who.scope_tenants(list(req.tenants))
        tenant: str | list[str] | None = tenants[0] if len(tenants) == 1 else (tenants or None)
        coll.upsert(ids, vectors, payloads, tenant=tenant)  # validates, then checks access under its write lock
        return len(ids)

    def _snapshot_target(self, requested: str) -> Path:
        root = self._config.snapshot_root.resolve()
        if not requested:
            raise InvalidArgumentError(f"snapshot path is empty; name a directory under {root}")
        path = Path(as_fs_path(requested, what="snapshot path"))
        target = (path if path.is_absolute() else root / path).resolve()
        if root not in target.parents:
            raise InvalidArgumentError(
                f"snapshot path {requested!r} is outside the server's snapshot directory {root}; "
                "pass a name relative to it"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            cls = InvalidArgumentError if exc.errno == errno.ENAMETOOLONG else FailedPreconditionError
            raise cls(f"cannot create the snapshot directory for {requested!r:.100}: {exc.strerror}") from None
        return target

    # ---- collections ------------------------------------------------------------------
    def create_collection(self, req: pb.CreateCollectionRequest, who: Principal) -> pb.CreateCollectionResponse:
        who.require_admin("creating a collection")
        options: dict[str, Any] = {}
        for name in ("metric", "index", "id_type"):
            if getattr(req, name):
                options[name] = getattr(req, name)
        params = wire.loads_object(req.index_params_json, what="index_params")
        if params is not None:
            options["index_params"] = params
        if req.multi_tenant:
            options["multi_tenant"] = True
        coll = self._db.create_collection(req.name, int(req.dim), **options)
        if self._warmer is not None:
            self._warmer.want([coll.info.index])
        return pb.CreateCollectionResponse(info=wire.info_to_proto(coll.info))

    def get_collection(self, req: pb.GetCollectionRequest, who: Principal) -> pb.GetCollectionResponse:
        return pb.GetCollectionResponse(info=wire.info_to_proto(self._collection(req.name).info))

    def list_collections(self, req: pb.ListCollectionsRequest, who: Principal) -> pb.ListCollectionsResponse:
        return pb.ListCollectionsResponse(collections=[wire.info_to_proto(i) for i in self._db.list_collections()])

    def drop_collection(self, req: pb.DropCollectionRequest, who: Principal) -> pb.DropCollectionResponse:
        who.require_admin("dropping a collection")
        self._db.drop_collection(req.name)
        return pb.DropCollectionResponse()

    def train(self, req: pb.TrainRequest, who: Principal) -> pb.TrainResponse:
        who.require_admin("training a collection's index")
        self._collection(req.collection).train()
        return pb.TrainResponse()

    def wait_indexed(self, req: pb.WaitIndexedRequest, who: Principal) -> pb.WaitIndexedResponse:
        """Wait for the collection's background indexer, at most the asked timeout and never
        past the call's deadline (less a margin to answer in): False when time ran out."""
        who.require_admin("waiting for a collection's index")
        timeout = req.timeout_seconds if req.HasField("timeout_seconds") else None
        call = calls.current()
        if call is not None and call.deadline is not None:
            left = max(0.0, call.deadline - time.monotonic() - WAIT_MARGIN_SECONDS)
            if timeout is None or (timeout >= 0 and timeout > left):   # a bad timeout stays, to be refused
                timeout = left
        return pb.WaitIndexedResponse(indexed=self._collection(req.collection).wait_indexed(timeout))

    # ---- points -----------------------------------------------------------------------
    def upsert(self, req: pb.UpsertRequest, who: Principal) -> pb.UpsertResponse:
        return pb.UpsertResponse(upserted=self._upsert_one(req, who))

    def upsert_stream(self, requests: Iterable[Any], who: Principal) -> pb.UpsertStreamResponse:
        total = batches = 0
        collection: str | None = None
        for item in requests:
            try:
                item = _check_request(item, f"stream message {batches}")
                if collection is None:
                    collection = item.batch.collection
                elif item.batch.collection != collection:
                    raise InvalidArgumentError(
                        f"every batch of one stream must name the same collection ({collection!r}), "
                        f"got {item.batch.collection!r}"
                    )
                total += self._upsert_one(item.batch, who)
                batches += 1
            except VecdbError as err:
                raise type(err)(
                    f"batch {batches} failed: {err}; the {batches} batches before it ({total} points) were stored"
                ) from None
        return pb.UpsertStreamResponse(upserted=total, batches=batches)

    def delete(self, req: pb.DeleteRequest, who: Principal) -> pb.DeleteResponse:
        coll = self._collection(req.collection)
        deleted = coll.delete(wire.ids_from_proto(req.ids), tenant=who.scope_tenant(_optional(req, "tenant")))
        return pb.DeleteResponse(deleted=int(deleted))

    def get(self, req: pb.GetRequest, who: Principal) -> pb.GetResponse:
        coll = self._collection(req.collection)
        ids = wire.ids_from_proto(req.ids)
        vector_bytes = len(ids) * coll.info.dim * 4  # ids may repeat: each copy is a row of the answer
        if vector_bytes > self._config.max_message_bytes:
            raise ResourceExhaustedError(
                f"{len(ids)} ids x dim {coll.info.dim} make {vector_bytes} bytes of vectors, over this server's "
                f"message limit of {self._config.max_message_bytes} (--max-message-mb); ask for fewer ids")
        tenant = who.scope_tenant(_optional(req, "tenant"))
        result = coll.get(ids, tenant=tenant)
        ids_pb, vectors, payloads = wire.get_result_to_proto(result)
        return pb.GetResponse(ids=ids_pb, vectors=vectors, payloads_json=payloads)

    def count(self, req: pb.CountRequest, who: Principal) -> pb.CountResponse:
        coll = self._collection(req.collection)
        return pb.CountResponse(count=int(coll.count(tenant=who.scope_tenant(_optional(req, "tenant")))))

    # ---- search -----------------------------------------------------------------------
    def search(self, req: pb.SearchRequest, who: Principal) -> pb.SearchResponse:
        self._check_search_sizes([req])
        return self._search_one(req, who)

    def search_batch(self, req: pb.SearchBatchRequest, who: Principal) -> pb.SearchBatchResponse:
        self._check_search_sizes(req.searches)  # the whole batch, before the first search runs
        results = []
        for i, one in enumerate(req.searches):
            try:
                results.append(self._search_one(one, who))
            except VecdbError as err:
                raise type(err)(f"searches[{i}]: {err}") from None
        return pb.SearchBatchResponse(results=results)

    # ---- tenants and access -------------------------------------------------------------
    def create_tenant(self, req: pb.CreateTenantRequest, who: Principal) -> pb.CreateTenantResponse:
        who.require_admin("creating a tenant")
        self._collection(req.collection).create_tenant(req.tenant)
        return pb.CreateTenantResponse()

    def drop_tenant(self, req: pb.DropTenantRequest, who: Principal) -> pb.DropTenantResponse:
        who.require_admin("dropping a tenant")
        self._collection(req.collection).drop_tenant(req.tenant)
        return pb.DropTenantResponse()

    def list_tenants(self, req: pb.ListTenantsRequest, who: Principal) -> pb.ListTenantsResponse:
        return pb.ListTenantsResponse(tenants=who.visible_tenants(self._collection(req.collection).list_tenants()))

    def grant(self, req: pb.GrantRequest, who: Principal) -> pb.GrantResponse:
        who.require_admin("granting a tenant access to points")
        self._collection(req.collection).grant(req.tenant, wire.ids_from_proto(req.ids), write=req.write)
        return pb.GrantResponse()

    def revoke(self, req: pb.RevokeRequest, who: Principal) -> pb.RevokeResponse:
        who.require_admin("revoking a tenant's access to points")
        self._collection(req.collection).revoke(req.tenant, wire.ids_from_proto(req.ids))
        return pb.RevokeResponse()

    # ---- admin ------------------------------------------------------------------------
    def stats(self, req: pb.StatsRequest, who: Principal) -> pb.StatsResponse:
        who.require_admin("reading collection stats")
        return pb.StatsResponse(stats=wire.stats_to_proto(self._collection(req.collection).stats()))

    def snapshot(self, req: pb.SnapshotRequest, who: Principal) -> pb.SnapshotResponse:
        who.require_admin("taking a snapshot")
        target = self._snapshot_target(req.path)
        self._db.snapshot(str(target))
        logger.info("snapshot written", extra={"event": "snapshot", "path": str(target), "principal": who.name})
        return pb.SnapshotResponse(path=str(target))


def add_to_server(servicer: VecdbServicer, server: grpc.Server) -> None:
    """Register every vecdb.v1 RPC, with request parsing that reports malformed bytes as
    INVALID_ARGUMENT, built from the proto descriptors so no RPC can be left out. They are
    registered methods (as the generated stubs call them): gRPC's core matches an incoming
    call to its handler, instead of Python asking each service's generic handler in turn."""
    for service in SERVICES:
        handlers = {}
        for method in service.methods:
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            impl = getattr(servicer, _snake(method.name))
            behaviour = functools.partial(servicer._run, method.name, impl, method.client_streaming)
            make = grpc.stream_unary_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
            handlers[method.name] = make(behaviour, request_deserializer=_parser(request_cls),
                                         response_serializer=response_cls.SerializeToString)
        server.add_registered_method_handlers(service.full_name, handlers)
