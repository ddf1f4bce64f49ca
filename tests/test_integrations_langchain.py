"""The LangChain adapter (vecdb.integrations.langchain): LangChain's own standard vector-store
suite, run unmodified over an embedded database and over a real ``vecdb serve`` (native
asyncio client), plus our checks of filters, scores, tenants, MMR, async and bad input."""
from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

import vecdb  # noqa: E402
from vecdb.errors import AlreadyExistsError, InvalidArgumentError  # noqa: E402
from vecdb.integrations.langchain import VecdbVectorStore  # noqa: E402
from vecdb.server.process import ServerProcess  # noqa: E402

from framework_fixtures import embedded_db, loopback_only, remote_db, server  # noqa: E402,F401

# the standard suite's async tests are plain ``async def``: run them (and ours) under pytest-asyncio
# in its default strict mode (the mark is a no-op on the sync tests, which it would warn about)
pytestmark = [pytest.mark.asyncio,
              pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async")]

_names = itertools.count()


def fresh(prefix: str = "lc") -> str:
    """A collection name no earlier test used (the databases live for the whole module)."""
    return f"{prefix}{next(_names)}"




# ---- LangChain's standard suite, unmodified -------------------------------------------------


class TestStandardEmbedded(VectorStoreIntegrationTests):
    """The standard suite over an embedded database (async methods run in an executor)."""

    @pytest.fixture
    def vectorstore(self, embedded_db: Any) -> Iterator[VecdbVectorStore]:
        store = VecdbVectorStore(self.get_embeddings(), embedded_db, fresh("std"))
        yield store
        store.delete_collection()


class TestStandardServer(VectorStoreIntegrationTests):
    """The standard suite against a real ``vecdb serve``: sync calls on ``vecdb.connect``,
    async ones natively on ``vecdb.aio_client`` (one channel per event loop)."""

    @pytest.fixture
    def vectorstore(self, server: ServerProcess) -> Iterator[VecdbVectorStore]:
        store = VecdbVectorStore.connect(self.get_embeddings(), server.address, fresh("std"), timeout=60)
        yield store
        store.delete_collection()
        store.close()


# ---- our own checks ---------------------------------------------------------------------------


class TableEmbeddings(Embeddings):
    """Deterministic local embeddings: a fixed vector per known text (tests choose geometry)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(self.table[t]) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return list(self.table[text])


@pytest.fixture(params=["embedded", "remote"])
def db(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_db")


def corpus(n: int = 60, dim: int = 8, seed: int = 5) -> tuple[TableEmbeddings, list[str], list[dict[str, Any]]]:
    """``n`` texts with seeded random vectors and varied metadata."""
    rng = np.random.default_rng(seed)
    texts = [f"t{i}" for i in range(n)]
    table = {t: rng.standard_normal(dim).tolist() for t in texts}
    langs = ["en", "fr", "de"]
    metas = [{"lang": langs[i % 3], "year": 2000 + i % 25, "tags": ["even" if i % 2 == 0 else "odd", f"m{i % 5}"],
              "nested": {"score": i / n}} for i in range(n)]
    return TableEmbeddings(table), texts, metas


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({"lang": "en"}, lambda m: m["lang"] == "en"),
    ({"lang": {"$eq": "fr"}}, lambda m: m["lang"] == "fr"),
    ({"lang": {"$ne": "fr"}}, lambda m: m["lang"] != "fr"),
    ({"year": {"$gt": 2010}}, lambda m: m["year"] > 2010),
    ({"year": {"$gte": 2010, "$lt": 2015}}, lambda m: 2010 <= m["year"] < 2015),
    ({"year": {"$lte": 2003}}, lambda m: m["year"] <= 2003),
    ({"lang": {"$in": ["en", "de"]}}, lambda m: m["lang"] in ("en", "de")),
    ({"lang": {"$nin": ["en", "de"]}}, lambda m: m["lang"] not in ("en", "de")),
    ({"tags": "m3"}, lambda m: "m3" in m["tags"]),
    ({"nested.score": {"$lt": 0.25}}, lambda m: m["nested"]["score"] < 0.25),
    ({"$and": [{"lang": "en"}, {"year": {"$gte": 2012}}]}, lambda m: m["lang"] == "en" and m["year"] >= 2012),
    ({"$or": [{"lang": "de"}, {"year": 2001}]}, lambda m: m["lang"] == "de" or m["year"] == 2001),
    ({"$not": {"tags": "even"}}, lambda m: "even" not in m["tags"]),
    ({"lang": "en", "tags": {"$in": ["m0", "m1"]}}, lambda m: m["lang"] == "en" and {"m0", "m1"} & set(m["tags"])),
]


@pytest.mark.parametrize("spec, predicate", FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_metadata_filters_select_exactly_the_matching_documents(db: Any, spec: dict[str, Any], predicate: Any) -> None:
    """Each LangChain-style filter returns exactly the documents its Python reading selects,
    in distance order (k covers the corpus, so the set is the whole answer)."""
    emb, texts, metas = corpus()
    store = VecdbVectorStore(emb, db, fresh(), index="flat")
    store.add_texts(texts, metas, ids=texts)
    got = store.similarity_search_with_score("t0", k=len(texts), filter=spec)
    want = {t for t, m in zip(texts, metas) if predicate(m)}
    assert want and len(want) < len(texts)
    assert {d.id for d, _ in got} == want
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    for doc, _ in got:
        assert doc.metadata == metas[int(doc.id[1:])] and doc.page_content == doc.id


@pytest.mark.parametrize("spec", [{"lang": {"$exists": True}}, {"lang": {"$like": "e%"}}, {"$nor": [{"lang": "en"}]},
                                  {"tags": ["m1", "m2"]}, {"lang": {}}, {"year": {"$gt": 1, "$gte": 2}}, "lang=en"])
def test_unsupported_filters_raise_a_clear_error(db: Any, spec: Any) -> None:
    emb, texts, metas = corpus(6)
    store = VecdbVectorStore(emb, db, fresh())
    store.add_texts(texts, metas, ids=texts)
    with pytest.raises(InvalidArgumentError):
        store.similarity_search("t0", k=3, filter=spec)
    assert len(store.similarity_search("t0", k=10)) == 6


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_scores_are_similarities_per_metric(db: Any, metric: str) -> None:
    """Scores follow the module docs' mapping, higher is better, relevance in [0, 1]."""
    vecs = {"q": [1.0, 0.0, 0.0], "a": [0.6, 0.8, 0.0], "b": [0.0, 0.0, 1.0], "c": [-1.0, 0.0, 0.0]}
    store = VecdbVectorStore(TableEmbeddings(vecs), db, fresh(), metric=metric, index="flat")
    store.add_texts(["a", "b", "c"], ids=["a", "b", "c"])
    got = {d.id: s for d, s in store.similarity_search_with_score("q", k=3)}
    q = np.array(vecs["q"])
    for name in "abc":
        x = np.array(vecs[name])
        want = {"cosine": float(q @ x), "ip": float(q @ x), "l2": 1.0 / (1.0 + float(((q - x) ** 2).sum()))}[metric]
        assert math.isclose(got[name], want, abs_tol=1e-5), (name, got[name], want)
    rel = {d.id: s for d, s in store.similarity_search_with_relevance_scores("q", k=3)}
    assert all(0.0 <= s <= 1.0 for s in rel.values())
    assert sorted(rel, key=rel.get) == ["c", "b", "a"]


def test_tenants_see_and_change_only_their_documents(db: Any) -> None:
    """Two stores on one collection with different tenants: searches, get_by_ids and deletes
    stay within each tenant; taking the other's id is refused; the admin store sees all."""
    emb, texts, metas = corpus(20)
    name = fresh("ten")
    acme = VecdbVectorStore(emb, db, name, tenant="acme")
    globex = VecdbVectorStore(emb, db, name, tenant="globex")
    admin = VecdbVectorStore(emb, db, name)
    acme.add_texts(texts[:10], metas[:10], ids=texts[:10])
    globex.add_texts(texts[10:], metas[10:], ids=texts[10:])
    assert {d.id for d in acme.similarity_search("t15", k=20)} == set(texts[:10])
    assert {d.id for d in globex.similarity_search("t3", k=20, filter={"lang": "en"})} == \
        {t for t, m in zip(texts[10:], metas[10:]) if m["lang"] == "en"}
    assert acme.get_by_ids(["t12", "t2"]) == [Document(id="t2", page_content="t2", metadata=metas[2])]
    acme.delete(["t12"])                                  # not acme's: ignored
    assert [d.id for d in globex.get_by_ids(["t12"])] == ["t12"]
    with pytest.raises(AlreadyExistsError):
        acme.add_texts(["t12"], ids=["t12"])
    assert globex.get_by_ids(["t12"])[0].page_content == "t12"
    assert len(admin.similarity_search("t0", k=50)) == 20
    assert sorted(db.get_collection(name).list_tenants()) == ["acme", "globex"]


def test_mmr_trades_relevance_for_diversity(db: Any) -> None:
    """Two near-duplicates closest to the query: plain search returns both, MMR takes one and
    then a different document (the more different, the lower lambda_mult); lambda_mult=1 is plain
    similarity order; filters apply to the candidates."""
    vecs = {"q": [1.0, 0.0, 0.0], "dup1": [0.95, 0.31, 0.0], "dup2": [0.95, 0.30, 0.0],
            "other": [0.8, -0.1, 0.59], "far": [-1.0, 0.0, 0.0]}
    store = VecdbVectorStore(TableEmbeddings(vecs), db, fresh(), index="flat")
    names = ["dup1", "dup2", "other", "far"]
    store.add_texts(names, [{"group": "d" if n.startswith("dup") else "x"} for n in names], ids=names)
    assert [d.id for d in store.similarity_search("q", k=2)] == ["dup2", "dup1"]
    # 0.5 * cos(q, x) - 0.5 * cos(x, dup2): other 0.033 > far -0.025 > dup1 ~0
    assert [d.id for d in store.max_marginal_relevance_search("q", k=2, fetch_k=4)] == ["dup2", "other"]
    # 0.1 * cos(q, x) - 0.9 * cos(x, dup2): far wins (the most different)
    assert [d.id for d in store.max_marginal_relevance_search("q", k=2, fetch_k=4, lambda_mult=0.1)] == ["dup2", "far"]
    assert [d.id for d in store.max_marginal_relevance_search("q", k=3, lambda_mult=1.0)] == ["dup2", "dup1", "other"]
    assert [d.id for d in store.max_marginal_relevance_search_by_vector(vecs["q"], k=2, filter={"group": "x"})] == \
        ["other", "far"]
    with pytest.raises(InvalidArgumentError):
        store.max_marginal_relevance_search("q", k=2, lambda_mult=1.5)


def test_retriever_and_constructors(db: Any) -> None:
    """from_texts / from_documents fill a store; as_retriever searches it (similarity with a
    filter, and MMR)."""
    emb, texts, metas = corpus(12)
    store = VecdbVectorStore.from_texts(texts[:6], emb, metas[:6], ids=texts[:6], database=db,
                                        collection_name=fresh(), index="flat")
    docs = [Document(id=t, page_content=t, metadata=m) for t, m in zip(texts[6:], metas[6:])]
    other = VecdbVectorStore.from_documents(docs, emb, database=db, collection_name=fresh())
    assert sorted(d.id for d in other.get_by_ids(texts)) == sorted(texts[6:])
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"lang": "fr"}})
    got = retriever.invoke("t1")
    assert [d.id for d in got] == ["t1", "t4"]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 6})
    assert len(mmr.invoke("t0")) == 3 and mmr.invoke("t0")[0].id == "t0"


