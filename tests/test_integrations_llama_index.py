"""The LlamaIndex adapter (vecdb.integrations.llama_index): a VectorStoreIndex over the store,
queried with and without metadata filters, deletes by document id, reopened over the same
data, over an embedded database and a real ``vecdb serve``. Local deterministic embeddings
and a mock LLM only; a guard fails any test that opens a non-loopback connection (so nothing
downloads models, tokenizers or NLTK data)."""
from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Settings, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.llms.mock import MockLLM  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import Document, NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn  # noqa: E402

import vecdb  # noqa: E402
from vecdb.errors import InvalidArgumentError  # noqa: E402
from vecdb.integrations.llama_index import VecdbVectorStore  # noqa: E402
from vecdb.server.process import ServerProcess, start_server_process  # noqa: E402

from framework_fixtures import embedded_db, loopback_only, remote_db, server  # noqa: E402,F401

pytestmark = [pytest.mark.asyncio,
              pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async")]

DIM = 32
_names = itertools.count()


def fresh(prefix: str = "li") -> str:
    return f"{prefix}{next(_names)}"


class HashEmbedding(BaseEmbedding):
    """Deterministic local bag-of-words embedding: each word adds 1 to a hashed coordinate."""

    def _vector(self, text: str) -> list[float]:
        v = np.full(DIM, 0.01)
        for word in re.findall(r"\w+", text.lower()):
            v[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % DIM] += 1.0
        return (v / np.linalg.norm(v)).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


@pytest.fixture(autouse=True, scope="module")
def local_settings() -> Iterator[HashEmbedding]:
    """LlamaIndex's global models set to local objects (never a default that downloads)."""
    emb = HashEmbedding()
    Settings.embed_model = emb
    Settings.llm = MockLLM()
    yield emb




@pytest.fixture(params=["embedded", "remote"])
def db(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_db")


TOPICS = {
    "fruit": "Apples and pears grow in orchards. Ripe apples are sweet and crisp. Pears ripen after picking.",
    "space": "Rockets carry satellites into orbit. The moon orbits the earth. Astronauts train for years.",
    "sea": "Whales swim in the deep ocean. Coral reefs shelter small fish. Tides follow the moon.",
}


def documents() -> list[Document]:
    return [Document(text=text, doc_id=f"doc-{topic}", metadata={"topic": topic, "year": 2020 + i,
                                                                  "tags": [topic[0], "all"]})
            for i, (topic, text) in enumerate(TOPICS.items())]


def build_index(store: VecdbVectorStore) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(documents(), storage_context=StorageContext.from_defaults(vector_store=store),
                                           embed_model=HashEmbedding(),
                                           transformations=[SentenceSplitter(chunk_size=24, chunk_overlap=0)])


def test_index_over_the_store_answers_with_and_without_filters(db: Any) -> None:
    """VectorStoreIndex.from_documents fills the store; from_vector_store reads it back: the
    best node for a query comes from the right document, with its text and metadata; filters
    restrict the answer to matching nodes."""
    store = VecdbVectorStore(db, fresh())
    build_index(store)
    assert db.get_collection(store.collection_name).count() > len(TOPICS)   # split into several nodes
    index = VectorStoreIndex.from_vector_store(store, embed_model=HashEmbedding())
    best = index.as_retriever(similarity_top_k=1).retrieve("sweet crisp apples")[0]
    assert best.node.ref_doc_id == "doc-fruit" and "apples" in best.node.get_content()
    assert best.node.metadata == {"topic": "fruit", "year": 2020, "tags": ["f", "all"]}
    assert 0 < best.score <= 1.0
    only_sea = MetadataFilters(filters=[MetadataFilter(key="topic", value="sea")])
    got = index.as_retriever(similarity_top_k=20, filters=only_sea).retrieve("sweet crisp apples")
    assert got and {n.node.metadata["topic"] for n in got} == {"sea"}
    recent = MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GTE),
                                      MetadataFilter(key="topic", value="space", operator=FilterOperator.NE)])
    got = index.as_retriever(similarity_top_k=20, filters=recent).retrieve("moon")
    assert got and {n.node.ref_doc_id for n in got} == {"doc-sea"}


