"""Bench targets. Importing this package registers every adapter module below."""
from vecdb.bench.adapters import codes  # noqa: F401
from vecdb.bench.adapters import flat  # noqa: F401
from vecdb.bench.adapters import hnsw  # noqa: F401
from vecdb.bench.adapters import partitioned  # noqa: F401
from vecdb.bench.adapters import peers  # noqa: F401
from vecdb.bench.adapters.base import TARGETS, Target, register

__all__ = ["TARGETS", "Target", "register"]