def test_bad_input_is_refused_and_changes_nothing(db: Any) -> None:
    emb, texts, metas = corpus(4)
    store = VecdbVectorStore(emb, db, fresh())
    store.add_texts(texts, metas, ids=texts)
    with pytest.raises(InvalidArgumentError):
        store.add_texts(["t0", "t1"], [{"when": object()}, {}], ids=["t0", "t1"])  # not JSON-like
    with pytest.raises(InvalidArgumentError):
        store.add_texts(["t0", "t1"], ids=["x", "x"])
    with pytest.raises(InvalidArgumentError):
        store.add_texts(["t0"], metadatas=[{}, {}])
    with pytest.raises(InvalidArgumentError):
        store.delete()                                        # "delete all" is delete_collection()
    with pytest.raises(InvalidArgumentError):
        store.similarity_search("t0", k=0)
    with pytest.raises(InvalidArgumentError):
        store.similarity_search("t0", k=2, ef=10)             # knobs go in params=
    assert [d.id for d in store.similarity_search("t0", k=2, params={"ef": 16})][0] == "t0"
    with pytest.raises(InvalidArgumentError):
        store.similarity_search("t0", k=2, params=[("ef", 16)])
    for bad in ({"tenant": ""}, {"tenant": 7}, {"search_params": "ef=16"}, {"text_key": "a.b"},
                {"text_key": "x", "metadata_key": "x"}):
        with pytest.raises(InvalidArgumentError):
            VecdbVectorStore(emb, db, fresh(), **bad)
    assert store.get_by_ids(texts) == [Document(id=t, page_content=t, metadata=m) for t, m in zip(texts, metas)]
    int_ids = fresh("int")
    db.create_collection(int_ids, dim=8, id_type="int")
    with pytest.raises(InvalidArgumentError, match="id_type='str'"):
        VecdbVectorStore(emb, db, int_ids).similarity_search("t0")


