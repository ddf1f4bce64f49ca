"""A cluster snapshot as one embedded database: each shard's consistent copy (taken while
the router held writes back) merged into a fresh database at the target, collection by
collection, points with their payloads, owners and grants, in bounded batches."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vecdb.api import CollectionInfo
from vecdb.cluster.transfer import export_points, import_points
from vecdb.database import Database

BATCH = 4096


def merge_shard_copies(target: Path, infos: Sequence[CollectionInfo], copies: Sequence[Path]) -> None:
    """Build the database at ``target`` from the shard copies ``copies`` (the first is the
    catalog shard's: it names the tenants)."""
    with Database(target) as out:
        dests = {i.name: out.create_collection(i.name, i.dim, i.metric, i.index, i.index_params, i.id_type,
                                                  i.multi_tenant)
                 for i in infos}
        for n, copy in enumerate(copies):
            with Database(copy) as shard:
                for info in infos:
                    src = shard.get_collection(info.name)
                    if n == 0:
                        for tenant in src.list_tenants():
                            dests[info.name].create_tenant(tenant)
                    after = -1
                    while True:
                        batch = export_points(src, after, BATCH)
                        import_points(dests[info.name], batch)
                        after = batch.last_iid
                        if batch.done:
                            break
