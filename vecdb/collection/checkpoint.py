"""Index checkpoints of one collection: saving the index, payload index and user ids as of a
write sequence, recording that in the manifest and trimming the op log; reading them back.
An index with persistence "self" is not saved (its state is in LMDB, committed with every
batch): its checkpoints hold the payload index and user ids only."""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.api import CollectionInfo
from vecdb.collection.layout import CollectionHost, checkpoint_root
from vecdb.collection.memory import Memory
from vecdb.errors import DataLossError
from vecdb.filters import PayloadIndex, load_payload_index, save_payload_index
from vecdb.index.base import BaseIndex, load_index
from vecdb.storage import keys as K
from vecdb.storage.arrays import decode_json
from vecdb.storage.files import fsync_tree

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """What a checkpoint folder holds: the index (None when it persists itself), the payload
    index and internal -> user ids, all as of write sequence ``seq``."""

    seq: int
    index: BaseIndex | None
    payidx: PayloadIndex
    uid_of: np.ndarray


class Checkpoints:
    """Saves and loads the checkpoints of collection number ``cid`` (given the store, the
    manifest handle, the checkpoint lock and the folder explicitly, through ``host``)."""

    def __init__(self, host: CollectionHost, cid: int, info: CollectionInfo, log_db: Any) -> None:
        self._host = host
        self._cid = cid
        self._info = info
        self._log_db = log_db
        self.root = checkpoint_root(host.index_root, cid)

    def due(self, mem: Memory) -> bool:
        """True when the policy asks for a checkpoint now. The exact-scan stand-in is never
        saved: the next open builds the configured index again."""
        if not mem.dirty or not mem.trained:
            return False
        policy = self._host.policy
        return mem.dirty >= max(policy.points, mem.n_live // 2) or time.monotonic() - mem.last_ckpt >= policy.seconds

    def manifest(self) -> dict[str, Any] | None:
        """The manifest record of the newest checkpoint (None when there is none)."""
        with self._host.store.read() as txn:
            raw = txn.get(K.u32(self._cid), db=self._host.manifest)
        return None if raw is None else decode_json(raw)

    def save(self, mem: Memory) -> None:
        """Save ``mem``'s index as of ``mem.seq``, record it in the manifest, trim the op log.

        The caller holds the collection's writer lock, so the index does not change while it
        is saved; searches continue. Order matters for crashes: files first (fsynced), then
        the manifest commit, then old folders are removed; a crash in between leaves either
        the old checkpoint in force or a stray folder that the next open deletes.
        """
        with self._host.checkpoint_lock:
            seq = mem.seq
            name = f"{seq:016x}"
            target = self.root / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            saved = mem.index.persistence != "self"
            if saved:
                mem.index.save(target / "index")
            save_payload_index(mem.payidx, target / "payload")
            _save_uids(target, mem.uid_of[: mem.next_iid])
            fsync_tree(target)
            record = json.dumps({"seq": seq, "dir": name, "kind": mem.index.kind, "index": saved}).encode("utf-8")
            cid_key, log_db, man_db, limit = K.u32(self._cid), self._log_db, self._host.manifest, K.u64(seq)

            def batch(txn: Any) -> None:
                txn.put(cid_key, record, db=man_db)
                cur = txn.cursor(log_db)
                cur.first()
                while True:
                    key = cur.key()
                    if not key or key > limit or not cur.delete():
                        break

            self._host.store.write(batch)
            for entry in self.root.iterdir():
                if entry.name != name:
                    shutil.rmtree(entry, ignore_errors=True)
            mem.ckpt_seq, mem.dirty, mem.last_ckpt = seq, 0, time.monotonic()

    def load(self, manifest: dict[str, Any] | None) -> Checkpoint | None:
        """The checkpoint named by ``manifest`` (None if absent or unreadable); stray
        checkpoint folders (from a crash before their manifest entry committed) are removed."""
        keep = None if manifest is None else str(manifest.get("dir"))
        if self.root.exists():
            for entry in self.root.iterdir():
                if entry.name != keep:
                    shutil.rmtree(entry, ignore_errors=True)
        if manifest is None:
            return None
        folder = self.root / str(keep)
        info = self._info
        try:
            index = load_index(folder / "index") if manifest.get("index", True) else None
            payidx = load_payload_index(folder / "payload")
            uid_of = _load_uids(folder, info.id_type)
        except DataLossError as exc:
            log.warning("collection %r: checkpoint unreadable (%s); rebuilding from the store", info.name, exc)
            return None
        if index is not None and (index.kind != info.index or index.dim != info.dim):
            log.warning("collection %r: checkpoint is %s/%d, expected %s/%d; rebuilding", info.name,
                        index.kind, index.dim, info.index, info.dim)
            return None
        return Checkpoint(int(manifest["seq"]), index, payidx, uid_of)


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
