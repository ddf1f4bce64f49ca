"""Payload filters: parsing and validation of the filter grammar (see ``vecdb.api``), and their
evaluation through in-memory payload indexes into an allow-set of internal ids.

Each indexed field keeps one ``Column`` per value kind (numbers, strings, booleans): a
value-sorted run of ``(value, internal id, epoch)`` entries plus an unsorted tail of recent
additions. Equality, ``in`` and ranges are binary searches on the sorted run plus one
vectorised pass over the tail, so a filter never scans payloads. Removing a point bumps its
epoch, which makes all of its old entries stale at once; stale entries are dropped when the
column is re-sorted (amortised: only once the tail or the garbage reaches a quarter of it).
The writer builds a re-sort while readers keep reading the old run (``PayloadIndex.compaction``)
and swaps it in under the collection's exclusive lock (``install``, O(1)), so no reader
waits for a sort or merge.

Between two re-sorts the sorted runs only lose entries (epochs), so every live entry of a
point written since then is in a tail: ``evaluate_ids`` re-evaluates a filter for just those
points from the tails, which lets a cached result be brought up to date after a write in
time proportional to the tails, not to the collection (``PayloadIndex.generation`` counts
re-sorts, so a cache knows when this no longer holds).

Semantics: several keys in one dict are ANDed; a field holding a list matches when any
element does; nested objects are indexed under dotted paths (``{"a": {"b": 1}}`` is field
``"a.b"``); ``ne`` is ``$not eq`` (points without the field match); ``null`` is not indexed.
Numbers compare as float64 (ints beyond 2**53 lose precision); bools never equal numbers.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from vecdb import calls
from vecdb.errors import DataLossError, InvalidArgumentError

Node = tuple[Any, ...]
RANGE_OPS = ("gt", "gte", "lt", "lte")
FIELD_OPS = frozenset(("eq", "ne", "in") + RANGE_OPS)
MAX_DEPTH = 32
_MIN_TAIL = 4096

# ---- payload validation ----------------------------------------------------------------


def check_payload(payload: Any, *, where: str = "payload") -> dict[str, Any] | None:
    """Return ``payload`` as a plain JSON-like dict (or None); raise InvalidArgumentError otherwise.

    Accepted: dicts with str keys whose values are None, bool, int, finite float, str, lists
    and dicts of those. numpy scalars become Python scalars and tuples become lists.
    """
    if payload is None:
        return None
    if type(payload) is dict and _flat_json(payload):
        return payload    # the common case: one level of plain scalars, nothing to convert
    if not isinstance(payload, Mapping):
        raise InvalidArgumentError(f"{where} must be a dict or None, got {type(payload).__name__}")
    try:
        return _json_like(payload, 0)
    except _NotJson as exc:
        raise InvalidArgumentError(f"{where}{''.join(reversed(exc.path))} {exc.problem}") from None


Shape = dict[str, tuple[list[Any], type]]


def check_payloads_shaped(payloads: list[Any] | tuple[Any, ...], *,
                          where: str = "payloads") -> tuple[list[dict[str, Any] | None], Shape | None]:
    """``check_payload`` of each item (messages name ``where[i]``), and the batch's columns
    when it was checked column-wise. A batch of flat dicts with one key set and one value
    type per key (``one_shape``) is checked a column at a time, in a few C-level passes per
    key, instead of in Python per payload; the payloads are then returned as given with their
    columns, which ``PayloadIndex.add_many`` takes, so the batch is split into columns once
    (None: it was checked payload by payload)."""
    columns = one_shape(payloads)
    if columns is not None and all(_flat_column(values, t) for values, t in columns.values()):
        return list(payloads), columns
    return [check_payload(p, where=f"{where}[{i}]") for i, p in enumerate(payloads)], None


def one_shape(payloads: list[Any] | tuple[Any, ...]) -> dict[str, tuple[list[Any], type]] | None:
    """``{key: (its values, their one type)}`` when every payload is a dict (``type is dict``)
    with the first one's keys, every key an ASCII str and every key's values of one type;
    None otherwise (including an empty batch)."""
    if not payloads or type(payloads[0]) is not dict:
        return None
    keys = list(payloads[0])
    if not all(type(key) is str and key.isascii() for key in keys):
        return None
    # all dicts of the first one's size, each holding its keys: the same key set
    if set(map(type, payloads)) != {dict} or set(map(len, payloads)) != {len(keys)}:
        return None
    columns: dict[str, tuple[list[Any], type]] = {}
    for key in keys:
        try:
            values = [p[key] for p in payloads]
        except KeyError:
            return None
        types = set(map(type, values))
        if len(types) != 1:
            return None
        columns[key] = (values, types.pop())
    return columns


_INT_LIMIT = 1 << 1023   # |v| < 2**1023: bit_length() <= 1023, the range _flat_json takes as it is


def _flat_column(values: list[Any], t: type) -> bool:
    """True when ``values`` (all of type ``t``) pass ``_flat_json`` as values of a flat payload."""
    if t is str:
        return "".join(values).isascii()
    if t is int:
        return -_INT_LIMIT < min(values) and max(values) < _INT_LIMIT
    if t is float:
        return bool(np.isfinite(np.array(values, np.float64)).all())
    return t is bool or t is type(None)


def _flat_json(payload: dict[Any, Any]) -> bool:
    """True when every key is an ASCII str and every value None, bool, an int within the
    indexable range, a finite float or an ASCII str: such a payload is valid as it is.
    Anything else (nesting, numpy scalars, non-ASCII text, a bad value) takes ``_json_like``."""
    for key, value in payload.items():
        if type(key) is not str or not key.isascii():
            return False
        t = type(value)
        if t is str:
            if not value.isascii():
                return False
        elif t is int:
            if value.bit_length() > 1023:
                return False
        elif t is float:
            if not math.isfinite(value):
                return False
        elif t is not bool and value is not None:
            return False
    return True


class _NotJson(Exception):
    """Internal: a payload value that is not JSON-like; ``path`` grows while unwinding."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _checked_int(value: int) -> int:
    """``value`` if the payload index can hold it as a float64, else _NotJson (checked before
    the commit: indexing it after would fail with the batch already stored)."""
    if value.bit_length() > 1023:
        try:
            float(value)
        except OverflowError:
            raise _NotJson(f"holds an integer of {value.bit_length()} bits, outside the float64 range "
                           "payload numbers are indexed in (about ±1.8e308); store it as a string") from None
    return value


