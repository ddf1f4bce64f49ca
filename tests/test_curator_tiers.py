"""Curator tier graphs' storage (vecdb/index/curator/tiers.py): links in the narrowest integer
type that numbers a graph's nodes (uint16, widened to int32 past ``narrow_nodes``) answer
exactly like int32 links; old int32 saves load narrowed; malformed link arrays are data loss;
the visited marks are one pool shared by a Curator's graphs, and counted memory holds it all."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecdb.errors import DataLossError
from vecdb.index import Curator, load_index
from vecdb.index.curator.tiers import NARROW_NODES, SharedScratch, SlotGraph
from vecdb.kernels._jit import threads
from vecdb.types import Metric

DIM = 8


def rows_of(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(77).standard_normal((10, DIM)) * 3
    return (centres[rng.integers(0, 10, n)] + rng.standard_normal((n, DIM))).astype(np.float32)


def graph(narrow_nodes: int = NARROW_NODES, wide: bool = False, scratch: SharedScratch | None = None) -> SlotGraph:
    """A tier graph; ``wide`` starts it with int32 links (what every graph had before)."""
    g = SlotGraph(DIM, Metric.L2, M=6, ef_construction=48, seed=5, progress=False, scratch=scratch)
    g.narrow_nodes = narrow_nodes
    if wide:
        g._adj0, g._adjU = g._adj0.astype(np.int32), g._adjU.astype(np.int32)
    return g


def answers(g: SlotGraph, rows: np.ndarray, q: np.ndarray, ef: int = 40) -> tuple[np.ndarray, np.ndarray]:
    return g.search_slots(q, 10, g.resolve_params({"ef": ef, "filter_mode": "graph"}), rows)


def test_narrow_links_answer_exactly_like_int32_links_through_adds_and_removes() -> None:
    """Same slots, same seed, one thread (a deterministic build): the uint16 graph holds the same
    links as the int32 one and returns the same slots and distances, after removals too."""
    rows = rows_of(3000, 1)
    slots = np.sort(np.random.default_rng(2).choice(3000, 1200, replace=False)).astype(np.int64)
    q = rows_of(40, 3)
    narrow, wide = graph(), graph(wide=True)
    with threads(1):
        for g in (narrow, wide):
            g.reserve(len(slots))
            g.add_slots(slots, rows)
            g.add_slots(np.setdiff1d(np.arange(3000), slots)[:300], rows)   # grows geometrically, stays narrow
    assert narrow.link_dtype == np.uint16 and wide.link_dtype == np.int32
    n = narrow._ids.n_slots
    np.testing.assert_array_equal(narrow._adj0[:n], wide._adj0[:n])
    for a, b in zip(answers(narrow, rows, q), answers(wide, rows, q)):
        np.testing.assert_array_equal(a, b)
    with threads(1):
        for g in (narrow, wide):
            g.remove_slots(slots[::3], rows)
    for a, b in zip(answers(narrow, rows, q), answers(wide, rows, q)):
        np.testing.assert_array_equal(a, b)
    assert not np.isin(answers(narrow, rows, q)[0], slots[::3]).any()
    assert narrow.memory_bytes() < wide.memory_bytes()


def test_a_graph_growing_past_narrow_nodes_is_widened_once_and_answers_the_same() -> None:
    """Capacity stays at ``narrow_nodes`` while the nodes fit uint16 links; one more node widens
    the links to int32, and the graph keeps answering like one built wide from the start."""
    rows = rows_of(1000, 4)
    q = rows_of(30, 5)
    narrow, wide = graph(narrow_nodes=300), graph(narrow_nodes=300, wide=True)
    with threads(1):
        for g in (narrow, wide):
            g.add_slots(np.arange(250), rows)
            g.add_slots(np.arange(250, 290), rows)                  # 1.5x would be 375: held at 300
        assert narrow.capacity == 300 and narrow.link_dtype == np.uint16
        for g in (narrow, wide):
            g.add_slots(np.arange(290, 420), rows)                  # 420 > 300: widened
    assert narrow.link_dtype == np.int32 and narrow.capacity >= 420
    for a, b in zip(answers(narrow, rows, q, ef=120), answers(wide, rows, q, ef=120)):
        np.testing.assert_array_equal(a, b)


def test_graph_arrays_round_trip_and_int32_saves_load_narrowed() -> None:
    rows = rows_of(800, 6)
    q = rows_of(20, 7)
    g = graph(wide=True)
    with threads(1):
        g.add_slots(np.arange(0, 800, 2), rows)
    params = {"M": 6, "ef_construction": 48, "seed": 5}
    saved = g.graph_arrays()
    assert saved["adj0"].dtype == np.int32
    loaded = SlotGraph.from_arrays(DIM, Metric.L2, params, saved, rows)
    assert loaded.link_dtype == np.uint16
    for a, b in zip(answers(loaded, rows, q), answers(g, rows, q)):
        np.testing.assert_array_equal(a, b)
    again = SlotGraph.from_arrays(DIM, Metric.L2, params, loaded.graph_arrays(), rows)
    assert again.link_dtype == np.uint16
    np.testing.assert_array_equal(answers(again, rows, q)[0], answers(g, rows, q)[0])
    bad = dict(saved, adj0=saved["adj0"].astype(np.int64))
    with pytest.raises(ValueError, match="uint16 or both int32"):
        SlotGraph.from_arrays(DIM, Metric.L2, params, bad, rows)
    bad = dict(saved, adj_upper=saved["adj_upper"].astype(np.uint16))
    with pytest.raises(ValueError, match="uint16 or both int32"):
        SlotGraph.from_arrays(DIM, Metric.L2, params, bad, rows)
    adj0 = saved["adj0"].copy()
    adj0[3, 1] = 70_000                                            # a link to a node no uint16 can number
    with pytest.raises(ValueError, match="does not have"):
        SlotGraph.from_arrays(DIM, Metric.L2, params, dict(saved, adj0=adj0), rows)


def tiered_curator() -> Curator:
    index = Curator(DIM, "l2", n_root=4, branching=2, max_depth=2, max_shortlist=8, min_points_per_centroid=2,
                    n_iter=5, seed=3, tier_threshold=100, tier_M=4, tier_ef_construction=32)
    index.train(rows_of(400, 8))
    return index


def test_tier_graphs_share_one_scratch_and_counted_memory_holds_links_ids_and_scratch(tmp_path: Path) -> None:
    """Graphs of different sizes searched in turn through one shared pool of visited marks give
    the answers each gives alone; ``memory_bytes`` counts each graph's links, levels and id map
    and the shared marks once; a save keeps uint16 links and a tampered link type is data loss."""
    index = tiered_curator()
    x = rows_of(2000, 9)
    index.add(x, np.arange(2000))
    index.grant(1, np.arange(0, 2000, 2))                           # 1,000 members
    index.grant(2, np.arange(0, 300))                               # 300, half shared with 1
    assert index.promoted(1) and index.promoted(2)
    tiers = index._tiers
    assert all(g.link_dtype == np.uint16 and g._shared is tiers.scratch for g in tiers.graphs.values())
    q = rows_of(25, 10)
    alone = {t: index.search(q, 10, tenant=t, ef=60).ids for t in (1, 2)}
    for _ in range(3):                                              # interleaved: the marks are reused
        for t in (2, 1):
            np.testing.assert_array_equal(index.search(q[:1], 10, tenant=t, ef=60).ids, alone[t][:1])
            np.testing.assert_array_equal(index.search(q, 10, tenant=t, ef=60).ids, alone[t])
    pooled = list(tiers.scratch._free)                              # white-box: the shared pool
    largest = max(g.capacity for g in tiers.graphs.values())
    assert 1 <= len(pooled) <= 4 and all(vis.shape[1] >= largest for vis, _ in pooled)
    assert tiers.scratch.nbytes() == sum(vis.nbytes + tags.nbytes for vis, tags in pooled) > 0
    parts = sum(g._adj0.nbytes + g._adjU.nbytes + g._levels.nbytes + g._uoff.nbytes + g._ids.memory_bytes()
                for g in tiers.graphs.values())
    assert tiers.nbytes() == parts + tiers.scratch.nbytes()
    by_part = index.memory_parts()
    assert sum(by_part.values()) == index.memory_bytes()
    assert by_part["tier_links"] + by_part["tier_levels"] + by_part["tier_ids"] + by_part["tier_scratch"] == tiers.nbytes()
    assert by_part["tier_links"] == sum(g._adj0.nbytes + g._adjU.nbytes for g in tiers.graphs.values())
    before, graph_bytes = index.memory_bytes(), tiers.graphs[2].memory_bytes()
    index.drop_tenant(2)
    assert index.memory_bytes() <= before - graph_bytes
    index.save(tmp_path / "c")
    assert np.load(tmp_path / "c" / "tier1.adj0.npy").dtype == np.uint16
    loaded = load_index(tmp_path / "c")
    np.testing.assert_array_equal(loaded.search(q, 10, tenant=1, ef=60).ids, alone[1])
    np.save(tmp_path / "c" / "tier1.adj_upper.npy", np.load(tmp_path / "c" / "tier1.adj_upper.npy").astype(np.int32))
    with pytest.raises(DataLossError):
        load_index(tmp_path / "c")
