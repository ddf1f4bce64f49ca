"""Round trips through vecdb.wire, the one domain <-> proto translation layer, and its
checks on inconsistent messages."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vecdb import wire
from vecdb.api import CollectionInfo, CollectionStats, GetResult, QueryResult
from vecdb.errors import InvalidArgumentError
from vecdb.v1 import types_pb2 as t

shapes = st.tuples(st.integers(0, 6), st.integers(0, 6))
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
json_scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False) | names
payloads = st.none() | st.dictionaries(names, json_scalars | st.lists(json_scalars, max_size=3), max_size=4)


@given(hnp.arrays(np.float32, shapes))
def test_float_matrix_round_trip(x: np.ndarray) -> None:
    back = wire.matrix_from_proto(t.Matrix.FromString(wire.matrix_to_proto(x).SerializeToString()), what="x")
    assert back.dtype == np.float32 and back.shape == x.shape and back.flags.writeable
    np.testing.assert_array_equal(back, x)


@given(hnp.arrays(np.int64, st.integers(0, 20)))
def test_int_ids_round_trip(ids: np.ndarray) -> None:
    back = wire.ids_from_proto(wire.ids_to_proto(ids))
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, ids)


@given(st.lists(names, max_size=10))
def test_str_ids_round_trip(ids: list[str]) -> None:
    assert wire.ids_from_proto(wire.ids_to_proto(ids, id_type="str")) == ids


@given(shapes, st.data())
def test_result_ids_round_trip(shape: tuple[int, int], data: st.DataObject) -> None:
    ints = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(-1, 2**62)))
    np.testing.assert_array_equal(wire.result_ids_from_proto(wire.result_ids_to_proto(ints)), ints)
    strs = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        strs[index] = data.draw(st.none() | names)
    back = wire.result_ids_from_proto(wire.result_ids_to_proto(strs))
    assert back.dtype == object and back.tolist() == strs.tolist()


@given(names, st.integers(1, 4096), st.sampled_from(["l2", "ip", "cosine"]), st.sampled_from(["flat", "hnsw"]),
       st.dictionaries(names, st.integers(0, 100), max_size=3), st.sampled_from(["int", "str"]))
def test_info_round_trip(name: str, dim: int, metric: str, index: str, params: dict, id_type: str) -> None:
    info = CollectionInfo(name, dim, metric, index, params, id_type)
    assert wire.info_from_proto(wire.info_to_proto(info)) == info


@pytest.mark.parametrize("trained", [True, False])
def test_stats_round_trip(trained: bool) -> None:
    stats = CollectionStats(10, 2048, 4096, "hnsw", {"M": 16}, 3, trained=trained)
    assert wire.stats_from_proto(wire.stats_to_proto(stats)) == stats


def test_byte_swapped_and_strided_matrices_travel_as_little_endian() -> None:
    strided = np.arange(24, dtype=np.float32).reshape(3, 8)[:, ::2]
    x = np.ascontiguousarray(strided)
    for given in (x.astype(">f4"), np.asfortranarray(x), strided):
        message = wire.matrix_to_proto(given)
        assert message.data == x.astype("<f4").tobytes()
        np.testing.assert_array_equal(wire.matrix_from_proto(message, what="x"), x)


@given(st.lists(payloads, min_size=1, max_size=5), st.data())
def test_results_round_trip(pays: list, data: st.DataObject) -> None:
    n = len(pays)
    vectors = data.draw(hnp.arrays(np.float32, (n, 3), elements=st.floats(-1e6, 1e6, width=32)))
    ids = np.arange(n, dtype=np.int64)
    back = wire.get_result_from_proto(*wire.get_result_to_proto(GetResult(ids, vectors, pays)))
    np.testing.assert_array_equal(back.ids, ids)
    np.testing.assert_array_equal(back.vectors, vectors)
    assert back.payloads == pays
    q = QueryResult(ids.reshape(1, n), np.linspace(0, 1, n, dtype=np.float32).reshape(1, n), [pays])
    back_q = wire.query_result_from_proto(*wire.query_result_to_proto(q))
    np.testing.assert_array_equal(back_q.ids, q.ids)
    np.testing.assert_array_equal(back_q.distances, q.distances)
    assert back_q.payloads == [pays]


@pytest.mark.parametrize("message, match", [
    (t.Matrix(n_rows=2, n_cols=2, dtype=t.FLOAT32, data=b"\x00" * 12), "needs 16"),
    (t.Matrix(n_rows=1, n_cols=1, dtype=t.INT64, data=b"\x00" * 8), "FLOAT32 Matrix"),
    (t.Matrix(n_rows=1, n_cols=1, data=b"\x00" * 4), "DTYPE_UNSPECIFIED"),
    (t.Matrix(n_rows=1, n_cols=1, dtype=77, data=b"\x00" * 4), "77"),
])
def test_inconsistent_matrices_are_rejected(message: t.Matrix, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        wire.matrix_from_proto(message, what="queries")


@pytest.mark.parametrize("bad", [[1.5, 2.5], [True, False], [1, "a"], np.zeros((2, 2), np.int64), [2**64 - 1]])
def test_bad_ids_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        wire.ids_to_proto(bad)


def test_json_errors_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="filter is not valid JSON"):
        wire.loads_object("{", what="filter")
    with pytest.raises(InvalidArgumentError, match="must be a JSON object"):
        wire.loads_object("[1]", what="filter")
    with pytest.raises(InvalidArgumentError, match="JSON-like"):
        wire.dumps({"when": object()}, what="payloads")
    assert wire.dumps({"n": np.int64(3), "v": np.arange(2)}, what="p") == '{"n":3,"v":[0,1]}'
