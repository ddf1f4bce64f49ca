"""The in-memory mirror of one collection and how it is kept equal to the committed store:
loading (checkpoint + replay, or rebuild), applying committed batches, and checkpoints.

``Collection`` (``vecdb.collection``) inherits this; everything here runs under the
collection's writer lock, and mutations of what readers see under its exclusive lock.

Committed points never become unreachable: loading rebuilds from the stored records when the
checkpoint path fails, leaves a payload the payload index rejects unindexed, and serves an
index that cannot be built (an untrained code index, or a failure adding the stored vectors)
by an exact scan of the stored vectors. Each such degradation is logged and named in
``_degraded``; the next open tries the configured index again.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from vecdb.errors import DataLossError, InternalError
from vecdb.filters import PayloadIndex, load_payload_index, save_payload_index
from vecdb.index.base import _REGISTRY, BaseIndex, load_index
from vecdb.index.codes import CodeIndex
from vecdb.index.flat import FlatIndex
from vecdb.index.staging import Staging
from vecdb.storage import keys as K
from vecdb.storage.arrays import F32_LE, U64_LE, decode_json, from_bytes

if TYPE_CHECKING:
    from vecdb.api import CollectionInfo
    from vecdb.storage.env import Store
    from vecdb.storage.locks import RWLock

log = logging.getLogger(__name__)

# Sub-databases of one collection, named ``c<cid as 8 hex>.<part>``:
#   ids  user-id key -> u64 iid          rev  u64 iid -> user-id key
#   vec  u64 iid -> float32 LE row       pay  u64 iid -> JSON payload
#   ten  tenant name -> u32 tenant no.   mem  u32 tenant no. + u64 iid -> access level
#   log  u64 seq -> u64 LE iids touched  ctr  b"seq" / b"next_iid" / b"next_tenant" -> u64
PARTS = ("ids", "rev", "vec", "pay", "ten", "mem", "log", "ctr")

# Access levels, as stored in ``mem`` values. Databases written before owners existed hold
# b"" for every membership, which therefore reads as a read grant (the least access).
OWNER, WRITE, READ = b"o", b"w", b""

#: target length of one exclusive step that moves staged points into the index; the number
#: of points per step adapts to it (between the two bounds below).
STEP_SECONDS = 0.02
MIN_STEP_ROWS, MAX_STEP_ROWS = 16, 65_536


def collection_index_problem(kind: str) -> str | None:
    """Why index ``kind`` cannot serve a collection yet (None when it can): code indexes need
    training on sample vectors before the first add, which collections do not do yet."""
    cls = _REGISTRY.get(kind)
    if cls is not None and issubclass(cls, CodeIndex):
        return (f"index {kind!r} cannot be used in a collection yet: it needs training on sample vectors "
                "before the first point, which collections do not do yet; use 'hnsw' or 'flat'")
    return None


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to save the index: once ``points`` points changed (or half the collection when
    that is larger, so the cost per point stays bounded), or ``seconds`` after the last
    checkpoint if anything changed; always on close. Replay on open costs time proportional
    to the changes since the last checkpoint."""

    points: int = 100_000
    seconds: float = 600.0


class TenantSet:
    """Points (internal ids) one tenant may access, by level, with a cached sorted array of
    all of them used as allow-set. ``members`` holds every accessible point; ``owned`` the
    ones it owns (created by a write scoped to it); ``writable`` its write grants."""

    def __init__(self, number: int, members: set[int] | None = None) -> None:
        self.number = number
        self.members: set[int] = members if members is not None else set()
        self.owned: set[int] = set()
        self.writable: set[int] = set()
        self._array: np.ndarray | None = None

    def level(self, iid: int) -> bytes | None:
        """OWNER, WRITE or READ for an accessible point, None otherwise."""
        if iid not in self.members:
            return None
        return OWNER if iid in self.owned else WRITE if iid in self.writable else READ

    def can_write(self, iid: int) -> bool:
        """True if this tenant may replace the point (it owns it or has a write grant)."""
        return iid in self.owned or iid in self.writable

    def set_level(self, iid: int, level: bytes) -> None:
        """Give access at ``level`` (replacing any other level)."""
        self.members.add(iid)
        (self.owned.add if level == OWNER else self.owned.discard)(iid)
        (self.writable.add if level == WRITE else self.writable.discard)(iid)
        self._array = None

    def discard(self, iid: int) -> None:
        """Take every access to the point away."""
        self.members.discard(iid)
        self.owned.discard(iid)
        self.writable.discard(iid)
        self._array = None

    def array(self) -> np.ndarray:
        """Sorted int64 member ids (rebuilt after a change; racing readers build equal copies)."""
        arr = self._array
        if arr is None:
            arr = np.fromiter(self.members, np.int64, len(self.members))
            arr.sort()
            self._array = arr
        return arr

    def changed(self) -> None:
        self._array = None


