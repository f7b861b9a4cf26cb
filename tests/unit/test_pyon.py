"""PYON v2: byte-exact with sipyco's output, every marker type round-trips, nothing is ever eval'd."""

import json
import os
from collections import OrderedDict
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transports.rpc import pyon

# recorded from sipyco (reference notes, section B1)
REFERENCE = (
    '{"__jsonclass__":["dict",[[["a",{"__jsonclass__":["tuple",[[1,2]]]}],[3,"x"],'
    '["arr",{"__jsonclass__":["nparray",[[3],"<i4","AAAAAAEAAAACAAAA"]]}]]]]}'
)


def test_reference_example_is_byte_exact():
    assert pyon.encode({"a": (1, 2), 3: "x", "arr": np.arange(3, dtype=np.int32)}) == REFERENCE


def test_reference_example_decodes():
    value = pyon.decode(REFERENCE)
    assert value["a"] == (1, 2) and value[3] == "x"
    assert value["arr"].dtype == np.int32 and value["arr"].tolist() == [0, 1, 2]


def test_reference_transcript_lines():
    assert pyon.encode({"status": "ok", "ret": (1, 2)}) == '{"status":"ok","ret":{"__jsonclass__":["tuple",[[1,2]]]}}'
    assert pyon.decode('{"__jsonclass__":["set",[["echo","boom"]]]}') == {"echo", "boom"}


VALUES = [
    None, True, False, 0, -5, 2**70, 1.5, "text", "ünï", [], {}, [1, [2, [3]]],
    (), (1,), (1, "a", None), {"k": (1, 2)}, {1: "a", (2, 3): "b", None: 0, 1.5: True},
    OrderedDict([("b", 1), ("a", 2)]), OrderedDict([(1, "x")]), {1, 2, 3}, frozenset({"a"}), set(),
    1 + 2j, complex(0, -1.5), b"", b"\x00\xffabc", bytes(range(256)),
    slice(1, 10, 2), slice(None, 5, None), Fraction(1, 3), Fraction(-7, 2),
    {"__jsonclass__": "not a marker"}, [{"nested": {"deep": [(1, {2: 3})]}}],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip(value):
    text = pyon.encode(value)
    assert "\n" not in text
    back = pyon.decode(text)
    assert back == value and type(back) is type(value)


def test_ordered_dict_keeps_order_and_type():
    back = pyon.decode(pyon.encode(OrderedDict([("z", 1), ("a", 2)])))
    assert isinstance(back, OrderedDict) and list(back) == ["z", "a"]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.array([], dtype=np.int16),
        np.zeros((2, 0, 3), dtype=np.uint8),
        np.array([1 + 2j, 3], dtype=np.complex128),
        np.array([True, False]),
        np.arange(6, dtype=">i4").reshape(2, 3).T,  # non-contiguous, big-endian
        np.array(["ab", "c"], dtype="<U2"),
        np.array(3.5, dtype=np.float32),  # 0-d
    ],
    ids=lambda a: f"{a.dtype.str}{a.shape}",
)
def test_numpy_arrays(array):
    back = pyon.decode(pyon.encode(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)
    back[...] = back  # writable copy, not a read-only view of the buffer


@pytest.mark.parametrize("scalar", [np.float64(1.25), np.int8(-3), np.uint64(2**63), np.bool_(True), np.complex64(1j)])
def test_numpy_scalars(scalar):
    text = pyon.encode(scalar)
    assert "npscalar" in text
    back = pyon.decode(text)
    assert type(back) is type(scalar) and back == scalar


def test_numpy_object_dtype_refused_both_ways():
    with pytest.raises(pyon.PyonError, match="object"):
        pyon.encode(np.array([object()], dtype=object))
    with pytest.raises(pyon.PyonError, match="object"):
        pyon.decode('{"__jsonclass__":["nparray",[[1],"|O","AAAAAAAAAAA="]]}')


def test_numpy_bad_payload_is_a_pyon_error():
    with pytest.raises(pyon.PyonError):
        pyon.decode('{"__jsonclass__":["nparray",[[5],"<i4","AAAAAAEAAAACAAAA"]]}')


def test_no_eval_and_clear_errors():
    for text in [
        '{"__jsonclass__":["__import__",["os"]]}',
        '{"__jsonclass__":["tuple"]}',
        '{"__jsonclass__":["tuple",[[1]]],"extra":1}',
        '{"__jsonclass__":["dict",[[[[1],2]]]]}',  # unhashable key
        '{"__jsonclass__":["bytes",["!!!"]]}',
        "nparray((3, ), '<i4', b'')",  # PYON v1 literal syntax
        "",
        "{",
    ]:
        with pytest.raises(pyon.PyonError):
            pyon.decode(text)
    assert issubclass(pyon.PyonError, ValueError)


def test_unknown_type_refused():
    with pytest.raises(pyon.PyonError, match="register"):
        pyon.encode(object())


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_registry_custom_type():
    pyon.register(Point, "test.Point", lambda p: [p.x, (p.y,)], lambda x, y: Point(x, y[0]))
    text = pyon.encode({"p": Point(1, 2)})
    assert json.loads(text) == {"p": {"__jsonclass__": ["test.Point", [1, {"__jsonclass__": ["tuple", [[2]]]}]]}}
    assert pyon.decode(text) == {"p": Point(1, 2)}


def test_int_and_str_enums_travel_as_values():
    from core.protocol import ExpMessage, ExpStatus

    assert pyon.encode([ExpStatus.RUNNING, ExpMessage.EXPINFO]) == "[20,64]"


def test_store_file_is_atomic(tmp_path):
    path = tmp_path / "state.pyon"
    pyon.store_file(path, {"a": (1, 2), 3: b"x"})
    assert pyon.load_file(path) == {"a": (1, 2), 3: b"x"}
    with pytest.raises(pyon.PyonError):
        pyon.store_file(path, {"bad": object()})
    assert pyon.load_file(path) == {"a": (1, 2), 3: b"x"}  # untouched
    assert sorted(os.listdir(tmp_path)) == ["state.pyon"]  # no temp files left


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
json_key = st.text() | st.integers() | st.tuples(st.integers(), st.text())
nested = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(json_key, children, max_size=4)
        | st.frozensets(st.integers(), max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(nested)
def test_hypothesis_round_trip(value):
    assert pyon.decode(pyon.encode(value)) == value