def _checked_str(value: str, what: str = "a string") -> str:
    """``value`` if it can be stored as UTF-8 (no lone surrogates such as "\\ud800"), else _NotJson."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _NotJson(f"holds {what} with a lone surrogate ({value[exc.start]!r} at index {exc.start}), "
                           "which is not valid Unicode text and cannot be stored as UTF-8") from None
    return value


def _json_like(value: Any, depth: int) -> Any:
    # exact-type fast paths first: isinstance against typing ABCs costs ~1 us per call
    t = type(value)
    if t is str:
        return _checked_str(value)
    if t is int:
        return _checked_int(value)
    if t is bool or value is None:
        return value
    if t is float:
        if not math.isfinite(value):
            raise _NotJson(f"holds a non-finite number ({value}); JSON has no NaN/inf")
        return value
    if depth > MAX_DEPTH:
        raise _NotJson(f"is nested deeper than {MAX_DEPTH} levels")
    if t is dict or isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotJson(f"has a non-string key {key!r}")
            _checked_str(key, "a key")
            try:
                out[key] = _json_like(item, depth + 1)
            except _NotJson as exc:
                exc.path.append(f".{key}")
                raise
        return out
    if t is list or t is tuple:
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_json_like(item, depth + 1))
            except _NotJson as exc:
                exc.path.append(f"[{i}]")
                raise
        return items
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return _checked_int(int(value))
    if isinstance(value, (float, np.floating)):
        return _json_like(float(value), depth)
    if isinstance(value, str):
        return _checked_str(str(value))
    raise _NotJson(f"holds a {t.__name__}, which is not JSON-like")


def flatten(payload: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield ``(field path, kind, value)`` for every indexable scalar of ``payload``.

    kind is ``"n"`` (number, as float), ``"s"`` (string) or ``"b"`` (bool, as 0.0/1.0).
    Iterative (an explicit stack, no generator per container), since it runs while the
    collection's write lock is held: large nested payloads must cost little per node.
    """
    stack: list[tuple[str, Any]] = [(prefix + key, value) for key, value in reversed(payload.items())]
    pop, push = stack.pop, stack.append
    while stack:
        path, value = pop()
        t = type(value)
        if t is str:
            yield path, "s", value
        elif t is bool:
            yield path, "b", float(value)
        elif t is int or t is float:
            yield path, "n", float(value)
        elif t is list:
            if value:
                stack.extend((path, item) for item in reversed(value))
        elif t is dict:
            if value:
                stack.extend((f"{path}.{key}", item) for key, item in reversed(value.items()))
        elif isinstance(value, bool):
            yield path, "b", float(value)
        elif isinstance(value, (int, float)):
            yield path, "n", float(value)
        elif isinstance(value, str):
            yield path, "s", value
        elif isinstance(value, list):
            stack.extend((path, item) for item in reversed(value))
        elif isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in reversed(value.items()))


