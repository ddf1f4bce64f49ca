"""vecdb: a vector search database — embedded index, gRPC service and benchmarking CLI."""
from vecdb.errors import (
    AlreadyExistsError,
    DataLossError,
    DimensionMismatchError,
    InvalidArgumentError,
    NotFoundError,
    VecdbError,
)
from vecdb.client import connect
from vecdb.database import open
from vecdb.index import FlatIndex, load_index
from vecdb.types import Metric, SearchResult

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError", "connect", "DataLossError", "DimensionMismatchError", "FlatIndex", "InvalidArgumentError",
    "Metric", "NotFoundError", "open", "SearchResult", "VecdbError", "load_index", "__version__",
]
