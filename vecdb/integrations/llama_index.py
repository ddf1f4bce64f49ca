"""A LlamaIndex vector store over a vecdb collection (``pip install vecdb[llamaindex]``).

    import vecdb
    from llama_index.core import StorageContext, VectorStoreIndex
    from vecdb.integrations.llama_index import VecdbVectorStore

    store = VecdbVectorStore(vecdb.open("./data"), collection_name="docs")
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=embed_model)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)   # later, or elsewhere

Storage: one point per node in a collection with ``id_type="str"``: the node id is the vecdb
id; the payload is LlamaIndex's own node record (``node_to_metadata_dict``: the node's
metadata fields at the top level, the whole node as JSON in ``_node_content`` with its text,
and ``ref_doc_id`` / ``doc_id`` / ``document_id``), plus ``_node_id``. So nodes round-trip
whole (text, metadata, relationships), and metadata filters act on the metadata fields.
The collection is created on the first ``add`` with the embeddings' dimension.

Queries (``VectorStoreQuery``): ``similarity_top_k``, ``filters`` (``MetadataFilters``:
``== != > >= < <= in nin any all contains``, nested, with ``and`` / ``or`` / ``not``),
``node_ids`` and ``doc_ids`` (restrict to those nodes / source documents; empty or None: no
restriction, as LlamaIndex's retriever means it), modes ``default``
and ``mmr`` (``mmr_threshold`` = LlamaIndex's lambda, default 0.5). ``text_match`` and
``is_empty`` raise InvalidArgumentError (vecdb's filter grammar cannot express them).
Similarities are higher-is-better, from vecdb's distance ``d`` by the collection's metric:
cosine ``1 - d``, ip ``-d``, l2 ``1 / (1 + d)`` (``d`` squared Euclidean).

``delete(ref_doc_id)`` removes every node of that document; ``delete_nodes`` / ``get_nodes``
take node ids and/or filters; ``clear()`` drops the collection. ``tenant=`` makes every call
act as that tenant (``vecdb.api``). The ``a*`` methods are native coroutines when an asyncio
client is given (``async_database=``, or ``VecdbVectorStore.connect``), else run in a thread.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Mapping, Optional, Sequence

import numpy as np

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
    from llama_index.core.schema import BaseNode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as exc:   # the optional extra is missing
    raise ImportError(f"vecdb.integrations.llama_index needs llama-index-core: pip install 'vecdb[llamaindex]' "
                      f"({exc})") from exc

from vecdb.errors import CollectionNotFoundError, InvalidArgumentError
from vecdb.filters import check_payload
from vecdb.integrations._common import (
    LoopClients,
    Target,
    adelete_matching,
    afetch,
    aselect,
    checked_k,
    delete_matching,
    fetch,
    hits,
    knobs,
    select,
    similarity,
    unique_ids,
    vectors_of,
)

__all__ = ["VecdbVectorStore", "translate_filters"]

NODE_ID_KEY = "_node_id"
_RANGE = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte", FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}


# ---- MetadataFilters -> vecdb filter ----------------------------------------------------------


def translate_filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` as a vecdb filter (see the module docs for what maps)."""
    if filters is None or not filters.filters:
        return None
    return _filters(filters, 0)


def _filters(filters: MetadataFilters, depth: int) -> dict[str, Any]:
    if depth > 32:
        raise InvalidArgumentError("metadata filters are nested deeper than 32 levels")
    parts = [_filters(f, depth + 1) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    if not parts:
        return {}
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else {"$or": parts}
    if condition == FilterCondition.NOT:          # none of them matches
        return {"$not": parts[0] if len(parts) == 1 else {"$or": parts}}
    raise InvalidArgumentError(f"filter condition {condition!r} is not supported")


def _one(f: Any) -> dict[str, Any]:
    key, value = f.key, f.value
    op = getattr(f, "operator", FilterOperator.EQ)    # ExactMatchFilter has no operator
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"filter key must be a non-empty string, got {key!r:.80}")
    listy = isinstance(value, (list, tuple))
    if op in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL):
        if not listy or not value:
            raise InvalidArgumentError(f"filter on {key!r}: {op.value!r} takes a non-empty list, got {value!r:.80}")
        values = list(value)
        if op == FilterOperator.NIN:
            return {"$not": {key: {"in": values}}}
        if op == FilterOperator.ALL:                  # a list field holding every value
            return {"$and": [{key: v} for v in values]}
        return {key: {"in": values}}                  # in / any: a list field matches by any element
    if value is None or listy:
        raise InvalidArgumentError(f"filter on {key!r}: {op.value!r} takes one value, got {value!r:.80}")
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS):   # contains: a list field holding the value
        return {key: {"eq": value}}
    if op == FilterOperator.NE:
        return {key: {"ne": value}}
    if op in _RANGE:
        return {key: {_RANGE[op]: value}}
    raise InvalidArgumentError(f"filter on {key!r}: operator {op.value!r} is not supported by vecdb "
                               "(supported: == != > >= < <= in nin any all contains)")


