"""A LangChain ``VectorStore`` over a vecdb collection (``pip install vecdb[langchain]``).

    import vecdb
    from vecdb.integrations.langchain import VecdbVectorStore

    store = VecdbVectorStore(embeddings, vecdb.open("./data"), collection_name="docs")
    store.add_texts(["..."], metadatas=[{"lang": "en", "year": 2024}], ids=["doc-1"])
    store.similarity_search("query", k=4, filter={"lang": "en", "year": {"$gte": 2020}})

Storage: each document is one point of a collection created with ``id_type="str"``; the
LangChain id *is* the vecdb id (missing ids become ``uuid4`` strings), so ids round-trip
unchanged and re-adding an id replaces that document. The payload is
``{text_key: page_content, metadata_key: metadata}`` (defaults ``"text"`` / ``"metadata"``);
metadata must be JSON-like (vecdb payload rules: tuples come back as lists). The collection is
created on the first write, with the embeddings' dimension and ``metric`` / ``index`` /
``index_params``; until then reads answer empty.

Scores (``similarity_search_with_score``): a similarity, higher is better, from vecdb's
distance ``d`` by the collection's metric: cosine ``1 - d`` (the cosine, in [-1, 1]);
ip ``-d`` (the inner product); l2 ``1 / (1 + d)`` with ``d`` the squared Euclidean
distance, in (0, 1]. Relevance scores (``similarity_search_with_relevance_scores``) rescale
to [0, 1]: ``(1 + cos) / 2`` for cosine, ``(1 + ip) / 2`` for ip (in [0, 1] for unit-norm
embeddings), and the l2 similarity as is.

Filters (``filter=``) are MongoDB-style conditions on metadata fields, translated to vecdb's
grammar: ``{"f": v}``, ``$eq $ne $gt $gte $lt $lte $in $nin``, ``$and $or $not``; nested
metadata is reached by dotted paths (``"a.b"``). Other operators raise InvalidArgumentError.

Tenants: ``tenant=`` makes every call act as that tenant (see ``vecdb.api``); with
``create_tenant=True`` (default) the store creates it on first use when missing (admin key).

Async: given an asyncio client (``async_database=``, an ``AsyncDatabase`` or a zero-argument
factory of one, called once per event loop; ``VecdbVectorStore.connect`` wires both clients)
the ``a*`` methods are native coroutines; otherwise they run the sync method in an executor.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as exc:   # the optional extra is missing
    raise ImportError(f"vecdb.integrations.langchain needs langchain-core: pip install 'vecdb[langchain]' ({exc})") \
        from exc

from vecdb.api import DatabaseAPI
from vecdb.errors import InvalidArgumentError
from vecdb.filters import check_payload
from vecdb.integrations._common import (
    LoopClients,
    Target,
    afetch,
    checked_k,
    fetch,
    hits,
    knobs,
    mongo_filter,
    relevance,
    similarity,
    unique_ids,
    vectors_of,
)

__all__ = ["VecdbVectorStore"]


class VecdbVectorStore(VectorStore):
    """LangChain ``VectorStore`` backed by a vecdb collection (embedded or remote); see the
    module docs for ids, payloads, scores, filters, tenants and async."""

    def __init__(self, embedding: Embeddings, database: DatabaseAPI, collection_name: str = "langchain", *,
                 metric: str = "cosine", index: str = "hnsw", index_params: Mapping[str, Any] | None = None,
                 tenant: str | None = None, create_tenant: bool = True,
                 search_params: Mapping[str, Any] | None = None, text_key: str = "text",
                 metadata_key: str = "metadata", async_database: Any = None) -> None:
        if not isinstance(embedding, Embeddings):
            raise InvalidArgumentError(f"embedding must be a langchain_core Embeddings, got {type(embedding).__name__}")
        if not hasattr(database, "get_collection"):
            raise InvalidArgumentError(f"database must be a vecdb database (vecdb.open / vecdb.connect), "
                                       f"got {type(database).__name__}")
        for what, key in (("text_key", text_key), ("metadata_key", metadata_key)):
            if not isinstance(key, str) or not key or "." in key:
                raise InvalidArgumentError(f"{what} must be a non-empty string without '.', got {key!r:.80}")
        if text_key == metadata_key:
            raise InvalidArgumentError("text_key and metadata_key must differ")
        self._embedding = embedding
        self._db = database
        self._owns_db = False
        self._target = Target(collection_name, metric=metric, index=index, index_params=index_params,
                              tenant=tenant, create_tenant=create_tenant)
        self._coll: Any = None
        self._params = knobs(search_params)
        self._text_key = text_key
        self._metadata_key = metadata_key
        if async_database is None:
            self._aio = LoopClients(None)
        elif callable(async_database) and not hasattr(async_database, "get_collection"):
            self._aio = LoopClients(async_database)
        else:
            self._aio = LoopClients(None, given=async_database)

    @classmethod
    def connect(cls, embedding: Embeddings, address: str, collection_name: str = "langchain", *,
                api_key: str | None = None, timeout: float = 30.0, **kwargs: Any) -> "VecdbVectorStore":
        """A store on the server at ``address``: a sync client (``vecdb.connect``) and, for the
        async methods, an asyncio client per event loop (``vecdb.aio_client.connect``)."""
        import vecdb
        from vecdb import aio_client

        store = cls(embedding, vecdb.connect(address, api_key=api_key, timeout=timeout), collection_name,
                    async_database=lambda: aio_client.connect(address, api_key=api_key, timeout=timeout), **kwargs)
        store._owns_db = True
        return store

    # ---- properties and helpers ----------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def tenant(self) -> str | None:
        return self._target.tenant

    def _collection(self, dim: int | None = None) -> Any:
        self._coll = self._target.resolve(self._db, dim, self._coll)
        return self._coll

    async def _acollection(self, dim: int | None = None) -> Any:
        client, scratch = self._aio.current()
        scratch["coll"] = await self._target.aresolve(client, dim, scratch.get("coll"))
        return scratch["coll"]

    def _prepare(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None,
                 ids: Sequence[str | None] | None) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Checked ids (generated where missing), texts and payloads of an add."""
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise InvalidArgumentError(f"texts must be strings, got {type(text).__name__}")
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise InvalidArgumentError(f"got {len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise InvalidArgumentError(f"got {len(ids)} ids for {n} texts")
        out_ids = [str(uuid.uuid4()) if ids is None or ids[i] is None else ids[i] for i in range(n)]
        for ident in out_ids:
            if not isinstance(ident, str) or not ident:
                raise InvalidArgumentError(f"ids must be non-empty strings, got {ident!r:.80}")
        if len(set(out_ids)) != n:
            raise InvalidArgumentError("ids must be distinct within one add")
        payloads = []
        for i in range(n):
            meta = (metadatas[i] if metadatas is not None else None) or {}
            checked = check_payload(meta, where=f"metadatas[{i}]")
            payloads.append({self._text_key: texts[i], self._metadata_key: checked})
        return out_ids, texts, payloads

    def _document(self, ident: str, payload: Any) -> Document:
        payload = payload or {}
        meta = payload.get(self._metadata_key)
        text = payload.get(self._text_key)
        return Document(id=ident, page_content=text if isinstance(text, str) else "",
                        metadata=dict(meta) if isinstance(meta, dict) else {})

    def _search_args(self, k: Any, filter: Any, kwargs: dict[str, Any]) -> tuple[int, Any, dict[str, Any]]:
        params = knobs(self._params, kwargs.pop("params", None))
        if kwargs:
            raise InvalidArgumentError(f"unexpected search arguments {sorted(kwargs)}; search knobs go in params=")
        return checked_k(k), mongo_filter(filter, self._metadata_key + "."), params

    def _scored(self, coll: Any, res: Any) -> list[tuple[Document, float]]:
        metric = coll.info.metric
        return [(self._document(i, p), similarity(metric, d)) for i, p, d in hits(res)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = self._target.metric if self._coll is None else self._coll.info.metric
        return lambda sim: relevance(metric, sim)

    # ---- writes --------------------------------------------------------------------------

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed ``texts`` and upsert them (a given id replaces its document); returns the ids."""
        if kwargs:
            raise InvalidArgumentError(f"unexpected add_texts arguments {sorted(kwargs)}")
        out_ids, texts, payloads = self._prepare(texts, metadatas, ids)
        if not out_ids:
            return []
        x = vectors_of(self._embedding.embed_documents(texts), len(texts))
        self._collection(x.shape[1]).upsert(out_ids, x, payloads, tenant=self._target.tenant)
        return out_ids

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        if not self._aio.enabled:
            return await run_in_executor(None, self.add_texts, texts, metadatas, ids=ids, **kwargs)
        if kwargs:
            raise InvalidArgumentError(f"unexpected add_texts arguments {sorted(kwargs)}")
        out_ids, texts, payloads = self._prepare(texts, metadatas, ids)
        if not out_ids:
            return []
        x = vectors_of(await self._embedding.aembed_documents(texts), len(texts))
        coll = await self._acollection(x.shape[1])
        await coll.upsert(out_ids, x, payloads, tenant=self._target.tenant)
        return out_ids

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add documents; ``ids=`` wins over ``Document.id``; documents without one get a uuid4."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [doc.id for doc in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids, **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [doc.id for doc in documents]
        return await self.aadd_texts([d.page_content for d in documents], [d.metadata for d in documents],
                                     ids=ids, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (ids not stored are ignored); True once done. ``ids=None``
        (LangChain's "delete all") is refused: use ``delete_collection()``."""
        ids = self._delete_ids(ids, kwargs)
        coll = self._collection()
        if coll is not None and ids:
            coll.delete(ids, tenant=self._target.tenant)
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if not self._aio.enabled:
            return await run_in_executor(None, self.delete, ids, **kwargs)
        ids = self._delete_ids(ids, kwargs)
        coll = await self._acollection()
        if coll is not None and ids:
            await coll.delete(ids, tenant=self._target.tenant)
        return True

    @staticmethod
    def _delete_ids(ids: Any, kwargs: dict[str, Any]) -> list[str]:
        if kwargs:
            raise InvalidArgumentError(f"unexpected delete arguments {sorted(kwargs)}")
        if ids is None:
            raise InvalidArgumentError("delete needs a list of ids; delete_collection() removes everything")
        return unique_ids(ids)

    def delete_collection(self) -> None:
        """Drop the whole collection (every tenant's documents); the next write recreates it."""
        self._target.drop(self._db)
        self._coll = None

    # ---- reads ---------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids`` (missing ones left out), in the order asked."""
        wanted = unique_ids(list(ids))
        coll = self._collection()
        got = fetch(coll, wanted, self._target.tenant) if coll is not None else {}
        return [self._document(i, got[i][1]) for i in wanted if i in got]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        if not self._aio.enabled:
            return await run_in_executor(None, self.get_by_ids, ids)
        wanted = unique_ids(list(ids))
        coll = await self._acollection()
        got = await afetch(coll, wanted, self._target.tenant) if coll is not None else {}
        return [self._document(i, got[i][1]) for i in wanted if i in got]

    def similarity_search_with_score_by_vector(self, embedding: Sequence[float], k: int = 4,
                                               filter: Mapping[str, Any] | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest ``embedding`` with their similarity (module docs)."""
        k, spec, params = self._search_args(k, filter, kwargs)
        coll = self._collection()
        if coll is None:
            return []
        res = coll.search(np.asarray([embedding], np.float32), k=k, filter=spec, tenant=self._target.tenant,
                          params=params, with_payloads=True)
        return self._scored(coll, res)

    async def asimilarity_search_with_score_by_vector(self, embedding: Sequence[float], k: int = 4,
                                                      filter: Mapping[str, Any] | None = None,
                                                      **kwargs: Any) -> list[tuple[Document, float]]:
        if not self._aio.enabled:
            return await run_in_executor(None, self.similarity_search_with_score_by_vector, embedding, k,
                                         filter, **kwargs)
        k, spec, params = self._search_args(k, filter, kwargs)
        coll = await self._acollection()
        if coll is None:
            return []
        res = await coll.search(np.asarray([embedding], np.float32), k=k, filter=spec, tenant=self._target.tenant,
                                params=params, with_payloads=True)
        return self._scored(coll, res)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents most similar to ``query`` with their similarity (module docs)."""
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k, filter, **kwargs)

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        if not self._aio.enabled:
            return await run_in_executor(None, self.similarity_search_with_score, query, k, filter, **kwargs)
        vector = await self._embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    def similarity_search(self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None,
                          **kwargs: Any) -> list[Document]:
        """The ``k`` documents most similar to ``query``, most similar first."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None,
                                 **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest ``embedding``, nearest first."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                           filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    # ---- maximal marginal relevance ---------------------------------------------------------

    def _mmr_args(self, k: Any, fetch_k: Any, lambda_mult: Any) -> tuple[int, int, float]:
        k, fetch_k = checked_k(k), checked_k(fetch_k, "fetch_k")
        if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float)) or not 0 <= lambda_mult <= 1:
            raise InvalidArgumentError(f"lambda_mult must be a number in [0, 1], got {lambda_mult!r:.80}")
        return k, max(k, fetch_k), float(lambda_mult)

    def _mmr_pick(self, embedding: Sequence[float], found: list[tuple[str, Any, float]],
                  got: dict[str, tuple[np.ndarray, Any]], k: int, lambda_mult: float) -> list[Document]:
        cands = [(i, p) for i, p, _ in found if i in got]
        if not cands:
            return []
        picked = maximal_marginal_relevance(np.asarray(embedding, np.float32), [got[i][0] for i, _ in cands],
                                            lambda_mult=lambda_mult, k=min(k, len(cands)))
        return [self._document(*cands[j]) for j in picked]

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: Mapping[str, Any] | None = None,
                                                **kwargs: Any) -> list[Document]:
        """``k`` documents chosen by maximal marginal relevance among the ``fetch_k`` nearest
        (relevance and diversity measured by cosine similarity; ``lambda_mult`` 1 = relevance only)."""
        k, fetch_k, lambda_mult = self._mmr_args(k, fetch_k, lambda_mult)
        fetch_k, spec, params = self._search_args(fetch_k, filter, kwargs)
        coll = self._collection()
        if coll is None:
            return []
        res = coll.search(np.asarray([embedding], np.float32), k=fetch_k, filter=spec, tenant=self._target.tenant,
                          params=params, with_payloads=True)
        found = hits(res)
        got = fetch(coll, [i for i, _, _ in found], self._target.tenant)
        return self._mmr_pick(embedding, found, got, k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5,
                                                       filter: Mapping[str, Any] | None = None,
                                                       **kwargs: Any) -> list[Document]:
        if not self._aio.enabled:
            return await run_in_executor(None, self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k,
                                         lambda_mult, filter, **kwargs)
        k, fetch_k, lambda_mult = self._mmr_args(k, fetch_k, lambda_mult)
        fetch_k, spec, params = self._search_args(fetch_k, filter, kwargs)
        coll = await self._acollection()
        if coll is None:
            return []
        res = await coll.search(np.asarray([embedding], np.float32), k=fetch_k, filter=spec,
                                tenant=self._target.tenant, params=params, with_payloads=True)
        found = hits(res)
        got = await afetch(coll, [i for i, _, _ in found], self._target.tenant)
        return self._mmr_pick(embedding, found, got, k, lambda_mult)

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """``max_marginal_relevance_search_by_vector`` for the embedding of ``query``."""
        return self.max_marginal_relevance_search_by_vector(self._embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter, **kwargs)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: Mapping[str, Any] | None = None,
                                             **kwargs: Any) -> list[Document]:
        if not self._aio.enabled:
            return await run_in_executor(None, self.max_marginal_relevance_search, query, k, fetch_k, lambda_mult,
                                         filter, **kwargs)
        vector = await self._embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter, **kwargs)

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, database: DatabaseAPI | None = None,
                   **kwargs: Any) -> "VecdbVectorStore":
        """A store over ``database`` (required) holding ``texts``; other keywords go to the
        constructor (``collection_name``, ``metric``, ``tenant``, ...)."""
        if database is None:
            raise InvalidArgumentError("from_texts needs database= (vecdb.open(path) or vecdb.connect(address))")
        store = cls(embedding, database, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None,
                          *, ids: list[str] | None = None, database: DatabaseAPI | None = None,
                          **kwargs: Any) -> "VecdbVectorStore":
        if database is None:
            raise InvalidArgumentError("afrom_texts needs database= (vecdb.open(path) or vecdb.connect(address))")
        store = cls(embedding, database, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    def close(self) -> None:
        """Close the sync client this store made (``connect``); a given database is the caller's."""
        if self._owns_db:
            self._db.close()

    async def aclose(self) -> None:
        """Close the asyncio client this store made for the running event loop (if any)."""
        await self._aio.aclose()