# ---- filter parsing --------------------------------------------------------------------


def parse_filter(spec: Any) -> Node | None:
    """Validate a filter dict and return its tree; None for no filter.

    Node shapes: ``("all",)``, ``("and", [nodes])``, ``("or", [nodes])``, ``("not", node)``,
    ``("in", field, kind, [values])`` (equality is a one-value ``in``) and
    ``("range", field, kind, lo, lo_inclusive, hi, hi_inclusive)``.
    Raises InvalidArgumentError naming the offending part.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidArgumentError(f"filter must be a dict, got {type(spec).__name__}")
    return _parse(spec, 0)


def filter_size(spec: Any, *, stop_at: int | None = None) -> tuple[int, int]:
    """``(conditions, values)`` of a raw filter: every dict key counts as a condition and
    every scalar list item (``in`` values) as a value. Iterative, so any nesting is safe;
    stops early once either count passes ``stop_at``. The server caps both per request."""
    conditions = values = 0
    todo = [spec]
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            conditions += len(item)
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            for sub in item:
                if isinstance(sub, (Mapping, list, tuple)):
                    todo.append(sub)
                else:
                    values += 1
        if stop_at is not None and max(conditions, values) > stop_at:
            break
    return conditions, values


def _parse(spec: Mapping[str, Any], depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidArgumentError(f"filter is nested deeper than {MAX_DEPTH} levels")
    parts: list[Node] = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"filter keys must be non-empty strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidArgumentError(f"{key} takes a non-empty list of filters, got {value!r}")
            subs = []
            for item in value:
                if not isinstance(item, Mapping):
                    raise InvalidArgumentError(f"{key} items must be filter dicts, got {item!r}")
                subs.append(_parse(item, depth + 1))
            parts.append((key[1:], subs))
        elif key == "$not":
            if not isinstance(value, Mapping):
                raise InvalidArgumentError(f"$not takes one filter dict, got {value!r}")
            parts.append(("not", _parse(value, depth + 1)))
        elif key.startswith("$"):
            raise InvalidArgumentError(f"unknown filter operator {key!r}; expected $and, $or or $not")
        else:
            parts.append(_parse_field(key, value))
    if not parts:
        return ("all",)
    return parts[0] if len(parts) == 1 else ("and", parts)


def _parse_field(field: str, cond: Any) -> Node:
    if not isinstance(cond, Mapping):
        if isinstance(cond, (list, tuple)):
            raise InvalidArgumentError(f"field {field!r}: a list is not a value; use {{'in': [...]}}")
        kind, value = _scalar(field, cond)
        return ("in", field, kind, [value])
    if not cond:
        raise InvalidArgumentError(f"field {field!r}: empty condition")
    unknown = set(cond) - FIELD_OPS
    if unknown:
        raise InvalidArgumentError(f"field {field!r}: unknown operator(s) {sorted(map(str, unknown))}; "
                                   f"expected {sorted(FIELD_OPS)}")
    parts: list[Node] = []
    if "eq" in cond:
        kind, value = _scalar(field, cond["eq"])
        parts.append(("in", field, kind, [value]))
    if "ne" in cond:
        kind, value = _scalar(field, cond["ne"])
        parts.append(("not", ("in", field, kind, [value])))
    if "in" in cond:
        values = cond["in"]
        if not isinstance(values, (list, tuple)):
            raise InvalidArgumentError(f"field {field!r}: 'in' takes a list, got {type(values).__name__}")
        by_kind: dict[str, list[Any]] = {}
        for item in values:
            kind, value = _scalar(field, item)
            by_kind.setdefault(kind, []).append(value)
        # sorted and deduplicated here, outside any lock, for the vectorised match in Column
        alts: list[Node] = [("in", field, kind, sorted(set(vals))) for kind, vals in sorted(by_kind.items())]
        parts.append(alts[0] if len(alts) == 1 else ("or", alts) if alts else ("none",))
    if any(op in cond for op in RANGE_OPS):
        parts.append(_parse_range(field, cond))
    return parts[0] if len(parts) == 1 else ("and", parts)


def _parse_range(field: str, cond: Mapping[str, Any]) -> Node:
    if "gt" in cond and "gte" in cond or "lt" in cond and "lte" in cond:
        raise InvalidArgumentError(f"field {field!r}: give at most one lower (gt/gte) and one upper (lt/lte) bound")
    kinds = set()
    bounds: dict[str, Any] = {}
    for op in RANGE_OPS:
        if op not in cond:
            continue
        bound = cond[op]
        if isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, float, str, np.integer, np.floating)):
            raise InvalidArgumentError(f"field {field!r}: {op} bound must be a number or a string, got {bound!r}")
        kind, value = _scalar(field, bound)
        kinds.add(kind)
        bounds[op] = value
    if len(kinds) > 1:
        raise InvalidArgumentError(f"field {field!r}: range bounds mix numbers and strings")
    lo_op = "gt" if "gt" in bounds else "gte" if "gte" in bounds else None
    hi_op = "lt" if "lt" in bounds else "lte" if "lte" in bounds else None
    return ("range", field, kinds.pop(), bounds.get(lo_op) if lo_op else None, lo_op == "gte",
            bounds.get(hi_op) if hi_op else None, hi_op == "lte")


def _scalar(field: str, value: Any) -> tuple[str, Any]:
    if isinstance(value, (bool, np.bool_)):
        return "b", float(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            f = float(value)
        except OverflowError:
            raise InvalidArgumentError(f"field {field!r}: an integer of {int(value).bit_length()} bits "
                                       "is outside the float64 range payload numbers are compared in") from None
        if not math.isfinite(f):
            raise InvalidArgumentError(f"field {field!r}: NaN/inf cannot be compared")
        return "n", f
    if isinstance(value, str):
        return "s", value
    raise InvalidArgumentError(f"field {field!r}: value must be a string, number or bool, got {value!r}")


# ---- payload index ---------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A column's sorted run built by ``Column.compacted``: its entries, how many tail
    entries (the oldest ones) it took in, and the index's removal count it was built at."""

    vals: np.ndarray
    iids: np.ndarray
    epochs: np.ndarray
    consumed: int
    removals: int | None


