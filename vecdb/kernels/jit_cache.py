"""Numba's on-disk cache for vecdb's kernels, stamped with every source a kernel can take in.

Numba stamps a cached kernel with its own file's content only, but a kernel's machine code
also holds what it calls or inlines from other files (their compiled code is linked into
it) and the module constants it froze. After a change to such a file (a ``git pull`` or a
checkout over a used cache) the kernels of the unchanged files loaded their old code: a
record layout changed in one file was still read the old way by a kernel of another. Here a
kernel's stamp is its file's stamp plus one digest of all of ``SOURCES``, so a change to any
of them compiles the kernels again. Where Numba's caching internals differ from what this
expects, kernels are cached as plain ``cache=True`` ones (``KernelCache`` is None).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

#: the vecdb package
PACKAGE = Path(__file__).resolve().parent.parent
#: what a kernel can call, inline or freeze: the packages holding kernels and the modules
#: they import (``tests/test_jit_cache.py`` checks that no kernel file imports from elsewhere)
SOURCES = ("kernels", "index", "types.py", "errors.py")


@lru_cache(maxsize=1)
def sources_digest() -> str:
    """One SHA-256 of the paths and contents of every ``.py`` file of ``SOURCES`` (once a
    process: ~2 MB read at the first kernel's definition)."""
    digest = hashlib.sha256()
    try:
        for name in SOURCES:
            root = PACKAGE / name
            for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
                digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
                digest.update(path.read_bytes())
    except OSError:                               # sources not readable as files (a zipped package):
        return ""                                 # each kernel's own stamp only, as plain Numba
    return digest.hexdigest()


try:
    from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator
    _NUMBA_LOCATORS = tuple(CompileResultCacheImpl._locator_classes)
except (ImportError, AttributeError):             # another Numba layout: plain caching
    KernelCache: Any = None
else:
    class _StampedLocator(_CacheLocator):
        """Numba's own locator for the function (the first of its list that serves it:
        ``NUMBA_CACHE_DIR``, else the module's ``__pycache__``, else the user-wide cache, ...)
        with ``sources_digest`` in its stamp."""

        _inner_classes = _NUMBA_LOCATORS

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def ensure_cache_path(self) -> None:
            self._inner.ensure_cache_path()

        def get_cache_path(self) -> str:
            return self._inner.get_cache_path()

        def get_source_stamp(self) -> Any:
            return self._inner.get_source_stamp(), sources_digest()

        def get_disambiguator(self) -> str:
            return self._inner.get_disambiguator()

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> "_StampedLocator | None":
            for inner_class in cls._inner_classes:
                inner = inner_class.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
            return None

    class _StampedImpl(CompileResultCacheImpl):
        _locator_classes = [_StampedLocator]

    class KernelCache(FunctionCache):  # type: ignore[no-redef]
        """A kernel's on-disk cache, stamped as the module doc says."""

        _impl_class = _StampedImpl
