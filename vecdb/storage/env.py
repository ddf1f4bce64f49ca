"""The LMDB environment of one database: named sub-databases, short read transactions, write
transactions that grow the map and retry instead of failing at the size limit.

Rules kept here (py-lmdb manual, "Transaction management", "Handling database growth"):
  - every transaction lives in a ``with`` block; read transactions are short;
  - ``set_mapsize`` needs no open transaction in this process, so every transaction holds a
    shared "gate" and growth takes it exclusively, between two attempts of the same batch;
  - a write batch is a function of the transaction, so it can be re-run after growth;
  - a thread holding a write transaction opens no other transaction (LMDB would deadlock on
    its writer lock, and a read would not see the batch): ``Store`` refuses it;
  - durability flags are chosen here only (see ``Store.__init__``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from vecdb.errors import DataLossError, InternalError, ResourceExhaustedError
from vecdb.storage.locks import RWLock
from vecdb.storage.pages import PageMap, root_of

T = TypeVar("T")
DEFAULT_MAP_SIZE = 1 << 30
DEFAULT_MAX_MAP_SIZE = 1 << 40


class Store:
    """One LMDB environment (a directory holding ``data.mdb`` and ``lock.mdb``).

    Parameters
    ----------
    path : directory of the environment; created when missing.
    map_size : initial map size in bytes. On 64-bit systems this is only a virtual address
        reservation; it doubles automatically (up to ``max_map_size``) when a write needs more.
    max_dbs : how many named sub-databases may exist (each collection uses a handful).
    max_readers : concurrent read transactions allowed (LMDB reader table slots).
    sync : fsync on every commit. True (the default) makes a commit durable before the call
        returns, which is what "acknowledged only after commit" means; False trades that
        for speed (a machine crash may lose the last commits, never corrupt the store).
    """

    def __init__(self, path: str | Path, *, map_size: int = DEFAULT_MAP_SIZE, max_map_size: int = DEFAULT_MAX_MAP_SIZE,
                 max_dbs: int = 4096, max_readers: int = 256, sync: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_map_size = int(max_map_size)
        try:
            # writemap/map_async stay off: a stray write through a writable map could corrupt
            # the store, and map_async would acknowledge commits before they reach the disk.
            # max_spare_txns=1: py-lmdb keeps one ended read transaction (reset, holding no
            # snapshot) and renews it on the next ``begin``; without it every read transaction
            # allocates a table sized by max_dbs (200 KB at 4,096) and scans the reader table:
            # 6.7 us against 1.5 us per begin + get + end (py-lmdb 3.0 caches none by default).
            self._env = lmdb.open(str(self.path), map_size=int(map_size), max_dbs=max_dbs, max_readers=max_readers,
                                  subdir=True, lock=True, sync=sync, metasync=sync, writemap=False, map_async=False,
                                  readahead=False, meminit=False, max_spare_txns=1)
        except lmdb.InvalidError as exc:
            raise DataLossError(f"{self.path} is not a valid LMDB environment: {exc}") from None
        except lmdb.Error as exc:
            raise DataLossError(f"cannot open LMDB environment at {self.path}: {exc}") from None
        self._gate = RWLock("lmdb-map", time_reads=False)   # held shared by every transaction; exclusive to grow the map
        self._dbi_lock = threading.Lock()
        self._dbs: dict[str, "lmdb._Database"] = {}
        self._local = _ThreadState()
        self._pages: PageMap | None = None

    # ---- sub-databases ---------------------------------------------------------------
    def db(self, name: str) -> "lmdb._Database":
        """Handle of the named sub-database ``name``, created when missing (handles are cached).

        LMDB allows only one transaction at a time to open handles, hence the lock.
        """
        handle = self._dbs.get(name)
        if handle is not None:
            return handle
        with self._dbi_lock:
            handle = self._dbs.get(name)
            if handle is None:
                key = name.encode("utf-8")
                handle = self._write(lambda txn: _open_db(self._env, txn, key), ride=False)
                self._dbs[name] = handle
            return handle

    def dbs(self, names: list[str]) -> dict[str, "lmdb._Database"]:
        """Handles of several sub-databases, the missing ones created in one transaction."""
        with self._dbi_lock:
            missing = [n for n in names if n not in self._dbs]
            if missing:
                opened = self._write(lambda txn: [_open_db(self._env, txn, n.encode("utf-8")) for n in missing],
                                     ride=False)
                self._dbs.update(zip(missing, opened))
            return {n: self._dbs[n] for n in names}

    def names(self, prefix: str) -> list[str]:
        """Names of the sub-databases starting with ``prefix``, sorted (each named sub-database
        has a record in LMDB's main database)."""
        start = prefix.encode("utf-8")
        found = []
        with self.read() as txn:
            cur = txn.cursor()
            if cur.set_range(start):
                for key in cur.iternext(values=False):
                    if not key.startswith(start):
                        break
                    found.append(bytes(key).decode("utf-8"))
        return found

    # ---- pages read in kernels (``pages``) ----------------------------------------------
    def page_map(self) -> PageMap:
        """The read-only map of this environment's data file that kernels walk LMDB's B-trees
        in (``vecdb.storage.pages``); made on first use."""
        pages = self._pages
        if pages is None:
            with self._dbi_lock:
                if self._pages is None:
                    self._pages = PageMap(self.path / "data.mdb", int(self._env.stat()["psize"]))
                pages = self._pages
        return pages

    @staticmethod
    def root(txn: lmdb.Transaction, name: str) -> int | None:
        """The root page of sub-database ``name`` in the snapshot of the read transaction
        ``txn`` (-1: empty), from its record in the main database; None when ``pages`` does
        not read it (a key order other than bytes, or no such sub-database)."""
        return root_of(txn.get(name.encode("utf-8")))

    def forget(self, names: list[str]) -> None:
        """Drop the cached handles of sub-databases deleted by ``drop_in``."""
        for name in names:
            self._dbs.pop(name, None)

    @staticmethod
    def drop_in(txn: lmdb.Transaction, handle: "lmdb._Database") -> None:
        """Delete a sub-database and its contents inside the write transaction ``txn``."""
        txn.drop(handle, delete=True)

    # ---- transactions ----------------------------------------------------------------
    def read(self, *, buffers: bool = False) -> "_Read":
        """A short read-only transaction (a consistent snapshot), for a ``with`` block. With
        ``buffers=True`` values are memoryviews valid only inside the block: copy what must
        outlive it."""
        return _Read(self._local, self._gate, self._env, buffers)

    def write(self, batch: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``batch(txn)`` in one write transaction and commit it; returns its result.

        The batch is all-or-nothing: if it raises, nothing is written. When the map is full
        the attempt is aborted, the map grows, and ``batch`` runs again on a fresh
        transaction, so it must only depend on its inputs and ``txn``. Inside ``batch`` the
        thread opens no other transaction (InternalError; nothing is written).
        """
        return self._write(batch, ride=True)

    @contextmanager
    def riding(self, handle: "lmdb._Database", key: bytes, value: bytes) -> Iterator[list[int]]:
        """Inside the block, every write transaction this thread commits (but those opening
        sub-database handles) also puts ``key -> value`` into ``handle``: a record that
        changes atomically with the thread's writes. Yields ``[commits that carried it]``."""
        local = self._local
        if local.rider is not None:
            raise InternalError("riding blocks do not nest")
        count = [0]
        local.rider = (handle, key, value, count)
        try:
            yield count
        finally:
            local.rider = None

    def _write(self, batch: Callable[[lmdb.Transaction], T], *, ride: bool) -> T:
        local = self._local
        if local.writing:
            raise InternalError("a write transaction was opened inside another one of the same thread "
                                "(LMDB would deadlock); write through the open transaction")
        local.writing = True
        try:
            while True:
                try:
                    with self._gate.read():
                        with self._env.begin(write=True) as txn:
                            result = batch(txn)
                            rider = local.rider if ride else None
                            if rider is not None:
                                txn.put(rider[1], rider[2], db=rider[0])
                        if rider is not None:
                            rider[3][0] += 1
                        return result
                except lmdb.MapFullError:
                    self._grow()
        finally:
            local.writing = False

    def _grow(self) -> None:
        with self._gate.write():
            current = int(self._env.info()["map_size"])
            if current >= self.max_map_size:
                raise ResourceExhaustedError(
                    f"LMDB map is full at {current} bytes and may not grow past max_map_size={self.max_map_size}")
            try:
                self._env.set_mapsize(min(current * 2, self.max_map_size))
            except lmdb.Error as exc:
                raise ResourceExhaustedError(f"cannot grow LMDB map beyond {current} bytes: {exc}") from None

    # ---- figures and maintenance -----------------------------------------------------
    def map_size(self) -> int:
        """Current map size in bytes."""
        return int(self._env.info()["map_size"])

    def used_bytes(self, names: list[str]) -> int:
        """Bytes of pages used by the named sub-databases (branch + leaf + overflow pages)."""
        total = 0
        with self.read() as txn:
            for name in names:
                handle = self._dbs.get(name)
                if handle is None:
                    continue
                st = txn.stat(handle)
                total += (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]
        return int(total)

    def file_bytes(self) -> int:
        """Size of ``data.mdb`` on disk."""
        try:
            return (self.path / "data.mdb").stat().st_size
        except OSError:
            return 0

    def copy_to(self, path: str | Path) -> None:
        """Write a compacted, consistent copy of the environment into directory ``path``
        (LMDB copies from one read snapshot, so writers keep running)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        with self._gate.read():
            self._env.copy(str(path), compact=True)

    def close(self) -> None:
        """Close the environment; every handle becomes invalid."""
        with self._gate.write():
            self._dbs.clear()
            self._pages = None               # its map closes when the last array of it goes
            self._env.close()


class _ThreadState(threading.local):
    """What a Store keeps per thread: ``writing`` (inside ``write``) and ``rider`` (see
    ``riding``). Class defaults, so a thread that never set them reads them without the
    AttributeError a ``getattr`` default costs (~0.85 us, on every search)."""

    writing = False
    rider: Any = None


class _Read:
    """One ``Store.read`` block: the gate held shared, a read transaction begun on entry and
    ended on exit (a plain context manager: a one-query search opens one, and a generator's
    context manager costs ~2 us more)."""

    __slots__ = ("_local", "_gate", "_env", "_buffers", "_since", "_txn")

    def __init__(self, local: _ThreadState, gate: RWLock, env: lmdb.Environment, buffers: bool) -> None:
        self._local = local
        self._gate = gate
        self._env = env
        self._buffers = buffers

    def __enter__(self) -> lmdb.Transaction:
        if self._local.writing:
            raise InternalError("a read transaction was opened inside a write transaction of the same thread; "
                                "read through the write transaction")
        gate = self._gate
        since = self._since = gate.enter_shared()
        try:
            txn = self._txn = self._env.begin(write=False, buffers=self._buffers)
        except BaseException:
            gate.exit_shared(since)
            raise
        return txn

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()                  # a read transaction writes nothing: end it either way
        finally:
            self._gate.exit_shared(self._since)


def _open_db(env: lmdb.Environment, txn: lmdb.Transaction, key: bytes) -> "lmdb._Database":
    """Open (creating) the named sub-database ``key`` in ``txn``; ResourceExhaustedError when
    the environment's table of names (``max_dbs``) is full."""
    try:
        return env.open_db(key, txn=txn, create=True)
    except lmdb.DbsFullError:
        raise ResourceExhaustedError(f"cannot create LMDB sub-database {key.decode('utf-8', 'replace')!r}: the "
                                     "environment holds as many as it was opened for (max_dbs)") from None
