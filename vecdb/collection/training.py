"""Building a collection's configured index from stored points: training it on a seeded
sample first when it needs training, and handing a tenant-aware index every membership."""
from __future__ import annotations

from typing import Callable

import numpy as np

from vecdb.api import CollectionInfo
from vecdb.collection import oplog
from vecdb.collection.tenants import Tenants
from vecdb.errors import DataLossError, InvalidArgumentError
from vecdb.index.base import BaseIndex, index_class, index_kinds
from vecdb.storage.space import IndexSpace

#: most rows a collection trains its index on (a seeded uniform sample of the stored points)
TRAIN_SAMPLE = 65_536
#: seed of that sample, so a rebuild from the same store trains the same codec
TRAIN_SEED = 0x5EED
#: rows added per step of a build that can be stopped (``build_index(check=...)``)
BUILD_STEP = 8_192


def configured_class(info: CollectionInfo) -> type[BaseIndex]:
    """The registered index class of ``info.index``; DataLossError when it is not available
    (a database written by a vecdb with more index kinds)."""
    try:
        return index_class(info.index)
    except InvalidArgumentError:
        raise DataLossError(f"collection {info.name!r} uses index kind {info.index!r}, which is not available "
                            f"(known: {', '.join(index_kinds())})") from None


def new_index(info: CollectionInfo) -> BaseIndex:
    """An empty configured index (untrained when its kind needs training)."""
    return configured_class(info)(info.dim, info.metric, **info.index_params)


def train_threshold(index: BaseIndex) -> int | None:
    """Points at which a collection trains ``index`` automatically; None when it needs no training."""
    if not index.needs_training:
        return None
    return max(1, int(index.min_train_points))


def sample(vectors: np.ndarray, size: int = TRAIN_SAMPLE) -> np.ndarray:
    """A seeded uniform sample of at most ``size`` rows (all of them when fewer)."""
    if len(vectors) <= size:
        return vectors
    rows = np.random.default_rng(TRAIN_SEED).choice(len(vectors), size, replace=False)
    rows.sort()
    return vectors[rows]


def build_index(info: CollectionInfo, vectors: np.ndarray, iids: np.ndarray, tenants: Tenants,
                space: IndexSpace | None = None, check: Callable[[], None] | None = None) -> BaseIndex:
    """The configured index holding ``vectors`` under internal ids ``iids``: attached to the
    (empty) ``space`` right after construction when given (persistence "self"), trained on a
    sample of them first when its kind needs training, and given every tenant membership
    when it is tenant-aware. Raises whatever the index raises (the caller keeps serving).
    ``check`` (e.g. ``vecdb.calls.check`` of a Train RPC) is called after training and
    between steps of ``BUILD_STEP`` added rows; what it raises abandons the build."""
    index = new_index(info)
    if space is not None:
        index.attach(space)
    if index.needs_training:
        index.train(sample(vectors))
    if len(iids):
        index.reserve(len(iids))
        if check is None:
            index.add(vectors, iids)
        else:
            for start in range(0, len(iids), BUILD_STEP):
                check()
                index.add(vectors[start:start + BUILD_STEP], iids[start:start + BUILD_STEP])
    if check is not None:
        check()
    hand_memberships(index, tenants)
    return index


def hand_memberships(index: BaseIndex, tenants: Tenants) -> None:
    """Give a tenant-aware index every tenant and its members (others keep no membership)."""
    if not index.tenant_aware:
        return
    for ts in tenants.by_name.values():
        index.create_tenant(ts.number)
        if ts.members:
            index.grant(ts.number, ts.allow().ids)


def apply_membership(index: BaseIndex, op: oplog.Op) -> None:
    """Hand one logged membership op to the index (no-ops for indexes that keep no tenants)."""
    if op.tag == oplog.CREATE:
        index.create_tenant(op.tenant)
    elif op.tag == oplog.DROP:
        index.drop_tenant(op.tenant)
    elif op.tag == oplog.GRANT:
        index.grant(op.tenant, op.ids)
    elif op.tag == oplog.REVOKE:
        index.revoke(op.tenant, op.ids)

