"""LMDB storage layer: one environment per database, named sub-databases, fixed-width
big-endian keys, raw little-endian arrays and JSON payloads as values (never pickle)."""
from vecdb.storage.env import Store
from vecdb.storage.locks import RWLock

__all__ = ["RWLock", "Store"]