class Column:
    """All values of one (field, kind): sorted run + unsorted tail, entries tagged with epochs.

    The tail is held as arrays, one chunk per batch (``extend``: a batch costs a few numpy
    calls, not Python per entry), plus lists for entries added one at a time (``append``,
    moved into a chunk before the next batch, so the tail keeps arrival order)."""

    def __init__(self, kind: str) -> None:
        self.dtype = np.dtype(object) if kind == "s" else np.dtype(np.float64)
        self.vals = np.zeros(0, self.dtype)
        self.iids = np.zeros(0, np.int64)
        self.epochs = np.zeros(0, np.uint32)
        self._tail_vals: list[Any] = []
        self._tail_iids: list[int] = []
        self._tail_epochs: list[int] = []
        self._tail_chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._tail_n = 0   # entries in the tail (chunks and lists)
        self._tail_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: (the index's removal count, stale entries in the run then): the run's stale count
        #: changes only when points are removed, so it is recounted only after a removal
        self._stale_seen: tuple[int, int] | None = None

    def append(self, value: Any, iid: int, epoch: int) -> None:
        self._tail_vals.append(value)
        self._tail_iids.append(iid)
        self._tail_epochs.append(epoch)
        self._tail_n += 1
        self._tail_cache = None

    def extend(self, values: Any, iids: np.ndarray, epochs: np.ndarray) -> None:
        """``append`` of many entries at once: ``values`` (a sequence of this column's
        values) and the entries' internal ids and epochs (arrays of the same length)."""
        if not len(iids):
            return
        if self._tail_vals:
            self._tail_chunks.append(self._listed())
            self._tail_vals, self._tail_iids, self._tail_epochs = [], [], []
        vals = np.empty(len(iids), self.dtype)
        vals[:] = values
        self._tail_chunks.append((vals, np.array(iids, np.int64), np.array(epochs, np.uint32)))
        self._tail_n += len(iids)
        self._tail_cache = None

    def _listed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The entries appended one at a time since the last chunk, as arrays."""
        vals = np.empty(len(self._tail_vals), self.dtype)
        vals[:] = self._tail_vals
        return vals, np.array(self._tail_iids, np.int64), np.array(self._tail_epochs, np.uint32)

    def tail(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tail as arrays (built once per write; concurrent readers build identical copies)."""
        cached = self._tail_cache
        if cached is None:
            parts = self._tail_chunks + [self._listed()] if self._tail_vals or not self._tail_chunks \
                else self._tail_chunks
            cached = parts[0] if len(parts) == 1 else tuple(np.concatenate(arrays) for arrays in zip(*parts))
            self._tail_cache = cached   # type: ignore[assignment]
        return cached  # type: ignore[return-value]

    def load(self, vals: np.ndarray, iids: np.ndarray, epochs: np.ndarray, n_sorted: int) -> None:
        """Take the entries of a saved column: the first ``n_sorted`` are its sorted run, the
        rest its tail."""
        self.vals, self.iids, self.epochs = vals[:n_sorted], iids[:n_sorted], epochs[:n_sorted]
        self._tail_vals, self._tail_iids, self._tail_epochs = [], [], []
        self._tail_chunks, self._tail_n, self._tail_cache = [], 0, None
        self.extend(vals[n_sorted:], iids[n_sorted:], epochs[n_sorted:])

    def compact(self, epoch: np.ndarray, force: bool = False, removals: int | None = None) -> bool:
        """Re-sort when the tail or stale entries reach a quarter of the run (or when forced);
        True when it did. ``removals``: how many removals the payload index has made so far
        (None: unknown); while it is unchanged the run's stale count is not recounted, so a
        write that removes nothing costs O(1) here, not a pass over the run."""
        run = self.compacted(epoch, force, removals)
        if run is None:
            return False
        self.install(run)
        return True

    def compacted(self, epoch: np.ndarray, force: bool = False, removals: int | None = None) -> "Run | None":
        """The run a re-sort would make now, when one is due (see ``compact``), else None.

        Reads only (the writer's stale-count cache aside, which readers never use), so the
        writer builds it while searches read this column; ``install`` then swaps it in,
        in O(1) when nothing was added meanwhile."""
        n_tail = self._tail_n
        if not force and n_tail < max(_MIN_TAIL, len(self.iids) // 4):
            seen = self._stale_seen
            if seen is not None and removals is not None and seen[0] == removals:
                stale = seen[1]
            else:
                stale = int((self.epochs != epoch[self.iids]).sum()) if len(self.iids) else 0
                self._stale_seen = None if removals is None else (removals, stale)
            if stale < max(_MIN_TAIL, len(self.iids) // 4):
                return None
        # the live tail entries, sorted, merged into the live run (already sorted): one pass
        # over the run instead of sorting it again; equal values keep the run's entries
        # first, then the tail's in arrival order (as one stable sort of both would)
        tv, ti, te = self.tail()
        keep = te == epoch[ti]
        order = np.argsort(tv[keep], kind="stable")
        tv, ti, te = tv[keep][order], ti[keep][order], te[keep][order]
        vals, iids, epochs = self.vals, self.iids, self.epochs
        if len(iids):
            keep = epochs == epoch[iids]
            if not keep.all():
                vals, iids, epochs = vals[keep], iids[keep], epochs[keep]
        if len(tv):   # tail entry j lands at (its place in the run) + j; the run fills the rest
            pos = np.searchsorted(vals, tv, side="right") + np.arange(len(tv))
            rest = np.ones(len(vals) + len(tv), bool)
            rest[pos] = False
            vals, iids, epochs = (_merged(run, add, pos, rest) for run, add in ((vals, tv), (iids, ti), (epochs, te)))
        return Run(vals, iids, epochs, n_tail, removals)

    def install(self, run: "Run") -> None:
        """Make ``run`` (``compacted`` of this column) the sorted run. Entries added since it
        was built stay in the tail, in arrival order; entries removed since stay in the run
        as stale ones (their epochs moved on), counted at the next ``compacted``."""
        if self._tail_n == run.consumed:
            later: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        else:
            later = tuple(part[run.consumed:] for part in self.tail())  # type: ignore[assignment]
        self.vals, self.iids, self.epochs = run.vals, run.iids, run.epochs
        self._tail_vals, self._tail_iids, self._tail_epochs = [], [], []
        self._tail_chunks, self._tail_n, self._tail_cache = [], 0, None
        if later is not None:
            self.extend(*later)
        self._stale_seen = None if run.removals is None else (run.removals, 0)

    def match_tail_in(self, out: np.ndarray, epoch: np.ndarray, ids: np.ndarray,
                      intervals: list[tuple[Any, bool, Any, bool]] | None, values: np.ndarray | None) -> None:
        """Set ``out[j] = True`` for each ``ids[j]`` (sorted unique) holding a live tail entry
        in one of ``intervals`` (or equal to one of sorted ``values``)."""
        tv, ti, te = self.tail()
        if not len(tv) or not len(ids):
            return
        pos = np.minimum(np.searchsorted(ids, ti), len(ids) - 1)
        sel = (ids[pos] == ti) & (te == epoch[ti])
        if not sel.any():
            return
        tv, pos = tv[sel], pos[sel]
        if values is not None:
            at = np.minimum(np.searchsorted(values, tv), len(values) - 1)
            out[pos[values[at] == tv]] = True
            return
        for lo, lo_inc, hi, hi_inc in intervals or ():
            hit = np.ones(len(tv), bool)
            if lo is not None:
                hit &= (tv >= lo) if lo_inc else (tv > lo)
            if hi is not None:
                hit &= (tv <= hi) if hi_inc else (tv < hi)
            out[pos[hit]] = True

    def match(self, out: np.ndarray, epoch: np.ndarray, intervals: list[tuple[Any, bool, Any, bool]]) -> None:
        """Set ``out[iid] = True`` for every live entry whose value lies in one of ``intervals``
        (``(lo, lo_inclusive, hi, hi_inclusive)``, None for an open end)."""
        tv, ti, te = self.tail()
        for lo, lo_inc, hi, hi_inc in intervals:
            if len(self.vals):
                i0 = 0 if lo is None else int(np.searchsorted(self.vals, lo, "left" if lo_inc else "right"))
                i1 = len(self.vals) if hi is None else int(np.searchsorted(self.vals, hi, "right" if hi_inc else "left"))
                if i1 > i0:
                    iids = self.iids[i0:i1]
                    out[iids[self.epochs[i0:i1] == epoch[iids]]] = True
            if len(tv):
                sel = te == epoch[ti]
                if lo is not None:
                    sel &= (tv >= lo) if lo_inc else (tv > lo)
                if hi is not None:
                    sel &= (tv <= hi) if hi_inc else (tv < hi)
                out[ti[sel]] = True

    def match_values(self, out: np.ndarray, epoch: np.ndarray, values: np.ndarray) -> None:
        """Set ``out[iid] = True`` for every live entry equal to one of ``values`` (sorted,
        unique, of this column's dtype): O(m log n) binary searches on the sorted run and
        O(t log m) for the tail, all vectorised, whatever the number m of values."""
        if len(self.vals):
            lo = np.searchsorted(self.vals, values, "left")
            hi = np.searchsorted(self.vals, values, "right")
            hit = hi > lo
            lo, hi = lo[hit], hi[hit]
            if len(lo):
                lengths = hi - lo
                starts = np.cumsum(lengths) - lengths
                pos = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(lo - starts, lengths)
                iids = self.iids[pos]
                out[iids[self.epochs[pos] == epoch[iids]]] = True
        tv, ti, te = self.tail()
        if len(tv):
            at = np.minimum(np.searchsorted(values, tv), len(values) - 1)
            sel = (values[at] == tv) & (te == epoch[ti])
            out[ti[sel]] = True

    def memory_bytes(self) -> int:
        per_tail = 8 + 28 + 28
        extra = 50 * len(self.vals) if self.dtype == object else 0
        chunks = sum(v.nbytes + i.nbytes + e.nbytes + (50 * len(v) if self.dtype == object else 0)
                     for v, i, e in self._tail_chunks)
        return int(self.vals.nbytes + self.iids.nbytes + self.epochs.nbytes + extra + per_tail * len(self._tail_iids)
                   + chunks)


def _merged(run: np.ndarray, add: np.ndarray, pos: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``run`` with ``add`` placed at the positions ``pos`` of the result (``rest``: the others)."""
    out = np.empty(len(rest), run.dtype)
    out[pos] = add
    out[rest] = run
    return out


#: the column kind of each top-level scalar type (``PayloadIndex.add``); None: not indexed
_SCALAR_KINDS: dict[type, str | None] = {str: "s", int: "n", float: "n", bool: "b", type(None): None}


class PayloadIndex:
    """Indexes of every payload field of one collection, keyed by internal id.

    Mutated only by the collection's single writer (under its exclusive lock); ``evaluate``
    is safe from many reader threads at once. A re-sort is built by the writer while readers
    read (``compaction``) and swapped in under the lock (``install``).
    """

    def __init__(self) -> None:
        self.columns: dict[tuple[str, str], Column] = {}
        self.epoch = np.zeros(0, np.uint32)
        #: bumped whenever a column is re-sorted (its tail moved into the run)
        self.generation = 0
        #: ids removed so far (``remove``): the columns' stale counts change only with it
        self.removals = 0

    def reserve(self, n: int) -> None:
        """Make room for internal ids below ``n``."""
        if n > len(self.epoch):
            grown = np.zeros(max(n, int(len(self.epoch) * 1.5), 1024), np.uint32)
            grown[: len(self.epoch)] = self.epoch
            self.epoch = grown

    def add(self, iid: int, payload: Mapping[str, Any] | None) -> None:
        """Index the payload of point ``iid`` (which must not be indexed already)."""
        if not payload:
            return
        ep = int(self.epoch[iid])
        columns = self.columns
        for key, value in payload.items():
            t = type(value)               # top-level scalars directly: most payloads are flat
            if t is str:
                kind = "s"
            elif t is int or t is float:
                kind, value = "n", float(value)
            elif t is bool:
                kind, value = "b", float(value)
            elif value is None:
                continue
            else:
                for field, kind, item in flatten({key: value}):
                    self._column(field, kind).append(item, iid, ep)
                continue
            col = columns.get((key, kind))
            if col is None:
                col = self._column(key, kind)
            col.append(value, iid, ep)

    def add_many(self, iids: np.ndarray, payloads: list[Mapping[str, Any] | None], shape: Shape | None = None) -> None:
        """``add`` of each ``(iids[i], payloads[i])``. Flat payloads of one shape
        (``one_shape``: scalar values, one type per key) go into each field's column in one
        ``extend``, without Python per payload and field; any other batch goes point by point.
        ``shape``: ``one_shape(payloads)`` when the caller has it (``check_payloads_shaped``)."""
        columns = shape if shape is not None else one_shape(payloads)
        if columns is None or any(t not in _SCALAR_KINDS for _, t in columns.values()):
            for iid, payload in zip(iids.tolist(), payloads):
                self.add(iid, payload)
            return
        ids = np.asarray(iids, np.int64)
        epochs = self.epoch[ids]
        for key, (values, t) in columns.items():
            kind = _SCALAR_KINDS[t]
            if kind is None:
                continue                  # null is not indexed
            self._column(key, kind).extend(values if kind == "s" else np.array(values, np.float64), ids, epochs)

    def _column(self, field: str, kind: str) -> "Column":
        """The column of ``field`` values of ``kind``, created on first use."""
        col = self.columns.get((field, kind))
        if col is None:
            col = self.columns[(field, kind)] = Column(kind)
        return col

    def remove(self, iids: np.ndarray) -> None:
        """Forget the payloads of ``iids`` (their entries become stale)."""
        if len(iids):
            self.epoch[iids] += np.uint32(1)
            self.removals += len(iids)

    def compact(self, force: bool = False) -> None:
        """Re-sort columns whose tail or garbage has grown (amortised O(n log n))."""
        self.install(self.compaction(force))

    def compaction(self, force: bool = False) -> list[tuple[Column, Run]]:
        """The re-sorted runs of the columns due for one (``Column.compacted``), built without
        changing what readers see: the writer builds them with searches going on, then
        ``install`` swaps them in under the exclusive lock (O(1) per column when nothing was
        added since). Empty when no column is due."""
        due = []
        for col in list(self.columns.values()):
            run = col.compacted(self.epoch, force, self.removals)
            if run is not None:
                due.append((col, run))
        return due

    def install(self, runs: list[tuple[Column, Run]]) -> None:
        """Swap in the runs of ``compaction`` (built by this index, since which only ``add`` /
        ``add_many`` / ``remove`` may have run): the index then holds the same live entries,
        in the same order, as if each column had been re-sorted when they were built."""
        for col, run in runs:
            col.install(run)
            self.generation += 1

    def evaluate(self, node: Node, live: np.ndarray) -> np.ndarray:
        """Boolean mask over internal ids (length ``len(live)``) of live points matching ``node``.

        Checks the current call's deadline and cancellation (``vecdb.calls``) at every node,
        so a large filter stops when its caller gives up."""
        calls.check()
        op = node[0]
        if op == "all":
            return live.copy()
        if op == "none":
            return np.zeros(len(live), bool)
        if op == "and":
            out = self.evaluate(node[1][0], live)
            for sub in node[1][1:]:
                if not out.any():
                    break
                out &= self.evaluate(sub, live)
            return out
        if op == "or":
            out = self.evaluate(node[1][0], live)
            for sub in node[1][1:]:
                out |= self.evaluate(sub, live)
            return out
        if op == "not":
            return live & ~self.evaluate(node[1], live)
        out = np.zeros(len(live), bool)
        col = self.columns.get((node[1], node[2]))
        if col is not None:
            if op == "in":
                values = np.empty(len(node[3]), col.dtype)
                values[:] = node[3]
                col.match_values(out, self.epoch, values)
            else:
                col.match(out, self.epoch, [(node[3], node[4], node[5], node[6])])
        return out & live

    def evaluate_ids(self, node: Node, ids: np.ndarray, live: np.ndarray) -> np.ndarray:
        """``evaluate`` for the points ``ids`` only (sorted unique; ``live`` their liveness),
        as a bool per id, reading the columns' tails alone: exact for points written (or
        deleted) since ``generation`` last changed, whose live entries are all in the tails."""
        calls.check()
        op = node[0]
        if op == "all":
            return live.copy()
        if op == "none":
            return np.zeros(len(ids), bool)
        if op in ("and", "or"):
            out = self.evaluate_ids(node[1][0], ids, live)
            for sub in node[1][1:]:
                if op == "and":
                    out &= self.evaluate_ids(sub, ids, live)
                else:
                    out |= self.evaluate_ids(sub, ids, live)
            return out
        if op == "not":
            return live & ~self.evaluate_ids(node[1], ids, live)
        out = np.zeros(len(ids), bool)
        col = self.columns.get((node[1], node[2]))
        if col is not None:
            if op == "in":
                values = np.empty(len(node[3]), col.dtype)
                values[:] = node[3]
                col.match_tail_in(out, self.epoch, ids, None, values)
            else:
                col.match_tail_in(out, self.epoch, ids, [(node[3], node[4], node[5], node[6])], None)
        return out & live

    def memory_bytes(self) -> int:
        return int(self.epoch.nbytes + sum(c.memory_bytes() for c in self.columns.values()))


# ---- persistence (next to index checkpoints) -------------------------------------------


def save_payload_index(index: PayloadIndex, path: Path) -> None:
    """Write ``index`` into the new folder ``path`` as .npy arrays + meta.json (no pickle:
    string values are one UTF-8 blob plus offsets). Reads only, so searches may run."""
    path.mkdir(parents=True)
    fields = []
    for n, ((field, kind), col) in enumerate(sorted(index.columns.items())):
        tv, ti, te = col.tail()
        vals = np.concatenate([col.vals, tv])
        arrays = {"iids": np.concatenate([col.iids, ti]), "epochs": np.concatenate([col.epochs, te])}
        if kind == "s":
            encoded = [v.encode("utf-8") for v in vals.tolist()]
            arrays["blob"] = np.frombuffer(b"".join(encoded), np.uint8)
            arrays["offsets"] = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        else:
            arrays["vals"] = vals.astype(np.float64)
        for name, arr in arrays.items():
            np.save(path / f"c{n}.{name}.npy", arr, allow_pickle=False)
        fields.append({"field": field, "kind": kind, "file": f"c{n}", "sorted": len(col.iids)})
    np.save(path / "epoch.npy", index.epoch, allow_pickle=False)
    (path / "meta.json").write_text(json.dumps({"format": "vecdb-payload-index", "version": 1, "columns": fields}))


def load_payload_index(path: Path) -> PayloadIndex:
    """Inverse of ``save_payload_index``; DataLossError when missing or malformed."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != "vecdb-payload-index" or meta.get("version") != 1:
            raise ValueError(f"unknown format {meta.get('format')!r} v{meta.get('version')}")
        index = PayloadIndex()
        index.epoch = np.load(path / "epoch.npy", allow_pickle=False).astype(np.uint32)
        for entry in meta["columns"]:
            kind, stem, n_sorted = entry["kind"], path / entry["file"], int(entry["sorted"])
            col = Column(kind)
            iids = np.load(f"{stem}.iids.npy", allow_pickle=False).astype(np.int64)
            epochs = np.load(f"{stem}.epochs.npy", allow_pickle=False).astype(np.uint32)
            if kind == "s":
                blob = np.load(f"{stem}.blob.npy", allow_pickle=False).tobytes()
                offsets = np.load(f"{stem}.offsets.npy", allow_pickle=False).tolist()
                vals = np.empty(len(offsets) - 1, object)
                vals[:] = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
            else:
                vals = np.load(f"{stem}.vals.npy", allow_pickle=False).astype(np.float64)
            if not (len(vals) == len(iids) == len(epochs)) or (len(iids) and iids.max() >= len(index.epoch)):
                raise ValueError(f"column {entry['field']!r} arrays disagree")
            col.load(vals, iids, epochs, n_sorted)
            index.columns[(str(entry["field"]), kind)] = col
        return index
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DataLossError(f"payload index checkpoint at {path} is unreadable: {exc}") from None
