"""Benchmark of the embedded database (``vecdb.open``) and of the embedded peers that install here.

Two workloads, each in its own process per target (see bench/database.sh for the commands):

``own``   synthetic clustered data (default 1M x 128, l2): bulk upsert throughput in batches,
          reopen time, single-query QPS and recall@10 over an ``ef`` sweep without a filter and
          with payload filters of 1% / 10% / 50% selectivity (``{"bucket": {"lt": s}}``).
``peer``  one target on a common smaller workload (default arxiv-minilm-384: 50k x 384, cosine,
          1,000 held-out queries, exact ground truth shipped with the data): insert throughput,
          disk size, and single-query QPS / recall@10 over each target's search knob.
``report`` merges the peer result files into ratios: vecdb insert throughput, QPS at
          recall@10 >= 0.95, and disk size, each divided by the peer's.

Every figure is measured, never assumed: recall uses exact ground truth (faiss IndexFlat on
the data, or the dataset's gt_ids), timings use time.perf_counter, and queries are issued one
at a time, the way an application calls an embedded database.
"""
from __future__ import annotations

import abc
import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("VECDB_DATASETS", ROOT.parent / "shared" / "datasets"))
K = 10


# ---- helpers -----------------------------------------------------------------------------
def dir_bytes(path: Path) -> int:
    """Bytes of all files below ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean |found[:k] ∩ truth[:k]| / k over queries (found rows may hold -1)."""
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (k * len(truth))


def timed_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Run ``search`` on each query row in turn; returns (ids (nq, k), queries per second)."""
    search(queries[0])  # warm-up (JIT, caches)
    out = np.full((len(queries), K), -1, np.int64)
    start = time.perf_counter()
    for i, q in enumerate(queries):
        row = np.asarray(search(q), np.int64)[:K]
        out[i, : len(row)] = row
    return out, len(queries) / (time.perf_counter() - start)


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact top-k row numbers with faiss (inner product on unit rows for cosine)."""
    import faiss

    if metric == "cosine":
        b = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
        index = faiss.IndexFlatIP(base.shape[1])
    else:
        b, q = base, queries
        index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(b, np.float32))
    return index.search(np.ascontiguousarray(q, np.float32), k)[1].astype(np.int64)


