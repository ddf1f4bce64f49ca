"""Embedded database targets: vecdb's database (``vecdb.open``) and the embedded peers, each
inserting every row under its row number into a folder of its own and searching one query per
call, the way an application calls an embedded database. ``vecdb-collection`` is vecdb's
database measured against the index libraries (``Collection.search`` with the same seed and
knobs as ``vecdb-hnsw``, each call's block of queries in one call).

Like is compared with like: each target says whether it searches exactly (``algorithm =
"exact"``: db-vecdb-flat, qdrant-local, lancedb without an index, Milvus Lite FLAT) or with an
index (``"ann"``: db-vecdb-hnsw, chroma, LanceDB IVF_HNSW_SQ, Milvus Lite IVF_FLAT), and the
runner takes ratios only within a class. Indexed peers verify that their index exists and is
used (and the runner checks that each swept knob moves recall).

The peers need ``bench/.venv-peers`` (``bash bench/peers-venv.sh``).
"""
from __future__ import annotations

import abc
import logging
import os
import shutil
import time
from typing import Any, ClassVar

import numpy as np

from vecdb.bench.adapters.base import Target, register
from vecdb.bench.adapters.hnsw import SEED as HNSW_SEED
from vecdb.bench.measure import dir_bytes
from vecdb.errors import FailedPreconditionError
from vecdb.types import F32Matrix, Metric

DEFAULT_INSERT_BATCH = 10_000
PEERS_VENV_HINT = "the embedded peers live in bench/.venv-peers: run `bash bench/peers-venv.sh` and use its python"


