"""IdMap (numpy-only id <-> slot map) agrees with a dict oracle under any sequence of adds,
removes and moves, in each of its layouts, costs <= 24 B per id, and reads saved indexes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.index import FlatIndex, HNSW, load_index
from vecdb.index.ids import IdMap

#: small ids (dense layouts), huge ones (hash layout) and the identity range mixed
ID_VALUES = st.one_of(st.integers(0, 40), st.integers(0, 2**62), st.integers(10**6, 10**6 + 50))

ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(ID_VALUES, max_size=12), st.booleans(), st.booleans()),
    st.tuples(st.just("add_identity"), st.integers(1, 10)),
    st.tuples(st.just("remove"), st.lists(ID_VALUES, max_size=8), st.floats(0, 1)),
    st.tuples(st.just("move"), st.integers(0, 10**6)),
    st.tuples(st.just("compact"), st.just(0)),
), max_size=40)


class Oracle:
    """The map as the dict it replaces: id -> slot, plus the slot array."""

    def __init__(self) -> None:
        self.slot_of: dict[int, int] = {}
        self.n_slots = 0

    def free_slots(self) -> list[int]:
        used = set(self.slot_of.values())
        return [s for s in range(self.n_slots) if s not in used]


def check(m: IdMap, o: Oracle, probes: list[int]) -> None:
    assert len(m) == len(o.slot_of)
    assert m.n_slots == o.n_slots
    want = np.full(o.n_slots, -1, np.int64)
    for i, s in o.slot_of.items():
        want[s] = i
    np.testing.assert_array_equal(m.slot_ids, want)
    keys = np.array(sorted(set(o.slot_of) | set(probes)), np.int64)
    got = m.lookup(keys)
    np.testing.assert_array_equal(got, [o.slot_of.get(int(i), -1) for i in keys])
    np.testing.assert_array_equal(m.contains(keys), [int(i) in o.slot_of for i in keys])
    slots = np.array(sorted(o.slot_of.values()) + [-1], np.int64)
    np.testing.assert_array_equal(m.ids_of(slots), [want[s] if s >= 0 else -1 for s in slots])
    assert m.next_free_ids(1)[0] == max(o.slot_of, default=-1) + 1
    if m.is_identity:                                        # the fast path is only taken when sound
        assert all(i == s for i, s in o.slot_of.items())
    if not o.slot_of:
        assert m.is_identity


def assign(m: IdMap, ids: np.ndarray, slots: np.ndarray, planned: bool) -> IdMap:
    """``m`` with ``ids`` assigned to ``slots``: in place, or through ``planned`` (a copy built
    ahead when the assignment is an O(n) step, which leaves ``m`` itself unchanged)."""
    if not planned:
        m.assign(ids, slots)
        return m
    before = (m.slot_ids.copy(), m.layout, m.memory_bytes(), m.version)
    twin = m.planned(ids, slots)
    if twin is None:          # assigning in place is then O(len(ids)): no layout switch, no growth
        m.assign(ids, slots)
        assert (m.layout, m.memory_bytes()) == before[1:3]
        return m
    np.testing.assert_array_equal(m.slot_ids, before[0])
    assert (m.layout, m.memory_bytes(), m.version) == before[1:]
    assert twin.version == m.version + 1
    return twin


@settings(max_examples=150, deadline=None)
@given(ops, st.randoms(use_true_random=False))
def test_idmap_matches_a_dict_oracle(sequence, rnd) -> None:
    m, o = IdMap(), Oracle()
    probes: list[int] = [0, 1, 2**62]
    for op in sequence:
        kind = op[0]
        if kind == "add":
            ids = [i for i in dict.fromkeys(op[1]) if i not in o.slot_of]
            free = o.free_slots() if op[2] else []       # reuse freed slots (HNSW) or append (flat)
            slots = (free + list(range(o.n_slots, o.n_slots + len(ids))))[: len(ids)]
            m = assign(m, np.array(ids, np.int64), np.array(slots, np.int64), planned=op[3])
            for i, s in zip(ids, slots):
                o.slot_of[i] = s
            o.n_slots = max([o.n_slots] + [s + 1 for s in slots])
            probes += op[1]
        elif kind == "add_identity":
            start = o.n_slots
            ids = [i for i in range(start, start + op[1]) if i not in o.slot_of]
            got = m.append(np.array(ids, np.int64))
            for i, s in zip(ids, got.tolist()):
                o.slot_of[i] = s
            o.n_slots += len(ids)
        elif kind == "remove":
            live = list(o.slot_of)
            take = [i for i in live if rnd.random() < op[2]] + op[1]
            gone = np.unique(np.array(take, np.int64))
            freed = m.release(gone)
            want = sorted(o.slot_of.pop(int(i)) for i in gone if int(i) in o.slot_of)
            assert sorted(freed.tolist()) == want
        elif kind == "move" and o.slot_of:
            free = o.free_slots() + [o.n_slots]
            ident = sorted(o.slot_of)[op[1] % len(o.slot_of)]
            dst = free[op[1] % len(free)]
            m.move(o.slot_of[ident], dst)
            o.slot_of[ident] = dst
            o.n_slots = max(o.n_slots, dst + 1)
        elif kind == "compact":                            # what FlatIndex._remove does
            n_live = len(o.slot_of)
            holes = [s for s in o.free_slots() if s < n_live]
            movers = sorted(s for s in o.slot_of.values() if s >= n_live)
            m.move_many(np.array(movers, np.int64), np.array(holes, np.int64))
            m.truncate(n_live)
            back = {s: i for i, s in o.slot_of.items()}
            for src, dst in zip(movers, holes):
                o.slot_of[back[src]] = dst
            o.n_slots = n_live
        check(m, o, probes)
    reloaded = IdMap(m.slot_ids.copy())                    # what load_index does
    check(reloaded, o, probes)


@pytest.mark.parametrize("layout, ids", [
    ("identity", np.arange(100_000)),
    ("dense", np.random.default_rng(0).permutation(100_000)),
    ("dense", np.random.default_rng(0).permutation(180_000)[:100_000]),       # ids with gaps
    ("hash", np.arange(10**6, 10**6 + 100_000)),                              # dense but offset
    ("hash", np.random.default_rng(1).choice(2**62, 100_000, replace=False)),
])
def test_memory_per_id_is_at_most_24_bytes(layout: str, ids: np.ndarray) -> None:
    m = IdMap()
    m.append(ids.astype(np.int64))
    assert m.layout == layout
    assert m.memory_bytes() / len(ids) <= 24, (layout, m.memory_bytes() / len(ids))
    probe = ids[::97].astype(np.int64)
    np.testing.assert_array_equal(m.ids_of(m.lookup(probe)), probe)


def test_memory_stays_bounded_when_added_in_small_batches() -> None:
    rng = np.random.default_rng(2)
    ids = rng.choice(2**62, 100_000, replace=False).astype(np.int64)
    m = IdMap()
    for chunk in np.array_split(ids, 97):
        m.append(chunk)
    assert m.layout == "hash" and m.memory_bytes() / len(ids) <= 24
    half = ids[::2]
    assert len(m.release(half)) == len(half)
    np.testing.assert_array_equal(m.lookup(ids[1::2]), np.arange(1, len(ids), 2))
    assert (m.lookup(half) == -1).all()


def test_identity_layout_makes_lookups_and_results_no_ops() -> None:
    m = IdMap()
    m.append(np.arange(1000, dtype=np.int64))
    assert m.is_identity and m.memory_bytes() <= 8 * 1600     # the slot array only
    slots = np.array([[3, 7, -1]], np.int64)
    assert m.ids_of(slots) is slots
    np.testing.assert_array_equal(m.lookup(np.array([5, 999, 1000, 10**9])), [5, 999, -1, -1])
    m.release(np.array([5], np.int64))
    assert m.is_identity and m.lookup(np.array([5]))[0] == -1
    m.assign(np.array([5], np.int64), np.array([5], np.int64))
    assert m.is_identity
    m.assign(np.array([77_777], np.int64), np.array([1000], np.int64))
    assert not m.is_identity and m.lookup(np.array([77_777]))[0] == 1000


def test_a_collection_style_index_keeps_the_identity_layout() -> None:
    """Internal ids handed out densely are the slots of a flat index: no lookup table at all."""
    index = FlatIndex(4)
    x = np.random.default_rng(3).standard_normal((500, 4)).astype(np.float32)
    index.add(x, np.arange(500))
    assert index._ids.is_identity
    res = index.search(x[:3], 1)
    np.testing.assert_array_equal(res.ids[:, 0], [0, 1, 2])


def test_indexes_saved_in_the_v1_layout_still_load(tmp_path) -> None:
    """A folder as the dict-based id map wrote it (meta.json + vectors.npy + slot_ids.npy)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    slot_ids = np.array([10**15, 7, -1, 3, 2**40, 12], np.int64)
    folder = tmp_path / "old"
    folder.mkdir()
    np.save(folder / "vectors.npy", x)
    np.save(folder / "slot_ids.npy", slot_ids)
    (folder / "meta.json").write_text(json.dumps({"format": "vecdb-index", "version": 1, "kind": "flat", "dim": 3,
                                                  "metric": "l2", "params": {}, "arrays": ["slot_ids", "vectors"]}))
    index = load_index(folder)
    assert sorted(index.ids.tolist()) == sorted(i for i in slot_ids.tolist() if i >= 0)
    res = index.search(x[[0, 4]], 1)
    np.testing.assert_array_equal(res.ids[:, 0], [10**15, 2**40])
    index.save(tmp_path / "again")
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "slot_ids.npy"), slot_ids)


def test_hnsw_with_sparse_ids_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    ids = rng.choice(2**62, 300, replace=False).astype(np.int64)
    index = HNSW(8, M=8, seed=0)
    index.add(x, ids)
    index.remove(ids[:50])
    index.add(x[:50], ids[:50] + 1)                     # reuses the freed slots under new ids
    index.save(tmp_path / "h")
    back = load_index(tmp_path / "h")
    for ix in (index, back):
        assert ix._ids.layout == "hash"
        np.testing.assert_array_equal(ix.search(x[:50], 1, ef=64).ids[:, 0], ids[:50] + 1)
        np.testing.assert_array_equal(ix.search(x[50:80], 1, ef=64).ids[:, 0], ids[50:80])


def test_corrupt_slot_ids_are_data_loss(tmp_path) -> None:
    from vecdb.errors import DataLossError

    index = FlatIndex(2)
    index.add(np.eye(2, dtype=np.float32), [4, 9])
    index.save(tmp_path / "f")
    np.save(tmp_path / "f" / "slot_ids.npy", np.array([4, 4], np.int64))
    with pytest.raises(DataLossError, match="distinct"):
        load_index(tmp_path / "f")