def host() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0], "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- own workload ------------------------------------------------------------------------
def run_own(args: argparse.Namespace) -> dict[str, Any]:
    """1M x 128 (by default) into one collection; throughput, reopen, QPS with/without filters."""
    import vecdb
    from vecdb.data.synthetic import gaussian_mixture

    n, d = args.n, args.dim
    data = gaussian_mixture(n + args.queries, d, seed=1338)
    base, queries = data[:n], data[n:]
    bucket = np.random.default_rng(5).integers(0, 100, n)
    folder = Path(args.workdir) / "own-db"
    shutil.rmtree(folder, ignore_errors=True)
    params = {"M": args.M, "ef_construction": args.ef_construction, "progress": False} if args.index == "hnsw" else {}
    result: dict[str, Any] = {"workload": "own", "n": n, "dim": d, "metric": "l2", "index": args.index,
                              "index_params": params, "batch": args.batch, "queries": args.queries, "host": host()}
    log(f"own: upserting {n} x {d} in batches of {args.batch} ({args.index} {params})")
    db = vecdb.open(folder, map_size=1 << 32)
    col = db.create_collection("bench", dim=d, metric="l2", index=args.index, index_params=params)
    start = time.perf_counter()
    for b0 in range(0, n, args.batch):
        ids = np.arange(b0, min(n, b0 + args.batch))
        col.upsert(ids, base[ids], payloads=[{"bucket": int(v)} for v in bucket[ids].tolist()])
        if (b0 // args.batch) % 10 == 0:
            log(f"  {b0 + len(ids)} points, {(b0 + len(ids)) / (time.perf_counter() - start):.0f} vectors/s")
    upsert_s = time.perf_counter() - start
    result["upsert_seconds"] = upsert_s
    result["upsert_vectors_per_s"] = n / upsert_s
    start = time.perf_counter()
    db.close()
    result["close_checkpoint_seconds"] = time.perf_counter() - start
    result["disk_bytes"] = dir_bytes(folder)
    start = time.perf_counter()
    db = vecdb.open(folder)
    col = db.get_collection("bench")
    result["reopen_seconds"] = time.perf_counter() - start
    log(f"own: upsert {result['upsert_vectors_per_s']:.0f} vectors/s, reopen {result['reopen_seconds']:.2f}s")
    result["stats"] = dataclasses.asdict(col.stats())
    truth = exact_knn(base, queries, K, "l2")
    sweeps: dict[str, Any] = {}
    efs = [int(e) for e in args.ef.split(",")] if args.index == "hnsw" else [0]
    for label, pct in [("none", None), ("1%", 1), ("10%", 10), ("50%", 50)]:
        flt = None if pct is None else {"bucket": {"lt": pct}}
        if pct is None:
            gt = truth
        else:
            rows = np.flatnonzero(bucket < pct)
            gt = rows[exact_knn(base[rows], queries, K, "l2")]
        points = []
        for ef in efs:
            knobs = {"ef": ef} if ef else {}
            found, qps = timed_queries(lambda q: col.search(q, k=K, filter=flt, params=knobs).ids[0], queries)
            points.append({"ef": ef, "qps": qps, "recall": recall_at_k(found, gt)})
            log(f"  filter {label:>4} ef={ef:<4} qps={qps:8.1f} recall@10={points[-1]['recall']:.4f}")
        sweeps[label] = points
    result["search"] = sweeps
    db.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


# ---- peers -------------------------------------------------------------------------------
def load_dataset(name: str, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(base, queries, ground-truth ids, metric) of a shared dataset."""
    folder = DATASETS / name
    info = json.loads((folder / "info.json").read_text())
    metric = "cosine" if "angular" in str(info.get("metric", name)) or "angular" in name or "minilm" in name else "l2"
    base = np.load(folder / "base.npy").astype(np.float32)
    queries = np.load(folder / "query.npy").astype(np.float32)[:n_queries]
    gt = np.load(folder / "gt_ids.npy")[:n_queries].astype(np.int64)
    return base, queries, gt, metric


class Peer(abc.ABC):
    """One embedded engine: ``insert`` all rows (ids = row numbers), then ``search`` one query
    under each knob setting of ``sweep``; ``size`` is the bytes of its folder."""

    name = ""

    def __init__(self, folder: Path, dim: int, metric: str, args: argparse.Namespace) -> None:
        self.folder, self.dim, self.metric, self.args = folder, dim, metric, args

    @abc.abstractmethod
    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        """Store every row of ``base`` under its row number; returns timings."""

    def sweep(self) -> list[dict[str, Any]]:
        return [{}]

    @abc.abstractmethod
    def search(self, q: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        """Row numbers of the k nearest stored rows to ``q`` under ``knobs``."""

    def close(self) -> None:
        pass


class VecdbPeer(Peer):
    name = "vecdb"

    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        import vecdb

        self.db = vecdb.open(self.folder)
        params = {"M": self.args.M, "ef_construction": self.args.ef_construction, "progress": False}
        self.col = self.db.create_collection("bench", dim=self.dim, metric=self.metric, index="hnsw", index_params=params)
        start = time.perf_counter()
        for b0 in range(0, len(base), batch):
            self.col.upsert(np.arange(b0, min(len(base), b0 + batch)), base[b0 : b0 + batch])
        return {"insert_seconds": time.perf_counter() - start}

    def sweep(self) -> list[dict[str, Any]]:
        return [{"ef": e} for e in (16, 24, 32, 48, 64, 96, 128, 256)]

    def search(self, q: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        return self.col.search(q, k=K, params=knobs).ids[0]

    def close(self) -> None:
        self.db.close()


class VecdbFlatPeer(VecdbPeer):
    """vecdb with the exact FlatIndex: the storage path alone, against the peers' brute force."""

    name = "vecdb-flat"

    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        import vecdb

        self.db = vecdb.open(self.folder)
        self.col = self.db.create_collection("bench", dim=self.dim, metric=self.metric, index="flat")
        start = time.perf_counter()
        for b0 in range(0, len(base), batch):
            self.col.upsert(np.arange(b0, min(len(base), b0 + batch)), base[b0 : b0 + batch])
        return {"insert_seconds": time.perf_counter() - start}

    def sweep(self) -> list[dict[str, Any]]:
        return [{}]


class ChromaPeer(Peer):
    name = "chroma"

    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        import chromadb

        self.client = chromadb.PersistentClient(path=str(self.folder))
        space = {"cosine": "cosine", "l2": "l2", "ip": "ip"}[self.metric]
        self.col = self.client.create_collection(
            "bench", embedding_function=None,
            configuration={"hnsw": {"space": space, "ef_construction": self.args.ef_construction,
                                    "max_neighbors": self.args.M, "ef_search": 64}})
        step = min(batch, self.client.get_max_batch_size())
        start = time.perf_counter()
        for b0 in range(0, len(base), step):
            rows = range(b0, min(len(base), b0 + step))
            self.col.add(ids=[str(i) for i in rows], embeddings=base[b0 : b0 + step])
        return {"insert_seconds": time.perf_counter() - start}

    def sweep(self) -> list[dict[str, Any]]:
        return [{"ef": e} for e in (16, 32, 64, 128, 256)]

    def search(self, q: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        if knobs.get("ef") != getattr(self, "_ef", None):
            self.col.modify(configuration={"hnsw": {"ef_search": knobs["ef"]}})
            self._ef = knobs["ef"]
        res = self.col.query(query_embeddings=q[None, :], n_results=K, include=[])
        return np.array([int(i) for i in res["ids"][0]], np.int64)


class QdrantPeer(Peer):
    name = "qdrant-local"

    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = QdrantClient(path=str(self.folder))
        dist = {"cosine": models.Distance.COSINE, "l2": models.Distance.EUCLID, "ip": models.Distance.DOT}[self.metric]
        self.client.create_collection("bench", vectors_config=models.VectorParams(size=self.dim, distance=dist))
        start = time.perf_counter()
        for b0 in range(0, len(base), batch):
            rows = list(range(b0, min(len(base), b0 + batch)))
            self.client.upsert("bench", points=models.Batch(ids=rows, vectors=base[b0 : b0 + batch].tolist()))
        return {"insert_seconds": time.perf_counter() - start}

    def search(self, q: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        res = self.client.query_points("bench", query=q.tolist(), limit=K)
        return np.array([p.id for p in res.points], np.int64)

    def close(self) -> None:
        self.client.close()


class LancePeer(Peer):
    name = "lancedb"

    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        os.environ.setdefault("LANCE_LOG", "error")
        import lancedb
        import pyarrow as pa

        self.db = lancedb.connect(str(self.folder))
        start = time.perf_counter()
        self.table = None
        for b0 in range(0, len(base), batch):
            chunk = base[b0 : b0 + batch]
            vec = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1), pa.float32()), self.dim)
            tbl = pa.table({"id": pa.array(np.arange(b0, b0 + len(chunk)), pa.int64()), "vector": vec})
            if self.table is None:
                self.table = self.db.create_table("bench", tbl)
            else:
                self.table.add(tbl)
        out = {"insert_seconds": time.perf_counter() - start}
        if self.args.lance_index:
            start = time.perf_counter()
            self.table.create_index(metric=self.metric if self.metric != "ip" else "dot", index_type="IVF_HNSW_SQ",
                                    vector_column_name="vector")
            out["index_seconds"] = time.perf_counter() - start
        return out

    def sweep(self) -> list[dict[str, Any]]:
        if not self.args.lance_index:
            return [{}]
        return [{"nprobes": p, "ef": e} for p in (2, 4, 8) for e in (32, 64, 128)]

    def search(self, q: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        query = self.table.search(q).distance_type(self.metric if self.metric != "ip" else "dot").limit(K)
        if "nprobes" in knobs:
            query = query.nprobes(knobs["nprobes"]).ef(knobs["ef"])
        return np.asarray(query.select(["id", "_distance"]).to_arrow()["id"].to_numpy(), np.int64)


class MilvusPeer(Peer):
    name = "milvus-lite"

    def insert(self, base: np.ndarray, batch: int) -> dict[str, float]:
        from pymilvus import MilvusClient

        self.folder.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(str(self.folder / "milvus.db"))
        metric = {"cosine": "COSINE", "l2": "L2", "ip": "IP"}[self.metric]
        self.metric_name = metric
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=self.args.milvus_index, metric_type=metric,
                               params={"nlist": 256} if self.args.milvus_index.startswith("IVF") else {})
        self.client.create_collection("bench", dimension=self.dim, metric_type=metric, auto_id=False,
                                      index_params=index_params)
        start = time.perf_counter()
        for b0 in range(0, len(base), batch):
            rows = [{"id": i, "vector": base[i].tolist()} for i in range(b0, min(len(base), b0 + batch))]
            self.client.insert("bench", rows)
        self.client.flush("bench") if hasattr(self.client, "flush") else None
        self.client.load_collection("bench")
        return {"insert_seconds": time.perf_counter() - start}

    def sweep(self) -> list[dict[str, Any]]:
        if self.args.milvus_index.startswith("IVF"):
            return [{"nprobe": p} for p in (4, 8, 16, 32, 64)]
        return [{}]

    def search(self, q: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        res = self.client.search("bench", data=[q.tolist()], limit=K,
                                 search_params={"metric_type": self.metric_name, "params": knobs})
        return np.array([hit["id"] for hit in res[0]], np.int64)

    def close(self) -> None:
        self.client.close()


PEERS: dict[str, type[Peer]] = {p.name: p for p in (VecdbPeer, VecdbFlatPeer, ChromaPeer, QdrantPeer, LancePeer, MilvusPeer)}


def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    base, queries, gt, metric = load_dataset(args.dataset, args.queries)
    if args.n:
        base = base[: args.n]
        gt = exact_knn(base, queries, K, metric)
    folder = Path(args.workdir) / f"peer-{args.target}"
    shutil.rmtree(folder, ignore_errors=True)
    peer = PEERS[args.target](folder, base.shape[1], metric, args)
    label = args.target + ("+IVF_HNSW_SQ" if args.target == "lancedb" and args.lance_index else "")
    result: dict[str, Any] = {"workload": "peer", "target": label, "dataset": args.dataset, "n": len(base),
                              "dim": base.shape[1], "metric": metric, "batch": args.batch, "queries": len(queries),
                              "host": host()}
    log(f"{args.target}: inserting {len(base)} x {base.shape[1]}")
    result.update(peer.insert(base, args.batch))
    result["insert_vectors_per_s"] = len(base) / (result["insert_seconds"] + result.get("index_seconds", 0.0))
    points = []
    for knobs in peer.sweep():
        found, qps = timed_queries(lambda q: peer.search(q, knobs), queries)
        points.append({"knobs": knobs, "qps": qps, "recall": recall_at_k(found, gt)})
        log(f"  {args.target} {knobs} qps={qps:.1f} recall@10={points[-1]['recall']:.4f}")
    result["search"] = points
    peer.close()
    result["disk_bytes"] = dir_bytes(folder)
    log(f"{args.target}: insert {result['insert_vectors_per_s']:.0f} vectors/s, disk {result['disk_bytes'] / 1e6:.1f} MB")
    shutil.rmtree(folder, ignore_errors=True)
    return result


def best_qps(points: list[dict[str, Any]], floor: float) -> float | None:
    ok = [p["qps"] for p in points if p["recall"] >= floor]
    return max(ok) if ok else None


def run_report(args: argparse.Namespace) -> dict[str, Any]:
    """Ratios of vecdb to every peer result file given."""
    results = [json.loads(Path(f).read_text()) for f in args.files]
    ours = next(r for r in results if r["target"] == args.ours)
    rows = []
    for r in results:
        qps = best_qps(r["search"], args.recall)
        rows.append({"target": r["target"], "insert_vectors_per_s": r["insert_vectors_per_s"],
                     "insert_seconds": r["insert_seconds"], "index_seconds": r.get("index_seconds"),
                     f"qps_at_recall_{args.recall}": qps,
                     "max_recall": max(p["recall"] for p in r["search"]), "disk_bytes": r["disk_bytes"]})
    our_qps = best_qps(ours["search"], args.recall)
    for row in rows:
        peer_qps = row[f"qps_at_recall_{args.recall}"]
        row["vecdb_insert_ratio"] = ours["insert_vectors_per_s"] / row["insert_vectors_per_s"]
        row["vecdb_qps_ratio"] = None if not (our_qps and peer_qps) else our_qps / peer_qps
        row["vecdb_disk_ratio"] = ours["disk_bytes"] / row["disk_bytes"]
    print(f"{'target':<14}{'insert/s':>10}{'QPS@' + str(args.recall):>12}{'max rec':>9}{'disk MB':>9}"
          f"{'ins ratio':>10}{'QPS ratio':>10}{'disk ratio':>11}")
    for row in rows:
        q = row[f"qps_at_recall_{args.recall}"]
        qr = row["vecdb_qps_ratio"]
        print(f"{row['target']:<14}{row['insert_vectors_per_s']:>10.0f}{(f'{q:.0f}' if q else 'n/a'):>12}"
              f"{row['max_recall']:>9.3f}{row['disk_bytes'] / 1e6:>9.1f}{row['vecdb_insert_ratio']:>10.2f}"
              f"{(f'{qr:.2f}' if qr else 'n/a'):>10}{row['vecdb_disk_ratio']:>11.2f}")
    return {"workload": "report", "recall_floor": args.recall, "rows": rows, "host": host()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    own = sub.add_parser("own", help="1M x 128 synthetic: upsert, reopen, QPS with/without filters")
    own.add_argument("--n", type=int, default=1_000_000)
    own.add_argument("--dim", type=int, default=128)
    own.add_argument("--index", default="hnsw")
    own.add_argument("--ef", default="16,32,64,128,256")
    own.add_argument("--keep", action="store_true", help="keep the database folder")
    peer = sub.add_parser("peer", help="one target on a shared dataset")
    peer.add_argument("--target", choices=sorted(PEERS), required=True)
    peer.add_argument("--dataset", default="arxiv-minilm-384")
    peer.add_argument("--n", type=int, default=0, help="use only the first n base rows (0 = all)")
    peer.add_argument("--lance-index", action="store_true", help="build a LanceDB IVF_HNSW_SQ index after insert")
    peer.add_argument("--milvus-index", default="IVF_FLAT")
    for p in (own, peer):
        p.add_argument("--batch", type=int, default=10_000)
        p.add_argument("--queries", type=int, default=1000)
        p.add_argument("--M", type=int, default=16)
        p.add_argument("--ef-construction", type=int, default=100)
        p.add_argument("--workdir", default=str(ROOT / ".bench-work"))
    rep = sub.add_parser("report", help="ratios of vecdb to each peer")
    rep.add_argument("files", nargs="+")
    rep.add_argument("--recall", type=float, default=0.95)
    rep.add_argument("--ours", default="vecdb", help="the target the ratios are relative to")
    for p in (own, peer, rep):
        p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    runner = {"own": run_own, "peer": run_peer, "report": run_report}[args.cmd]
    result = runner(args)
    result["command"] = " ".join([Path(sys.executable).name, "bench/database.py"] + (argv or sys.argv[1:]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
