"""The embedded database: a directory holding one LMDB environment and index checkpoints.

Layout of ``path/``::

    LOCK                       held (flock) while a process has the database open
    lmdb/data.mdb, lock.mdb    the environment: sub-databases ``meta`` (format version,
                               next collection number, marks), ``collections`` (name -> JSON
                               CollectionInfo + number), ``manifest`` (collection number ->
                               JSON newest index checkpoint and its write sequence), and
                               per collection ``c<number>.{ids,rev,vec,vblk,pay,pblk,ten,mem,log,ctr}``
                               and, for an index that persists itself, its own
                               ``c<number>.x<generation>.<name>`` (a snapshot copies them all)
    index/c<number>/<seq>/     index checkpoints written by ``Index.save``

Each collection is handed a ``CollectionHost`` (the store, the manifest handle, the
checkpoint lock, the index folder and the checkpoint policy) and reads nothing else of the
database; the op log ``log`` holds the records of ``vecdb.collection.oplog``.

A database may be open once at a time: a second open in the same process or in another
process raises FailedPreconditionError (LMDB forbids opening one environment twice in a
process, and two writers' in-memory indexes would diverge).

Loading a collection (index checkpoint, replay) can take long, so it runs outside the
database-wide lock: one thread loads, others asking for the same name wait for it, and
calls about other collections go on. Drop and close wait for loads in progress.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from vecdb.api import CollectionInfo, default_index
from vecdb.collection import PARTS, CheckpointPolicy, Collection, CollectionHost
from vecdb.collection.layout import (DEFAULT_MAX_PENDING, DEFAULT_SERVING_REST, checkpoint_root, index_space_prefix,
                                     part_names)
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, DataLossError, FailedPreconditionError,
                          InvalidArgumentError, ResourceExhaustedError, VecdbError)
from vecdb.index.base import index_class
from vecdb.storage import keys as K
from vecdb.storage.arrays import decode_json, encode_json
from vecdb.storage.env import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, Store
from vecdb.storage.space import MAX_SPACE_DBS
from vecdb.types import Metric
from vecdb.validation import as_finite_float, as_fs_path, as_positive_int

#: version 2 stores each upsert batch's new points as one vector block and one payload block
#: (``vecdb.collection.blocks``); a version-1 database (a record per point) opens unchanged and
#: is marked version 2 at open, as its new batches are written as blocks (an older vecdb then
#: refuses it by its version instead of missing the blocks)
FORMAT = {"format": "vecdb-db", "version": 2}
READS_VERSIONS = (1, 2)
_MARK = b"mark/"   # key prefix of the marks in ``meta``
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # always used with fullmatch
_OPEN: set[str] = set()
_OPEN_LOCK = threading.Lock()


class Database:
    """The embedded implementation of ``vecdb.api.DatabaseAPI``; create with ``vecdb.open``."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
                 max_map_size: int = DEFAULT_MAX_MAP_SIZE, sync: bool = True, max_readers: int = 256,
                 max_collections: int = 500, checkpoint_points: int = 100_000,
                 checkpoint_seconds: float = 600.0, max_pending: int = DEFAULT_MAX_PENDING,
                 serving_rest: float = DEFAULT_SERVING_REST) -> None:
        max_pending = as_positive_int(max_pending, "max_pending")   # before anything is created
        serving_rest = as_finite_float(serving_rest, "serving_rest")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InvalidArgumentError(f"{self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._key = os.path.realpath(self.path)
        self._max_collections = int(max_collections)
        policy = CheckpointPolicy(points=int(checkpoint_points), seconds=float(checkpoint_seconds))
        with _OPEN_LOCK:
            if self._key in _OPEN:
                raise FailedPreconditionError(f"database {self.path} is already open in this process")
            _OPEN.add(self._key)
        self._lock_fd = -1
        try:
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FailedPreconditionError(f"database {self.path} is open in another process") from None
            # names: each collection's parts and its index's own sub-databases (one spare space
            # for the next generation while an index is rebuilt), plus meta/collections/manifest
            self._store = Store(self.path / "lmdb", map_size=map_size, max_map_size=max_map_size,
                                max_dbs=(len(PARTS) + MAX_SPACE_DBS) * max_collections + MAX_SPACE_DBS + 3,
                                max_readers=max_readers, sync=sync)
            self._meta = self._store.db("meta")
            self._catalog = self._store.db("collections")
            self._manifest = self._store.db("manifest")
            self._check_format()
        except BaseException:
            self._release()
            raise
        self._index_root = self.path / "index"
        self._index_root.mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._ckpt_lock = threading.Lock()
        # what every collection is handed explicitly (it reads nothing else of the database)
        self._host = CollectionHost(store=self._store, manifest=self._manifest, checkpoint_lock=self._ckpt_lock,
                                    index_root=self._index_root, policy=policy, max_pending=max_pending,
                                    serving_rest=serving_rest)
        self._collections: dict[str, Collection] = {}
        self._loading: dict[str, _Loading] = {}
        self._closed = False

    # ---- collections -----------------------------------------------------------------
    def create_collection(self, name: str, dim: int, metric: str = "cosine", index: str | None = None,
                          index_params: Mapping[str, Any] | None = None, id_type: str = "int",
                          multi_tenant: bool = False) -> Collection:
        """Create and return a new collection; AlreadyExistsError if the name is taken.
        ``index`` None: "hnsw", or "curator" when ``multi_tenant`` (``vecdb.api.default_index``)."""
        info = validate_info(name, dim, metric, index, index_params, id_type, multi_tenant)
        with self._lock:
            self._check()
            key = name.encode("utf-8")
            with self._store.read() as txn:
                if txn.get(key, db=self._catalog) is not None:
                    raise AlreadyExistsError(f"collection {name!r} already exists")
                raw = txn.get(b"next_cid", db=self._meta)
            cid = 0 if raw is None else K.read_u64(raw)
            if len(self.list_collections()) >= self._max_collections:
                raise ResourceExhaustedError(f"at most {self._max_collections} collections per database "
                                             f"(open with a larger max_collections)")
            record = encode_json({"cid": cid, "name": info.name, "dim": info.dim, "metric": info.metric,
                                  "index": info.index, "index_params": info.index_params, "id_type": info.id_type,
                                  "multi_tenant": info.multi_tenant})

            def batch(txn: Any) -> None:
                txn.put(key, record, db=self._catalog)
                txn.put(b"next_cid", K.u64(cid + 1), db=self._meta)

            self._store.write(batch)
            col = Collection(self._host, info, cid)
            self._collections[name] = col
            return col

    def get_collection(self, name: str) -> Collection:
        """The collection named ``name`` (loaded on first use); CollectionNotFoundError if none."""
        if not isinstance(name, str):
            raise InvalidArgumentError(f"collection name must be a string, got {type(name).__name__}")
        with self._lock:
            self._check()
            col = self._collections.get(name)
            if col is not None and not col.failed:
                return col
            loading = self._loading.get(name)
            if loading is None:
                info, cid = self._lookup(name)
                loading = self._loading[name] = _Loading()
                mine = True
            else:
                mine = False
        if not mine:
            return loading.wait()
        try:
            col = Collection(self._host, info, cid)  # without the database lock: may take long
        except BaseException as exc:
            with self._lock:
                del self._loading[name]
            loading.finish(None, exc)
            raise
        with self._lock:
            del self._loading[name]
            self._collections[name] = col
        loading.finish(col, None)
        return col

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection's CollectionInfo, sorted by name."""
        self._check()
        with self._store.read() as txn:
            return [_info_of(decode_json(v))[0] for _, v in txn.cursor(self._catalog).iternext()]

    def point_counts(self) -> dict[str, int]:
        """Points per collection name, read from LMDB's entry counts without loading any
        collection (for ``/metrics``: a scrape must not build indexes)."""
        with self._lock:  # no drop in between, which would re-create a dropped sub-database
            self._check()
            with self._store.read() as txn:
                cids = {i.name: cid for i, cid in (_info_of(decode_json(v)) for _, v in txn.cursor(self._catalog).iternext())}
            handles = self._store.dbs([part_names(cid)["ids"] for cid in cids.values()])
            with self._store.read() as txn:
                return {name: int(txn.stat(handles[part_names(cid)["ids"]])["entries"]) for name, cid in cids.items()}

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its data; CollectionNotFoundError if none."""
        while True:
            with self._lock:
                self._check()
                pending = self._loading.get(name) if isinstance(name, str) else None
                if pending is None:
                    self._drop_now(name)
                    return
            pending.done.wait()  # a load reads the sub-databases about to be dropped

    def _drop_now(self, name: str) -> None:
        """``drop_collection`` once no load of ``name`` is in progress (caller holds the lock)."""
        _info, cid = self._lookup(name)
        col = self._collections.pop(name, None)
        if col is not None:
            col.mark_dropped()
        names = list(part_names(cid).values()) + self._store.names(index_space_prefix(cid))
        handles = list(self._store.dbs(names).values())

        def batch(txn: Any) -> None:
            txn.delete(name.encode("utf-8"), db=self._catalog)
            txn.delete(K.u32(cid), db=self._manifest)
            for handle in handles:
                Store.drop_in(txn, handle)

        self._store.write(batch)
        self._store.forget(names)
        shutil.rmtree(checkpoint_root(self._index_root, cid), ignore_errors=True)

    # ---- marks -----------------------------------------------------------------------
    @contextmanager
    def marking(self, name: str, value: bytes) -> Iterator[None]:
        """Record ``value`` as mark ``name`` atomically with every write this thread commits
        in the block (or, when none did, alone once the block ends without an exception):
        e.g. the number of the last write a cluster replica applied. Snapshots keep marks."""
        key = _mark_key(name)
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidArgumentError(f"a mark's value must be bytes, got {type(value).__name__}")
        self._check()
        with self._store.riding(self._meta, key, bytes(value)) as carried:
            yield
        if not carried[0]:
            self._store.write(lambda txn: txn.put(key, bytes(value), db=self._meta))

    def mark(self, name: str) -> bytes | None:
        """The value last recorded as mark ``name`` (``marking``), None if never."""
        key = _mark_key(name)
        self._check()
        with self._store.read() as txn:
            raw = txn.get(key, db=self._meta)
        return None if raw is None else bytes(raw)

    # ---- maintenance -----------------------------------------------------------------
    def snapshot(self, path: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the database into ``path`` (missing or empty) while
        serving: searches and writes continue; only index checkpointing waits. The copy is a
        database of its own; opening it replays writes newer than its checkpoints."""
        target = Path(as_fs_path(path, what="snapshot path"))
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InvalidArgumentError(f"snapshot target {target} must be missing or an empty directory")
        with self._ckpt_lock:
            self._check()
            target.mkdir(parents=True, exist_ok=True)
            self._store.copy_to(target / "lmdb")
            shutil.copytree(self._index_root, target / "index", ignore=shutil.ignore_patterns(".*"))

    def close(self) -> None:
        """Checkpoint changed collections and close the store; further calls raise
        FailedPreconditionError. Closing twice is harmless. Waits for loads in progress."""
        while True:
            with self._lock:
                if self._closed:
                    return
                pending = next(iter(self._loading.values()), None)
                if pending is None:
                    self._close_now()
                    return
            pending.done.wait()  # a load reads the store this closes

    def _close_now(self) -> None:
        """``close`` once no load is in progress (caller holds the lock)."""
        try:
            for col in self._collections.values():
                col.shutdown()
        finally:
            self._closed = True
            self._collections.clear()
            self._store.close()
            self._release()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r}{', closed' if self._closed else ''})"

    # ---- internals -------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise FailedPreconditionError(f"database {self.path} is closed")

    def _lookup(self, name: str) -> tuple[CollectionInfo, int]:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CollectionNotFoundError(f"no collection named {name!r}")
        with self._store.read() as txn:
            raw = txn.get(name.encode("utf-8"), db=self._catalog)
        if raw is None:
            raise CollectionNotFoundError(f"no collection named {name!r}")
        return _info_of(decode_json(raw))

    def _check_format(self) -> None:
        with self._store.read() as txn:
            raw = txn.get(b"format", db=self._meta)
        if raw is None:
            record = encode_json(FORMAT)
            self._store.write(lambda txn: txn.put(b"format", record, db=self._meta))
            return
        found = decode_json(raw)
        if not isinstance(found, dict) or found.get("format") != FORMAT["format"] \
                or found.get("version") not in READS_VERSIONS:
            raise DataLossError(f"{self.path} holds format {found}, this vecdb reads {FORMAT['format']!r} "
                                f"versions {list(READS_VERSIONS)}")
        if found != FORMAT:
            record = encode_json(FORMAT)
            self._store.write(lambda txn: txn.put(b"format", record, db=self._meta))

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        with _OPEN_LOCK:
            _OPEN.discard(self._key)