def _nodes(n: int = 40, seed: int = 3) -> list[TextNode]:
    rng = np.random.default_rng(seed)
    nodes = []
    for i in range(n):
        meta: dict[str, Any] = {"color": ["red", "green", "blue"][i % 3], "size": i % 7, "tags": [f"t{i % 4}", f"u{i % 5}"]}
        if i % 6 == 0:
            del meta["color"]                            # some nodes lack the field
        v = rng.standard_normal(DIM)
        nodes.append(TextNode(id_=f"n{i}", text=f"node {i}", metadata=meta, embedding=(v / np.linalg.norm(v)).tolist(),
                              relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"d{i % 5}")}))
    return nodes


ORACLE_FILTERS = [
    MetadataFilters(filters=[MetadataFilter(key="color", value="red")]),
    MetadataFilters(filters=[MetadataFilter(key="color", value="red", operator=FilterOperator.NE)]),
    MetadataFilters(filters=[MetadataFilter(key="size", value=3, operator=FilterOperator.GT)]),
    MetadataFilters(filters=[MetadataFilter(key="size", value=3, operator=FilterOperator.GTE),
                             MetadataFilter(key="size", value=5, operator=FilterOperator.LT)]),
    MetadataFilters(filters=[MetadataFilter(key="size", value=2, operator=FilterOperator.LTE)]),
    MetadataFilters(filters=[MetadataFilter(key="color", value=["red", "blue"], operator=FilterOperator.IN)]),
    MetadataFilters(filters=[MetadataFilter(key="color", value=["red", "blue"], operator=FilterOperator.NIN)]),
    MetadataFilters(filters=[MetadataFilter(key="tags", value="t1", operator=FilterOperator.CONTAINS)]),
    MetadataFilters(filters=[MetadataFilter(key="tags", value=["t1", "u0"], operator=FilterOperator.ANY)]),
    MetadataFilters(filters=[MetadataFilter(key="tags", value=["t1", "u0"], operator=FilterOperator.ALL)]),
    MetadataFilters(filters=[MetadataFilter(key="color", value="green"), MetadataFilter(key="size", value=1)],
                    condition=FilterCondition.OR),
    MetadataFilters(filters=[MetadataFilter(key="color", value="green"), MetadataFilter(key="size", value=1)],
                    condition=FilterCondition.NOT),
]


@pytest.mark.parametrize("filters", ORACLE_FILTERS, ids=lambda f: ",".join(f"{x.key}{x.operator.value}{x.value}"
                                                                            for x in f.filters) + f"/{f.condition.value}")
def test_filters_agree_with_llama_index_own_semantics(db: Any, filters: MetadataFilters) -> None:
    """Each operator/condition selects exactly the nodes LlamaIndex's reference filter
    function (build_metadata_filter_fn, what its in-memory store uses) selects."""
    store = VecdbVectorStore(db, fresh(), index="flat")
    nodes = _nodes()
    store.add(nodes)
    meta = {n.node_id: n.metadata for n in nodes}
    want = {i for i in meta if build_metadata_filter_fn(lambda i: meta[i], filters)(i)}
    assert want and len(want) < len(nodes)
    res = store.query(VectorStoreQuery(query_embedding=nodes[0].embedding, similarity_top_k=len(nodes), filters=filters))
    assert set(res.ids) == want
    assert res.similarities == sorted(res.similarities, reverse=True)


