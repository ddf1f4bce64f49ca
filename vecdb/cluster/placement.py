"""Where points live: a consistent-hash ring of point ids over shards, and the cluster's
placement record (shards, replicas, a rebalance in progress) kept durably in its root.

A point's shard is the first ring position at or after the hash of its id key (the same key
the embedded collection stores: ``vecdb.storage.keys``), each shard holding ``vnodes``
positions, so adding a shard moves about 1/N of the points, all of them to the new shard.
The record is JSON written atomically (temporary file, fsync, rename, fsync of the folder):
a crash leaves the old record or the new one, never a torn one. Each new layout carries a
higher ``generation``, so two records of one cluster never have the same bytes: a reading
router that reads the same bytes before and after a read knows the layout did not change
meanwhile (``read_raw``; the check of ``Shards.consistent``)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vecdb.errors import DataLossError, InvalidArgumentError

FORMAT = "vecdb-cluster"
VERSION = 1
RECORD = "placement.json"
DEFAULT_VNODES = 64


def key_hash(key: bytes) -> int:
    """The ring position of one id key (64-bit BLAKE2b: stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def tenant_key(tenant: str) -> bytes:
    """The ring key of a tenant: where a multi-tenant collection puts the points it owns."""
    return b"t" + tenant.encode("utf-8")


def placement_key(id_key: bytes, owners: tuple[str, ...], multi_tenant: bool) -> bytes:
    """The ring key of a point: its id's, or in a multi-tenant collection its first (by
    name) owner tenant's, so that a tenant's points share one shard."""
    return tenant_key(min(owners)) if multi_tenant and owners else id_key


class HashRing:
    """Shard of each id key for one list of shards (``vnodes`` positions per shard)."""

    def __init__(self, shards: Sequence[int], vnodes: int = DEFAULT_VNODES) -> None:
        if not shards:
            raise InvalidArgumentError("a hash ring needs at least one shard")
        self.shards = tuple(sorted(int(s) for s in shards))
        self.vnodes = int(vnodes)
        points = sorted((key_hash(f"shard-{s}/{v}".encode()), s) for s in self.shards for v in range(self.vnodes))
        self._pos = np.array([p for p, _ in points], np.uint64)
        self._owner = np.array([s for _, s in points], np.int64)

    def owners(self, keys: Sequence[bytes]) -> np.ndarray:
        """The shard of each key (int64 array, one per key)."""
        if not len(keys):
            return np.zeros(0, np.int64)
        h = np.fromiter((key_hash(k) for k in keys), np.uint64, len(keys))
        at = np.searchsorted(self._pos, h, side="left")
        at[at == len(self._pos)] = 0   # past the last position: wraps to the first
        return self._owner[at]

    def owner(self, key: bytes) -> int:
        return int(self.owners([key])[0])

    def spec(self) -> dict[str, Any]:
        """What rebuilds this ring elsewhere (a shard actor scanning for points to move)."""
        return {"shards": list(self.shards), "vnodes": self.vnodes}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "HashRing":
        return cls(spec["shards"], spec["vnodes"])


@dataclass(frozen=True)
class Placement:
    """The durable layout of a cluster: shard numbers, replicas per shard, ring positions
    per shard; ``moving_to`` lists the shards of a rebalance in progress (None otherwise);
    ``generation`` grows with every change of layout (the record's bytes never repeat)."""

    shards: tuple[int, ...]
    replicas: int
    vnodes: int = DEFAULT_VNODES
    moving_to: tuple[int, ...] | None = None
    next_shard: int = field(default=0)
    generation: int = 0

    def ring(self) -> HashRing:
        return HashRing(self.shards, self.vnodes)

    def target_ring(self) -> HashRing | None:
        return None if self.moving_to is None else HashRing(self.moving_to, self.vnodes)

    def all_shards(self) -> tuple[int, ...]:
        """Every shard that may hold points now (both layouts during a rebalance)."""
        return tuple(sorted(set(self.shards) | set(self.moving_to or ())))

    def with_target(self, target: Sequence[int] | None) -> "Placement":
        nxt = max([self.next_shard, *(s + 1 for s in (target or ()))])
        return replace(self, moving_to=None if target is None else tuple(sorted(target)), next_shard=nxt,
                       generation=self.generation + 1)

    def finished(self) -> "Placement":
        assert self.moving_to is not None
        return replace(self, shards=self.moving_to, moving_to=None, generation=self.generation + 1)

    def waves(self, shards: Sequence[int]) -> list[list[int]]:
        """``shards`` in the order a read must ask them so that a point moving meanwhile is
        seen at least once: while a rebalance moves points, first the shards being removed,
        then the kept ones, then the added ones (points only move forward in that order: a
        consistent-hash ring sends a point to an added shard or off a removed one, never
        between kept shards), each wave asked once the one before answered; else all at once."""
        if self.moving_to is None:
            return [list(shards)]
        now, then = set(self.shards), set(self.moving_to)
        waves = [[s for s in shards if s in now and s not in then], [s for s in shards if s in now and s in then],
                 [s for s in shards if s not in now]]
        return [w for w in waves if w]


def new_placement(shards: int, replicas: int, vnodes: int = DEFAULT_VNODES) -> Placement:
    return Placement(tuple(range(shards)), replicas, vnodes, None, shards)


def read_raw(root: Path) -> bytes | None:
    """The record's bytes (None when there is none yet): one open and read of a small file."""
    try:
        fd = os.open(os.path.join(root, RECORD), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load(root: Path) -> Placement | None:
    """The record in ``root`` (None when there is none yet); DataLossError when unreadable."""
    raw = read_raw(root)
    return None if raw is None else parse(raw, Path(root) / RECORD)


def parse(raw: bytes, path: Path) -> Placement:
    """The placement in the record bytes ``raw`` (read from ``path``); DataLossError when corrupt."""
    try:
        rec = json.loads(raw)
        if rec.get("format") != FORMAT or rec.get("version") != VERSION:
            raise DataLossError(f"{path} holds {rec.get('format')!r} version {rec.get('version')!r}, "
                                f"this vecdb reads {FORMAT!r} version {VERSION}")
        moving = rec["moving_to"]
        return Placement(tuple(int(s) for s in rec["shards"]), int(rec["replicas"]), int(rec["vnodes"]),
                         None if moving is None else tuple(int(s) for s in moving), int(rec["next_shard"]),
                         int(rec.get("generation", 0)))
    except DataLossError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:   # AttributeError: JSON but not an object
        raise DataLossError(f"corrupt cluster placement record {path}: {exc}") from None


def save(root: Path, placement: Placement) -> None:
    """Write the record atomically (never torn) and durably."""
    root = Path(root)
    rec = {"format": FORMAT, "version": VERSION, **asdict(placement)}
    tmp = root / (RECORD + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(rec, sort_keys=True).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / RECORD)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
