"""Records of the op log (``log`` sub-database: write sequence -> what that write changed),
which replay after a checkpoint applies to the index exactly once.

A record is ``b"\\x01"`` followed by ops, each a 16-byte header (tag, 3 zero bytes, u32 LE
tenant number, u64 LE count) and ``count`` u64 LE internal ids. Tags: ``p`` points written or
deleted (replay re-reads them from the store), ``c`` / ``x`` tenant created / dropped, ``g`` /
``r`` ids granted to / revoked from a tenant (membership changes only; level changes within
a tenant's access do not concern the index). Records written before tenants were logged are
bare u64 LE ids of touched points; their length is a multiple of 8, a tagged record's never is.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecdb.errors import DataLossError
from vecdb.index.base import MembershipOp
from vecdb.storage import keys as K

MAGIC = b"\x01"
POINTS, CREATE, DROP, GRANT, REVOKE = b"p", b"c", b"x", b"g", b"r"
_MEMBERSHIP = (CREATE, DROP, GRANT, REVOKE)
_HEAD = struct.Struct("<c3xIQ")
_NO_IDS = np.zeros(0, np.int64)
_OP_NAMES = {CREATE: "create", DROP: "drop", GRANT: "grant", REVOKE: "revoke"}


@dataclass(frozen=True)
class Op:
    """One logged change: ``tag`` (POINTS, CREATE, DROP, GRANT, REVOKE), the tenant number
    (0 for POINTS) and the internal ids concerned (empty for CREATE / DROP)."""

    tag: bytes
    tenant: int = 0
    ids: np.ndarray = field(default_factory=lambda: _NO_IDS)


def membership(ops: list[Op]) -> tuple[MembershipOp, ...]:
    """The membership ops among ``ops``, in order, as an index that persists itself takes them."""
    return tuple(MembershipOp(_OP_NAMES[op.tag], op.tenant, op.ids) for op in ops if op.tag != POINTS)


def encode(ops: list[Op]) -> bytes:
    """The log record of one write."""
    parts = [MAGIC]
    for op in ops:
        ids = np.ascontiguousarray(op.ids, "<u8")
        parts.append(_HEAD.pack(op.tag, op.tenant, len(ids)))
        parts.append(ids.tobytes())
    return b"".join(parts)


def decode(raw: bytes | memoryview) -> list[Op]:
    """Inverse of ``encode`` (also reads the bare-id records of older databases)."""
    raw = bytes(raw)
    if len(raw) % 8 == 0:
        return [Op(POINTS, 0, np.frombuffer(raw, "<u8").astype(np.int64))]
    if raw[:1] != MAGIC:
        raise DataLossError(f"op log record starts with {raw[:1]!r}, expected {MAGIC!r}")
    ops, pos = [], 1
    while pos < len(raw):
        if pos + _HEAD.size > len(raw):
            raise DataLossError("op log record ends inside an op header")
        tag, tenant, count = _HEAD.unpack_from(raw, pos)
        pos += _HEAD.size
        end = pos + 8 * count
        if end > len(raw) or tag not in (POINTS, *_MEMBERSHIP):
            raise DataLossError(f"corrupt op log record (op {tag!r}, {count} ids)")
        ops.append(Op(tag, tenant, np.frombuffer(raw[pos:end], "<u8").astype(np.int64)))
        pos = end
    return ops


@dataclass
class Replay:
    """What the logged writes after a checkpoint changed: the points to re-read from the
    store (sorted unique internal ids) and the membership ops, in write order."""

    touched: np.ndarray
    membership: list[Op]
    writes: int


def logged_since(txn: Any, log_db: Any, seq: int) -> Replay:
    """The records with sequence number > ``seq``, read in ``txn``."""
    cur = txn.cursor(log_db)
    touched: list[np.ndarray] = []
    membership: list[Op] = []
    writes = 0
    if cur.set_range(K.u64(seq + 1)):
        for _key, val in cur.iternext():
            writes += 1
            for op in decode(val):
                if op.tag == POINTS:
                    touched.append(op.ids)
                else:
                    membership.append(op)
    return Replay(np.unique(np.concatenate(touched)) if touched else _NO_IDS, membership, writes)