def test_documents_survive_reopening(tmp_path: Path) -> None:
    """A store over a reopened embedded database finds what an earlier one wrote."""
    emb, texts, metas = corpus(10)
    with vecdb.open(str(tmp_path / "d")) as first:
        VecdbVectorStore(emb, first, "docs").add_texts(texts, metas, ids=texts)
    with vecdb.open(str(tmp_path / "d")) as again:
        store = VecdbVectorStore(emb, again, "docs")
        assert store.similarity_search("t7", k=1) == [Document(id="t7", page_content="t7", metadata=metas[7])]


async def test_async_methods_on_the_asyncio_client(server: ServerProcess) -> None:
    """With an asyncio client every a* method is a native coroutine on it; concurrent
    searches agree with the sync answers; the store closes its own channel."""
    emb, texts, metas = corpus(30)
    store = VecdbVectorStore.connect(emb, server.address, fresh("aio"), timeout=60)
    assert store._aio.enabled
    ids = await store.aadd_texts(texts, metas, ids=texts)
    assert ids == texts
    answers = await asyncio.gather(*(store.asimilarity_search_with_score(t, k=3, filter={"lang": "de"})
                                     for t in texts[:6]))
    for t, got in zip(texts[:6], answers):
        # same documents in the same order; a score may differ in float32's last bits when the
        # async search met the points still staged (exact scan) and the sync one indexed (graph)
        want = store.similarity_search_with_score(t, k=3, filter={"lang": "de"})
        assert [doc for doc, _ in got] == [doc for doc, _ in want]
        assert [score for _, score in got] == pytest.approx([score for _, score in want], rel=1e-6)
    assert [d.id for d in await store.aget_by_ids(["t3", "nope", "t4"])] == ["t3", "t4"]
    mmr = await store.amax_marginal_relevance_search("t2", k=3, fetch_k=10)
    assert mmr[0].id == "t2" and len({d.id for d in mmr}) == 3
    assert await store.adelete(["t2", "t3"]) is True
    assert await store.aget_by_ids(["t2", "t3"]) == []
    assert (await store.asimilarity_search("t2", k=1))[0].id != "t2"
    other = await VecdbVectorStore.afrom_texts(["t0"], emb, ids=["t0"], database=store._db,
                                               collection_name=fresh("aio"))
    assert [d.id for d in await other.asimilarity_search_by_vector(emb.embed_query("t0"), k=1)] == ["t0"]
    await store.aclose()
    store.delete_collection()
    store.close()
