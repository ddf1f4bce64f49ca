"""Parameter grids of ``vecdb bench run``: ``"M=16,32;ef_construction=200"`` is one knob per
``;`` chunk and its values after ``=``; the grid is every combination. Also which build and
search knobs each target understands, so a mistyped knob fails before anything is built."""
from __future__ import annotations

import itertools
from typing import Any

from vecdb.errors import InvalidArgumentError

_HNSW = ("M", "ef_construction")
_PEER = ("insert_batch",)
#: build knobs each registered target reads (see its adapter); a target missing here (or
#: without a ``build_knobs`` attribute) is taken to read every knob and is rebuilt per setting
BUILD_KNOBS: dict[str, tuple[str, ...]] = {
    "vecdb-flat": (), "faiss-flat": (),
    "vecdb-hnsw": _HNSW, "hnswlib": _HNSW, "faiss-hnsw": _HNSW,
    "vecdb-pq": ("m", "nbits", "opq", "train"), "faiss-pq": ("m", "nbits", "train"),
    "vecdb-binary": ("bits", "rotate", "train"), "faiss-binary": ("bits", "rotate", "train"),
    "vecdb-sq8": ("train",), "faiss-sq8": ("train",),
    "db-vecdb-flat": _PEER, "db-vecdb-hnsw": _PEER + _HNSW, "vecdb-collection": _PEER + _HNSW + ("index",),
    "chroma": _PEER + _HNSW + ("ef_search",), "qdrant-local": _PEER, "lancedb": _PEER,
    "lancedb-ivf-hnsw-sq": _PEER + _HNSW + ("num_partitions",),
    "milvus-lite-flat": _PEER, "milvus-lite-ivf": _PEER + ("nlist",),
}


def parse_value(text: str) -> Any:
    """``"16"`` -> 16, ``"0.5"`` -> 0.5, ``"true"`` -> True, anything else stays text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_axes(text: str, flag: str) -> dict[str, list[Any]]:
    """``"M=16,32;ef_construction=200"`` -> ``{"M": [16, 32], "ef_construction": [200]}``."""
    axes: dict[str, list[Any]] = {}
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        key, sep, values = chunk.partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise InvalidArgumentError(f"{flag}: expected knob=value[,value...] per ';'-separated chunk, got {chunk!r}")
        if any("=" in v for v in vals):
            raise InvalidArgumentError(f"{flag}: {chunk!r} holds two knobs; separate knobs with ';' "
                                       f"(e.g. \"M=16,32;ef_construction=200\")")
        if key in axes:
            raise InvalidArgumentError(f"{flag}: knob {key!r} given twice")
        axes[key] = [parse_value(v) for v in vals]
    return axes


def expand(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, first axis slowest; ``[{}]`` for no axes."""
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def build_knobs(cls: type) -> tuple[str, ...] | None:
    """The build knobs target class ``cls`` reads; None when unknown (it may read any)."""
    own = getattr(cls, "build_knobs", None)
    return tuple(own) if own is not None else BUILD_KNOBS.get(getattr(cls, "name", ""))


def check_knobs(targets: dict[str, type], build: dict[str, list[Any]], search: dict[str, list[Any]]) -> None:
    """Raise InvalidArgumentError for a knob none of the chosen targets reads."""
    known_build = [build_knobs(c) for c in targets.values()]
    if all(k is not None for k in known_build):
        readable = set().union(*known_build) if known_build else set()
        bad = sorted(set(build) - readable)
        if bad:
            raise InvalidArgumentError(f"unknown build knob(s) {bad} for targets {sorted(targets)}; "
                                       f"they read: {sorted(readable) or 'no build knobs'}")
    readable = set().union(*(set(c.search_knobs) for c in targets.values())) if targets else set()
    bad = sorted(set(search) - readable)
    if bad:
        raise InvalidArgumentError(f"unknown search knob(s) {bad} for targets {sorted(targets)}; "
                                   f"they read: {sorted(readable) or 'no search knobs'}")


def own(params: dict[str, Any], knobs: tuple[str, ...] | None) -> dict[str, Any]:
    """The part of ``params`` a target reads (all of it when its knobs are unknown)."""
    return dict(params) if knobs is None else {k: v for k, v in params.items() if k in knobs}