def _need(module: str) -> Any:
    """Import a peer's package or say how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FailedPreconditionError(f"cannot import {module} ({exc}); {PEERS_VENV_HINT}") from None


class _Peer(Target):
    """Insert all rows in batches (timed apart from any index build), then search row by row."""

    memory_source = "n/a"
    filter_paths: ClassVar[dict[str, str]] = {}

    def build(self, base: F32Matrix) -> None:
        if self.workdir is None:
            raise FailedPreconditionError(f"{self.name}: the runner must give a workdir before build")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.n = len(base)
        step = int(self.build_params.get("insert_batch", DEFAULT_INSERT_BATCH))
        t0 = time.perf_counter()
        self._open()
        for b0 in range(0, len(base), step):
            self._insert(np.arange(b0, min(len(base), b0 + step)), np.ascontiguousarray(base[b0 : b0 + step]))
        self.insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._index()
        self.index_s = time.perf_counter() - t0

    def build_info(self) -> dict[str, Any]:
        return {"insert_s": self.insert_s, "index_s": self.index_s,
                "insert_vectors_per_s": self.n / self.insert_s if self.insert_s else None}

    def _open(self) -> None:
        """Create the store and its collection (counted in the insert time)."""

    @abc.abstractmethod
    def _insert(self, ids: np.ndarray, rows: F32Matrix) -> None:
        """Store ``rows`` under ``ids`` (counted in the insert time)."""

    def _index(self) -> None:
        """Build and check the vector index after the insert (default: none)."""

    @abc.abstractmethod
    def _one(self, q: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        """Row numbers of the ``k`` nearest stored rows to one query ``q``."""

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        out = np.full((len(queries), k), -1, np.int64)
        for i, q in enumerate(queries):
            got = self._one(q, k, params)[:k]
            out[i, : len(got)] = got
        return out

    def memory_bytes(self) -> int | None:  # type: ignore[override]
        return None

    def disk_bytes(self) -> int | None:
        return dir_bytes(self.workdir) if self.workdir is not None else None


# ---- vecdb's database -------------------------------------------------------------------------
class _VecdbDb(_Peer):
    """vecdb's database. Workloads run through the collection itself: a filter is a payload
    range filter on the attribute stored with every point (``{"attr": {"lte": ...}}``, the
    exact allow-set of the workload), tenants are collection tenants granted their rows, and
    churn is ``upsert`` / ``delete``."""

    index_kind = "flat"
    payload_filter = True
    native_tenants = True
    supports_churn = True
    churn_writes = "concurrent"
    churn_note = "a collection takes upsert / delete from one thread while others search (its own locks)"
    filter_paths: ClassVar[dict[str, str]] = {"scan": "payload range filter -> allow-set, searched by the index"}

    def _open(self) -> None:
        import vecdb

        self.db = vecdb.open(self.workdir)
        self.col = self.db.create_collection("bench", dim=self.dim, metric=self.metric.value, index=self.index_kind,
                                             index_params=self._index_params())

    def _index_params(self) -> dict[str, Any]:
        if self.index_kind != "hnsw":
            return {}
        return {"M": int(self.build_params.get("M", 16)),
                "ef_construction": int(self.build_params.get("ef_construction", 100)), "progress": False}

    def _insert(self, ids: np.ndarray, rows: F32Matrix) -> None:
        attr = self.filter_attribute
        self.col.upsert(ids, rows, None if attr is None else [{"attr": float(a)} for a in attr[ids]])

    def _index(self) -> None:
        """Grant each tenant its rows, then wait for the background indexer: an upsert is
        acknowledged on commit, before its points are in the index (searched exactly
        meanwhile), and the runs measure the index."""
        for tenant, rows in enumerate(self.tenant_members or ()):
            rows = rows[rows < self.n]
            if len(rows):
                self.col.create_tenant(f"t{tenant}")
                self.col.grant(f"t{tenant}", rows)
        self.col.wait_indexed()

    def insert(self, rows: F32Matrix, ids: np.ndarray) -> None:
        self._insert(ids, rows)

    def delete(self, ids: np.ndarray) -> None:
        self.col.delete(ids)

    def settle(self) -> None:
        self.col.wait_indexed()

    def _payload_filter(self, allow: np.ndarray) -> dict[str, Any]:
        """The payload filter passing exactly the rows of ``allow`` (the workload keeps the rows
        whose attribute is below its selectivity; the largest kept value bounds them)."""
        if self.filter_attribute is None:
            raise FailedPreconditionError(f"{self.name}: built without the filter attribute; the runner sets it "
                                          "for filter workloads")
        top = float(self.filter_attribute[allow].max()) if len(allow) else -1.0
        if int((self.filter_attribute <= top).sum()) != len(allow):
            raise FailedPreconditionError(f"{self.name}: the allow-set is not a range of the filter attribute")
        return {"attr": {"lte": top}}

    def _knobs(self, params: dict[str, Any]) -> dict[str, Any]:
        return {key: params[key] for key in self.search_knobs if key in params}

    def _one(self, q: np.ndarray, k: int, params: dict[str, Any], flt: dict[str, Any] | None = None,
             tenant: str | None = None) -> list[int]:
        return self.col.search(q, k=k, filter=flt, tenant=tenant, params=self._knobs(params)).ids[0].tolist()

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        flt = None if allow is None else self.reused(allow, self._payload_filter)
        out = np.full((len(queries), k), -1, np.int64)
        for i, q in enumerate(queries):
            got = self._one(q, k, params, flt)[:k]
            out[i, : len(got)] = got
        return out

    def search_tenant(self, queries: F32Matrix, k: int, params: dict[str, Any], tenant: int,
                      members: np.ndarray) -> np.ndarray:
        out = np.full((len(queries), k), -1, np.int64)
        for i, q in enumerate(queries):
            got = self._one(q, k, params, tenant=f"t{tenant}")[:k]
            out[i, : len(got)] = got
        return out

    def close(self) -> None:
        self.db.close()


@register
class DbVecdbFlat(_VecdbDb):
    """vecdb's database with the exact FlatIndex: the class of the exact-scan peers."""

    name = "db-vecdb-flat"
    algorithm = "exact"


@register
class DbVecdbHNSW(_VecdbDb):
    """vecdb's database with its HNSW index (build params M, ef_construction; knob ef)."""

    name = "db-vecdb-hnsw"
    index_kind = "hnsw"
    search_knobs = ("ef",)


@register
class VecdbCollection(DbVecdbHNSW):
    """``Collection.search`` as an application calls it: a real LMDB folder, points upserted in
    batches under their row numbers, each call's block of queries passed in one ``search`` (so
    batch 1 is one query per call, with nothing around it but the call). Build param
    ``index`` picks the index kind (default hnsw: M, ef_construction; knob ef); the count is the
    collection's own ``stats().memory_bytes``."""

    name = "vecdb-collection"
    memory_source = "library"

    def __init__(self, metric: Metric, dim: int, build_params: dict[str, Any]) -> None:
        super().__init__(metric, dim, build_params)
        self.index_kind = str(self.build_params.get("index", "hnsw"))

    @classmethod
    def knobs_for(cls, build_params: dict[str, Any]) -> tuple[str, ...]:
        return ("ef",) if str(build_params.get("index", "hnsw")) == "hnsw" else ()

    def _index_params(self) -> dict[str, Any]:
        # the same level-draw seed as the vecdb-hnsw target and hnswlib
        return {**super()._index_params(), "seed": HNSW_SEED} if self.index_kind == "hnsw" else {}

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        flt = None if allow is None else self.reused(allow, self._payload_filter)
        return self.col.search(queries, k=k, filter=flt, params=self._knobs(params)).ids

    def search_tenant(self, queries: F32Matrix, k: int, params: dict[str, Any], tenant: int,
                      members: np.ndarray) -> np.ndarray:
        return self.col.search(queries, k=k, tenant=f"t{tenant}", params=self._knobs(params)).ids

    def memory_bytes(self) -> int | None:  # type: ignore[override]
        return int(self.col.stats().memory_bytes)


