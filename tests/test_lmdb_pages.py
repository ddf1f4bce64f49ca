"""LMDB's B+tree read from a map of the data file (``vecdb.kernels.lmdb_pages``,
``vecdb.storage.pages``) against py-lmdb's own reads: every key found with its exact value,
absent keys missing, a grown file seen after a remap, and damaged pages never read out of
bounds."""
from __future__ import annotations

import itertools
import shutil
import struct
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecdb.kernels.lmdb_pages import BEYOND, MISSING, UNEXPECTED, find, find_many
from vecdb.storage.env import Store
from vecdb.storage.pages import PageMap, root_of

#: value sizes either side of LMDB's inline limit (~2 KB on 4 KiB pages) and over many pages
SIZES = [0, 1, 7, 100, 1500, 2030, 2100, 4096, 9000]


def written(path: Path, items: dict[bytes, bytes], removed: list[bytes] = (), name: bytes = b"t") -> lmdb.Environment:
    env = lmdb.open(str(path), map_size=1 << 30, max_dbs=4)
    db = env.open_db(name)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value, db=db)
    with env.begin(write=True) as txn:
        for key in removed:
            txn.delete(key, db=db)
    return env


def lookup(pmap: PageMap, root: int, key: bytes) -> bytes | int:
    start, size = find(pmap.pages, pmap.page_size, root, np.frombuffer(key, np.uint8))
    return int(start) if start < 0 else bytes(pmap.pages[start : start + size])


def snapshot_root(env: lmdb.Environment, name: bytes = b"t") -> int:
    with env.begin() as txn:
        root = root_of(txn.get(name))
    assert root is not None
    return root


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.binary(min_size=1, max_size=24), st.sampled_from(SIZES), min_size=0, max_size=300),
       st.integers(0, 2**32 - 1), st.data())
def test_every_key_reads_its_value_and_absent_keys_are_missing(tmp_path: Path, sizes: dict[bytes, int], seed: int,
                                                               draw: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    items = {key: rng.bytes(size) for key, size in sizes.items()}
    removed = [key for key in items if rng.random() < 0.3]
    path = tmp_path / f"e{seed}"
    env = written(path, items, removed)
    try:
        root = snapshot_root(env)
        pmap = PageMap(path / "data.mdb", env.stat()["psize"])
        for key in removed:
            items.pop(key)
        for key, value in items.items():
            assert lookup(pmap, root, key) == value
        for key in removed + [draw.draw(st.binary(min_size=0, max_size=24)) for _ in range(20)]:
            if key not in items:
                assert lookup(pmap, root, key) == MISSING
    finally:
        env.close()
        shutil.rmtree(path)


def test_a_deep_tree_of_big_endian_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    items = {struct.pack(">Q", int(k)): rng.bytes(int(rng.choice([16, 600, 3000])))
             for k in rng.choice(1 << 40, 40_000, replace=False)}
    env = written(tmp_path / "e", items)
    try:
        with env.begin() as txn:
            assert txn.stat(env.open_db(b"t", txn=txn))["depth"] >= 3
        root = snapshot_root(env)
        pmap = PageMap(tmp_path / "e" / "data.mdb", env.stat()["psize"])
        for key, value in items.items():
            assert lookup(pmap, root, key) == value
        assert lookup(pmap, root, struct.pack(">Q", 1 << 41)) == MISSING
        keys = list(items)[::97] + [struct.pack(">Q", 1 << 41), struct.pack(">Q", 0)]
        rows = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 8)
        for tree, advise in itertools.product((root, -1, 10**9), (False, True)):   # many at once: as one at a time
            starts, sizes = np.empty(len(keys), np.int64), np.empty(len(keys), np.int64)
            find_many(pmap.pages, pmap.page_size, tree, rows, starts, sizes, advise)      # advise: the same answers
            for key, start, size in zip(keys, starts, sizes):
                assert (start, size) == tuple(find(pmap.pages, pmap.page_size, tree, np.frombuffer(key, np.uint8)))
    finally:
        env.close()


