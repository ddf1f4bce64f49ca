"""A collection: points (user id, vector, JSON payload, tenants) stored durably in LMDB, with
an in-memory index, payload indexes and tenant sets that mirror the committed store.

Durability: every upsert / delete / grant / revoke / tenant change is one LMDB write
transaction; a change the index must see (points written or deleted, tenants created or
dropped, memberships gained or lost) also bumps the collection's write sequence and appends
an op record to the log (``oplog``). Memory is updated only after the commit, in one short
step under the collection's exclusive lock that publishes the whole batch (staged: searched
exactly, stale index entries hidden), and the write returns then: a search issued after it
sees it. The collection's background indexer (a ``vecdb.worker.Worker``, a daemon thread started on the
first write) moves staged rows into the index in bounded exclusive steps (``apply``), trains
the index when due and saves checkpoints; when more than ``max_pending`` points wait, writers
wait for it (back-pressure). ``wait_indexed`` waits until nothing is staged. Index
checkpoints are recorded with their sequence number in the manifest; opening loads the
newest checkpoint and replays the log written since (``recovery``): the replayed points are
staged and indexed in the background, so opening does not wait for the index.

Locks, always taken in this order: ``_writer`` (one writer at a time; the indexer takes it
to train or checkpoint, when memory must equal the store), ``_indexing`` (whoever changes
the index: the indexer's steps and ``reserve``, and a writer whose publishing step changes
the index too: a tenant-aware one or one that persists itself), then the readers-writer lock
``_rw`` (exclusive for each short step that changes memory, staged work included).
An index that persists itself (persistence "self") instead writes each batch into its own
sub-databases inside the batch's transaction, before the commit (``spaces``); it is loaded
from them, never checkpointed to a folder nor replayed, and a build or training writes it
whole into a new generation of sub-databases while the old index keeps serving.

Internal ids are dense int64 numbers handed out in order and never reused; the index, the
payload indexes and the tenant sets work on them (the index stores them as its ids: one id
space), and only the id records and ``uid_of`` know user ids.

An index that needs training (pq, binary, sq8) is stood in for by an exact scan of the
stored vectors until the collection holds ``index.min_train_points`` points; then the indexer
trains it on a seeded sample of the stored vectors and builds it in one go (searches keep
being served by the exact scan meanwhile) and checkpoints it. ``train()`` does the same on
request, for any index kind.

Tenants and owners (the semantics are documented in ``vecdb.api``): each membership record
holds an access level, owner / write grant / read grant. Every check of a tenant's access
runs inside the write lock, against the same state the write then commits, so two tenants
racing for the same new id cannot both win. A get answers an id the tenant cannot see
exactly as a missing one. Requests are validated before any access check.

A committed batch never makes points unreachable: if applying it to memory fails, memory is
rebuilt from the store, degrading to an exact scan or to unindexed payloads where the index
or the payload index cannot take the points.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from vecdb import calls
from vecdb.api import (CollectionInfo, CollectionStats, GetResult, Payload, QueryResult, SearchRequest, check_tenant,
                       check_tenants)
from vecdb.collection import blocks, oplog
from vecdb.collection.apply import (MIN_STEP_ROWS, apply_delete, apply_upsert, compact_payloads, deletion_ops, drain,
                                    hand_ops, next_step_rows)
from vecdb.collection.checkpoint import Checkpoints
from vecdb.worker import Worker
from vecdb.collection.layout import OWNER, READ, WRITE, CollectionHost, part_names
from vecdb.collection.memory import Memory
from vecdb.collection.points import StoredPoints
from vecdb.collection.recovery import Recovery
from vecdb.collection.idkeys import id_keys
from vecdb.collection.export import ExportedPoints, Select, read_points, stored_keys
from vecdb.collection.search import run_search
from vecdb.collection.spaces import IndexSpaces, index_batch, persist
from vecdb.collection.tenants import TenantSet
from vecdb.collection.training import build_index, configured_class
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, DataLossError, FailedPreconditionError,
                          IdNotFoundError, InternalError, InvalidArgumentError, PermissionDeniedError,
                          TenantNotFoundError, UnavailableError)
from vecdb.filters import Shape, check_payloads_shaped
from vecdb.storage import keys as K
from vecdb.storage.arrays import encode_checked_json_many, row_views
from vecdb.storage.files import dir_bytes
from vecdb.storage.locks import RWLock
from vecdb.validation import as_matrix, as_positive_int

log = logging.getLogger(__name__)

#: longest the indexer moves staged rows before it looks at training / checkpoints again
ROUND_SECONDS = 0.25
#: target length of linking one batch of staged rows into an index that links while it is
#: searched (no lock held: it only bounds how long a deleted row's new entry may linger)
LINK_SECONDS = 0.1
MAX_LINK_ROWS = 8192
#: a due checkpoint waits until at most this many rows are staged (writers wait while the
#: indexer takes them before the save)
CHECKPOINT_BACKLOG = 10_000
#: while searches are served (one ran in the last SERVING_SECONDS), a writer waits until its
#: batch fits below this many staged points (``max_pending`` when smaller), or nothing is
#: staged: every search scans the staged points exactly, so this keeps the scan short (a
#: batch larger than it waits for the ones before it to be indexed, and a search then scans
#: at most one batch). 1M x 128, batches of 5,000, 4 searching threads: p99 under a full-speed
#: writer 9.5-10.4 ms this way, 11.3-12.3 ms when writers waited for 2,048 staged points
#: before adding theirs. A writer's steady rate is the indexer's either way; only the burst
#: absorbed meanwhile is smaller.
SERVING_PENDING = 4096
SERVING_SECONDS = 1.0
#: a search of more query rows runs in steps of this many, each under its own read lock, so a
#: writer waits for one step (tens of ms for a flat scan), never for a whole 10k-row batch
SEARCH_STEP_ROWS = 1024


class Collection:
    """The embedded implementation of ``vecdb.api.CollectionAPI``; get one from ``Database``."""

    def __init__(self, host: CollectionHost, info: CollectionInfo, cid: int) -> None:
        self._store = host.store
        self._info = info
        self._names = part_names(cid)
        handles = self._store.dbs(list(self._names.values()))
        self._h = {part: handles[name] for part, name in self._names.items()}
        self._points = StoredPoints(self._store, self._h, info)
        self._checkpoints = Checkpoints(host, cid, info, self._h["log"])
        self._spaces = IndexSpaces(self._store, cid, self._h["ctr"])
        self._own = configured_class(info).persistence == "self"   # the class says it; no index is built here
        self._recovery = Recovery(host, info, self._h, self._checkpoints, self._points, self._spaces)
        self._writer = threading.Lock()
        self._indexing = threading.Lock()
        self._publishing = threading.Condition()   # writers waiting to publish go before the next step
        self._publishers = 0
        self._rw = RWLock("collection")
        self._state = "open"
        self._step_rows = 256
        self._link_rows = 256
        self._max_pending = host.max_pending
        self._serving_rest = host.serving_rest
        self._last_search = -SERVING_SECONDS   # time.monotonic() of the latest search
        self._worker = Worker(info.name, self._index_round)
        with self._writer:
            self._mem: Memory = self._recovery.load()
        if self._mem.staging.busy:
            self._worker.wake()   # replayed batches are served staged and indexed in the background

    # ---- identity --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._info.name

    @property
    def info(self) -> CollectionInfo:
        return self._info

    @property
    def failed(self) -> bool:
        """True when memory could not be rebuilt after a failure (the database reloads it)."""
        return self._state == "failed"

    def __repr__(self) -> str:
        return f"Collection({self._info.name!r}, dim={self._info.dim}, metric={self._info.metric!r}, index={self._info.index!r})"

    # ---- writes ----------------------------------------------------------------------
    def upsert(self, ids: Sequence[int | str] | np.ndarray, vectors: Any,
               payloads: Sequence[Payload | None] | None = None, tenant: str | Sequence[str] | None = None) -> None:
        """Insert or replace points atomically; returns once the batch is committed to disk
        and searchable (the index takes it in the background: see ``wait_indexed``).

        A replaced point gets the new vector and payload (None clears it) and keeps its
        tenants. With ``tenant`` the write is scoped to that tenant (or tenants): new points
        are owned by it, and existing ones may be replaced only if it owns them or holds a
        write grant; otherwise AlreadyExistsError (ids it cannot see) or
        PermissionDeniedError (ids shared with it read-only). Raises InvalidArgumentError /
        DimensionMismatchError / TenantNotFoundError too; in every case nothing is written.
        """
        self._check()
        idkeys, uids = self._keys_of(ids, unique=True)
        if not idkeys:
            rows = _row_count(vectors)
            if rows:
                raise InvalidArgumentError(f"got {rows} vectors but no ids")
            return
        x = as_matrix(vectors, self._info.dim)
        n = len(idkeys)
        if len(x) != n:
            raise InvalidArgumentError(f"got {n} ids for {len(x)} vectors")
        shape: Shape | None = None   # the payloads' columns, when checked column-wise (the payload index takes them)
        if payloads is None:
            pays: list[dict[str, Any] | None] = [None] * n
        else:
            if isinstance(payloads, Mapping) or not isinstance(payloads, (list, tuple)):
                raise InvalidArgumentError("payloads must be a list with one dict (or None) per id")
            if len(payloads) != n:
                raise InvalidArgumentError(f"got {len(payloads)} payloads for {n} ids")
            pays, shape = check_payloads_shaped(payloads)
        pay_bytes = [None] * n if payloads is None else encode_checked_json_many(pays)
        tenant_names = check_tenants(tenant)
        with self._writing(n) as mem:
            tsets = [self._tenant(t) for t in tenant_names]
            h = self._h
            ascending = _ascending(idkeys)
            with self._store.read() as txn:
                found = _stored(txn.cursor(h["ids"]), idkeys, ascending)
            iids, is_new = self._assign_iids(idkeys, found, mem.next_iid)
            next_iid = mem.next_iid + int(is_new.sum())
            seq = mem.seq + 1
            new_rows = np.flatnonzero(is_new).tolist()
            old_rows = np.flatnonzero(~is_new).tolist()
            if tsets and old_rows:
                self._check_writable(tenant_names, tsets, [int(iids[i]) for i in old_rows], [uids[i] for i in old_rows])
            iid_keys = K.u64_many(iids)
            owner_keys = [K.u32(ts.number) + iid_keys[i] for ts in tsets for i in new_rows]
            vec_vals = row_views(x) if old_rows else []   # views of one buffer, no copy per row
            ops = [oplog.Op(oplog.POINTS, 0, iids)]
            if new_rows:
                ops += [oplog.Op(oplog.GRANT, ts.number, iids[new_rows]) for ts in tsets]
            record = oplog.encode(ops)
            for_index = self._for_index(seq, ids=iids, vectors=x, removed=iids[~is_new], membership=oplog.membership(ops))
            # the records' keys and values, built once (a batch may run again after the map
            # grows); the (key, value) pairs are zipped in the transaction, straight into
            # putmulti, which lets zip reuse one pair. The id records go in key order (each
            # page touched once), appended when they all sort after the stored ones.
            id_keys_new, id_vals_new = _in_key_order(idkeys, iid_keys, None if not old_rows else new_rows, ascending)
            # the new points' rows go into one block, their payloads into another (their
            # internal ids are consecutive); a replaced point's row and payload (b"": none)
            # into per-point records, which take precedence over its block rows
            first = int(iids[new_rows[0]]) if new_rows else 0
            block_key = blocks.block_key(first, len(new_rows)) if new_rows else b""
            vec_block = None if not new_rows else blocks.encode(x if not old_rows else x[new_rows])
            new_pays = pay_bytes if not old_rows else [pay_bytes[i] for i in new_rows]
            pay_block = None if not new_rows or new_pays.count(None) == len(new_pays) else \
                blocks.encode_payloads(new_pays)
            if not old_rows:
                rev_keys, rev_vals = iid_keys, idkeys
                vec_old: list[tuple[bytes, memoryview]] = []
                pay_old: list[tuple[bytes, bytes]] = []
            else:
                rev_keys = [iid_keys[i] for i in new_rows]
                rev_vals = [idkeys[i] for i in new_rows]
                vec_old = [(iid_keys[i], vec_vals[i]) for i in old_rows]
                pay_old = [(iid_keys[i], pay_bytes[i] or b"") for i in old_rows]

            def batch(txn: Any) -> None:
                # New internal ids are larger than every stored key, so their records are
                # appended (MDB_APPEND fills pages; sorted inserts would leave them half empty).
                _put_sorted(txn.cursor(h["ids"]), id_keys_new, id_vals_new)
                txn.cursor(h["rev"]).putmulti(zip(rev_keys, rev_vals), append=True)
                if vec_old:
                    txn.cursor(h["vec"]).putmulti(vec_old)
                if pay_old:
                    txn.cursor(h["pay"]).putmulti(pay_old)
                for part, value in (("vblk", vec_block), ("pblk", pay_block)):
                    if value is not None and not txn.put(block_key, value, db=h[part], append=True):
                        raise InternalError(f"collection {self.name!r}: the {part} block of internal ids from "
                                            f"{first} sorts before a stored one")
                if owner_keys:
                    txn.cursor(h["mem"]).putmulti([(key, OWNER) for key in owner_keys])
                txn.put(K.u64(seq), record, db=h["log"], append=True)
                txn.put(b"seq", K.u64(seq), db=h["ctr"])
                txn.put(b"next_iid", K.u64(next_iid), db=h["ctr"])
                for_index(txn)

            # the rows are copied into staging now, and the per-id arrays grown (after a reopen
            # they are full: an O(n) copy), readers searching: publishing them is O(batch)
            prepared = mem.staging.prepare(x, iids, known=iids[~is_new])
            mem.reserve(next_iid)
            self._commit(batch, lambda: apply_upsert(self._mem, iids, is_new, uids, x, pays, tsets, ops, seq, next_iid,
                                                     prepared, shape))

    def _assign_iids(self, idkeys: list[bytes], found: dict[bytes, bytes],
                     next_iid: int) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids of a batch's ``idkeys`` (``found``: the stored id records among them):
        the stored ones, and new ones from ``next_iid`` in batch order; and which are new."""
        n = len(idkeys)
        if not found:
            return np.arange(next_iid, next_iid + n, dtype=np.int64), np.ones(n, bool)
        is_new = np.fromiter(map(found.__contains__, idkeys), bool, n)
        np.logical_not(is_new, out=is_new)
        raw = b"".join([bytes(found[key]) for key in idkeys if key in found])
        if len(raw) != 8 * len(found):
            raise DataLossError(f"collection {self.name!r}: an id record does not hold an 8-byte internal id")
        iids = np.empty(n, np.int64)
        iids[~is_new] = np.frombuffer(raw, ">u8").astype(np.int64)
        iids[is_new] = np.arange(next_iid, next_iid + int(is_new.sum()), dtype=np.int64)
        return iids, is_new

    def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        """Delete the stored ones among ``ids``; returns how many left the caller's view.

        Without ``tenant`` every found point is deleted. With ``tenant``, points the tenant
        owns are deleted (for every tenant), points it was only granted lose that grant (they
        stay for the others), and ids it cannot see are ignored, like unknown ones."""
        self._check()
        idkeys, _ = self._keys_of(ids, unique=False)
        tenant_names = [] if tenant is None else [check_tenant(tenant)]
        with self._writing() as mem:
            tsets = [self._tenant(t) for t in tenant_names]
            h = self._h
            with self._store.read() as txn:
                found = dict(txn.cursor(h["ids"]).getmulti(list(dict.fromkeys(idkeys))))
            pairs = [(key, K.read_u64(v)) for key, v in found.items()]
            revoke: list[int] = []
            if tsets:
                levels = [(key, iid, tsets[0].level(iid)) for key, iid in pairs]
                revoke = sorted(iid for _, iid, level in levels if level is not None and level != OWNER)
                pairs = [(key, iid) for key, iid, level in levels if level == OWNER]
            if not pairs and not revoke:
                return 0
            iids = np.array([iid for _, iid in pairs], np.int64)
            seq = mem.seq + 1
            member_of = {iid: sorted(mem.tenants.of_point.get(iid, ())) for _, iid in pairs}
            lost: dict[int, list[int]] = {}
            for iid, numbers in member_of.items():
                for number in numbers:
                    lost.setdefault(number, []).append(iid)
            if revoke:
                lost.setdefault(tsets[0].number, []).extend(revoke)
            ops = deletion_ops(iids, lost)
            record = oplog.encode(ops)
            revoke_keys = [K.u32(tsets[0].number) + K.u64(iid) for iid in revoke]
            for_index = self._for_index(seq, removed=iids, membership=oplog.membership(ops))

            def batch(txn: Any) -> None:
                for key, iid in pairs:
                    ik = K.u64(iid)
                    txn.delete(key, db=h["ids"])
                    txn.delete(ik, db=h["rev"])
                    txn.delete(ik, db=h["vec"])
                    txn.delete(ik, db=h["pay"])
                    for number in member_of[iid]:
                        txn.delete(K.u32(number) + ik, db=h["mem"])
                for key in revoke_keys:
                    txn.delete(key, db=h["mem"])
                for part in ("vblk", "pblk"):   # blocks none of whose points is left
                    blocks.drop_dead(txn, h[part], h["rev"], iids)
                txn.put(K.u64(seq), record, db=h["log"], append=True)
                txn.put(b"seq", K.u64(seq), db=h["ctr"])
                for_index(txn)

            owner = tsets[0] if tsets else None
            self._commit(batch, lambda: apply_delete(self._mem, iids, revoke, owner, ops, seq))
            return len(pairs) + len(revoke)

    def create_tenant(self, tenant: str) -> None:
        """Create an empty tenant; AlreadyExistsError if it exists."""
        self._check()
        name = check_tenant(tenant)
        with self._writing() as mem:
            if name in mem.tenants:
                raise AlreadyExistsError(f"tenant {name!r} already exists in collection {self.name!r}")
            number, seq = mem.next_tenant, mem.seq + 1
            ops = [oplog.Op(oplog.CREATE, number)]
            record = oplog.encode(ops)
            h = self._h
            for_index = self._for_index(seq, membership=oplog.membership(ops))

            def batch(txn: Any) -> None:
                txn.put(name.encode("utf-8"), K.u32(number), db=h["ten"])
                txn.put(b"next_tenant", K.u64(number + 1), db=h["ctr"])
                txn.put(K.u64(seq), record, db=h["log"], append=True)
                txn.put(b"seq", K.u64(seq), db=h["ctr"])
                for_index(txn)

            def change() -> None:
                mem = self._mem
                mem.tenants.add(name, number)
                mem.next_tenant = number + 1
                self._membership_done(mem, ops, seq, 1)

            self._commit(batch, change)

    def drop_tenant(self, tenant: str) -> None:
        """Delete a tenant and all its memberships (the points stay)."""
        self._check()
        name = check_tenant(tenant)
        with self._writing() as mem:
            ts = self._tenant(name)
            seq = mem.seq + 1
            ops = [oplog.Op(oplog.DROP, ts.number)]
            record = oplog.encode(ops)
            h = self._h
            member_keys = [K.u32(ts.number) + K.u64(i) for i in sorted(ts.members)]
            for_index = self._for_index(seq, membership=oplog.membership(ops))

            def batch(txn: Any) -> None:
                txn.delete(name.encode("utf-8"), db=h["ten"])
                for key in member_keys:
                    txn.delete(key, db=h["mem"])
                txn.put(K.u64(seq), record, db=h["log"], append=True)
                txn.put(b"seq", K.u64(seq), db=h["ctr"])
                for_index(txn)

            def change() -> None:
                mem = self._mem
                mem.tenants.drop(name)
                self._membership_done(mem, ops, seq, 1 + len(member_keys))

            self._commit(batch, change)

    def list_tenants(self) -> list[str]:
        """Names of all tenants, sorted."""
        self._check()
        with self._rw.read():
            return self._mem.tenants.names()

    def grant(self, tenant: str, ids: Sequence[int | str] | np.ndarray, write: bool = False) -> None:
        """Give ``tenant`` read access (``write=True``: also the right to replace) to existing
        points; IdNotFoundError (nothing changed) if any is missing. Points the tenant owns
        stay owned; on other points the grant replaces any earlier grant's level."""
        if not isinstance(write, (bool, np.bool_)):
            raise InvalidArgumentError(f"write must be True or False, got {write!r:.80}")
        self._membership(tenant, ids, WRITE if write else READ)

    def revoke(self, tenant: str, ids: Sequence[int | str] | np.ndarray) -> None:
        """Take all of ``tenant``'s access to existing points away, ownership included (the
        points stay; a point no tenant holds is reachable by unscoped calls only)."""
        self._membership(tenant, ids, None)

    def _membership(self, tenant: str, ids: Any, level: bytes | None) -> None:
        """Set ``tenant``'s access to ``ids`` to ``level`` (None: remove it); owners keep
        ownership when granted. Gained or lost memberships are logged for the index; a
        level change within the tenant's access is not (the index keeps no levels)."""
        self._check()
        name = check_tenant(tenant)
        idkeys, uids = self._keys_of(ids, unique=False)
        with self._writing() as mem:
            ts = self._tenant(name)
            with self._store.read() as txn:
                iids = self._lookup(txn, idkeys, uids)
            if level is None:
                change = sorted({i for i in iids.tolist() if i in ts.members})
                joined = change
            else:
                change = sorted({i for i in iids.tolist() if ts.level(i) not in (OWNER, level)})
                joined = [i for i in change if i not in ts.members]
            if not change:
                return
            ops = [oplog.Op(oplog.REVOKE if level is None else oplog.GRANT, ts.number, np.array(joined, np.int64))]
            seq = mem.seq + 1 if joined else mem.seq
            record = oplog.encode(ops) if joined else b""
            mem_keys = [K.u32(ts.number) + K.u64(i) for i in change]
            h = self._h
            for_index = self._for_index(seq, membership=oplog.membership(ops)) if joined else _no_index_write

            def batch(txn: Any) -> None:
                for key in mem_keys:
                    if level is None:
                        txn.delete(key, db=h["mem"])
                    else:
                        txn.put(key, level, db=h["mem"])
                if joined:
                    txn.put(K.u64(seq), record, db=h["log"], append=True)
                    txn.put(b"seq", K.u64(seq), db=h["ctr"])
                for_index(txn)

            def apply() -> None:
                mem = self._mem
                mem.tenants.set_access([ts], change, level)
                if joined:
                    self._membership_done(mem, ops, seq, len(joined))

            self._commit(batch, apply)

    @staticmethod
    def _membership_done(mem: Memory, ops: list[oplog.Op], seq: int, dirty: int) -> None:
        hand_ops(mem, ops)
        mem.seq = seq
        mem.dirty += dirty

    def train(self) -> None:
        """Train (or retrain) the configured index on the stored points and rebuild it; searches
        are served meanwhile by the index in place (or the exact scan). FailedPreconditionError
        when the collection is empty; the index's own error (nothing changes) when it cannot
        be trained on the stored points."""
        self._check()
        with self._writing():
            if not self._mem.n_live:
                raise FailedPreconditionError(f"collection {self.name!r} is empty: there is nothing to train the "
                                              f"{self._info.index!r} index on")
            with self._indexing:
                self._drain()
            self._rebuild(reason="requested")

    # ---- reads -----------------------------------------------------------------------
    def count(self, tenant: str | None = None) -> int:
        """Number of points (of ``tenant`` when given)."""
        self._check()
        name = None if tenant is None else check_tenant(tenant)
        with self._rw.read():
            self._check()
            return self._mem.n_live if name is None else len(self._tenant(name).members)

    def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        """Vectors and payloads of ``ids`` in the order asked; IdNotFoundError if any is missing.
        With ``tenant``, an id the tenant cannot see answers exactly as a missing one (same
        class, same message), so a tenant cannot probe which ids other tenants hold."""
        self._check()
        idkeys, uids = self._keys_of(ids, unique=False)
        name = None if tenant is None else check_tenant(tenant)
        with self._rw.read():
            self._check()  # a drop may have completed since the check above
            members = None if name is None else self._tenant(name).members
            with self._store.read(buffers=True) as txn:   # vector blocks read in place
                iids = self._lookup(txn, idkeys, uids, visible=members)
                vectors, payloads = self._points.points(txn, iids, uids)
        return GetResult(self._id_array(uids), vectors, payloads)

    def search(self, queries: Any, k: int = 10, filter: Mapping[str, Any] | None = None,
               tenant: str | Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
               with_payloads: bool = False) -> QueryResult:
        """The ``k`` nearest points to each query row, closest first, among points passing
        ``filter`` and (when given) accessible to ``tenant`` (or to any of several tenants). ``params`` are the index's search
        knobs (e.g. ``{"ef": 64}`` for HNSW). ids are -1 (int) / None (str) where no hit."""
        self._check()
        return self.execute(SearchRequest.build(self._info, queries, k, filter, tenant, params, with_payloads))

    def execute(self, req: SearchRequest) -> QueryResult:
        """Run a search validated by ``SearchRequest.build`` (the trusted path: nothing is
        checked again but the knobs, resolved once by the serving index)."""
        self._check()
        self._last_search = time.monotonic()   # writers keep the staged scan short meanwhile (_has_room)
        nq = len(req.queries)
        if nq <= SEARCH_STEP_ROWS:
            iids, ids, distances = self._search_step(req)
        else:   # a writer waits for one step at most, not for the whole batch
            parts = [self._search_step(req._replace(queries=req.queries[start:start + SEARCH_STEP_ROWS]))
                     for start in range(0, nq, SEARCH_STEP_ROWS)]
            iids, ids, distances = (np.concatenate(part) for part in zip(*parts))
        payloads = self._points.hit_payloads(iids) if req.with_payloads else None
        return QueryResult(ids, distances, payloads)

    def _search_step(self, req: SearchRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(internal ids, ids, distances) of one step of a search, under the read lock: each
        step sees every write acknowledged before the search started."""
        with self._rw.read():
            self._check()
            mem = self._mem
            names = req.tenant
            tenants = None if names is None else [self._tenant(names)] if isinstance(names, str) else \
                [self._tenant(name) for name in names]
            res = run_search(mem, req, tenants)
            return res.ids, self._translate(res.ids), res.distances

    def export(self, after: int = -1, limit: int = 4096, select: Select | None = None) -> ExportedPoints:
        """The committed points after scan position ``after`` (-1: from the start), at most
        ``limit`` scanned, read whole (ids, vectors, payloads, owners, grants; with ``select``
        only the points it keeps): a bounded step of copying points into another collection.
        Pass the result's ``last_iid`` back to go on; the caller holds writers off meanwhile."""
        self._check()
        return read_points(self._store, self._h, self._info, as_positive_int(after, "after", minimum=-1),
                           as_positive_int(limit, "limit"), select)

    def stored_keys(self, keys: list[bytes]) -> list[bool]:
        """Whether each id key (as ``vecdb.storage.keys`` encodes ids) is stored here."""
        self._check()
        return stored_keys(self._store, self._h, keys)

    def stats(self) -> CollectionStats:
        """Point count, bytes in memory and on disk (LMDB pages, an index's own sub-databases
        included, + index checkpoint), index
        parameters, and whether the configured index serves (``trained``)."""
        self._check()
        with self._rw.read():
            self._check()
            mem = self._mem
            names = list(self._names.values()) + (self._spaces.names() if self._own else [])
            disk = self._store.used_bytes(names) + dir_bytes(self._checkpoints.root)
            pending = len(mem.staging)
            return CollectionStats(count=mem.n_live, memory_bytes=mem.memory_bytes(), disk_bytes=int(disk),
                                   index=self._info.index, index_params=dict(self._info.index_params),
                                   n_tenants=len(mem.tenants), trained=mem.trained,
                                   indexed=mem.n_live - pending, pending=pending)

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait until every committed point is in the index (nothing staged, and an automatic
        training that is due has run), or ``timeout`` seconds (None: no limit); True when
        caught up. Searches never need this (they see staged points at once)."""
        self._check()
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
                raise InvalidArgumentError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r:.80}")
            timeout = float(timeout)
        self._worker.wake()
        self._worker.wait_for(lambda: self._caught_up() or self._state != "open" or self._worker.stopping, timeout)
        self._check()
        return self._caught_up()

    def _caught_up(self) -> bool:
        """Nothing staged and no automatic training due."""
        mem = self._mem
        return not mem.staging.busy and not self._training_due(mem)

    @staticmethod
    def _training_due(mem: Memory) -> bool:
        return not mem.trained and mem.train_at is not None and mem.n_live >= mem.train_at

    # ---- lifecycle (called by the Database) --------------------------------------------
    def shutdown(self) -> None:
        """Stop the indexer after its current step, move the rest of the staged rows into
        the index (at most about ``max_pending``), checkpoint if anything changed, then
        refuse further calls (database close)."""
        self._worker.stop()
        with self._writer:
            if self._state != "open":
                return
            try:
                with self._indexing:
                    self._drain()
                mem = self._mem
                if mem.dirty and mem.trained:
                    self._checkpoints.save(mem)
            finally:
                with self._rw.write():
                    self._state = "closed"
                self._worker.progress()

    def mark_dropped(self) -> None:
        """Stop the indexer (after its current step) and refuse further calls (the database
        deletes the stored data once this returns: nothing of this collection touches it)."""
        self._worker.stop()
        with self._writer:
            with self._rw.write():
                self._state = "dropped"
        self._worker.progress()

    # ---- writer internals ------------------------------------------------------------
    def _commit(self, batch: Callable[[Any], None], change: Callable[[], None]) -> None:
        """Commit ``batch``, then publish ``change`` to memory in one exclusive step and wake
        the indexer, which does the follow-up work (caller holds the writer lock). Readers
        keep searching during the commit (its fsync included), except for an index that
        persists itself: its records are in the batch, so memory must not lag behind them.
        Payload re-sorts that fall due are built after the publish, readers searching, and
        swapped in by a second O(1) exclusive step (``apply.compact_payloads``)."""
        if self._own:
            with self._indexing, self._rw.write():
                self._store.write(batch)
                self._apply(change)
        else:
            self._store.write(batch)
            with self._publishing:
                self._publishers += 1
            try:
                if self._mem.index.tenant_aware:   # publishing hands it the staged rows: see apply.hand_ops
                    with self._indexing, self._rw.write():
                        self._apply(change)
                else:                              # publishing changes the staged work only
                    with self._rw.write():
                        self._apply(change)
            finally:
                with self._publishing:
                    self._publishers -= 1
                    self._publishing.notify_all()
        compact_payloads(lambda: self._mem, self._rw.write, self._apply)
        self._worker.wake()

    def _apply(self, change: Callable[[], None]) -> None:
        """Apply a committed batch to memory. If that fails (a bug, or an index that cannot
        take the points), memory is rebuilt from the committed store, which then serves the
        batch as well (loading never drops stored points), so the write stands and the cause
        is logged. Only if the store itself cannot be read is the collection marked "failed";
        the database then reloads it on the next ``get_collection``."""
        try:
            change()
        except Exception as exc:
            log.error("collection %r: applying a committed batch failed (%s: %s); rebuilding memory from the store",
                      self._info.name, type(exc).__name__, exc, exc_info=True,
                      extra={"event": "apply_failed", "collection": self._info.name})
            try:
                self._mem = self._recovery.load(staged=False)
            except Exception as again:
                self._state = "failed"
                log.exception("collection %r: rebuilding memory from the store failed", self._info.name)
                raise InternalError(f"collection {self._info.name!r}: the batch was committed, but memory could not "
                                    f"be rebuilt from the store ({type(again).__name__}: {again}); get the "
                                    "collection again to reload it") from exc

    def _drain(self) -> None:
        """Move every staged row into the index now, in moves or exclusive steps (caller holds
        ``_indexing``, and ``_writer`` when nothing may be staged afterwards). A failing move
        rebuilds memory from the store, as a failing batch does (``_apply``)."""
        if not self._mem.index.links_while_searched:
            self._step_rows = drain(lambda: self._mem, self._rw.write, self._apply, self._step_rows)
            return
        while self._mem.staging.busy and self._state == "open":
            mem = self._mem
            mem.staging.reserve(mem.index)
            failed = self._move(mem)
            if failed is not None:
                with self._rw.write():
                    self._apply(lambda: _reraise(failed))

    # ---- the background indexer (runs in the worker's thread) -------------------------
    def _index_round(self) -> bool:
        """One round of the indexer: staged rows move into the index for up to
        ``ROUND_SECONDS`` (linked while searches go on when the index can, ``_move``; else in
        exclusive steps of about ``apply.STEP_SECONDS``), a writer waiting to publish going
        first at every step; then training and the checkpoint when due. Returns True when
        more work remains."""
        end = time.perf_counter() + ROUND_SECONDS
        worker = self._worker
        while not worker.stopping and self._state == "open":
            with self._publishing:  # a writer waiting to publish goes first
                self._publishing.wait_for(lambda: not self._publishers)
            with self._indexing:
                mem = self._mem
                if not mem.staging.busy or self._state != "open":
                    break
                mem.staging.reserve(mem.index)  # any growth of the index happens here, readers searching
                if mem.index.links_while_searched:
                    failed = self._move(mem)
                else:
                    size = self._step_rows
                    with self._rw.write():
                        start = time.perf_counter()
                        failed = _failure(lambda: mem.staging.step(mem.index, size))
                        took = time.perf_counter() - start
                    self._step_rows = next_step_rows(size, took)
            worker.progress()
            if failed is not None:
                self._heal(failed)
                return self._state == "open"
            if time.perf_counter() > end:
                break
        if worker.stopping or self._state != "open":
            return False
        if self._maintenance_due():
            with self._writer:
                if self._state == "open" and not worker.stopping and self._maintenance_due():
                    with self._indexing:
                        self._drain()   # writers wait meanwhile: a few rows (see _maintenance_due)
                    self._maybe_train()
                    if self._checkpoints.due(self._mem):
                        self._checkpoints.save(self._mem)
        maintain = getattr(self._mem.index, "maintain", None)   # an index's own background step (SPANN splits, HNSW repair)
        if maintain is not None and not self._mem.staging.busy:
            with self._writer:
                if self._state == "open" and not worker.stopping and maintain():
                    return True
        return self._mem.staging.busy

    def _move(self, mem: Memory) -> BaseException | None:
        """One step into an index that links while it is searched (caller holds
        ``_indexing``): rows copied in with searches going on, placed in a short exclusive
        step, linked with searches going on (sized to take about ``LINK_SECONDS``), then
        published in another short one. Stale entries go first, in the same way
        (``_remove_stale``). Returns the failure, if any."""
        if len(mem.staging.stale):
            return self._remove_stale(mem)
        moves: list[Any] = []
        plans: list[Any] = []
        size = self._link_rows
        # the rows are chosen and copied into the index's arrays first, searches going on:
        # the exclusive step then only publishes them (Staging.plan)
        failed = _failure(lambda: plans.append(mem.staging.plan(mem.index, size)))
        if failed is not None:
            return failed
        with self._rw.write():
            failed = _failure(lambda: moves.append(mem.staging.begin(mem.index, size, plans[0])))
        move = moves[0] if moves else None
        if failed is not None or move is None:
            return failed
        start = time.perf_counter()
        failed = _failure(lambda: self._worker.lowered(lambda: mem.staging.link(mem.index, move, self._pace),
                                                       idle=True))   # yields the cores
        took = time.perf_counter() - start
        if failed is not None:
            return failed   # the half-linked rows stay staged (answers are deduplicated) until memory is rebuilt
        with self._rw.write():
            mem.staging.finish(move)
        self._link_rows = int(min(MAX_LINK_ROWS, 2 * size, max(MIN_STEP_ROWS, size * LINK_SECONDS / max(took, 1e-4))))
        return None

    def _remove_stale(self, mem: Memory) -> BaseException | None:
        """Remove the stale index entries (replaced and deleted points) from an index that
        links while it is searched: unlinked with searches going on (they stay hidden
        meanwhile), then freed in a short exclusive step. Returns the failure, if any."""
        removals: list[Any] = []
        failed = _failure(lambda: removals.append(self._worker.lowered(
            lambda: mem.staging.plan_removal(mem.index, self._pace))))
        if failed is not None:
            return failed
        with self._rw.write():
            return _failure(lambda: mem.staging.finish_removal(mem.index, removals[0]))

    def _pace(self, worked: float) -> float:
        """``Pace`` of the indexer's work beside searches: while they are served (and the
        collection is not closing), rest ``serving_rest`` times as long as the chunk took
        (``layout.DEFAULT_SERVING_REST``). Returns the seconds rested."""
        if (not self._serving_rest or time.monotonic() - self._last_search >= SERVING_SECONDS
                or self._worker.stopping):
            return 0.0
        rest = worked * self._serving_rest
        time.sleep(rest)
        return rest

    def _maintenance_due(self) -> bool:
        """True when the index should be trained or checkpointed now: a checkpoint waits
        until at most ``CHECKPOINT_BACKLOG`` rows are staged, as writers wait while the rest
        is indexed first (under a writer that never pauses the log grows meanwhile; replay
        serves it staged, so opening stays fast)."""
        mem = self._mem
        if self._training_due(mem):
            return True   # the stand-in takes staged rows fast
        return self._checkpoints.due(mem) and len(mem.staging) <= CHECKPOINT_BACKLOG

    def _heal(self, exc: BaseException) -> None:
        """After a failed step: log it and rebuild memory from the store with the writers
        held off (as when applying a batch fails); the old memory serves meanwhile."""
        log.error("collection %r: moving staged points into the %s index failed (%s: %s); rebuilding memory "
                  "from the store", self._info.name, self._info.index, type(exc).__name__, exc,
                  exc_info=exc, extra={"event": "index_step_failed", "collection": self._info.name})
        with self._writer:
            if self._state != "open":
                return
            try:
                mem = self._recovery.load(staged=False)
            except Exception:
                log.exception("collection %r: rebuilding memory from the store failed", self._info.name)
                with self._rw.write():
                    self._state = "failed"
                return
            with self._indexing, self._rw.write():
                self._mem = mem

    def _wait_for_room(self, rows: int) -> None:
        """Back-pressure: wait (the indexer makes room) while more points are staged than
        ``max_pending``, and, while searches are served, until a write of ``rows`` points
        fits below ``SERVING_PENDING`` or nothing is staged; unless the collection stops
        serving meanwhile."""
        if self._has_room(rows):
            return
        self._worker.wake()
        self._worker.wait_for(lambda: self._has_room(rows) or self._state != "open" or self._worker.stopping)

    def _has_room(self, rows: int) -> bool:
        """Whether a write of ``rows`` points may go ahead now (see ``_wait_for_room``)."""
        staged = len(self._mem.staging)
        if staged > self._max_pending:
            return False
        if time.monotonic() - self._last_search >= SERVING_SECONDS:
            return True
        return staged == 0 or staged + rows <= min(self._max_pending, SERVING_PENDING)

    def _maybe_train(self) -> None:
        """Train the configured index once the exact-scan stand-in holds enough points
        (caller holds the writer lock and has drained). A failure is logged and retried
        when the collection has doubled."""
        mem = self._mem
        if mem.trained or mem.train_at is None or mem.n_live < mem.train_at:
            return
        try:
            self._rebuild(reason="automatic")
        except Exception as exc:
            mem.train_at = 2 * mem.n_live
            log.error("collection %r: training the %s index on %d points failed (%s: %s); searches keep scanning "
                      "exactly; next attempt at %d points", self._info.name, self._info.index, mem.n_live,
                      type(exc).__name__, exc, extra={"event": "train_failed", "collection": self._info.name})

    def _rebuild(self, *, reason: str) -> None:
        """Build the configured index from every stored point (trained on a sample when it
        needs training), swap it in, and checkpoint it (caller holds the writer lock and has
        drained the staged rows, so memory equals the store and does not change meanwhile)."""
        mem = self._mem
        live = np.flatnonzero(mem.live).astype(np.int64)
        vectors = self._points.vectors(live)
        # a requested build stops at its caller's deadline or cancellation (a Train RPC); others run to the end
        check = calls.check if reason == "requested" else None
        if self._own:  # written whole into a new generation; the old index serves from its own meanwhile
            index = self._spaces.build(lambda space: build_index(self._info, vectors, live, mem.tenants, space, check))
        else:
            index = build_index(self._info, vectors, live, mem.tenants, check=check)
        with self._rw.write():
            mem.index = index
            mem.index_problem = None
            mem.dirty = max(mem.dirty, 1)
        if self._own:
            self._spaces.drop_others(self._spaces.live())
        log.info("collection %r: %s index built on %d points (%s)", self._info.name, self._info.index, len(live),
                 reason, extra={"event": "index_trained", "collection": self._info.name, "points": len(live)})
        self._checkpoints.save(mem)

    def _for_index(self, seq: int, **parts: Any) -> Callable[[Any], None]:
        """What write ``seq``'s transaction writes for the serving index: the index's own
        records when it persists itself (an ``IndexBatch`` of ``parts``), nothing otherwise."""
        index = self._mem.index
        if index.persistence != "self":
            return _no_index_write
        batch = index_batch(seq, self._info.dim, **parts)
        return lambda txn: persist(index, txn, batch)

    # ---- helpers: validation ---------------------------------------------------------
    def _check(self) -> None:
        if self._state == "closed":
            raise FailedPreconditionError(f"collection {self.name!r}: the database is closed")
        if self._state == "dropped":
            raise CollectionNotFoundError(f"collection {self.name!r} was dropped")
        if self._state == "failed":
            raise UnavailableError(f"collection {self.name!r} could not rebuild its memory after a failure; "
                                   "get it from the database again to reload it")

    @contextlib.contextmanager
    def _writing(self, rows: int = 0) -> Iterator[Memory]:
        """Wait for room among the staged points (back-pressure), then hold the writer lock,
        checking again under it that the collection is open (it may have been closed or
        dropped while this thread waited); yields the live memory."""
        self._wait_for_room(rows)
        with self._writer:
            self._check()
            yield self._mem

    def _keys_of(self, ids: Any, *, unique: bool) -> tuple[list[bytes], list[Any]]:
        """Validated user ids -> (LMDB keys, ids as Python values)."""
        return id_keys(self._info, ids, unique=unique)

    def _tenant(self, name: str) -> TenantSet:
        ts = self._mem.tenants.get(name)
        if ts is None:
            raise TenantNotFoundError(f"no tenant {name!r} in collection {self.name!r}")
        return ts

    def _lookup(self, txn: Any, idkeys: list[bytes], uids: list[Any], visible: set[int] | None = None) -> np.ndarray:
        """Internal ids of ``idkeys``; IdNotFoundError if any is missing or (with ``visible``)
        outside it: one message for both, so the two cannot be told apart."""
        found = dict(txn.cursor(self._h["ids"]).getmulti(list(dict.fromkeys(idkeys))))
        iids = [None if raw is None else K.read_u64(raw) for raw in (found.get(key) for key in idkeys)]
        absent = [u for u, iid in zip(uids, iids) if iid is None or (visible is not None and iid not in visible)]
        if absent:
            raise IdNotFoundError(f"{len(absent)} id(s) not found in collection {self.name!r}: {absent[:5]}")
        return np.array(iids, np.int64)

    def _check_writable(self, names: list[str], tsets: list[TenantSet], iids: list[int], uids: list[Any]) -> None:
        """Refuse a write scoped to ``tsets`` that would replace stored points not every one of
        them may write. Points none of them can see answer AlreadyExistsError, which says
        only that the ids are taken (not by whom, nor what they hold); points one of them
        sees read-only answer PermissionDeniedError."""
        hidden: list[Any] = []
        read_only: list[Any] = []
        for iid, uid in zip(iids, uids):
            if not all(ts.can_write(iid) for ts in tsets):
                (read_only if any(iid in ts.members for ts in tsets) else hidden).append(uid)
        who = ", ".join(repr(n) for n in names)
        if hidden:
            raise AlreadyExistsError(f"{len(hidden)} id(s) are not available to tenant {who} in collection "
                                     f"{self.name!r}: {hidden[:5]}; ids are shared by all tenants of a collection, "
                                     "choose other ids")
        if read_only:
            raise PermissionDeniedError(f"{len(read_only)} id(s) are shared with tenant {who} read-only in collection "
                                        f"{self.name!r}: {read_only[:5]}; replacing them needs a write grant")

    def _id_array(self, uids: list[Any]) -> np.ndarray:
        if self._info.id_type == "int":
            return np.array(uids, np.int64).reshape(-1)
        out = np.empty(len(uids), object)
        out[:] = uids
        return out

    def _translate(self, iids: np.ndarray) -> np.ndarray:
        """User ids of internal ids (-1 / None where no hit)."""
        uid_of = self._mem.uid_of
        if len(uid_of):
            # -1 (no hit) reads the last entry, always unused (Memory.reserve); indexing, not
            # ``take``, which lets the GIL go and waits to get it back: a wait per search under load
            return uid_of[iids]
        return np.full(iids.shape, -1, np.int64) if uid_of.dtype != object else np.full(iids.shape, None, object)


def _ascending(keys: list[bytes]) -> bool:
    """True when ``keys`` strictly ascend in LMDB's order (bytes compared as Python compares them)."""
    return all(map(bytes.__lt__, keys, itertools.islice(keys, 1, None)))


