"""shared.jsonvalues: exact integers, bounded depth, nothing silently changed."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.event import INT64_MAX, INT64_MIN
from shared.jsonvalues import JsonValueError, depth_of, loads_checked

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=30
)


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def python_depth(value: object) -> int:  # independent, recursive definition
    if isinstance(value, dict):
        return 1 + max((python_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((python_depth(v) for v in value), default=0)
    return 0


def ints_of(value: object) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in ints_of(v)]
    if isinstance(value, list):
        return [i for v in value for i in ints_of(v)]
    return []


@given(json_values)
@settings(max_examples=300)
def test_a_value_comes_back_equal_or_is_refused_for_an_out_of_range_integer(value: object) -> None:
    text = json.dumps({"v": value}).encode()
    beyond = [i for i in ints_of(value) if not INT64_MIN <= i <= INT64_MAX]
    if beyond:
        with pytest.raises(JsonValueError) as info:
            loads_checked(text, max_depth=64)
        assert info.value.error_class == "IntegerOutOfRange"
    else:
        assert loads_checked(text, max_depth=64) == json.loads(text)


@given(st.integers(1, 300))
def test_depth_is_counted_like_the_recursive_definition(depth: int) -> None:
    value = nested(depth)
    assert depth_of(value, 1000) == python_depth(value) == depth


@pytest.mark.parametrize("depth", [64, 65, 600, 1023])
def test_nesting_beyond_the_limit_is_refused_at_any_depth(depth: int) -> None:
    text = b'{"a": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"
    if depth <= 64:
        assert loads_checked(text, max_depth=64) == json.loads(text)
    else:
        with pytest.raises(JsonValueError, match="more than 64") as info:
            loads_checked(text, max_depth=64)
        assert info.value.error_class == "TooDeep"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = orjson.dumps({"s": "[" * 500 + "{" * 500})
    assert loads_checked(text, max_depth=64) == {"s": "[" * 500 + "{" * 500}


def test_id_fields_keep_big_integers_exact_and_other_fields_refuse_them() -> None:
    text = b'{"product_id": 1180591620717411303424, "n": 5}'
    assert loads_checked(text, max_depth=64, exact_int_fields=("product_id",)) == {"product_id": 2**70, "n": 5}
    with pytest.raises(JsonValueError, match=r"product_id = 1180591620717411303424 is outside"):
        loads_checked(text, max_depth=64)
    with pytest.raises(JsonValueError, match=r"\.x\[1\] = -9223372036854775809"):
        loads_checked(b'{"a": {"x": [1, -9223372036854775809]}}', max_depth=64)
    assert loads_checked(b'{"a": -9223372036854775808, "b": 9223372036854775807}', max_depth=64) == {"a": INT64_MIN, "b": INT64_MAX}


def test_long_digit_runs_in_strings_and_floats_are_not_integers() -> None:
    assert loads_checked(b'{"d": "12345678901234567890123", "f": 1.2345678901234567890}', max_depth=8) == {
        "d": "12345678901234567890123",
        "f": 1.2345678901234567,
    }


def test_an_integer_too_long_for_a_double_is_not_json_to_the_caller() -> None:
    # orjson refuses it ("number is infinity when parsed as double"): the caller's decode stage.
    with pytest.raises(orjson.JSONDecodeError, match="infinity"):
        loads_checked(b'{"n": ' + b"9" * 5000 + b"}", max_depth=8)