def _mark_key(name: Any) -> bytes:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a mark's name must be a non-empty string, got {name!r:.80}")
    return _MARK + name.encode("utf-8")


class _Loading:
    """A collection being loaded by one thread; other threads asking for it wait here."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._result: Collection | None = None
        self._error: BaseException | None = None

    def finish(self, result: Collection | None, error: BaseException | None) -> None:
        self._result, self._error = result, error
        self.done.set()

    def wait(self) -> Collection:
        """The loaded collection, or the loader's exception raised again."""
        self.done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def validate_info(name: Any, dim: Any, metric: Any, index: Any, index_params: Any, id_type: Any,
                   multi_tenant: Any = False) -> CollectionInfo:
    """Check create_collection arguments (including that the index accepts its parameters)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(f"collection name must be 1-128 characters of letters, digits, '_', '.', '-' "
                                   f"starting with a letter or digit; got {name!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
        raise InvalidArgumentError(f"dim must be an integer in 1..65536, got {dim!r}")
    m = Metric.parse(metric)
    if m is Metric.HAMMING:
        raise InvalidArgumentError("collections store float vectors; metric must be cosine, l2 or ip")
    if multi_tenant is not True and multi_tenant is not False:
        raise InvalidArgumentError(f"multi_tenant must be True or False, got {multi_tenant!r:.80}")
    if index is None:
        index = default_index(multi_tenant)
    cls = index_class(index)
    if id_type not in ("int", "str"):
        raise InvalidArgumentError(f"id_type must be 'int' or 'str', got {id_type!r}")
    if index_params is None:
        index_params = {}
    if not isinstance(index_params, Mapping) or not all(isinstance(k, str) for k in index_params):
        raise InvalidArgumentError(f"index_params must be a dict, got {index_params!r}")
    params = dict(index_params)
    info = CollectionInfo(name=name, dim=int(dim), metric=m.value, index=index, index_params=params, id_type=id_type,
                          multi_tenant=multi_tenant)
    try:
        encode_json(params)
        cls(int(dim), m, **params)
    except VecdbError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"index {index!r} rejects index_params {params}: {exc}") from None
    return info


def _info_of(record: dict[str, Any]) -> tuple[CollectionInfo, int]:
    try:
        info = CollectionInfo(name=record["name"], dim=int(record["dim"]), metric=record["metric"],
                              index=record["index"], index_params=dict(record["index_params"]), id_type=record["id_type"],
                              multi_tenant=bool(record.get("multi_tenant", False)))
        return info, int(record["cid"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataLossError(f"corrupt collection record {record!r}: {exc}") from None


def open(path: str | os.PathLike[str], **options: Any) -> Database:  # noqa: A001 - the public name is vecdb.open
    """Open (creating when missing) the database in directory ``path``.

    Options (keyword): ``map_size`` (initial LMDB map, grows automatically), ``max_map_size``,
    ``sync`` (fsync each commit; default True = every acknowledged write is durable),
    ``max_readers``, ``max_collections``, ``checkpoint_points`` / ``checkpoint_seconds``
    (index checkpoint policy), ``max_pending`` (per collection, how many written points may
    wait for the background indexer, searched exactly meanwhile, before writers wait for it:
    the bound on that buffer's memory, about 4 * dim bytes per point; default 200,000),
    ``serving_rest`` (while searches are served, the background indexer works in ~1 ms chunks
    and rests this many times as long after each, leaving the searches most of the memory
    bandwidth: a lower tail under writers, for a slower indexer meanwhile, and under a replacing
    writer a higher median, as replaced entries stay hidden for longer; 0 never rests; default
    1.0). Use as ``with vecdb.open(path) as db: ...``.
    """
    return Database(path, **options)
