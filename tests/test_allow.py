"""AllowSet behaves like a Python set of non-negative ints, in both of its forms (sorted ids and
bitmap), and rejects what is not a set of ids."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vecdb.errors import InvalidArgumentError
from vecdb.index.allow import AllowSet, as_allow

id_lists = st.lists(st.integers(0, 300), max_size=80)


def members(allow: AllowSet) -> set[int]:
    return set(allow.ids.tolist())


@given(id_lists)
def test_from_ids_is_the_set(ids: list[int]) -> None:
    allow = AllowSet.from_ids(ids)
    assert members(allow) == set(ids) and len(allow) == len(set(ids))
    assert allow.ids.dtype == np.int64 and (np.diff(allow.ids) > 0).all()
    for i in range(0, 302, 7):
        assert (i in allow) == (i in set(ids))


@given(id_lists, st.integers(0, 400))
def test_bitmap_marks_exactly_the_members(ids: list[int], size: int) -> None:
    allow = AllowSet.from_ids(ids)
    bm = allow.bitmap(size)
    assert bm.dtype == np.uint8 and len(bm) >= size
    assert set(np.flatnonzero(bm).tolist()) == set(ids)
    assert allow.bitmap(min(size, len(bm))) is bm          # cached: built once


@given(st.lists(st.booleans(), max_size=120))
def test_from_mask_keeps_the_mask_as_bitmap(flags: list[bool]) -> None:
    mask = np.array(flags, bool)
    allow = AllowSet.from_mask(mask)
    assert members(allow) == {i for i, f in enumerate(flags) if f}
    bm = allow.bitmap(len(mask))
    assert (not len(mask) or np.shares_memory(bm, mask)) and set(np.flatnonzero(bm).tolist()) == members(allow)


@given(id_lists, st.integers(0, 400), id_lists, st.booleans())
def test_a_set_made_from_its_bitmap_answers_like_one_made_from_its_ids(ids: list[int], size: int, other: list[int],
                                                                      list_first: bool) -> None:
    """``of_bitmap`` lists its ids only when asked; every answer equals the id-built set's,
    whichever is asked first (the count and the largest id come from the bitmap)."""
    want = AllowSet.from_ids(ids)
    mask = np.zeros(max(ids, default=-1) + 1 + size % 5, np.uint8)   # trailing zeros too
    mask[ids] = 1
    got = AllowSet.of_bitmap(mask)
    if list_first:
        assert members(got) == set(ids)
    assert len(got) == len(want) and got.max_id() == want.max_id()
    assert np.flatnonzero(got.bitmap(size)).tolist() == want.ids.tolist() and len(got.bitmap(size)) >= size
    for i in range(0, 302, 7):
        assert (i in got) == (i in want)
    right = np.array(other, np.int64)
    assert members(got.without(right)) == members(want.without(right))
    assert members(got.intersect(AllowSet.from_ids(other))) == set(ids) & set(other)
    assert members(AllowSet.union([got, AllowSet.from_ids(other)])) == set(ids) | set(other)
    assert got.ids.tolist() == want.ids.tolist() and not got.ids.flags.writeable


@given(id_lists, st.lists(st.booleans(), max_size=320))
def test_intersect_mask_is_set_intersection(ids: list[int], flags: list[bool]) -> None:
    got = AllowSet.from_ids(ids).intersect_mask(np.array(flags, bool))
    assert members(got) == {i for i in ids if i < len(flags) and flags[i]}
    got_u8 = AllowSet.from_ids(ids).intersect_mask(np.array(flags, np.uint8))
    assert members(got_u8) == members(got)


@given(id_lists, id_lists)
def test_without_and_intersect_are_set_operations(a: list[int], b: list[int]) -> None:
    left, right = AllowSet.from_ids(a), AllowSet.from_ids(b)
    assert members(left.without(np.array(b, np.int64))) == set(a) - set(b)
    assert members(left.intersect(right)) == set(a) & set(b)
    if not set(a) & set(b):
        assert left.without(np.array(b, np.int64)) is left       # nothing to drop: no copy


def test_ids_are_read_only_and_never_alias_the_callers_array() -> None:
    src = np.array([1, 5, 9], np.int64)
    allow = AllowSet.from_ids(src)
    src[0] = 7
    assert allow.ids.tolist() == [1, 5, 9]
    with pytest.raises(ValueError):
        allow.ids[0] = 3


@pytest.mark.parametrize("given_ids", [np.array([3, 1, 3]), [3, 1, 3], {1, 3}, frozenset({1, 3}), range(1, 4, 2),
                                       np.array([1, 3], np.uint32)])
def test_as_allow_accepts_arrays_lists_sets_ranges(given_ids) -> None:
    assert as_allow(given_ids).ids.tolist() == [1, 3]


def test_as_allow_passes_an_allow_set_through() -> None:
    allow = AllowSet.from_ids([2, 4])
    assert as_allow(allow) is allow


@pytest.mark.parametrize("bad, message", [
    ([-1, 2], "non-negative"),
    ([1.5, 2.0], "integers"),
    (np.zeros((2, 2), np.int64), "1-D"),
    (np.array([True, False]), "not a bool mask"),
    (["a"], "integers"),
    (np.array([2**63], np.uint64), "int64"),
])
def test_as_allow_rejects_what_is_not_ids(bad, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        as_allow(bad)


def test_from_mask_rejects_other_dtypes() -> None:
    with pytest.raises(InvalidArgumentError, match="bool or uint8"):
        AllowSet.from_mask(np.array([0, 1, 2], np.int64))
