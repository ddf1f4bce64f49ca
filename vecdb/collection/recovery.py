"""Loading a collection's memory from its store: the newest checkpoint plus a replay of the
op log written since, or, without a usable checkpoint, a rebuild from every stored record.

Replay stages the points written since the checkpoint (searched exactly, their old entries
hidden from the index) for the collection's background indexer, so opening does not wait
for the index to take them; a tenant-aware index takes them at once (its membership ops need
the points in place), as does every index when memory is rebuilt after a failure.

Committed points never become unreachable: loading rebuilds from the stored records when the
checkpoint path fails, leaves a payload the payload index rejects unindexed, and serves an
index that cannot be built by an exact scan of the stored vectors (each such degradation is
logged and named in ``Memory.degraded``; the next open tries again). An index that needs
training serves by exact scan, not degraded, until the collection holds enough points.

An index with persistence "self" is loaded from its live generation of sub-databases, which
hold every committed batch exactly once: the log is replayed into the payload index and ids
only, never into it. Building it writes a new generation (``spaces``).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np

from vecdb.api import CollectionInfo
from vecdb.collection import blocks
from vecdb.collection.checkpoint import Checkpoint, Checkpoints
from vecdb.collection.layout import CollectionHost
from vecdb.collection.memory import ExactScan, Memory
from vecdb.collection.oplog import Replay, logged_since
from vecdb.collection.points import StoredPoints, read_payloads
from vecdb.collection.spaces import IndexSpaces
from vecdb.collection.tenants import Tenants
from vecdb.collection.training import apply_membership, build_index, new_index, train_threshold
from vecdb.errors import DataLossError
from vecdb.filters import PayloadIndex
from vecdb.index.base import BaseIndex
from vecdb.index.staging import Staging
from vecdb.storage import keys as K
from vecdb.storage.arrays import decode_json

log = logging.getLogger(__name__)


class Recovery:
    """Builds a ``Memory`` equal to the committed store of one collection. Given explicitly:
    the store and the collection's sub-database handles, its checkpoints, and a reader of
    its stored points, and the generations of a "self" index's sub-databases."""

    def __init__(self, host: CollectionHost, info: CollectionInfo, handles: dict[str, Any],
                 checkpoints: Checkpoints, points: StoredPoints, spaces: IndexSpaces) -> None:
        self._store = host.store
        self._info = info
        self._h = handles
        self._checkpoints = checkpoints
        self._points = points
        self._spaces = spaces

    def load(self, *, staged: bool = True) -> Memory:
        """Memory from the checkpoint + replay (the replayed points staged when ``staged``),
        or (if that path fails) from every stored record. Only an unreadable store makes
        this raise."""
        try:
            return self._load(use_checkpoint=True, staged=staged)
        except Exception:
            log.exception("collection %r: loading via the checkpoint failed; rebuilding from the store", self._info.name)
            return self._load(use_checkpoint=False, staged=staged)

    def _load(self, *, use_checkpoint: bool, staged: bool) -> Memory:
        info, h = self._info, self._h
        # the kind must exist, and accept its parameters, before anything else
        own = new_index(info).persistence == "self"
        ckpt = self._checkpoints.load(self._checkpoints.manifest()) if use_checkpoint else None
        if ckpt is not None and ckpt.index is None and not own:
            ckpt = None  # saved while the kind persisted itself: no index to replay onto
        mem = Memory(info)
        mem.payidx = ckpt.payidx if ckpt is not None else PayloadIndex()
        rejected: list[int] = []
        replay: Replay | None = None
        with self._store.read() as txn:
            ctr = {key: K.read_u64(val) for key, val in txn.cursor(h["ctr"]).iternext()}
            seq = ctr.get(b"seq", 0)
            if ckpt is not None and ckpt.seq > seq:
                log.warning("collection %r: checkpoint is newer than the store; rebuilding", info.name)
                ckpt, mem.payidx = None, PayloadIndex()
            mem.reserve(ctr.get(b"next_iid", 0))
            if ckpt is None:
                self._load_ids(mem, list(txn.cursor(h["rev"]).iternext()))
                for iid, raw in stored_payloads(txn, h, mem.live):
                    _index_payload(mem, iid, decode_json(raw), rejected)
            else:
                replay = logged_since(txn, h["log"], ckpt.seq)
                self._replay_ids(txn, mem, ckpt, replay.touched, rejected)
            tenants = {k.decode("utf-8"): K.read_u32(v) for k, v in txn.cursor(h["ten"]).iternext()}
            mem_keys, mem_levels = [], []
            for key, val in txn.cursor(h["mem"]).iternext():
                mem_keys.append(key)
                mem_levels.append(val[:1] or b"r")
        if rejected:
            mem.payload_problem = (f"{len(rejected)} payload(s) could not be indexed (e.g. of internal id "
                                   f"{rejected[0]}); filters do not see them, get returns them")
        mem.n_live = int(mem.live.sum())
        mem.payidx.compact(force=ckpt is None)
        mem.tenants = Tenants.load(tenants, b"".join(mem_keys), b"".join(mem_levels), info.name)
        mem.seq, mem.next_iid, mem.next_tenant = seq, ctr.get(b"next_iid", 0), ctr.get(b"next_tenant", 0)
        index = None
        if own:
            index = self._own_index(mem)
        elif ckpt is not None and ckpt.index is not None and replay is not None:
            index = self._replayed(ckpt.index, mem, replay, staged)
        if index is None or replay is None:
            if index is None:
                index = self._fresh_index(mem, own)
            mem.dirty = max(mem.n_live, 1) if seq else 0
        else:
            mem.dirty = len(replay.touched) + len(replay.membership)
        mem.index = index
        mem.ckpt_seq = ckpt.seq if ckpt is not None and (own or index is ckpt.index) else 0
        if mem.degraded:
            log.warning("collection %r serves in a degraded mode: %s", info.name, mem.degraded,
                        extra={"event": "collection_degraded", "collection": info.name})
        return mem

    def _replay_ids(self, txn: Any, mem: Memory, ckpt: Checkpoint, touched: np.ndarray, rejected: list[int]) -> None:
        """Ids and payloads as of the checkpoint, then those of the points written since."""
        info, h = self._info, self._h
        n = len(ckpt.uid_of)
        mem.uid_of[:n] = ckpt.uid_of
        mem.live[:n] = ckpt.uid_of >= 0 if info.id_type == "int" else ckpt.uid_of != ""
        if info.id_type == "str":
            mem.uid_of[:n][~mem.live[:n]] = None
        mem.payidx.remove(touched)
        for iid, key in zip(touched.tolist(), K.u64_many(touched)):
            idkey = txn.get(key, db=h["rev"])
            mem.live[iid] = idkey is not None
            mem.uid_of[iid] = (-1 if info.id_type == "int" else None) if idkey is None else K.decode_id_key(idkey)
        kept = touched[mem.live[touched]] if len(touched) else touched
        for iid, pay in zip(kept.tolist(), read_payloads(txn, h, kept)):
            if pay is not None:
                _index_payload(mem, iid, decode_json(pay), rejected)

    def _replayed(self, index: BaseIndex, mem: Memory, replay: Replay, staged: bool) -> BaseIndex | None:
        """The checkpointed index with the logged writes applied once: touched points removed
        and the live ones added from the store, then the membership ops in write order; with
        ``staged`` (and an index that keeps no tenants) the touched points are staged in
        ``mem.staging`` instead, for the background indexer. None (rebuild) if that fails or
        leaves a different number of points than stored."""
        info = self._info
        try:
            touched = replay.touched
            keep = touched[mem.live[touched]] if len(touched) else touched
            vectors = self._points.vectors(keep) if len(keep) else None
            if staged and not index.tenant_aware:
                stale = touched[np.isin(touched, index.ids)] if len(touched) else touched
                mem.staging.stage(vectors if vectors is not None else np.zeros((0, info.dim), np.float32), keep,
                                  stale=stale)
                served = len(index) - len(stale) + len(keep)
            else:
                index.remove(touched)
                if vectors is not None:
                    index.add(vectors, keep)
                served = len(index)
            for op in replay.membership:
                apply_membership(index, op)
        except DataLossError:
            raise
        except Exception:
            log.exception("collection %r: replaying onto the checkpointed index failed; rebuilding", info.name)
            mem.staging = Staging(info.dim, info.metric)
            return None
        if served != mem.n_live:
            log.warning("collection %r: checkpoint + replay holds %d points, store %d; rebuilding",
                        info.name, served, mem.n_live)
            mem.staging = Staging(info.dim, info.metric)
            return None
        return index

    def _own_index(self, mem: Memory) -> BaseIndex | None:
        """The "self" index loaded from its live generation of sub-databases (nothing is
        replayed into it); None (rebuild) when none is live, it cannot be loaded, or it holds
        another number of points than the store. Generations that are not live (a crash
        during a build left them) are dropped first."""
        info, spaces = self._info, self._spaces
        gen = spaces.live()
        spaces.drop_others(gen)
        if gen is None:
            return None
        index = new_index(info)
        try:
            index.attach(spaces.space(gen))
        except Exception:
            log.exception("collection %r: loading the %s index from its sub-databases failed; rebuilding",
                          info.name, info.index)
            return None
        if len(index) != mem.n_live:
            log.warning("collection %r: the %s index's sub-databases hold %d points, the store %d; rebuilding",
                        info.name, info.index, len(index), mem.n_live)
            return None
        return index

    def _fresh_index(self, mem: Memory, own: bool) -> BaseIndex:
        """The configured index holding every live point, trained first if it needs it (a
        "self" index written whole into a new live generation of sub-databases); the
        exact-scan stand-in while it needs training and too few points are stored, or when
        it cannot be built (the reason goes to ``mem.index_problem``; a "self" index's
        sub-databases are then dropped, as later batches will not reach them)."""
        info, spaces = self._info, self._spaces
        live = np.flatnonzero(mem.live).astype(np.int64)
        configured = new_index(info)
        mem.train_at = train_threshold(configured)
        if mem.train_at is None or mem.n_live >= mem.train_at:
            try:
                vectors = self._points.vectors(live)
                if not own:
                    return build_index(info, vectors, live, mem.tenants)
                index = spaces.build(lambda space: build_index(info, vectors, live, mem.tenants, space))
                spaces.drop_others(spaces.live())
                return index
            except DataLossError:
                raise
            except Exception as exc:
                log.exception("collection %r: building the %s index failed", info.name, info.index)
                mem.index_problem = (f"building the {info.index!r} index failed ({type(exc).__name__}: {exc}); "
                                     "searches scan the stored vectors exactly")
                mem.train_at = None
        if own:
            spaces.retire()
        stand_in = ExactScan(info.dim, info.metric, configured)
        if len(live):
            stand_in.add(self._points.vectors(live), live)
        return stand_in

    @staticmethod
    def _load_ids(mem: Memory, rev: list[tuple[bytes, bytes]]) -> None:
        """Fill the internal-id -> user-id array and the live mask from all ``rev`` records."""
        iids = np.frombuffer(b"".join(k for k, _ in rev), ">u8").astype(np.int64)
        if mem.uid_of.dtype != object:
            mem.uid_of[iids] = np.frombuffer(b"".join(v[1:9] for _, v in rev), ">u8").astype(np.int64)
        else:
            mem.uid_of[iids] = [K.decode_id_key(v) for _, v in rev]
        mem.live[iids] = True


def stored_payloads(txn: Any, handles: dict[str, Any], live: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(internal id, JSON bytes) of every stored payload of a live point: the rows of the
    payload blocks, unless a per-point ``pay`` record overrides them (b"": none)."""
    single = {K.read_u64(key): bytes(val) for key, val in txn.cursor(handles["pay"]).iternext()}
    for ids, raws in blocks.all_payloads(txn, handles["pblk"]):
        for iid, raw in zip(ids.tolist(), raws):
            if raw is not None and iid not in single and iid < len(live) and live[iid]:
                yield iid, raw
    for iid, raw in single.items():
        if raw and iid < len(live) and live[iid]:
            yield iid, raw


def _index_payload(mem: Memory, iid: int, payload: Any, rejected: list[int]) -> None:
    """Add one stored payload to the payload index; one it rejects is left unindexed (its
    half-added entries are made stale) and noted in ``rejected``."""
    try:
        mem.payidx.add(iid, payload)
    except Exception as exc:
        mem.payidx.remove(np.array([iid], np.int64))
        if not rejected:
            log.error("collection %r: the payload of internal id %d cannot be indexed (%s: %s); leaving it "
                      "unindexed", mem.info.name, iid, type(exc).__name__, exc)
        rejected.append(iid)
