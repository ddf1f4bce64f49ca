from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    INT64: _ClassVar[DType]
    UINT8: _ClassVar[DType]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
INT64: DType
UINT8: DType

class Matrix(_message.Message):
    __slots__ = ("n_rows", "n_cols", "dtype", "data")
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    N_COLS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    n_rows: int
    n_cols: int
    dtype: DType
    data: bytes
    def __init__(self, n_rows: _Optional[int] = ..., n_cols: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Ids(_message.Message):
    __slots__ = ("int64", "str")
    INT64_FIELD_NUMBER: _ClassVar[int]
    STR_FIELD_NUMBER: _ClassVar[int]
    int64: bytes
    str: StringList
    def __init__(self, int64: _Optional[bytes] = ..., str: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class StringCells(_message.Message):
    __slots__ = ("values", "present")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    present: bytes
    def __init__(self, values: _Optional[_Iterable[str]] = ..., present: _Optional[bytes] = ...) -> None: ...

class IdMatrix(_message.Message):
    __slots__ = ("n_rows", "n_cols", "int64", "str")
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    N_COLS_FIELD_NUMBER: _ClassVar[int]
    INT64_FIELD_NUMBER: _ClassVar[int]
    STR_FIELD_NUMBER: _ClassVar[int]
    n_rows: int
    n_cols: int
    int64: bytes
    str: StringCells
    def __init__(self, n_rows: _Optional[int] = ..., n_cols: _Optional[int] = ..., int64: _Optional[bytes] = ..., str: _Optional[_Union[StringCells, _Mapping]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "dim", "metric", "index", "index_params_json", "id_type", "multi_tenant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    MULTI_TENANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    index: str
    index_params_json: str
    id_type: str
    multi_tenant: bool
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., index: _Optional[str] = ..., index_params_json: _Optional[str] = ..., id_type: _Optional[str] = ..., multi_tenant: _Optional[bool] = ...) -> None: ...

class CollectionStats(_message.Message):
    __slots__ = ("count", "memory_bytes", "disk_bytes", "index", "index_params_json", "n_tenants", "trained", "indexed", "pending")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    N_TENANTS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    count: int
    memory_bytes: int
    disk_bytes: int
    index: str
    index_params_json: str
    n_tenants: int
    trained: bool
    indexed: int
    pending: int
    def __init__(self, count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., index: _Optional[str] = ..., index_params_json: _Optional[str] = ..., n_tenants: _Optional[int] = ..., trained: _Optional[bool] = ..., indexed: _Optional[int] = ..., pending: _Optional[int] = ...) -> None: ...
