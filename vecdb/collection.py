"""A collection: points (user id, vector, JSON payload, tenants) stored durably in LMDB, with
an in-memory index, payload indexes and tenant sets that mirror the committed store.

Durability: every upsert / delete / grant / revoke / tenant change is one LMDB write
transaction; changes that touch the index (upserts, deletes of points) also bump the
collection's write sequence and append ``seq -> internal ids`` to the op log. Memory is
updated only after the commit, in one short step under the collection's exclusive lock that
publishes the whole batch (new rows are staged and searched exactly, replaced and deleted
index entries hidden: ``vecdb.index.staging``); the staged rows then move into the index in
steps of about 20 ms, each exclusive, so searches see the state before or after a batch and
never half of it, and never wait long behind a large one. Index checkpoints (``index.save``) are recorded with their
sequence number in the manifest; opening loads the newest checkpoint and replays the logged
ids newer than it from the stored vectors (or rebuilds from all vectors when there is none).

Internal ids are dense int64 numbers handed out in order and never reused; the index, the
payload indexes and the tenant sets work on them, and only the id map knows user ids.

Tenants and owners (the semantics are documented in ``vecdb.api``): each membership record
holds an access level, owner / write grant / read grant. Every check of a tenant's access
runs inside the write lock, against the same state the write then commits, so two tenants
racing for the same new id cannot both win. A get answers an id the tenant cannot see
exactly as a missing one. Requests are validated before any access check.

A committed batch never makes points unreachable: if applying it to memory fails, memory is
rebuilt from the store (``vecdb.storage.state``), degrading to an exact scan or to unindexed
payloads where the index or the payload index cannot take the points.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from vecdb import calls
from vecdb.api import CollectionInfo, CollectionStats, GetResult, Payload, QueryResult
from vecdb.errors import (AlreadyExistsError, CollectionNotFoundError, DataLossError, FailedPreconditionError,
                          IdNotFoundError, InvalidArgumentError, PermissionDeniedError, TenantNotFoundError,
                          UnavailableError)
from vecdb.filters import check_payload, parse_filter
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE, U64_LE, decode_json, encode_json, from_bytes, rows_to_bytes, to_bytes
from vecdb.storage.locks import RWLock
from vecdb.storage.state import OWNER, PARTS, READ, WRITE, CheckpointPolicy, CollectionState, TenantSet, dir_bytes
from vecdb.types import SearchResult
from vecdb.validation import as_id_array, as_k, as_matrix

if TYPE_CHECKING:
    from vecdb.database import Database

log = logging.getLogger(__name__)

MAX_TENANT_BYTES = 200


class Collection(CollectionState):
    """The embedded implementation of ``vecdb.api.CollectionAPI``; get one from ``Database``."""

    def __init__(self, db: "Database", info: CollectionInfo, cid: int, policy: CheckpointPolicy) -> None:
        self._db = db
        self._store = db._store
        self._info = info
        self._cid = cid
        self._policy = policy
        self._names = {part: f"c{cid:08x}.{part}" for part in PARTS}
        handles = self._store.dbs(list(self._names.values()))
        self._h = {part: handles[name] for part, name in self._names.items()}
        self._ckpt_root = db._index_root / f"c{cid:08x}"
        self._writer = threading.Lock()
        self._rw = RWLock("collection")
        self._state = "open"
        with self._writer:
            self._load()

    # ---- identity --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._info.name

    @property
    def info(self) -> CollectionInfo:
        return self._info

    def __repr__(self) -> str:
        return f"Collection({self._info.name!r}, dim={self._info.dim}, metric={self._info.metric!r}, index={self._info.index!r})"

    # ---- writes ----------------------------------------------------------------------
    def upsert(self, ids: Sequence[int | str] | np.ndarray, vectors: Any,
               payloads: Sequence[Payload | None] | None = None, tenant: str | Sequence[str] | None = None) -> None:
        """Insert or replace points atomically; returns once the batch is committed to disk.

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
        if payloads is None:
            pays: list[dict[str, Any] | None] = [None] * n
        else:
            if isinstance(payloads, Mapping) or not isinstance(payloads, (list, tuple)):
                raise InvalidArgumentError("payloads must be a list with one dict (or None) per id")
            if len(payloads) != n:
                raise InvalidArgumentError(f"got {len(payloads)} payloads for {n} ids")
            pays = [check_payload(p, where=f"payloads[{i}]") for i, p in enumerate(payloads)]
        pay_bytes = [None if p is None else encode_json(p) for p in pays]
        tenant_names = self._tenant_names(tenant)
        with self._writer:
            self._check()
            tsets = [self._tenant(t) for t in tenant_names]
            h = self._h
            with self._store.read() as txn:
                found = dict(txn.cursor(h["ids"]).getmulti(idkeys))
            iids = np.empty(n, np.int64)
            is_new = np.ones(n, bool)
            next_iid = self._next_iid
            for i, key in enumerate(idkeys):
                old = found.get(key)
                if old is None:
                    iids[i] = next_iid
                    next_iid += 1
                else:
                    iids[i] = K.read_u64(old)
                    is_new[i] = False
            seq = self._seq + 1
            new_rows = np.flatnonzero(is_new).tolist()
            old_rows = np.flatnonzero(~is_new).tolist()
            if tsets and old_rows:
                self._check_writable(tenant_names, tsets, [int(iids[i]) for i in old_rows], [uids[i] for i in old_rows])
            iid_keys = K.u64_many(iids)
            owner_keys = [K.u32(ts.number) + iid_keys[i] for ts in tsets for i in new_rows]
            vec_bytes = rows_to_bytes(x)

            def batch(txn: Any) -> None:
                # New internal ids are larger than every stored key, so their records are
                # appended (MDB_APPEND fills pages; sorted inserts would leave them half empty).
                txn.cursor(h["ids"]).putmulti([(idkeys[i], iid_keys[i]) for i in new_rows])
                txn.cursor(h["rev"]).putmulti([(iid_keys[i], idkeys[i]) for i in new_rows], append=True)
                vec_cur = txn.cursor(h["vec"])
                vec_cur.putmulti([(iid_keys[i], vec_bytes[i]) for i in old_rows])
                vec_cur.putmulti([(iid_keys[i], vec_bytes[i]) for i in new_rows], append=True)
                pay_cur = txn.cursor(h["pay"])
                for i in old_rows:
                    if pay_bytes[i] is None:
                        txn.delete(iid_keys[i], db=h["pay"])
                pay_cur.putmulti([(iid_keys[i], pay_bytes[i]) for i in old_rows if pay_bytes[i] is not None])
                pay_cur.putmulti([(iid_keys[i], pay_bytes[i]) for i in new_rows if pay_bytes[i] is not None], append=True)
                if owner_keys:
                    txn.cursor(h["mem"]).putmulti([(key, OWNER) for key in owner_keys])
                txn.put(K.u64(seq), to_bytes(iids, U64_LE), db=h["log"], append=True)
                txn.put(b"seq", K.u64(seq), db=h["ctr"])
                txn.put(b"next_iid", K.u64(next_iid), db=h["ctr"])

            with self._rw.write():
                self._store.write(batch)
                self._apply(lambda: self._apply_upsert(iids, is_new, uids, x, pays, tsets, seq, next_iid))
            self._drain()
            self._maybe_checkpoint()

    def delete(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> int:
        """Delete the stored ones among ``ids``; returns how many left the caller's view.

        Without ``tenant`` every found point is deleted. With ``tenant``, points the tenant
        owns are deleted (for every tenant), points it was only granted lose that grant (they
        stay for the others), and ids it cannot see are ignored, like unknown ones."""
        self._check()
        idkeys, _ = self._keys_of(ids, unique=False)
        tenant_names = [] if tenant is None else [self._one_tenant(tenant)]
        with self._writer:
            self._check()
            tsets = [self._tenant(t) for t in tenant_names]
            h = self._h
            with self._store.read() as txn:
                found = dict(txn.cursor(h["ids"]).getmulti(list(dict.fromkeys(idkeys))))
            pairs = [(key, K.read_u64(v)) for key, v in found.items()]
            revoke: list[int] = []
            if tsets:
                levels = [(key, iid, tsets[0].level(iid)) for key, iid in pairs]
                revoke = [iid for _, iid, level in levels if level is not None and level != OWNER]
                pairs = [(key, iid) for key, iid, level in levels if level == OWNER]
            if not pairs and not revoke:
                return 0
            iids = np.array([iid for _, iid in pairs], np.int64)
            seq = self._seq + 1 if pairs else self._seq
            member_of = {iid: sorted(self._point_tenants.get(iid, ())) for _, iid in pairs}
            revoke_keys = [K.u32(tsets[0].number) + K.u64(iid) for iid in revoke]

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
                if pairs:
                    txn.put(K.u64(seq), to_bytes(iids, U64_LE), db=h["log"])
                    txn.put(b"seq", K.u64(seq), db=h["ctr"])

            def change() -> None:
                if pairs:
                    self._apply_delete(iids, seq)
                if revoke:
                    self._set_access(tsets, revoke, None)

            with self._rw.write():
                self._store.write(batch)
                self._apply(change)
            self._drain()
            self._maybe_checkpoint()
            return len(pairs) + len(revoke)

    def create_tenant(self, tenant: str) -> None:
        """Create an empty tenant; AlreadyExistsError if it exists."""
        self._check()
        name = self._one_tenant(tenant)
        with self._writer:
            self._check()
            if name in self._tenants:
                raise AlreadyExistsError(f"tenant {name!r} already exists in collection {self.name!r}")
            number = self._next_tenant
            h = self._h

            def batch(txn: Any) -> None:
                txn.put(name.encode("utf-8"), K.u32(number), db=h["ten"])
                txn.put(b"next_tenant", K.u64(number + 1), db=h["ctr"])

            with self._rw.write():
                self._store.write(batch)
                self._tenants[name] = TenantSet(number)
                self._next_tenant = number + 1

    def drop_tenant(self, tenant: str) -> None:
        """Delete a tenant and all its memberships (the points stay)."""
        self._check()
        name = self._one_tenant(tenant)
        with self._writer:
            self._check()
            ts = self._tenant(name)
            h = self._h
            member_keys = [K.u32(ts.number) + K.u64(i) for i in sorted(ts.members)]

            def batch(txn: Any) -> None:
                txn.delete(name.encode("utf-8"), db=h["ten"])
                for key in member_keys:
                    txn.delete(key, db=h["mem"])

            with self._rw.write():
                self._store.write(batch)
                del self._tenants[name]
                for iid in ts.members:
                    self._point_tenants[iid].discard(ts.number)

    def list_tenants(self) -> list[str]:
        """Names of all tenants, sorted."""
        self._check()
        with self._rw.read():
            return sorted(self._tenants)

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
        ownership when granted."""
        self._check()
        name = self._one_tenant(tenant)
        idkeys, uids = self._keys_of(ids, unique=False)
        with self._writer:
            self._check()
            ts = self._tenant(name)
            with self._store.read() as txn:
                iids = self._lookup(txn, idkeys, uids)
            if level is None:
                change = sorted({i for i in iids.tolist() if i in ts.members})
            else:
                change = sorted({i for i in iids.tolist() if ts.level(i) not in (OWNER, level)})
            if not change:
                return
            mem_keys = [K.u32(ts.number) + K.u64(i) for i in change]
            mem_db = self._h["mem"]

            def batch(txn: Any) -> None:
                for key in mem_keys:
                    if level is None:
                        txn.delete(key, db=mem_db)
                    else:
                        txn.put(key, level, db=mem_db)

            with self._rw.write():
                self._store.write(batch)
                self._apply(lambda: self._set_access([ts], change, level))

    # ---- reads -----------------------------------------------------------------------
    def count(self, tenant: str | None = None) -> int:
        """Number of points (of ``tenant`` when given)."""
        self._check()
        name = None if tenant is None else self._one_tenant(tenant)
        with self._rw.read():
            self._check()
            return self._n_live if name is None else len(self._tenant(name).members)

    def get(self, ids: Sequence[int | str] | np.ndarray, tenant: str | None = None) -> GetResult:
        """Vectors and payloads of ``ids`` in the order asked; IdNotFoundError if any is missing.
        With ``tenant``, an id the tenant cannot see answers exactly as a missing one (same
        class, same message), so a tenant cannot probe which ids other tenants hold."""
        self._check()
        idkeys, uids = self._keys_of(ids, unique=False)
        name = None if tenant is None else self._one_tenant(tenant)
        with self._rw.read():
            self._check()  # a drop may have completed since the check above
            members = None if name is None else self._tenant(name).members
            with self._store.read() as txn:
                iids = self._lookup(txn, idkeys, uids, visible=members)
                vectors, payloads = self._read_points(txn, iids, uids)
        return GetResult(self._id_array(uids), vectors, payloads)

    def _read_points(self, txn: Any, iids: np.ndarray, uids: list[Any]) -> tuple[np.ndarray, list[Payload | None]]:
        """Stored vectors and payloads of ``iids`` (read in ``txn``)."""
        d = self._info.dim
        vectors = np.empty((len(iids), d), np.float32)
        payloads: list[Payload | None] = []
        for row, iid in enumerate(iids.tolist()):
            key = K.u64(iid)
            raw = txn.get(key, db=self._h["vec"])
            if raw is None:
                raise DataLossError(f"point {uids[row]!r} has no stored vector")
            vectors[row] = from_bytes(raw, F32_LE, count=d)
            pay = txn.get(key, db=self._h["pay"])
            if pay is not None:
                calls.spend_payload_bytes(len(pay))  # the server's per-call budget, before decoding
            payloads.append(None if pay is None else decode_json(pay))
        return vectors, payloads

    def search(self, queries: Any, k: int = 10, filter: Mapping[str, Any] | None = None, tenant: str | None = None,
               params: Mapping[str, Any] | None = None, with_payloads: bool = False) -> QueryResult:
        """The ``k`` nearest points to each query row, closest first, among points passing
        ``filter`` and (when given) belonging to ``tenant``. ``params`` are the index's search
        knobs (e.g. ``{"ef": 64}`` for HNSW). ids are -1 (int) / None (str) where no hit."""
        self._check()
        q = as_matrix(queries, self._info.dim, what="queries")
        k = as_k(k)
        node = parse_filter(filter)
        if node == ("all",):
            node = None
        if params is None:
            params = {}
        if not isinstance(params, Mapping) or not all(isinstance(p, str) for p in params):
            raise InvalidArgumentError(f"params must be a dict of search knobs, got {params!r:.200}")
        unknown = sorted(set(params) - self._index.search_params)  # also names like "allow"
        if unknown:
            raise InvalidArgumentError(f"unknown search parameter(s) {unknown} for index {self._info.index!r}; "
                                       f"known: {', '.join(sorted(self._index.search_params)) or 'none'}")
        name = None if tenant is None else self._one_tenant(tenant)
        with self._rw.read():
            self._check()
            allow: np.ndarray | None = None
            if name is not None:
                allow = self._tenant(name).array()
            if node is not None:
                mask = self._payidx.evaluate(node, self._live)
                allow = np.flatnonzero(mask) if allow is None else allow[mask[allow]]
            if allow is not None and len(allow) == 0:
                self._index.search(q[:0], k, **params)  # still reject unknown knobs
                res = SearchResult.empty(len(q), k)
            else:
                res = self._staging.search(self._index, q, k, allow, params)
            ids = self._translate(res.ids)
            payloads = self._hit_payloads(res.ids) if with_payloads else None
        return QueryResult(ids, res.distances, payloads)

    def stats(self) -> CollectionStats:
        """Point count, bytes in memory and on disk (LMDB pages + index checkpoint), index parameters."""
        self._check()
        with self._rw.read():
            self._check()
            memory = (self._index.memory_bytes() + self._staging.memory_bytes() + self._payidx.memory_bytes() + self._live.nbytes
                      + self._uid_of.nbytes + (50 * self._n_live if self._info.id_type == "str" else 0)
                      + 64 * sum(len(t.members) for t in self._tenants.values()))
            disk = self._store.used_bytes(list(self._names.values())) + dir_bytes(self._ckpt_root)
            return CollectionStats(count=self._n_live, memory_bytes=int(memory), disk_bytes=int(disk),
                                   index=self._info.index, index_params=dict(self._info.index_params),
                                   n_tenants=len(self._tenants))

    # ---- helpers: validation ---------------------------------------------------------
    def _check(self) -> None:
        if self._state == "closed":
            raise FailedPreconditionError(f"collection {self.name!r}: the database is closed")
        if self._state == "dropped":
            raise CollectionNotFoundError(f"collection {self.name!r} was dropped")
        if self._state == "failed":
            raise UnavailableError(f"collection {self.name!r} could not rebuild its memory after a failure; "
                                   "get it from the database again to reload it")

    def _keys_of(self, ids: Any, *, unique: bool) -> tuple[list[bytes], list[Any]]:
        """Validated user ids -> (LMDB keys, ids as Python values)."""
        if self._info.id_type == "int":
            if isinstance(ids, str) or (isinstance(ids, (list, tuple)) and any(isinstance(i, (str, bool)) for i in ids)):
                raise InvalidArgumentError(f"collection {self.name!r} has int ids; got {ids!r:.80}")
            arr = as_id_array(ids)
            uids: list[Any] = arr.tolist()
            keys = [b"i" + k for k in K.u64_many(arr)]
        else:
            seq = [ids] if isinstance(ids, str) else list(np.asarray(ids, dtype=object).reshape(-1)) \
                if isinstance(ids, np.ndarray) else list(ids)
            uids = []
            for ident in seq:
                if isinstance(ident, np.str_):
                    ident = str(ident)
                if not isinstance(ident, str) or not ident:
                    raise InvalidArgumentError(f"collection {self.name!r} has str ids; got {ident!r}")
                if len(ident.encode("utf-8")) > K.MAX_STR_ID_BYTES:
                    raise InvalidArgumentError(f"str id longer than {K.MAX_STR_ID_BYTES} bytes: {ident[:40]!r}...")
                uids.append(ident)
            keys = [K.str_id_key(i) for i in uids]
        if unique and len(set(keys)) != len(keys):
            seen: set[bytes] = set()
            dups = [u for u, key in zip(uids, keys) if key in seen or seen.add(key)]
            raise InvalidArgumentError(f"duplicate ids in one batch: {dups[:5]}")
        return keys, uids

    def _tenant_names(self, tenant: Any) -> list[str]:
        if tenant is None:
            return []
        names = [tenant] if isinstance(tenant, str) else list(tenant)
        for name in names:
            if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_TENANT_BYTES:
                raise InvalidArgumentError(f"tenant must be a non-empty string of at most {MAX_TENANT_BYTES} bytes, got {name!r}")
        return list(dict.fromkeys(names))

    def _one_tenant(self, tenant: Any) -> str:
        if not isinstance(tenant, str):
            raise InvalidArgumentError(f"tenant must be a string, got {tenant!r}")
        return self._tenant_names(tenant)[0]

    def _tenant(self, name: str) -> TenantSet:
        ts = self._tenants.get(name)
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
        hit = iids >= 0
        if self._info.id_type == "int":
            return np.where(hit, self._uid_of[np.maximum(iids, 0)], -1).astype(np.int64)
        out = np.empty(iids.shape, object)
        out[hit] = self._uid_of[iids[hit]]
        return out

    def _hit_payloads(self, iids: np.ndarray) -> list[list[Payload | None]]:
        cache: dict[int, Payload | None] = {}
        with self._store.read() as txn:
            for iid in np.unique(iids[iids >= 0]).tolist():
                raw = txn.get(K.u64(iid), db=self._h["pay"])
                if raw is not None:
                    calls.spend_payload_bytes(len(raw))  # the server's per-call budget, before decoding
                cache[iid] = None if raw is None else decode_json(raw)
        return [[cache.get(i) if i >= 0 else None for i in row] for row in iids.tolist()]



def _row_count(vectors: Any) -> int:
    """Rows in ``vectors`` as given (an (n, 0) matrix has n rows and no values)."""
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"vectors must be a 2-D array of numbers: {exc}") from None
    return int(arr.shape[0]) if arr.ndim else int(arr.size)