def test_nested_filters_node_ids_doc_ids_and_unsupported_operators(db: Any) -> None:
    store = VecdbVectorStore(db, fresh(), index="flat")
    nodes = _nodes()
    store.add(nodes)
    q = nodes[5].embedding
    nested = MetadataFilters(filters=[
        MetadataFilter(key="size", value=4, operator=FilterOperator.LT),
        MetadataFilters(filters=[MetadataFilter(key="color", value="red"), MetadataFilter(key="color", value="blue")],
                        condition=FilterCondition.OR)])
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=50, filters=nested))
    assert set(res.ids) == {n.node_id for n in nodes
                            if n.metadata["size"] < 4 and n.metadata.get("color") in ("red", "blue")}
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=50, node_ids=["n1", "n2", "n30", "zz"]))
    assert sorted(res.ids) == ["n1", "n2", "n30"]
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=50, doc_ids=["d2"],
                                       filters=MetadataFilters(filters=[MetadataFilter(key="size", value=0)])))
    assert set(res.ids) == {n.node_id for n in nodes if n.ref_doc_id == "d2" and n.metadata["size"] == 0}
    top = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=1))
    assert top.ids == ["n5"] and top.nodes[0].get_content() == "node 5" and top.similarities[0] == pytest.approx(1.0)
    for op in (FilterOperator.TEXT_MATCH, FilterOperator.IS_EMPTY):
        with pytest.raises(InvalidArgumentError, match="not supported"):
            store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3,
                                         filters=MetadataFilters(filters=[MetadataFilter(key="color", value="r",
                                                                                         operator=op)])))
    with pytest.raises(InvalidArgumentError):
        store.query(VectorStoreQuery(query_str="no embedding", similarity_top_k=3))
    with pytest.raises(InvalidArgumentError):
        store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3), unknown_knob=1)
    assert store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=1), params={}).ids == ["n5"]
    with pytest.raises(InvalidArgumentError):
        store.add([TextNode(id_="x", text="not embedded")])


def test_delete_by_document_id_and_node_level_calls(db: Any) -> None:
    """index.delete_ref_doc removes every node of that document and nothing else; get_nodes
    and delete_nodes by ids and by filters; clear() empties the store."""
    store = VecdbVectorStore(db, fresh())
    index = build_index(store)
    coll = db.get_collection(store.collection_name)
    before = coll.count()
    fruit = store.get_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="fruit")]))
    assert len(fruit) >= 2 and all(n.ref_doc_id == "doc-fruit" and n.embedding for n in fruit)
    index.delete_ref_doc("doc-fruit")
    assert coll.count() == before - len(fruit)
    got = index.as_retriever(similarity_top_k=50).retrieve("sweet crisp apples")
    assert got and all(n.node.ref_doc_id != "doc-fruit" for n in got) and len(got) == before - len(fruit)
    sea_ids = [n.node_id for n in store.get_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="topic",
                                                                                                  value="sea")]))]
    assert [n.node_id for n in store.get_nodes(node_ids=sea_ids[:1] + ["missing"])] == sea_ids[:1]
    store.delete_nodes(node_ids=sea_ids[:1])
    store.delete_nodes(node_ids=sea_ids, filters=MetadataFilters(filters=[MetadataFilter(key="year", value=2022)]))
    assert store.get_nodes(node_ids=sea_ids) == []
    assert {n.node.ref_doc_id for n in index.as_retriever(similarity_top_k=50).retrieve("moon")} == {"doc-space"}
    store.delete("doc-none")                                     # nothing of it: no error, nothing removed
    store.clear()
    assert store.query(VectorStoreQuery(query_embedding=HashEmbedding()._vector("moon"), similarity_top_k=3)).ids == []


def test_mmr_mode_and_tenants(db: Any) -> None:
    nodes = _nodes(12)
    name = fresh("ten")
    a = VecdbVectorStore(db, name, tenant="a")
    b = VecdbVectorStore(db, name, tenant="b")
    a.add(nodes[:6])
    b.add(nodes[6:])
    q = nodes[0].embedding
    assert set(a.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20)).ids) == {f"n{i}" for i in range(6)}
    assert set(b.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20)).ids) == {f"n{i}" for i in range(6, 12)}
    b.delete("d0")                                               # n0 (a's) is not b's to delete; n10 is
    assert a.get_nodes(node_ids=["n0"])[0].node_id == "n0" and b.get_nodes(node_ids=["n10"]) == []
    mmr = a.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3, mode=VectorStoreQueryMode.MMR,
                                   mmr_threshold=0.5))
    assert mmr.ids[0] == "n0" and len(set(mmr.ids)) == 3 and set(mmr.ids) <= {f"n{i}" for i in range(6)}


