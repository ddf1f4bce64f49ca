"""vecdb: a vector search database — embedded index, gRPC service and benchmarking CLI."""
from vecdb.errors import (
    AlreadyExistsError,
    DataLossError,
    DimensionMismatchError,
    InvalidArgumentError,
    NotFoundError,
    VecdbError,
)
from vecdb.types import Metric, SearchResult

#: imported on first use, so ``import vecdb.index`` (or the client alone) does not load gRPC,
#: LMDB and every kernel: name -> module that defines it
_LAZY = {"connect": "vecdb.client", "open": "vecdb.database", "FlatIndex": "vecdb.index", "load_index": "vecdb.index"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vecdb' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError", "connect", "DataLossError", "DimensionMismatchError", "FlatIndex", "InvalidArgumentError",
    "Metric", "NotFoundError", "open", "SearchResult", "VecdbError", "load_index", "__version__",
]