# ---- the vector store -------------------------------------------------------------------------


class VecdbVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store backed by a vecdb collection (embedded or remote); see the
    module docs for storage, filters, similarities, deletes, tenants and async."""

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str
    tenant: Optional[str] = None

    _db: Any = PrivateAttr()
    _target: Target = PrivateAttr()
    _coll: Any = PrivateAttr(default=None)
    _params: dict = PrivateAttr(default_factory=dict)
    _aio: LoopClients = PrivateAttr()
    _owns_db: bool = PrivateAttr(default=False)

    def __init__(self, database: Any, collection_name: str = "llama_index", *, metric: str = "cosine",
                 index: str = "hnsw", index_params: Mapping[str, Any] | None = None, tenant: str | None = None,
                 create_tenant: bool = True, search_params: Mapping[str, Any] | None = None,
                 async_database: Any = None) -> None:
        if not hasattr(database, "get_collection"):
            raise InvalidArgumentError(f"database must be a vecdb database (vecdb.open / vecdb.connect), "
                                       f"got {type(database).__name__}")
        target = Target(collection_name, metric=metric, index=index, index_params=index_params, tenant=tenant,
                        create_tenant=create_tenant)
        super().__init__(collection_name=collection_name, tenant=tenant)
        self._db = database
        self._target = target
        self._coll = None
        self._params = knobs(search_params)
        if async_database is None:
            self._aio = LoopClients(None)
        elif callable(async_database) and not hasattr(async_database, "get_collection"):
            self._aio = LoopClients(async_database)
        else:
            self._aio = LoopClients(None, given=async_database)

    @classmethod
    def connect(cls, address: str, collection_name: str = "llama_index", *, api_key: str | None = None,
                timeout: float = 30.0, **kwargs: Any) -> "VecdbVectorStore":
        """A store on the server at ``address``: ``vecdb.connect`` for sync calls and an
        asyncio client per event loop (``vecdb.aio_client.connect``) for the async ones."""
        import vecdb
        from vecdb import aio_client

        store = cls(vecdb.connect(address, api_key=api_key, timeout=timeout), collection_name,
                    async_database=lambda: aio_client.connect(address, api_key=api_key, timeout=timeout), **kwargs)
        store._owns_db = True
        return store

    @classmethod
    def class_name(cls) -> str:
        return "VecdbVectorStore"

    @property
    def client(self) -> Any:
        """The vecdb database (embedded ``Database`` or ``RemoteDatabase``)."""
        return self._db

    def _collection(self, dim: int | None = None) -> Any:
        self._coll = self._target.resolve(self._db, dim, self._coll)
        return self._coll

    async def _acollection(self, dim: int | None = None) -> Any:
        client, scratch = self._aio.current()
        scratch["coll"] = await self._target.aresolve(client, dim, scratch.get("coll"))
        return scratch["coll"]

    # ---- conversions ---------------------------------------------------------------------

    def _records(self, nodes: Sequence[BaseNode]) -> tuple[list[str], np.ndarray | None, list[dict[str, Any]]]:
        """Ids, embeddings and payloads of ``nodes``; every node must carry its embedding."""
        ids, rows, payloads = [], [], []
        for node in nodes:
            embedding = node.embedding
            if embedding is None:
                raise InvalidArgumentError(f"node {node.node_id!r} has no embedding; embed nodes before adding them")
            payload = node_to_metadata_dict(node, remove_text=False, flat_metadata=self.flat_metadata)
            payload[NODE_ID_KEY] = node.node_id
            ids.append(node.node_id)
            rows.append(embedding)
            payloads.append(check_payload(payload, where=f"node {node.node_id!r} metadata"))
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError("node ids must be distinct within one add")
        for ident in ids:
            if not isinstance(ident, str) or not ident:
                raise InvalidArgumentError(f"node ids must be non-empty strings, got {ident!r:.80}")
        return ids, vectors_of(rows, len(rows)) if rows else None, payloads

    @staticmethod
    def _node(payload: Any) -> BaseNode:
        return metadata_dict_to_node(payload or {})

    def _query_spec(self, query: VectorStoreQuery, kwargs: dict[str, Any]) -> tuple[np.ndarray, int, Any, dict]:
        params = knobs(self._params, kwargs.pop("params", None))
        if kwargs:
            raise InvalidArgumentError(f"unexpected query arguments {sorted(kwargs)}; search knobs go in params=")
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise InvalidArgumentError(f"query mode {query.mode.value!r} is not supported (default and mmr are)")
        if query.query_embedding is None:
            raise InvalidArgumentError("the query has no query_embedding (vecdb searches by vector)")
        parts = [p for p in [translate_filters(query.filters)] if p]
        # an empty list means no restriction: LlamaIndex's retriever passes node_ids=[] by default
        if query.node_ids:
            parts.append({NODE_ID_KEY: {"in": unique_ids(list(query.node_ids), "node_ids")}})
        if query.doc_ids:
            parts.append({"ref_doc_id": {"in": unique_ids(list(query.doc_ids), "doc_ids")}})
        spec = None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
        return np.asarray([query.query_embedding], np.float32), checked_k(query.similarity_top_k), spec, params

    def _result(self, coll: Any, found: list[tuple[str, Any, float]]) -> VectorStoreQueryResult:
        metric = coll.info.metric
        return VectorStoreQueryResult(nodes=[self._node(p) for _, p, _ in found],
                                      similarities=[similarity(metric, d) for _, _, d in found],
                                      ids=[i for i, _, _ in found])

    def _mmr(self, coll: Any, q: np.ndarray, k: int, found: list[tuple[str, Any, float]],
             got: dict[str, tuple[np.ndarray, Any]], query: VectorStoreQuery) -> VectorStoreQueryResult:
        cands = [(i, p) for i, p, _ in found if i in got]
        if not cands:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        sims, picked = get_top_k_mmr_embeddings(q[0].tolist(), [got[i][0].tolist() for i, _ in cands],
                                                similarity_top_k=k, embedding_ids=list(range(len(cands))),
                                                mmr_threshold=query.mmr_threshold)
        return VectorStoreQueryResult(nodes=[self._node(cands[j][1]) for j in picked], similarities=list(sims),
                                      ids=[cands[j][0] for j in picked])

    def _node_filter(self, node_ids: Optional[List[str]], filters: Optional[MetadataFilters]) -> dict[str, Any]:
        parts = [p for p in [translate_filters(filters)] if p]
        if node_ids is not None:
            parts.append({NODE_ID_KEY: {"in": unique_ids(list(node_ids), "node_ids")}})
        if not parts:
            raise InvalidArgumentError("give node_ids and/or filters (clear() removes every node)")
        return parts[0] if len(parts) == 1 else {"$and": parts}

    # ---- sync ----------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upsert ``nodes`` (a node id already stored is replaced); returns their ids."""
        ids, x, payloads = self._records(nodes)
        if x is None:
            return []
        self._collection(x.shape[1]).upsert(ids, x, payloads, tenant=self._target.tenant)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node whose source document is ``ref_doc_id``."""
        ref = unique_ids([ref_doc_id], "ref_doc_id")[0]
        coll = self._collection()
        if coll is not None:
            delete_matching(coll, {"ref_doc_id": ref}, self._target.tenant)

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes among ``node_ids`` that match ``filters`` (either may be omitted)."""
        spec = self._node_filter(node_ids, filters)
        coll = self._collection()
        if coll is None:
            return
        if filters is None:
            coll.delete(list(dict.fromkeys(node_ids or [])), tenant=self._target.tenant)
        else:
            delete_matching(coll, spec, self._target.tenant)

    def get_nodes(self, node_ids: Optional[List[str]] = None,
                  filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        """The stored nodes among ``node_ids`` that match ``filters`` (either may be omitted),
        with their embeddings."""
        spec = self._node_filter(node_ids, filters)
        coll = self._collection()
        if coll is None:
            return []
        ids = list(dict.fromkeys(node_ids)) if filters is None and node_ids is not None else \
            [i for i, _, _ in select(coll, spec, self._target.tenant, with_payloads=False)]
        return self._with_embeddings(ids, fetch(coll, ids, self._target.tenant))

    def _with_embeddings(self, ids: list[str], got: dict[str, tuple[np.ndarray, Any]]) -> List[BaseNode]:
        out = []
        for ident in ids:
            if ident in got:
                node = self._node(got[ident][1])
                node.embedding = got[ident][0].tolist()
                out.append(node)
        return out

    def clear(self) -> None:
        """Drop the collection (every node, every tenant's); the next ``add`` recreates it."""
        self._target.drop(self._db)
        self._coll = None

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest ``query.query_embedding`` among those its
        filters, ``node_ids`` and ``doc_ids`` admit (``mmr`` mode: chosen among 4x as many)."""
        q, k, spec, params = self._query_spec(query, kwargs)
        coll = self._collection()
        if coll is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        mmr = query.mode == VectorStoreQueryMode.MMR
        res = coll.search(q, k=k * 4 if mmr else k, filter=spec, tenant=self._target.tenant, params=params,
                          with_payloads=True)
        found = hits(res)
        if mmr:
            return self._mmr(coll, q, k, found, fetch(coll, [i for i, _, _ in found], self._target.tenant), query)
        return self._result(coll, found)

    # ---- async ---------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        if not self._aio.enabled:
            return await self._in_thread(self.add, nodes, **add_kwargs)   # type: ignore[no-any-return]
        ids, x, payloads = self._records(nodes)
        if x is None:
            return []
        coll = await self._acollection(x.shape[1])
        await coll.upsert(ids, x, payloads, tenant=self._target.tenant)
        return ids

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        if not self._aio.enabled:
            return await self._in_thread(self.delete, ref_doc_id, **delete_kwargs)  # type: ignore[no-any-return]
        ref = unique_ids([ref_doc_id], "ref_doc_id")[0]
        coll = await self._acollection()
        if coll is not None:
            await adelete_matching(coll, {"ref_doc_id": ref}, self._target.tenant)

    async def adelete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                            **delete_kwargs: Any) -> None:
        if not self._aio.enabled:
            return await self._in_thread(self.delete_nodes, node_ids, filters)  # type: ignore[no-any-return]
        spec = self._node_filter(node_ids, filters)
        coll = await self._acollection()
        if coll is None:
            return
        if filters is None:
            await coll.delete(list(dict.fromkeys(node_ids or [])), tenant=self._target.tenant)
        else:
            await adelete_matching(coll, spec, self._target.tenant)

    async def aget_nodes(self, node_ids: Optional[List[str]] = None,
                         filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        if not self._aio.enabled:
            return await self._in_thread(self.get_nodes, node_ids, filters)  # type: ignore[no-any-return]
        spec = self._node_filter(node_ids, filters)
        coll = await self._acollection()
        if coll is None:
            return []
        ids = list(dict.fromkeys(node_ids)) if filters is None and node_ids is not None else \
            [i for i, _, _ in await aselect(coll, spec, self._target.tenant, with_payloads=False)]
        return self._with_embeddings(ids, await afetch(coll, ids, self._target.tenant))

    async def aclear(self) -> None:
        if not self._aio.enabled:
            return await self._in_thread(self.clear)  # type: ignore[no-any-return]
        client, scratch = self._aio.current()
        try:
            await client.drop_collection(self._target.name)
        except CollectionNotFoundError:
            pass
        scratch.pop("coll", None)
        self._coll = None

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if not self._aio.enabled:
            return await self._in_thread(self.query, query, **kwargs)  # type: ignore[no-any-return]
        q, k, spec, params = self._query_spec(query, kwargs)
        coll = await self._acollection()
        if coll is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        mmr = query.mode == VectorStoreQueryMode.MMR
        res = await coll.search(q, k=k * 4 if mmr else k, filter=spec, tenant=self._target.tenant, params=params,
                                with_payloads=True)
        found = hits(res)
        if mmr:
            got = await afetch(coll, [i for i, _, _ in found], self._target.tenant)
            return self._mmr(coll, q, k, found, got, query)
        return self._result(coll, found)

    def close(self) -> None:
        """Close the sync client this store made (``connect``); a given database is the caller's."""
        if self._owns_db:
            self._db.close()

    async def aclose(self) -> None:
        """Close the asyncio client this store made for the running event loop (if any)."""
        await self._aio.aclose()