# ---- chroma ---------------------------------------------------------------------------------------
@register
class Chroma(_Peer):
    """chroma's PersistentClient (an HNSW). ``ef_search`` changed by ``modify`` only reaches the
    loaded index after the client system is dropped and reopened, so the adapter does that
    whenever the swept ``ef`` changes (the reopen is outside the timed passes: the runner's
    warm-up call makes it)."""

    name = "chroma"
    search_knobs = ("ef",)
    SPACES: ClassVar[dict[Metric, str]] = {Metric.COSINE: "cosine", Metric.L2: "l2", Metric.IP: "ip"}

    def _open(self) -> None:
        chromadb = _need("chromadb")
        self.client = chromadb.PersistentClient(path=str(self.workdir))
        self.ef = int(self.build_params.get("ef_search", 100))
        self.col = self.client.create_collection(
            "bench", embedding_function=None,
            configuration={"hnsw": {"space": self.SPACES[self.metric],
                                    "ef_construction": int(self.build_params.get("ef_construction", 100)),
                                    "max_neighbors": int(self.build_params.get("M", 16)), "ef_search": self.ef}})
        self.max_batch = self.client.get_max_batch_size()

    def _insert(self, ids: np.ndarray, rows: F32Matrix) -> None:
        for s in range(0, len(ids), self.max_batch):
            self.col.add(ids=[str(i) for i in ids[s : s + self.max_batch]], embeddings=rows[s : s + self.max_batch])

    def _set_ef(self, ef: int) -> None:
        chromadb = _need("chromadb")
        from chromadb.api.client import SharedSystemClient

        self.col.modify(configuration={"hnsw": {"ef_search": ef}})
        SharedSystemClient.clear_system_cache()  # drop the loaded segment: it keeps its old ef
        self.client = chromadb.PersistentClient(path=str(self.workdir))
        self.col = self.client.get_collection("bench")
        applied = self.col.configuration_json["hnsw"]["ef_search"]
        if applied != ef:
            raise FailedPreconditionError(f"chroma kept ef_search={applied} after asking for {ef}")
        self.ef = ef

    def _one(self, q: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        if "ef" in params and int(params["ef"]) != self.ef:
            self._set_ef(int(params["ef"]))
        res = self.col.query(query_embeddings=q[None, :], n_results=k, include=[])
        return [int(i) for i in res["ids"][0]]


# ---- qdrant ---------------------------------------------------------------------------------------
@register
class QdrantLocal(_Peer):
    """qdrant-client's local mode: points in a local folder, searched by an exact scan in Python
    (the local mode has no HNSW; its ``hnsw_config`` applies to the server only)."""

    name = "qdrant-local"
    algorithm = "exact"

    def _open(self) -> None:
        qc = _need("qdrant_client")
        self.models = qc.models
        self.client = qc.QdrantClient(path=str(self.workdir))
        dist = {Metric.COSINE: self.models.Distance.COSINE, Metric.L2: self.models.Distance.EUCLID,
                Metric.IP: self.models.Distance.DOT}[self.metric]
        self.client.create_collection("bench", vectors_config=self.models.VectorParams(size=self.dim, distance=dist))

    def _insert(self, ids: np.ndarray, rows: F32Matrix) -> None:
        self.client.upsert("bench", points=self.models.Batch(ids=ids.tolist(), vectors=rows.tolist()))

    def _one(self, q: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        return [p.id for p in self.client.query_points("bench", query=q.tolist(), limit=k).points]

    def close(self) -> None:
        self.client.close()


# ---- LanceDB --------------------------------------------------------------------------------------
class _Lance(_Peer):
    def _open(self) -> None:
        os.environ.setdefault("LANCE_LOG", "error")
        self.pa = _need("pyarrow")
        self.db = _need("lancedb").connect(str(self.workdir))
        self.table = None
        self.distance = {Metric.COSINE: "cosine", Metric.L2: "l2", Metric.IP: "dot"}[self.metric]

    def _insert(self, ids: np.ndarray, rows: F32Matrix) -> None:
        pa = self.pa
        vec = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), self.dim)
        tbl = pa.table({"id": pa.array(ids, pa.int64()), "vector": vec})
        if self.table is None:
            self.table = self.db.create_table("bench", tbl)
        else:
            self.table.add(tbl)

    def _query(self, q: np.ndarray, k: int) -> Any:
        return self.table.search(q).distance_type(self.distance).limit(k)

    def _one(self, q: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        return self._query(q, k).select(["id", "_distance"]).to_arrow()["id"].to_pylist()


@register
class LanceFlat(_Lance):
    """LanceDB without a vector index: an exact scan."""

    name = "lancedb"
    algorithm = "exact"


@register
class LanceIvfHnswSq(_Lance):
    """LanceDB with an IVF_HNSW_SQ index built after the insert, one HNSW per partition (build
    param num_partitions, default n // 4096: partitions large enough that ``ef`` matters inside
    them and numerous enough that ``nprobes`` does; knobs nprobes, ef)."""

    name = "lancedb-ivf-hnsw-sq"
    search_knobs = ("nprobes", "ef")

    def _index(self) -> None:
        parts = int(self.build_params.get("num_partitions", max(1, self.n // 4096)))
        self.table.create_index(metric=self.distance, index_type="IVF_HNSW_SQ", vector_column_name="vector",
                                num_partitions=parts, m=int(self.build_params.get("M", 16)),
                                ef_construction=int(self.build_params.get("ef_construction", 100)))
        if not self.table.list_indices():
            raise FailedPreconditionError("lancedb: create_index left the table without an index")

    def _one(self, q: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        query = self._query(q, k)
        if "nprobes" in params:
            query = query.nprobes(int(params["nprobes"]))
        if "ef" in params:
            query = query.ef(int(params["ef"]))
        return query.select(["id", "_distance"]).to_arrow()["id"].to_pylist()


# ---- Milvus Lite ------------------------------------------------------------------------------------
class _Milvus(_Peer):
    """Milvus Lite. Its quick-setup ``create_collection(dimension=..., index_params=...)`` builds
    an AUTOINDEX and ignores the index type asked for, so the adapter drops that index, inserts,
    flushes, builds the index it names (synchronously), loads, and checks ``describe_index``."""

    index_type = "FLAT"

    def _open(self) -> None:
        pymilvus = _need("pymilvus")
        # Milvus Lite's in-process gRPC stub logs every call it does not implement; not our errors
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        self.client = pymilvus.MilvusClient(str(self.workdir / "milvus.db"))
        self.metric_name = {Metric.COSINE: "COSINE", Metric.L2: "L2", Metric.IP: "IP"}[self.metric]
        self.client.create_collection("bench", dimension=self.dim, metric_type=self.metric_name, auto_id=False)
        self.client.release_collection("bench")
        for name in self.client.list_indexes("bench"):
            self.client.drop_index("bench", name)

    def _insert(self, ids: np.ndarray, rows: F32Matrix) -> None:
        self.client.insert("bench", [{"id": int(i), "vector": r} for i, r in zip(ids, rows.tolist())])

    def _index_params(self) -> dict[str, Any]:
        return {}

    def _index(self) -> None:
        self.client.flush("bench")
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=self.index_type, metric_type=self.metric_name,
                         params=self._index_params())
        self.client.create_index("bench", params, sync=True)
        self.client.load_collection("bench")
        info = self.client.describe_index("bench", "vector")
        if info.get("index_type") != self.index_type or info.get("indexed_rows") != self.n:
            raise FailedPreconditionError(f"milvus-lite: asked for {self.index_type} over {self.n} rows, "
                                          f"describe_index says {info}")
        self.index_info = info

    def build_info(self) -> dict[str, Any]:
        return {**super().build_info(), "index": self.index_info}

    def _one(self, q: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        knobs = {key: params[key] for key in self.search_knobs if key in params}
        res = self.client.search("bench", data=[q.tolist()], limit=k,
                                 search_params={"metric_type": self.metric_name, "params": knobs})
        return [hit["id"] for hit in res[0]]

    def close(self) -> None:
        self.client.close()


@register
class MilvusFlat(_Milvus):
    name = "milvus-lite-flat"
    algorithm = "exact"


@register
class MilvusIvf(_Milvus):
    """Milvus Lite IVF_FLAT (build param nlist, default 256; knob nprobe)."""

    name = "milvus-lite-ivf"
    index_type = "IVF_FLAT"
    search_knobs = ("nprobe",)

    def _index_params(self) -> dict[str, Any]:
        return {"nlist": int(self.build_params.get("nlist", 256))}
