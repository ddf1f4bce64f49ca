"""The asyncio variant of the client SDK: ``await`` the same methods as ``vecdb.connect``.

    from vecdb.aio_client import connect
    async with connect("localhost:50051", api_key=key) as db:
        docs = await db.get_collection("docs")
        hits = await docs.search(queries, k=10)

Requests, responses, errors, deadlines and the UNAVAILABLE retry policy are the sync
client's (``vecdb.client``: ``TransportPolicy``); only the waiting differs (``grpc.aio``,
``asyncio.sleep``).
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, Sequence

import grpc
import numpy as np

from vecdb import wire
from vecdb.api import CollectionInfo, CollectionStats, Filter, GetResult, Payload, QueryResult
from vecdb.client import (
    MIB,
    Call,
    CollectionHandle,
    Transport,
    TransportPolicy,
    _build,
    channel_options,
    create_collection_call,
    credentials,
    delete_call,
    get_call,
    ids_call,
    search_call,
    simple_call,
    tenant_call,
    train_call,
    upsert_calls,
    wait_indexed_call,
)
from vecdb.v1 import vecdb_pb2 as pb


class AsyncTransport(Transport):
    """Runs ``Call``s on a ``grpc.aio`` channel: the sync transport's loop, awaited."""

    async def run(self, call: Call) -> Any:
        fn = self._methods[call.method]
        attempts = self.policy.start(call.method)
        while True:
            request = iter(call.request) if call.streaming else call.request
            try:
                response = await fn(request, timeout=attempts.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                await asyncio.sleep(attempts.failed(exc))
                continue
            return call.parse(response)


class AsyncCollection(CollectionHandle):
    """A collection on a vecdb server; the embedded ``Collection`` methods, as coroutines."""

    async def upsert(self, ids: Sequence[int | str] | np.ndarray, vectors: Any,
                     payloads: Sequence[Payload | None] | None = None,
                     tenant: str | Sequence[str] | None = None) -> None:
        """Insert or replace points; acknowledged once durable on the server."""
        await self._t.run(upsert_calls(self._info, ids, vectors, payloads, tenant, self._chunk_bytes))

    async def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        return int(await self._t.run(delete_call(self._info, ids, tenant)))

    async def count(self, tenant: str | None = None) -> int:
        req = _build(lambda: pb.CountRequest(collection=self._info.name, tenant=tenant))
        return int(await self._t.run(simple_call("Count", req, lambda r: int(r.count))))

    async def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        return await self._t.run(get_call(self._info, ids, tenant))  # type: ignore[no-any-return]

    async def search(self, queries: Any, k: int = 10, filter: Filter | None = None,
                     tenant: str | Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
                     with_payloads: bool = False) -> QueryResult:
        return await self._t.run(search_call(self._info, queries, k, filter, tenant, params, with_payloads))  # type: ignore[no-any-return]

    async def create_tenant(self, tenant: str) -> None:
        await self._t.run(tenant_call("CreateTenant", self._info, tenant))

    async def drop_tenant(self, tenant: str) -> None:
        await self._t.run(tenant_call("DropTenant", self._info, tenant))

    async def list_tenants(self) -> list[str]:
        req = pb.ListTenantsRequest(collection=self._info.name)
        return await self._t.run(simple_call("ListTenants", req, lambda r: list(r.tenants)))  # type: ignore[no-any-return]

    async def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray, write: bool = False) -> None:
        await self._t.run(ids_call("Grant", self._info, tenant, ids, write))

    async def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        await self._t.run(ids_call("Revoke", self._info, tenant, ids))

    async def stats(self) -> CollectionStats:
        req = pb.StatsRequest(collection=self._info.name)
        return await self._t.run(simple_call("Stats", req, lambda r: wire.stats_from_proto(r.stats)))  # type: ignore[no-any-return]

    async def train(self) -> None:
        """Train (or retrain) the index on the stored points and rebuild it (admin keys only);
        a timeout or cancelled task makes the server abandon the build at its next step."""
        await self._t.run(train_call(self._info))

    async def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait until every committed point is in the index, at most ``timeout`` seconds and
        within the connection's ``timeout`` (admin keys only); True when nothing is staged."""
        return bool(await self._t.run(wait_indexed_call(self._info, timeout)))


class AsyncDatabase:
    """A vecdb server seen through the ``DatabaseAPI`` methods, as coroutines."""

    def __init__(self, address: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 3,
                 tls: bool = False, root_certificates: bytes | None = None, max_message_mb: int = 64,
                 stream_chunk_mb: float = 8.0) -> None:
        creds = credentials(tls, root_certificates)
        options = channel_options(max_message_mb)
        channel = grpc.aio.secure_channel(address, creds, options) if creds else grpc.aio.insecure_channel(address, options)
        self.address = address
        self._t = AsyncTransport(channel, api_key, TransportPolicy(timeout=timeout, retries=retries))
        self._chunk_bytes = int(stream_chunk_mb * MIB)

    def __repr__(self) -> str:
        return f"AsyncDatabase({self.address!r})"

    def _collection(self, info: CollectionInfo) -> AsyncCollection:
        return AsyncCollection(self._t, info, self._chunk_bytes)

    async def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str | None = None,
                                index_params: Mapping[str, Any] | None = None, id_type: str = "int",
                                multi_tenant: bool = False) -> AsyncCollection:
        return self._collection(await self._t.run(create_collection_call(name, dim, metric, index, index_params, id_type,
                                                                         multi_tenant)))

    async def get_collection(self, name: str) -> AsyncCollection:
        req = _build(lambda: pb.GetCollectionRequest(name=name))
        return self._collection(await self._t.run(simple_call("GetCollection", req, lambda r: wire.info_from_proto(r.info))))

    async def list_collections(self) -> list[CollectionInfo]:
        parse = lambda r: [wire.info_from_proto(c) for c in r.collections]  # noqa: E731
        return await self._t.run(simple_call("ListCollections", pb.ListCollectionsRequest(), parse))  # type: ignore[no-any-return]

    async def drop_collection(self, name: str) -> None:
        await self._t.run(simple_call("DropCollection", _build(lambda: pb.DropCollectionRequest(name=name))))

    async def snapshot(self, path: str) -> None:
        await self._t.run(simple_call("Snapshot", _build(lambda: pb.SnapshotRequest(path=str(path)))))

    async def close(self) -> None:
        """Close the channel."""
        await self._t.channel.close()

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def connect(address: str = "localhost:50051", api_key: str | None = None, *, timeout: float = 30.0, retries: int = 3,
            tls: bool = False, root_certificates: bytes | None = None, max_message_mb: int = 64) -> AsyncDatabase:
    """Connect to a vecdb server from asyncio code (call inside a running event loop)."""
    return AsyncDatabase(address, api_key, timeout=timeout, retries=retries, tls=tls,
                         root_certificates=root_certificates, max_message_mb=max_message_mb)