def test_store_reopens_with_its_data(tmp_path: Path) -> None:
    """New database, store and index objects over the same directory answer as before."""
    path = str(tmp_path / "data")
    with vecdb.open(path) as first:
        build_index(VecdbVectorStore(first, "docs"))
        before = VectorStoreIndex.from_vector_store(VecdbVectorStore(first, "docs"), embed_model=HashEmbedding()) \
            .as_retriever(similarity_top_k=3).retrieve("rockets and satellites")
    with vecdb.open(path) as again:
        index = VectorStoreIndex.from_vector_store(VecdbVectorStore(again, "docs"), embed_model=HashEmbedding())
        after = index.as_retriever(similarity_top_k=3).retrieve("rockets and satellites")
    assert [(n.node.node_id, n.node.get_content(), n.node.metadata, n.node.ref_doc_id) for n in after] == \
        [(n.node.node_id, n.node.get_content(), n.node.metadata, n.node.ref_doc_id) for n in before]
    assert after[0].node.ref_doc_id == "doc-space"


def test_store_reopens_across_embedded_and_server(tmp_path: Path) -> None:
    """The same data directory written through an embedded store, then served by a real
    server (a new process) and read through a remote store, which adds a document; reopened
    embedded afterwards, both documents are there, whole."""
    path = tmp_path / "data"
    with vecdb.open(str(path)) as db:
        build_index(VecdbVectorStore(db, "docs"))
    extra = Document(text="Volcanoes erupt molten lava and ash.", doc_id="doc-fire", metadata={"topic": "fire"})
    proc = start_server_process(path, tmp_path / "server.log", args=["--no-metrics"])
    try:
        with vecdb.connect(proc.address, timeout=60) as db:
            index = VectorStoreIndex.from_vector_store(VecdbVectorStore(db, "docs"), embed_model=HashEmbedding())
            best = index.as_retriever(similarity_top_k=1).retrieve("whales in the deep ocean")[0]
            index.insert(extra)
            # the background indexer done first: closing waits for it, and this test is about the data
            assert db.get_collection("docs").wait_indexed(60)
    finally:
        assert proc.stop() == 0
    assert best.node.ref_doc_id == "doc-sea" and "Whales" in best.node.get_content()
    with vecdb.open(str(path)) as db:
        index = VectorStoreIndex.from_vector_store(VecdbVectorStore(db, "docs"), embed_model=HashEmbedding())
        got = index.as_retriever(similarity_top_k=1).retrieve("molten lava")[0]
        assert got.node.ref_doc_id == "doc-fire" and got.node.metadata == {"topic": "fire"}
        assert index.as_retriever(similarity_top_k=1).retrieve("Rockets carry satellites into orbit")[0] \
            .node.ref_doc_id == "doc-space"


async def test_async_calls_on_the_asyncio_client(server: ServerProcess) -> None:
    """With the asyncio client: async_add / aquery / aget_nodes / adelete / adelete_nodes /
    aclear are coroutines on it and agree with the sync calls; the async index path works."""
    store = VecdbVectorStore.connect(server.address, fresh("aio"), timeout=60)
    nodes = _nodes(20)
    assert await store.async_add(nodes) == [n.node_id for n in nodes]
    query = VectorStoreQuery(query_embedding=nodes[3].embedding, similarity_top_k=5,
                             filters=MetadataFilters(filters=[MetadataFilter(key="size", value=3,
                                                                             operator=FilterOperator.GTE)]))
    got = await store.aquery(query)
    assert got.ids == store.query(query).ids and got.ids[0] == "n3"
    await store.adelete("d3")                                    # n3, n8, n13, n18
    assert [n.node_id for n in await store.aget_nodes(node_ids=["n3", "n8", "n4"])] == ["n4"]
    await store.adelete_nodes(node_ids=["n4"])
    assert store.get_nodes(node_ids=["n4"]) == []
    index = VectorStoreIndex.from_vector_store(store, embed_model=HashEmbedding())
    hits = await index.as_retriever(similarity_top_k=2).aretrieve("node")
    assert len(hits) == 2
    await store.aclear()
    assert (await store.aquery(VectorStoreQuery(query_embedding=nodes[0].embedding, similarity_top_k=2))).ids == []
    await store.aclose()
    store.close()