def test_a_grown_file_is_seen_after_a_remap(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    db = store.db("t")
    store.write(lambda txn: txn.put(b"a", b"x" * 100, db=db))
    pmap = store.page_map()
    store.write(lambda txn: [txn.put(b"b%06d" % i, bytes(5000), db=db) for i in range(200)])
    with store.read() as txn:
        root = store.root(txn, "t")
        assert root is not None
        first = lookup(pmap, root, b"b000199")
        assert first in (BEYOND, bytes(5000))        # a new page past the old map, or one reused
        seen = pmap.pages
        assert pmap.remap(seen) is not seen and pmap.remap(seen) is pmap.pages   # looked at again once
        longer, same_map = len(pmap.pages) > len(seen), pmap.pages.base is seen.base   # (no repr of a map
        assert longer and same_map                                                    # past the file's end)
        assert lookup(pmap, root, b"b000199") == bytes(5000)
        assert lookup(pmap, root, b"a") == b"x" * 100
    store.close()


def test_a_file_grown_past_the_reserve_is_mapped_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PageMap, "SLACK", 0)             # reserve: as much again as the file
    store = Store(tmp_path / "s")
    db = store.db("t")
    store.write(lambda txn: txn.put(b"a", b"x" * 100, db=db))
    pmap = store.page_map()
    grown = pmap.pages
    store.write(lambda txn: [txn.put(b"c%06d" % i, bytes(5000), db=db) for i in range(2 * len(grown) // 5000 + 10)])
    with store.read() as txn:
        root = store.root(txn, "t")
        assert root is not None
        assert lookup(pmap, root, b"c000005") in (BEYOND, bytes(5000))
        mapped_again = pmap.remap(grown).base is not grown.base
        assert mapped_again
        assert lookup(pmap, root, b"c000005") == bytes(5000)
        assert bytes(grown[:4096]) == bytes(pmap.pages[:4096])   # an old view still reads
    store.close()


def test_roots_of_empty_unknown_and_other_order_sub_databases(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "e"), max_dbs=4)
    env.open_db(b"empty")
    env.open_db(b"dups", dupsort=True)
    env.open_db(b"ints", integerkey=True)
    try:
        with env.begin() as txn:
            assert root_of(txn.get(b"empty")) == -1
            assert root_of(txn.get(b"dups")) is None
            assert root_of(txn.get(b"ints")) is None
            assert root_of(txn.get(b"nothing")) is None
        pmap = PageMap(tmp_path / "e" / "data.mdb", env.stat()["psize"])
        assert lookup(pmap, -1, b"k") == MISSING
        assert lookup(pmap, 0, b"k") == UNEXPECTED                  # a meta page is not a tree page
        assert lookup(pmap, 10**9, b"k") == BEYOND
    finally:
        env.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1))
