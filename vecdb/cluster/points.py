"""Requests checked once at the cluster's public boundary, before anything is split by shard,
so a malformed request fails as a whole (the same exception classes as the embedded
collection) and never half-written; and the batches that move points between shards."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vecdb.api import CollectionInfo, Payload, check_tenant, check_tenants
from vecdb.collection.idkeys import id_keys
from vecdb.errors import InvalidArgumentError
from vecdb.filters import check_payload
from vecdb.validation import as_matrix


@dataclass(frozen=True)
class Upsert:
    """A checked upsert: id keys, ids, float32 rows, payloads (or None), tenant names."""

    keys: list[bytes]
    uids: list[Any]
    vectors: np.ndarray
    payloads: list[Payload | None] | None
    tenants: list[str]

    def part(self, rows: np.ndarray) -> tuple[list[Any], np.ndarray, list[Payload | None] | None, list[str] | None]:
        """The upsert arguments for the rows ``rows`` (what one shard receives)."""
        pays = None if self.payloads is None else [self.payloads[i] for i in rows]
        return [self.uids[i] for i in rows], self.vectors[rows], pays, self.tenants or None


def check_upsert(info: CollectionInfo, ids: Any, vectors: Any, payloads: Sequence[Payload | None] | None,
                 tenant: Any) -> Upsert:
    """Everything the embedded ``upsert`` checks before it writes, but tenant existence and
    access (each shard checks those against its own state)."""
    keys, uids = id_keys(info, ids, unique=True)
    n = len(keys)
    if not n:
        rows = _row_count(vectors)
        if rows:
            raise InvalidArgumentError(f"got {rows} vectors but no ids")
        return Upsert([], [], np.zeros((0, info.dim), np.float32), None, [])   # nothing to write: as embedded
    x = as_matrix(vectors, info.dim)
    if len(x) != n:
        raise InvalidArgumentError(f"got {n} ids for {len(x)} vectors")
    pays: list[Payload | None] | None = None
    if payloads is not None:
        if isinstance(payloads, Mapping) or not isinstance(payloads, (list, tuple)):
            raise InvalidArgumentError("payloads must be a list with one dict (or None) per id")
        if len(payloads) != n:
            raise InvalidArgumentError(f"got {len(payloads)} payloads for {n} ids")
        pays = [check_payload(p, where=f"payloads[{i}]") for i, p in enumerate(payloads)]
    return Upsert(keys, uids, x, pays, check_tenants(tenant))


def check_tenant_arg(tenant: Any) -> str | None:
    return None if tenant is None else check_tenant(tenant)


def _row_count(vectors: Any) -> int:
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"vectors must be a 2-D array of numbers: {exc}") from None
    return int(arr.shape[0]) if arr.ndim else int(arr.size)


def not_found_message(name: str, absent: list[Any]) -> str:
    """The embedded collection's message for missing ids (tenants cannot tell hidden from missing)."""
    return f"{len(absent)} id(s) not found in collection {name!r}: {absent[:5]}"


@dataclass
class PointBatch:
    """Points leaving one shard (a rebalance step) or one shard's snapshot: ids, vectors,
    payloads, each point's owner tenants, and the grants (tenant -> (ids, write)) on them."""

    uids: list[Any]
    keys: list[bytes]
    place: list[bytes]     # the ring key of each point (``placement.placement_key``)
    vectors: np.ndarray
    payloads: list[Payload | None]
    owners: list[tuple[str, ...]]
    grants: dict[tuple[str, bool], list[Any]]
    last_iid: int
    done: bool

    def __len__(self) -> int:
        return len(self.uids)
