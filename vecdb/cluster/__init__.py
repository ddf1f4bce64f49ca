"""vecdb on a Ray cluster: collections sharded by point id over Ray actors, each shard
replicated, behind exactly the embedded API (``vecdb.api.DatabaseAPI``). Needs the optional
extra ``vecdb[cluster]`` (Ray); nothing else in vecdb imports this package.

    db = vecdb.cluster.connect(root="/data/vecdb-cluster", shards=3, replicas=2)
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Mapping

import ray

from vecdb.cluster.collection import ClusterCollection
from vecdb.cluster.database import ClusterDatabase
from vecdb.errors import InvalidArgumentError

__all__ = ["ClusterCollection", "ClusterDatabase", "connect"]


def connect(address: str | None = None, *, root: str | os.PathLike[str], shards: int | None = None,
            replicas: int | None = None, wait_seconds: float = 120.0, db_options: Mapping[str, Any] | None = None,
            ray_options: Mapping[str, Any] | None = None) -> ClusterDatabase:
    """The cluster whose placement lives in ``root`` (created with ``shards`` shards of
    ``replicas`` replicas each, 3 x 2 by default; an existing one keeps its own).

    ``address``: None uses the Ray already initialised in this process, or starts a local
    one (no dashboard; ``ray_options`` go to ``ray.init``); "auto", "ray://host:port" (Ray
    client) or "host:port" (its GCS) joins that cluster. ``wait_seconds``: how long a write waits
    for a replica that is down (restarting) before it is acknowledged without it (that
    replica is then caught up once it answers again; the writer takes it from the router
    that started it), and a read for any replica of a shard.
    ``db_options``: options of each replica's embedded database (``vecdb.open``).
    Several routers may connect to one cluster (e.g. several ``vecdb serve --cluster``
    front ends), each reading and writing: writes go through the cluster's one writer actor
    (``writer``); a router's own writes are visible to its next read, other routers'
    within one refresh of its view (``routers.READ_REFRESH_SECONDS``). Closing the last
    open router stops the writer and the replicas (others leave them serving the routers
    still open); closing any stops the local Ray it started."""
    if address is not None and (not isinstance(address, str) or not address):
        raise InvalidArgumentError(f"address must be None, 'auto', 'ray://host:port' or host:port, got {address!r:.100}")
    started = False
    if not ray.is_initialized():
        local = {"include_dashboard": False} if address is None else {}   # joining: the cluster's own settings
        options = {**local, "log_to_driver": False, **(ray_options or {})}
        main = threading.current_thread() is threading.main_thread()
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
        ray.init(address=address, **options)
        for sig, handler in handlers.items():   # Ray installs its own; the caller's (e.g. vecdb serve) stay
            signal.signal(sig, handler)
        started = True
    try:
        return ClusterDatabase(root, shards=shards, replicas=replicas, wait_seconds=wait_seconds,
                               db_options=db_options, owns_ray=started)
    except BaseException:
        if started:
            ray.shutdown()
        raise