def test_damaged_pages_give_codes_or_in_bounds_ranges_never_a_crash(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = {struct.pack(">Q", k): rng.bytes(int(rng.choice([8, 900, 5000]))) for k in range(400)}
    path = tmp_path / f"e{seed}"
    env = written(path, items)
    root = snapshot_root(env)
    psize = env.stat()["psize"]
    env.close()
    raw = np.fromfile(path / "data.mdb", np.uint8)
    flips = rng.integers(2 * psize, len(raw), int(rng.integers(1, 200)))   # not the meta pages
    raw[flips] ^= rng.integers(1, 256, len(flips)).astype(np.uint8)
    raw.tofile(path / "data.mdb")
    pmap = PageMap(path / "data.mdb", psize)
    n = len(pmap.pages)
    for key in list(items) + [struct.pack(">Q", 10_000)]:
        start, size = find(pmap.pages, psize, root, np.frombuffer(key, np.uint8))
        assert start in (MISSING, BEYOND, UNEXPECTED) or (0 <= start and 0 <= size and start + size <= n)
    shutil.rmtree(path)


def test_a_small_file_is_read_with_read_around_and_a_large_one_page_by_page(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The read policy follows the file's size against the memory the process may use
    (``small_file``): a small file keeps the kernel's read-around, a file past the share is
    read page by page; decided again when the map is looked at after the file grew."""
    from vecdb.storage import pages

    assert pages.memory_limit() > 0                              # Linux: MemAvailable at least
    assert pages.small_file(0, 1 / 16) and not pages.small_file(1 << 62, 1 / 16)
    env = written(tmp_path / "e", {struct.pack(">Q", k): b"x" * 100 for k in range(100)})
    try:
        pmap = PageMap(tmp_path / "e" / "data.mdb", env.stat()["psize"])
        assert not pmap.random_reads
        monkeypatch.setattr(PageMap, "SMALL_SHARE", 0.0)          # every file is large now
        with env.begin(write=True) as txn:                         # the file grows: the view is renewed
            for k in range(100, 3000):
                txn.put(struct.pack(">Q", k), b"y" * 900)
        grown = pmap.remap(pmap.pages)
        assert len(grown) > 0 and pmap.random_reads
    finally:
        env.close()


@pytest.mark.parametrize("value_size", [16, 200, 1500, 3000])
def test_dense_integer_keys_with_gaps_are_found_as_py_lmdb_finds_them(tmp_path: Path, value_size: int) -> None:
    """vecdb's keys (big-endian slot numbers, mostly dense, some removed): the interpolated
    first probes of each page's search find every present key and miss every removed one,
    one at a time and many at once, on leaves of many small nodes and of a few big ones."""
    rng = np.random.default_rng(value_size)
    keys = [struct.pack(">Q", k) for k in range(20_000)]
    items = {k: rng.bytes(value_size) for k in keys}
    removed = [k for k in keys if rng.random() < 0.3] + [keys[0], keys[-1]]
    env = written(tmp_path / "e", items, removed)
    try:
        root = snapshot_root(env)
        pmap = PageMap(tmp_path / "e" / "data.mdb", env.stat()["psize"])
        gone = set(removed)
        probe = keys[::7] + removed[::5] + [struct.pack(">Q", 1 << 40), struct.pack(">Q", 20_000)]
        for key in probe:
            assert lookup(pmap, root, key) == (MISSING if key in gone or key not in items else items[key])
        rows = np.frombuffer(b"".join(probe), np.uint8).reshape(len(probe), 8)
        starts, sizes = np.empty(len(probe), np.int64), np.empty(len(probe), np.int64)
        find_many(pmap.pages, pmap.page_size, root, rows, starts, sizes, False)
        for key, start, size in zip(probe, starts, sizes):
            assert (start, size) == tuple(find(pmap.pages, pmap.page_size, root, np.frombuffer(key, np.uint8)))
    finally:
        env.close()


def test_a_value_longer_than_the_whole_old_map_asks_for_a_remap(tmp_path: Path) -> None:
    """A value written after the map was made, longer than all of it, under a leaf page the
    map holds (a freed page reused), is BEYOND (map again), never UNEXPECTED: SPANN's
    one-query path fell back to py-lmdb for good when every posting outgrew the map made
    over a new, near-empty file (mnist with 147-entry postings: 146 instead of ~50 us)."""
    store = Store(tmp_path / "s")
    db = store.db("t")
    for i in range(6):                                   # freed pages for the next writes to reuse
        store.write(lambda txn: txn.put(b"a%d" % i, b"x" * 100, db=db))
    pmap = store.page_map()
    value = bytes(range(256)) * (2 * len(pmap.pages) // 256 + 40)
    store.write(lambda txn: txn.put(b"big", value, db=db))
    with store.read() as txn:
        root = store.root(txn, "t")
        assert root is not None and root < len(pmap.pages) // pmap.page_size   # the case: a leaf in the map
        assert lookup(pmap, root, b"big") == BEYOND
        pmap.remap(pmap.pages)
        assert lookup(pmap, root, b"big") == value
        assert lookup(pmap, root, b"a5") == b"x" * 100
    store.close()