class ExactScan(FlatIndex):
    """Stands in for a collection's index when that cannot be built: exact search over the
    stored vectors. It accepts (and ignores) the configured index's search knobs, so callers
    need not know, and is never checkpointed (``kind`` is empty, so it is not registered)."""

    kind = ""

    def __init__(self, dim: int, metric: Any, knobs: Iterable[str]) -> None:
        super().__init__(dim, metric)
        self.search_params = frozenset(knobs)

    def _search(self, queries: Any, k: int, allowed: Any, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        return super()._search(queries, k, allowed)


class CollectionState:
    """Loading, applying and checkpointing the in-memory state of a collection."""

    _info: "CollectionInfo"
    _store: "Store"
    _h: dict[str, Any]
    _cid: int
    _policy: CheckpointPolicy
    _ckpt_root: Path
    _rw: "RWLock"
    _db: Any
    _state: str
    _degraded: str | None = None
    _step_rows: int = 256

    # ---- load ------------------------------------------------------------------------
    def _load(self) -> None:
        """(Re)build memory from the store: newest checkpoint + replay of the ids logged since,
        or, without a usable checkpoint (or if that path fails), everything from the stored
        records. Only an unreadable store makes this raise."""
        try:
            self._load_state(use_checkpoint=True)
        except Exception:
            log.exception("collection %r: loading via the checkpoint failed; rebuilding from the store", self._info.name)
            self._load_state(use_checkpoint=False)

    def _load_state(self, *, use_checkpoint: bool) -> None:
        info, h = self._info, self._h
        cls = _REGISTRY.get(info.index)
        if cls is None:
            raise DataLossError(f"collection {info.name!r} uses index kind {info.index!r}, which is not available "
                                f"(known: {sorted(_REGISTRY)})")
        problems: list[str] = []
        unusable = collection_index_problem(info.index)
        ckpt = None
        if use_checkpoint:
            with self._store.read() as txn:
                raw = txn.get(K.u32(self._cid), db=self._db._manifest)
            ckpt = self._load_checkpoint(None if raw is None else decode_json(raw))
        self._live = np.zeros(0, bool)
        self._uid_of = np.zeros(0, np.int64 if info.id_type == "int" else object)
        self._payidx = ckpt.payidx if ckpt is not None else PayloadIndex()
        rejected: list[int] = []
        with self._store.read() as txn:
            ctr = {key: K.read_u64(val) for key, val in txn.cursor(h["ctr"]).iternext()}
            seq, next_iid, next_tenant = ctr.get(b"seq", 0), ctr.get(b"next_iid", 0), ctr.get(b"next_tenant", 0)
            if ckpt is not None and ckpt.seq > seq:
                log.warning("collection %r: checkpoint is newer than the store; rebuilding", info.name)
                ckpt, self._payidx = None, PayloadIndex()
            self._reserve(next_iid)
            if ckpt is None:
                touched = None
                self._load_ids(list(txn.cursor(h["rev"]).iternext()))
                for key, val in txn.cursor(h["pay"]).iternext():
                    self._index_payload(K.read_u64(key), decode_json(val), rejected)
            else:
                touched = _logged_since(txn, h["log"], ckpt.seq)
                self._uid_of[: len(ckpt.uid_of)] = ckpt.uid_of
                self._live[: len(ckpt.uid_of)] = ckpt.uid_of >= 0 if info.id_type == "int" else ckpt.uid_of != ""
                if info.id_type == "str":
                    self._uid_of[: len(ckpt.uid_of)][~self._live[: len(ckpt.uid_of)]] = None
                self._payidx.remove(touched)
                for iid, key in zip(touched.tolist(), K.u64_many(touched)):
                    idkey = txn.get(key, db=h["rev"])
                    self._live[iid] = idkey is not None
                    self._uid_of[iid] = (-1 if info.id_type == "int" else None) if idkey is None else K.decode_id_key(idkey)
                    pay = txn.get(key, db=h["pay"]) if idkey is not None else None
                    if pay is not None:
                        self._index_payload(iid, decode_json(pay), rejected)
            tenants = {k.decode("utf-8"): K.read_u32(v) for k, v in txn.cursor(h["ten"]).iternext()}
            mem_keys, mem_levels = [], []
            for key, val in txn.cursor(h["mem"]).iternext():
                mem_keys.append(key)
                mem_levels.append(val[:1] or b"r")
        if rejected:
            problems.append(f"{len(rejected)} payload(s) could not be indexed (e.g. of internal id {rejected[0]}); "
                            "filters do not see them, get returns them")
        self._n_live = int(self._live.sum())
        self._payidx.compact(force=ckpt is None)
        self._load_tenants(tenants, b"".join(mem_keys), b"".join(mem_levels))
        self._seq, self._next_iid, self._next_tenant = seq, next_iid, next_tenant
        index = None
        if ckpt is not None and touched is not None and unusable is None:
            try:
                index = ckpt.index
                index.remove(touched)
                keep = touched[self._live[touched]] if len(touched) else touched
                index.add(self._read_vectors(keep), keep)
                if len(index) != self._n_live:
                    log.warning("collection %r: checkpoint + replay holds %d points, store %d; rebuilding",
                                info.name, len(index), self._n_live)
                    index = None
            except DataLossError:
                raise
            except Exception:
                log.exception("collection %r: replaying onto the checkpointed index failed; rebuilding", info.name)
                index = None
        if index is None:
            index = self._fresh_index(cls, unusable, problems)
            self._dirty = max(self._n_live, 1) if seq else 0
        else:
            self._dirty = len(touched) if touched is not None else 0
        self._index: BaseIndex = index
        self._staging = Staging(info.dim, info.metric)
        self._ckpt_seq = ckpt.seq if ckpt is not None else 0
        self._last_ckpt = time.monotonic()
        self._degraded = "; ".join(problems) or None
        if self._degraded:
            log.warning("collection %r serves in a degraded mode: %s", info.name, self._degraded,
                        extra={"event": "collection_degraded", "collection": info.name})

    def _fresh_index(self, cls: type[BaseIndex], unusable: str | None, problems: list[str]) -> BaseIndex:
        """The configured index holding every live point; if it cannot be built, an exact
        scan of the same points (the reason goes to ``problems``)."""
        info = self._info
        live = np.flatnonzero(self._live).astype(np.int64)
        reason = unusable
        if reason is None:
            try:
                index = cls(info.dim, info.metric, **info.index_params)
                if len(live):
                    index.add(self._read_vectors(live), live)
                return index
            except DataLossError:
                raise
            except Exception as exc:
                log.exception("collection %r: building the %s index failed", info.name, info.index)
                reason = f"building the {info.index!r} index failed ({type(exc).__name__}: {exc})"
        problems.append(f"{reason}; searches scan the stored vectors exactly")
        index = ExactScan(info.dim, info.metric, cls.search_params)
        if len(live):
            index.add(self._read_vectors(live), live)
        return index

    def _index_payload(self, iid: int, payload: Any, rejected: list[int]) -> None:
        """Add one stored payload to the payload index; one it rejects is left unindexed
        (its half-added entries are made stale) and noted in ``rejected``."""
        try:
            self._payidx.add(iid, payload)
        except Exception as exc:
            self._payidx.remove(np.array([iid], np.int64))
            if not rejected:
                log.error("collection %r: the payload of internal id %d cannot be indexed (%s: %s); leaving it "
                          "unindexed", self._info.name, iid, type(exc).__name__, exc)
            rejected.append(iid)

    def _load_ids(self, rev: list[tuple[bytes, bytes]]) -> None:
        """Fill the internal-id -> user-id array and the live mask from all ``rev`` records."""
        iids = np.frombuffer(b"".join(k for k, _ in rev), ">u8").astype(np.int64)
        if self._info.id_type == "int":
            self._uid_of[iids] = np.frombuffer(b"".join(v[1:9] for _, v in rev), ">u8").astype(np.int64)
        else:
            self._uid_of[iids] = [K.decode_id_key(v) for _, v in rev]
        self._live[iids] = True

    def _load_tenants(self, tenants: dict[str, int], members: bytes, levels: bytes) -> None:
        """Tenant sets from the ``ten`` records, the concatenated 12-byte ``mem`` keys and one
        level byte per key (b"o" owner, b"w" write grant, b"r" read grant)."""
        self._tenants: dict[str, TenantSet] = {name: TenantSet(num) for name, num in tenants.items()}
        by_number = {ts.number: ts for ts in self._tenants.values()}
        self._point_tenants: dict[int, set[int]] = {}
        pairs = np.frombuffer(members, np.uint8).reshape(-1, 12)
        numbers = pairs[:, :4].copy().view(">u4").reshape(-1).astype(np.int64)
        member_iids = pairs[:, 4:].copy().view(">u8").reshape(-1).astype(np.int64)
        level = np.frombuffer(levels, np.uint8)
        unknown = set(np.unique(numbers).tolist()) - set(by_number)
        if unknown:
            raise DataLossError(f"collection {self._info.name!r}: memberships of unknown tenant numbers {sorted(unknown)}")
        for number, ts in by_number.items():
            mine = numbers == number
            ts.members = set(member_iids[mine].tolist())
            ts.owned = set(member_iids[mine & (level == ord(OWNER))].tolist())
            ts.writable = set(member_iids[mine & (level == ord(WRITE))].tolist())
        for number, iid in zip(numbers.tolist(), member_iids.tolist()):
            self._point_tenants.setdefault(iid, set()).add(number)

    def _load_checkpoint(self, manifest: dict[str, Any] | None) -> "_Checkpoint | None":
        """The checkpoint named by ``manifest`` (None if absent or unreadable); stray
        checkpoint folders (from a crash before their manifest entry committed) are removed."""
        keep = None if manifest is None else str(manifest.get("dir"))
        if self._ckpt_root.exists():
            for entry in self._ckpt_root.iterdir():
                if entry.name != keep:
                    shutil.rmtree(entry, ignore_errors=True)
        if manifest is None:
            return None
        folder = self._ckpt_root / str(keep)
        try:
            index = load_index(folder / "index")
            payidx = load_payload_index(folder / "payload")
            uid_of = _load_uids(folder, self._info.id_type)
        except DataLossError as exc:
            log.warning("collection %r: checkpoint unreadable (%s); rebuilding from the store", self._info.name, exc)
            return None
        if index.kind != self._info.index or index.dim != self._info.dim:
            log.warning("collection %r: checkpoint is %s/%d, expected %s/%d; rebuilding", self._info.name,
                        index.kind, index.dim, self._info.index, self._info.dim)
            return None
        return _Checkpoint(int(manifest["seq"]), index, payidx, uid_of)

    def _read_vectors(self, iids: np.ndarray) -> np.ndarray:
        """Stored float32 rows of ``iids`` (n, dim), read in one transaction."""
        d = self._info.dim
        out = np.empty((len(iids), d), np.float32)
        if not len(iids):
            return out
        db = self._h["vec"]
        with self._store.read(buffers=True) as txn:
            if len(iids) > 0.5 * self._n_live:
                want = {iid: row for row, iid in enumerate(iids.tolist())}
                for key, val in txn.cursor(db).iternext():
                    row = want.get(K.read_u64(key))
                    if row is not None:
                        out[row] = np.frombuffer(val, F32_LE, count=d)
                        del want[K.read_u64(key)]
                missing = list(want)
            else:
                missing = []
                for row, key in enumerate(K.u64_many(iids)):
                    val = txn.get(key, db=db)
                    if val is None:
                        missing.append(int(iids[row]))
                    else:
                        out[row] = np.frombuffer(val, F32_LE, count=d)
        if missing:
            raise DataLossError(f"collection {self._info.name!r}: {len(missing)} point(s) have no stored vector, "
                                f"e.g. internal id {missing[0]}")
        return out

    # ---- apply committed batches ------------------------------------------------------
    def _reserve(self, n: int) -> None:
        """Grow the per-internal-id arrays to hold ids below ``n``."""
        if n > len(self._live) or not len(self._live):
            cap = max(n, int(len(self._live) * 1.5), 1024)
            live = np.zeros(cap, bool)
            live[: len(self._live)] = self._live
            uid = np.full(cap, -1, np.int64) if self._uid_of.dtype != object else np.empty(cap, object)
            uid[: len(self._uid_of)] = self._uid_of
            self._live, self._uid_of = live, uid
        self._payidx.reserve(len(self._live))

    def _apply(self, change: Callable[[], None]) -> None:
        """Apply a committed batch to memory. If that fails (a bug, or an index that cannot
        take the points), memory is rebuilt from the committed store, which then serves the
        batch as well (``_load`` never drops stored points), so the write stands and the
        cause is logged. Only if the store itself cannot be read is the collection marked
        "failed"; the database then reloads it on the next ``get_collection``."""
        try:
            change()
        except Exception as exc:
            log.error("collection %r: applying a committed batch failed (%s: %s); rebuilding memory from the store",
                      self._info.name, type(exc).__name__, exc, exc_info=True,
                      extra={"event": "apply_failed", "collection": self._info.name})
            try:
                self._load()
            except Exception as again:
                self._state = "failed"
                log.exception("collection %r: rebuilding memory from the store failed", self._info.name)
                raise InternalError(f"collection {self._info.name!r}: the batch was committed, but memory could not "
                                    f"be rebuilt from the store ({type(again).__name__}: {again}); get the "
                                    "collection again to reload it") from exc

    def _apply_upsert(self, iids: np.ndarray, is_new: np.ndarray, uids: list[Any], x: np.ndarray,
                      pays: list[dict[str, Any] | None], owners: list[TenantSet], seq: int, next_iid: int) -> None:
        self._reserve(next_iid)
        old = iids[~is_new]
        if len(old):
            self._payidx.remove(old)
        self._staging.stage(x, iids, stale=old)
        new = iids[is_new]
        if self._uid_of.dtype == object:
            for iid, uid, fresh in zip(iids.tolist(), uids, is_new.tolist()):
                if fresh:
                    self._uid_of[iid] = uid
        else:
            self._uid_of[new] = np.asarray(uids, np.int64)[is_new]
        self._live[new] = True
        self._n_live += len(new)
        add = self._payidx.add
        for iid, payload in zip(iids.tolist(), pays):
            if payload:
                add(iid, payload)
        self._payidx.compact()
        self._set_access(owners, new.tolist(), OWNER)
        self._seq, self._next_iid = seq, next_iid
        self._dirty += len(iids)

    def _set_access(self, tsets: list[TenantSet], iids: list[int], level: bytes | None) -> None:
        """Give each tenant in ``tsets`` access at ``level`` to ``iids`` (None takes it away)."""
        for ts in tsets:
            for iid in iids:
                if level is None:
                    ts.discard(iid)
                    self._point_tenants.get(iid, set()).discard(ts.number)
                else:
                    ts.set_level(iid, level)
                    self._point_tenants.setdefault(iid, set()).add(ts.number)
            ts.changed()

    def _apply_delete(self, iids: np.ndarray, seq: int) -> None:
        self._staging.unstage(iids)
        self._staging.hide(iids)
        self._payidx.remove(iids)
        self._live[iids] = False
        self._n_live -= len(iids)
        self._uid_of[iids] = None if self._uid_of.dtype == object else -1
        by_number = {ts.number: ts for ts in self._tenants.values()}
        for iid in iids.tolist():
            for number in self._point_tenants.pop(iid, ()):
                by_number[number].discard(iid)
        self._payidx.compact()
        self._seq = seq
        self._dirty += len(iids)

    def _drain(self) -> None:
        """Move the staged part of the last batch into the index in short exclusive steps
        (caller holds the writer lock): each step is sized to take about ``STEP_SECONDS``,
        so searches wait at most one step; they see staged points meanwhile (``Staging``)."""
        staging = self._staging
        if not staging.busy:
            return
        staging.reserve(self._index)
        while self._staging.busy:
            size = self._step_rows
            with self._rw.write():
                start = time.perf_counter()
                self._apply(lambda: self._staging.step(self._index, size))
                took = time.perf_counter() - start
            self._step_rows = int(min(MAX_STEP_ROWS, max(MIN_STEP_ROWS, size * STEP_SECONDS / max(took, 1e-4))))

    # ---- checkpoints -----------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        """Checkpoint if the policy says so (caller holds the writer lock). An exact-scan
        stand-in index is never saved: the next open tries the configured index again."""
        if not self._dirty or isinstance(self._index, ExactScan):
            return
        due = self._dirty >= max(self._policy.points, self._n_live // 2)
        if due or time.monotonic() - self._last_ckpt >= self._policy.seconds:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Save the index as of ``self._seq``, record it in the manifest, trim the op log.

        The caller holds the writer lock, so the index does not change while it is saved;
        searches continue. Order matters for crashes: files first (fsynced), then the
        manifest commit, then old folders are removed; a crash in between leaves either
        the old checkpoint in force or a stray folder that the next open deletes.
        """
        with self._db._ckpt_lock:
            seq = self._seq
            name = f"{seq:016x}"
            target = self._ckpt_root / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            self._index.save(target / "index")
            save_payload_index(self._payidx, target / "payload")
            _save_uids(target, self._uid_of[: self._next_iid])
            _fsync_tree(target)
            manifest = json.dumps({"seq": seq, "dir": name, "kind": self._index.kind}).encode("utf-8")
            cid_key, log_db, man_db = K.u32(self._cid), self._h["log"], self._db._manifest
            limit = K.u64(seq)

            def batch(txn: Any) -> None:
                txn.put(cid_key, manifest, db=man_db)
                cur = txn.cursor(log_db)
                cur.first()
                while True:
                    key = cur.key()
                    if not key or key > limit or not cur.delete():
                        break

            self._store.write(batch)
            for entry in self._ckpt_root.iterdir():
                if entry.name != name:
                    shutil.rmtree(entry, ignore_errors=True)
            self._ckpt_seq, self._dirty, self._last_ckpt = seq, 0, time.monotonic()

    def _close(self) -> None:
        """Checkpoint if anything changed, then refuse further calls."""
        with self._writer:
            if self._state != "open":
                return
            try:
                if self._dirty and not isinstance(self._index, ExactScan):
                    self._checkpoint()
            finally:
                with self._rw.write():
                    self._state = "closed"

    def _drop(self) -> None:
        """Refuse further calls (the database deletes the stored data)."""
        with self._writer:
            with self._rw.write():
                self._state = "dropped"


@dataclass
class _Checkpoint:
    """What a checkpoint folder holds: the index, the payload index and internal -> user ids,
    all as of write sequence ``seq``."""

    seq: int
    index: BaseIndex
    payidx: PayloadIndex
    uid_of: np.ndarray


def _save_uids(folder: Path, uid_of: np.ndarray) -> None:
    """int ids as int64 (-1 = free); str ids as one UTF-8 blob + offsets ("" = free)."""
    if uid_of.dtype != object:
        np.save(folder / "uids.npy", uid_of.astype(np.int64), allow_pickle=False)
        return
    encoded = [b"" if u is None else u.encode("utf-8") for u in uid_of.tolist()]
    np.save(folder / "uids.blob.npy", np.frombuffer(b"".join(encoded), np.uint8), allow_pickle=False)
    np.save(folder / "uids.offsets.npy", np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64), allow_pickle=False)


def _load_uids(folder: Path, id_type: str) -> np.ndarray:
    try:
        if id_type == "int":
            return np.load(folder / "uids.npy", allow_pickle=False).astype(np.int64)
        blob = np.load(folder / "uids.blob.npy", allow_pickle=False).tobytes()
        offsets = np.load(folder / "uids.offsets.npy", allow_pickle=False).tolist()
        out = np.empty(len(offsets) - 1, object)
        out[:] = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        return out
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataLossError(f"id checkpoint in {folder} is unreadable: {exc}") from None


def _logged_since(txn: Any, log_db: Any, seq: int) -> np.ndarray:
    """Sorted unique internal ids touched by logged writes with sequence number > ``seq``."""
    cur = txn.cursor(log_db)
    parts = []
    if cur.set_range(K.u64(seq + 1)):
        for _key, val in cur.iternext():
            parts.append(from_bytes(val, U64_LE).astype(np.int64))
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _fsync_tree(path: Path) -> None:
    """fsync every file of a checkpoint folder and the folders, so the manifest never points
    at data still only in the page cache."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for folder in (path, path.parent):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when missing)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
