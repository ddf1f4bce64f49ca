"""Server mode of ``vecdb bench run --target grpc://HOST:PORT``: the dataset is loaded into a
running ``vecdb serve`` (or a collection already holding it is reused) and searched by C
concurrent clients, each over its own connection, so users measure what they deploy."""
from __future__ import annotations

import re
import threading
import time
from typing import Any, ClassVar

import numpy as np

from vecdb.bench.adapters.base import Target
from vecdb.bench.adapters.hnsw import SEED as HNSW_SEED
from vecdb.bench.measure import Timing
from vecdb.errors import (CollectionNotFoundError, FailedPreconditionError, InvalidArgumentError, UnavailableError,
                          VecdbError)
from vecdb.types import F32Matrix, Metric

_URL = re.compile(r"^grpc://([^/:\s]+|\[[0-9a-fA-F:]+\]):(\d{1,5})/?$")
#: rows per upsert call while loading
LOAD_BATCH = 5000
#: seconds any one loading call (upsert, wait for the index) may take
LOAD_TIMEOUT_S = 3600.0
#: seconds one search call may take
SEARCH_TIMEOUT_S = 120.0
#: index kinds a server target can create, with the build and search knobs each reads
INDEXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {"hnsw": (("M", "ef_construction"), ("ef",)),
                                                                 "flat": ((), ())}


def parse_url(url: str) -> str:
    """``grpc://HOST:PORT`` -> ``HOST:PORT`` (InvalidArgumentError otherwise)."""
    m = _URL.match(url)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise InvalidArgumentError(f"--target must look like grpc://HOST:PORT, got {url!r}")
    return f"{m.group(1)}:{m.group(2)}"


def target_class(url: str, index: str) -> type["ServerTarget"]:
    """A ServerTarget class for ``url`` and ``index`` (its name is the URL; not registered)."""
    address = parse_url(url)
    if index not in INDEXES:
        raise InvalidArgumentError(f"--server-index must be one of {sorted(INDEXES)}, got {index!r}")
    build, search = INDEXES[index]
    return type("ServerTarget", (ServerTarget,), {"name": url, "address": address, "index_kind": index,
                                                 "build_knobs": build, "search_knobs": search,
                                                 "algorithm": "ann" if index == "hnsw" else "exact"})


class ServerTarget(Target):
    """A collection on a running server, loaded under row numbers as ids (or reused)."""

    address: ClassVar[str] = ""
    index_kind: ClassVar[str] = "hnsw"
    build_knobs: ClassVar[tuple[str, ...]] = ()
    #: collection name (default: from the data's hash, index and build knobs); set before build
    collection: str | None = None
    #: the base rows' sha256 (names the default collection)
    data_hash: str = ""

    def __init__(self, metric: Metric, dim: int, build_params: dict[str, Any]) -> None:
        super().__init__(metric, dim, build_params)
        self.reused = False
        self.load_s: float | None = None

    def _index_params(self) -> dict[str, Any]:
        if self.index_kind != "hnsw":
            return {}
        return {**{k: int(v) for k, v in self.build_params.items()}, "seed": HNSW_SEED}

    def collection_name(self) -> str:
        if self.collection:
            return self.collection
        knobs = "".join(f"-{k}{v}" for k, v in sorted(self.build_params.items()))
        return f"bench-{self.data_hash[:16]}-{self.index_kind}{knobs}"

    def _connect(self, timeout: float) -> Any:
        import vecdb

        return vecdb.connect(self.address, timeout=timeout)

    def build(self, base: F32Matrix) -> None:
        """Reuse the collection when it holds these rows, else create and load it."""
        self.db = self._connect(LOAD_TIMEOUT_S)
        name = self.collection_name()
        t0 = time.perf_counter()
        try:
            try:
                self.col = self.db.get_collection(name)
                self._check_reusable(len(base))
                self.reused = True
            except CollectionNotFoundError:
                self.col = self.db.create_collection(name, self.dim, metric=self.metric.value, index=self.index_kind,
                                                     index_params=self._index_params())
                for b0 in range(0, len(base), LOAD_BATCH):
                    rows = np.arange(b0, min(len(base), b0 + LOAD_BATCH))
                    self.col.upsert(rows, np.ascontiguousarray(base[rows]))
            self.col.wait_indexed()
        except UnavailableError as exc:
            self.db.close()
            raise UnavailableError(f"cannot reach the vecdb server at {self.address} ({exc}); "
                                   "is `vecdb serve` running there?") from None
        self.load_s = time.perf_counter() - t0

    def _check_reusable(self, n: int) -> None:
        info, stats = self.col.info, self.col.stats()
        if info.dim != self.dim or info.metric != self.metric.value or info.index != self.index_kind \
                or stats.count != n:
            raise FailedPreconditionError(
                f"collection {info.name!r} on {self.address} holds {stats.count} x {info.dim} {info.metric} "
                f"{info.index} points, not this dataset's {n} x {self.dim} {self.metric.value} {self.index_kind}; "
                "drop it or pass another --collection")

    def build_info(self) -> dict[str, Any]:
        return {"server": {"address": self.address, "collection": self.collection_name(), "index": self.index_kind,
                           "reused": self.reused}}

    def search(self, queries: F32Matrix, k: int, params: dict[str, Any], allow: np.ndarray | None = None) -> np.ndarray:
        knobs = {key: params[key] for key in self.search_knobs if key in params}
        return np.asarray(self.col.search(queries, k=k, params=knobs).ids, np.int64)

    def memory_bytes(self) -> int:
        return int(self.col.stats().memory_bytes)

    def disk_bytes(self) -> int | None:
        return int(self.col.stats().disk_bytes)

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()

    def time_concurrent(self, queries: F32Matrix, k: int, params: dict[str, Any], batch: int,
                        clients: int) -> Timing:
        """Every query once, in calls of ``batch`` rows shared out among ``clients`` threads that
        each hold their own connection; per-call latencies, wall time over all."""
        knobs = {key: params[key] for key in self.search_knobs if key in params}
        starts = list(range(0, len(queries), max(1, batch)))
        ids = np.full((len(queries), k), -1, np.int64)
        lat = np.zeros(len(starts))
        errors: list[BaseException] = []
        conns = [self._connect(SEARCH_TIMEOUT_S) for _ in range(clients)]
        try:
            cols = [db.get_collection(self.col.name) for db in conns]
            for c in cols:  # each connection warmed up (channel set-up) outside the timed part
                c.search(queries[:1], k=k, params=knobs)
            go = threading.Barrier(clients + 1)

            def client(j: int) -> None:
                go.wait()
                for i in range(j, len(starts), clients):
                    block = queries[starts[i] : starts[i] + batch]
                    t0 = time.perf_counter()
                    try:
                        got = np.asarray(cols[j].search(block, k=k, params=knobs).ids, np.int64)
                    except VecdbError as exc:
                        errors.append(exc)
                        return
                    lat[i] = time.perf_counter() - t0
                    ids[starts[i] : starts[i] + len(block), : got.shape[1]] = got[:, :k]

            threads = [threading.Thread(target=client, args=(j,)) for j in range(clients)]
            for t in threads:
                t.start()
            go.wait()
            t_all = time.perf_counter()
            for t in threads:
                t.join()
            total = time.perf_counter() - t_all
        finally:
            for db in conns:
                db.close()
        if errors:
            raise errors[0]
        return Timing(ids, lat, total, batch)