def _stored(cur: Any, keys: list[bytes], ascending: bool) -> dict[bytes, bytes]:
    """The stored records among ``keys`` (key -> value), read through cursor ``cur``. When
    the keys ascend past the last stored key (a batch of new ids in order, the common bulk
    load) none can be stored: one cursor step instead of a lookup per key."""
    if not cur.last() or (ascending and keys and cur.key() < keys[0]):
        return {}
    return dict(cur.getmulti(keys))


def _in_key_order(keys: list[bytes], values: list[bytes], rows: list[int] | None,
                  ascending: bool | None = None) -> tuple[list[bytes], list[bytes]]:
    """``keys[i], values[i]`` of ``rows`` (None: all), sorted by key (LMDB's order: bytes
    compared as Python compares them); the common already-sorted batch is only checked
    (``ascending``: the check's answer when the caller made it already)."""
    if rows is None:
        if ascending if ascending is not None else _ascending(keys):
            return keys, values
        rows = range(len(keys))
    order = sorted(rows, key=keys.__getitem__)
    return [keys[i] for i in order], [values[i] for i in order]


def _put_sorted(cur: Any, keys: list[bytes], values: list[bytes]) -> None:
    """Put new records with sorted, unique ``keys`` none of which is stored: appended
    (MDB_APPEND: pages filled) when they all sort after the last stored key, else inserted
    in order. LMDB skips, without an error, an appended key that is out of order; the count
    of records added turns that into an InternalError (the transaction then writes nothing)."""
    if not keys:
        return
    append = not cur.last() or cur.key() < keys[0]
    _, added = cur.putmulti(zip(keys, values), append=append)
    if added != len(keys):
        raise InternalError(f"{len(keys) - added} of {len(keys)} id records were not written (keys out of order)")


def _row_count(vectors: Any) -> int:
    """Rows in ``vectors`` as given (an (n, 0) matrix has n rows and no values)."""
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"vectors must be a 2-D array of numbers: {exc}") from None
    return int(arr.shape[0]) if arr.ndim else int(arr.size)


def _reraise(exc: BaseException) -> None:
    raise exc


def _failure(step: Callable[[], None]) -> BaseException | None:
    """Run ``step``; the exception it raised (None when it succeeded)."""
    try:
        step()
    except Exception as exc:
        return exc
    return None


def _no_index_write(txn: Any) -> None:
    """The index part of a batch whose index keeps nothing in LMDB (persistence "checkpoint")."""
