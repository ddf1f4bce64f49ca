"""The Codec protocol shared by every quantizer, and the checks all of them need.

A codec turns float32 vectors into compact codes and back. It is trained once on sample
vectors, holds no vectors itself, and persists as ``(params, arrays)`` so that an index can
save it beside its codes (faiss separates ``ProductQuantizer`` from ``IndexPQ`` the same way).
"""
from __future__ import annotations

import abc
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vecdb.errors import FailedPreconditionError, InvalidArgumentError
from vecdb.types import F32Matrix
from vecdb.validation import as_matrix, as_positive_int


@runtime_checkable
class Codec(Protocol):
    """What every quantizer offers: train, encode to fixed-size codes, decode."""

    dim: int

    @property
    def is_trained(self) -> bool: ...
    @property
    def code_size(self) -> int: ...
    @property
    def recommended_train_size(self) -> int: ...
    def train(self, vectors: Any) -> None: ...
    def encode(self, vectors: Any) -> np.ndarray: ...
    def decode(self, codes: Any) -> F32Matrix: ...
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...
    def memory_bytes(self) -> int: ...


class BaseCodec(abc.ABC):
    """Input checks and persistence plumbing shared by ``PQ``, ``Binary`` and ``SQ8``.

    Subclasses define ``code_dtype`` and ``code_width`` (entries of ``code_dtype`` per vector),
    ``_train``, ``_encode``, ``_decode``, ``params``/``arrays`` and ``_restore``.

    ``train``/``encode``/``decode`` check their input; ``train_trusted``/``encode_trusted``/
    ``decode_trusted`` are the same without the checks, for an index that validated the data
    once at its own public boundary (its write and search paths must not check them again).
    """

    code_dtype: np.dtype = np.dtype(np.uint8)

    def __init__(self, dim: int) -> None:
        self.dim = as_positive_int(dim, "dim")
        self._trained = False

    # ---- public surface -------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        """True once ``train`` has run (or the codec was restored from a saved state)."""
        return self._trained

    @property
    @abc.abstractmethod
    def code_width(self) -> int:
        """Entries of ``code_dtype`` per encoded vector."""

    @property
    def code_size(self) -> int:
        """Bytes per encoded vector."""
        return int(self.code_width * self.code_dtype.itemsize)

    def train(self, vectors: Any) -> None:
        """Fit the codec to sample ``vectors`` (n, dim) float32; replaces any earlier training."""
        x = as_matrix(vectors, self.dim, what="training vectors")
        need = self.min_train_size
        if len(x) < need:
            raise InvalidArgumentError(f"{type(self).__name__} needs at least {need} training vectors, got {len(x)}")
        self.train_trusted(x)

    def encode(self, vectors: Any) -> np.ndarray:
        """Codes of ``vectors``: ``code_dtype`` array (n, code_width)."""
        self.require_trained()
        return self.encode_trusted(as_matrix(vectors, self.dim))

    def decode(self, codes: Any) -> F32Matrix:
        """Reconstructed float32 vectors (n, dim) of ``codes``."""
        self.require_trained()
        return self.decode_trusted(self.check_codes(codes))

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Load trained arrays as ``arrays`` returns them (an index keeps them beside its
        codes); the codec is trained afterwards. ValueError when they do not fit it."""
        self._restore({k: np.asarray(v) for k, v in arrays.items()})
        self._trained = True

    # ---- trusted path (the caller checked the input) --------------------------------
    def train_trusted(self, x: F32Matrix) -> None:
        """``train`` without its checks: ``x`` is finite float32 (n, dim), n >= ``min_train_size``."""
        self._train(x)
        self._trained = True

    def encode_trusted(self, x: F32Matrix) -> np.ndarray:
        """``encode`` without its checks: the codec is trained, ``x`` finite float32 (n, dim)."""
        return self._encode(x)

    def decode_trusted(self, codes: np.ndarray) -> F32Matrix:
        """``decode`` without its checks: the codec is trained, ``codes`` (n, code_width) of
        ``code_dtype``."""
        return self._decode(codes)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able construction parameters and the trained arrays (empty when untrained)."""
        return dict(self.params(), trained=self._trained), (self.arrays() if self._trained else {})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseCodec:
        """Rebuild a codec saved with ``state``."""
        params = dict(params)
        trained = bool(params.pop("trained", False))
        codec = cls(**params)
        if trained:
            codec.restore(arrays)
        return codec

    def memory_bytes(self) -> int:
        """Bytes held by the trained tables (codebooks, rotation, scales)."""
        return int(sum(a.nbytes for a in self.arrays().values())) if self._trained else 0

    # ---- helpers --------------------------------------------------------------------
    @property
    def min_train_size(self) -> int:
        """Fewest training vectors ``train`` accepts."""
        return 1

    @property
    def recommended_train_size(self) -> int:
        """Sample size that trains this codec well: what a collection gathers before training
        automatically (``CodeIndex.min_train_points``). Default 1,000, enough for statistics
        that are means or ranges per dimension (binary centring and plane scales, SQ8 ranges)."""
        return max(1000, self.min_train_size)

    def require_trained(self) -> None:
        """Raise FailedPreconditionError unless the codec is trained."""
        if not self._trained:
            raise FailedPreconditionError(f"{type(self).__name__} is not trained; call train(vectors) first")

    def check_codes(self, codes: Any) -> np.ndarray:
        """``codes`` as a C-contiguous (n, code_width) array of exactly ``code_dtype``."""
        arr = np.asarray(codes)
        if arr.dtype != self.code_dtype:
            raise InvalidArgumentError(f"{type(self).__name__} codes must be {self.code_dtype}, got {arr.dtype}")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.code_width:
            raise InvalidArgumentError(f"codes must have shape (n, {self.code_width}), got {arr.shape}")
        return np.ascontiguousarray(arr)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params().items() if k != "dim")
        return f"{type(self).__name__}(dim={self.dim}{extra}, trained={self._trained})"

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this codec untrained."""

    @abc.abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The trained arrays."""

    @abc.abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def _train(self, x: F32Matrix) -> None: ...

    @abc.abstractmethod
    def _encode(self, x: F32Matrix) -> np.ndarray: ...

    @abc.abstractmethod
    def _decode(self, codes: np.ndarray) -> F32Matrix: ...


def random_rotation(dim: int, seed: int) -> F32Matrix:
    """A uniformly random orthogonal (dim, dim) float32 matrix (QR of a Gaussian, sign-fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q *= np.sign(np.diag(r))
    return np.ascontiguousarray(q, dtype=np.float32)


def sample_rows(x: F32Matrix, n_max: int, seed: int) -> F32Matrix:
    """At most ``n_max`` rows of ``x`` drawn without replacement (all of them if fewer)."""
    if len(x) <= n_max:
        return x
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(x[np.sort(rng.choice(len(x), n_max, replace=False))])
