"""jsonbody's checked parse (the limits enforced in C while reading, msgspec) only ever accepts
what the walk and the stdlib parser accept, and returns exactly what they return."""

from __future__ import annotations

import json
import math
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cds_hooks import jsonbody
from cds_hooks.errors import BadRequest

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)


def deep(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


BREACHES = {
    "deep": deep(jsonbody.MAX_DEPTH),  # the body itself is one more level
    "wide object": {f"k{i}": 1 for i in range(jsonbody.MAX_OBJECT_MEMBERS + 1)},
    "long array": [0] * (jsonbody.MAX_ARRAY_ITEMS + 1),
    "long key": {"k" * (jsonbody.MAX_KEY_CHARS + 1): 1},
    "long non-ASCII key": {"\u00e9" * (jsonbody.MAX_KEY_CHARS + 1): 1},
    "too many values": [[0] * 1000 for _ in range(jsonbody.MAX_VALUES // 1000 + 1)],
    "long string": {"s": ["P" * (jsonbody.MAX_STRING_CHARS + 1)]},
}
AT_THE_LIMIT = {
    "deep": deep(jsonbody._TYPED_DEPTH - 1),  # the deepest the checked parse reads itself
    "wide object": {f"k{i}": 1 for i in range(jsonbody.MAX_OBJECT_MEMBERS - 1)},  # + "x"
    "long array": [0] * jsonbody.MAX_ARRAY_ITEMS,
    "long key": {"k" * jsonbody.MAX_KEY_CHARS: 1},
    "long non-ASCII key": {"\U0001f600" * jsonbody.MAX_KEY_CHARS: 1},  # 4 bytes, 1 character
    "long string": {"s": ["P" * jsonbody.MAX_STRING_CHARS]},
}


def body_with(value: Any) -> bytes:
    return json.dumps({"x": value}, ensure_ascii=False).encode()


@pytest.mark.parametrize("name", BREACHES)
def test_a_body_over_a_limit_is_declined_and_the_walk_words_it(name):
    raw = body_with(BREACHES[name])
    assert jsonbody._checked_parse(raw) is jsonbody._SLOW
    with pytest.raises(BadRequest) as refused:
        jsonbody.parse_json(raw)
    with pytest.raises(BadRequest) as walked:
        jsonbody.check_limits(json.loads(raw), scan_strings=False)
    assert refused.value.message == walked.value.message


@pytest.mark.parametrize("name", AT_THE_LIMIT)
def test_a_body_at_a_limit_is_read_by_the_checked_parse(name):
    raw = body_with(AT_THE_LIMIT[name])
    assert jsonbody._checked_parse(raw) == json.loads(raw)
    assert jsonbody.parse_json(raw) == json.loads(raw)


def test_a_body_deeper_than_the_typed_stack_but_within_the_limit_is_read_by_the_walk():
    raw = body_with(deep(jsonbody.MAX_DEPTH - 1))
    assert jsonbody._checked_parse(raw) is jsonbody._SLOW
    assert jsonbody.parse_json(raw) == json.loads(raw)


def test_an_array_directly_in_an_array_is_read_by_the_walk():
    """Never in FHIR or CDS Hooks, so the type stack leaves it out (docs in jsonbody)."""
    raw = body_with({"a": [[1, 2], [{"b": [[]]}]]})
    assert jsonbody._checked_parse(raw) is jsonbody._SLOW
    assert jsonbody.parse_json(raw) == json.loads(raw)


def test_the_deepest_fhir_shapes_are_read_by_the_checked_parse():
    """Objects and arrays of objects alternating down to the typed depth."""
    value: Any = {"valueString": "x"}
    for level in range(jsonbody._TYPED_DEPTH - 3):  # + the body object and one array
        value = [value] if level % 2 else {"extension": value}
    raw = body_with([value])
    assert jsonbody._checked_parse(raw) == json.loads(raw)
    assert jsonbody._checked_parse(body_with([{"a": [value]}])) is jsonbody._SLOW  # too deep
    assert jsonbody.parse_json(body_with([{"a": [value]}])) == {"x": [{"a": [value]}]}


def test_wide_and_long_containers_deep_inside_are_found():
    hidden = {"a": [{"b": [1, {"c": BREACHES["wide object"]}]}]}
    assert jsonbody._checked_parse(body_with(hidden)) is jsonbody._SLOW


def test_many_values_within_the_limit_but_over_the_count_of_commas_are_walked():
    """Over 2 * MAX_VALUES bytes the total is bounded by commas, brackets and braces; a text
    with more of them than MAX_VALUES (inside strings too) is read the old way, and accepted."""
    raw = body_with(["," * 600_000, "[{" * 300_000])
    assert len(raw) > 2 * jsonbody.MAX_VALUES
    assert jsonbody._checked_parse(raw) is jsonbody._SLOW
    assert jsonbody.parse_json(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":"nul\\u0000here"}',
        b'{"a\\u0000":1}',
        b'{"a":"\\ud800"}',
        b'{"a":"\\udc00x"}',
        b'{"a":"\\ud800\\u0041"}',
        b'{"a":"\\ud83d\\ude00\\ud800"}',
        b'{"\\ud800":1}',
        b'{"a":"\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
        b'{"a":"\xff"}',
        b'{"a":"\xc0\xaf"}',
        b'\xef\xbb\xbf{"a":1}',  # a BOM: tolerated, by the stdlib path
        b'{"a":1,"a":2}',
        b'{"a":1,"\\u0061":2}',
        b'{"a:":1,"a\\u003a":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1e999}',
        b'{"a":-1e999}',
        b'{"a":1e400}',
        b'{"a":9223372036854775808}',
        b'{"a":-9223372036854775809}',
        b'{"a":' + b"9" * 101 + b"}",
        b'{"a":"tab\there"}',  # a raw control character
        b'{"a":1} x',
        b'{"a":1,}',
        b"\x0c{}",
    ],
)
def test_what_the_checked_parse_declines_the_old_path_decides(raw):
    """Each is declined (the caller's slow path or walk then accepts or words it as before)."""
    assert jsonbody._checked_parse(raw) is jsonbody._SLOW


def test_the_checked_parse_reads_what_the_old_path_reads_at_its_edges():
    raw = (
        b'{"i":[9223372036854775807,-9223372036854775808,-0,0,1],'
        b'"f":[1.0,-0.0,1e5,1E5,2.5e-324,1e-400,1e308],'
        b'"s":"\\ud83d\\ude00\\u00e9\\/\xc3\xa9\x7f"}'
    )
    checked = jsonbody._checked_parse(raw)
    assert checked is not jsonbody._SLOW
    assert same(checked, jsonbody._slow_parse(raw))


def same(a: Any, b: Any) -> bool:
    """Equal with the same types (1 is not 1.0) and the same key order."""
    return json.dumps(a) == json.dumps(b) and repr(a) == repr(b)


# ---- properties: random documents against the walk and the stdlib parser -----------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=7),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=40,
)
SMALL = {
    "MAX_DEPTH": 4,
    "MAX_OBJECT_MEMBERS": 3,
    "MAX_ARRAY_ITEMS": 4,
    "MAX_VALUES": 25,
    "MAX_KEY_CHARS": 4,
    "MAX_STRING_CHARS": 5,
}
SMALL_DECODER = jsonbody.limited_decoder(
    depth=SMALL["MAX_DEPTH"],
    members=SMALL["MAX_OBJECT_MEMBERS"],
    items=SMALL["MAX_ARRAY_ITEMS"],
    key_chars=SMALL["MAX_KEY_CHARS"],
    string_chars=SMALL["MAX_STRING_CHARS"],
)


@PROPERTY
@given(json_values, st.booleans())
def test_the_checked_parse_agrees_with_the_walk(value, ascii_only):
    """With small limits, so that random documents breach each of them now and then: what the
    checked parse accepts, the walk finds within every limit and the stdlib parser reads the
    same (types and key order included); what it declines is a breach, unless it is one of the
    documented reasons to decline (the count of commas, U+0000, integers past 64 bits)."""
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    with mock.patch.multiple(jsonbody, _CHECKED=SMALL_DECODER, **SMALL):
        checked = jsonbody._checked_parse(raw)
        try:
            stdlib = jsonbody._slow_parse(raw)
        except BadRequest:
            assert checked is jsonbody._SLOW  # integers of over 100 digits
            return
        within = jsonbody._first_breach(stdlib, True, True) is None
        if checked is not jsonbody._SLOW:
            assert within
            assert same(checked, stdlib)
            return
        bound = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        big_int = any(type(n) is int and not -(2**63) <= n < 2**63 for n in _scalars(stdlib))
        assert (
            not within
            or bound > SMALL["MAX_VALUES"]
            or b"\\u0000" in raw
            or big_int
            or _array_in_array(stdlib)
        )


def _array_in_array(value: Any) -> bool:
    if type(value) is dict:
        return any(map(_array_in_array, value.values()))
    if type(value) is list:
        return any(type(v) is list or _array_in_array(v) for v in value)
    return False


def _scalars(value: Any) -> list[Any]:
    if type(value) is dict:
        return [s for v in value.values() for s in _scalars(v)]
    if type(value) is list:
        return [s for v in value for s in _scalars(v)]
    return [value]


pairs_objects = st.recursive(
    st.integers(-5, 5) | st.sampled_from(['"a:b"', '"x"', '"::"', "null"]),
    lambda children: st.lists(
        st.tuples(st.sampled_from(["a", "b", "a:", ":", "c"]), children), max_size=4
    ),
    max_leaves=20,
)


def _text(node: Any) -> str:
    if isinstance(node, list):
        return "{" + ",".join(f"{json.dumps(k)}:{_text(v)}" for k, v in node) + "}"
    return str(node)


def _repeats(node: Any) -> bool:
    if not isinstance(node, list):
        return False
    keys = [k for k, _ in node]
    return len(keys) != len(set(keys)) or any(_repeats(v) for _, v in node)


@PROPERTY
@given(pairs_objects)
def test_a_repeated_key_is_never_read_by_the_checked_parse(node):
    """Keys and values full of colons: the colon count finds every dropped key."""
    raw = _text(node).encode()
    checked = jsonbody._checked_parse(raw)
    if _repeats(node):
        assert checked is jsonbody._SLOW
        with pytest.raises(BadRequest, match="repeats the key"):
            jsonbody.parse_json(raw)
    else:
        assert same(checked, json.loads(raw))


def test_a_repeated_key_in_a_large_body_is_never_read_by_the_checked_parse():
    """Over 2 * MAX_VALUES bytes the colons are counted in the same pass as the commas."""
    text = "a:b," * 150_000  # 600,000 characters: two make the body long enough
    pad = json.dumps({"pad": text, "more": text, "list": [{"k": i} for i in range(10)]})
    raw = pad[:-1].encode() + b',"x":{"y":1,"y":2}}'
    assert len(raw) > 2 * jsonbody.MAX_VALUES
    assert jsonbody._checked_parse(raw) is jsonbody._SLOW
    with pytest.raises(BadRequest, match="repeats the key"):
        jsonbody.parse_json(raw)
    once = raw.replace(b'"y":2', b'"z":2')
    assert jsonbody._checked_parse(once) == json.loads(once)


float_literals = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}.{fraction}e{exponent}",
    st.sampled_from(["", "-"]),
    st.integers(0, 10**20),
    st.text("0123456789", min_size=1, max_size=30),
    st.integers(-400, 400),
)


@PROPERTY
@given(float_literals)
@example("1e999")
@example("2.4703282292062328e-324")
@example("1.7976931348623158e308")
def test_a_float_is_read_to_the_double_float_reads(literal):
    checked = jsonbody._checked_parse(literal.encode())
    expected = float(literal)
    if math.isinf(expected):
        assert checked is jsonbody._SLOW  # the stdlib path refuses it: out of range
    else:
        assert type(checked) is float
        assert repr(checked) == repr(expected)


@PROPERTY
@given(st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_json_answers_as_the_stdlib_path_and_walk(raw):
    """The whole entry point against the stdlib parser and the walk alone."""
    try:
        expected = jsonbody._slow_parse(raw)
        jsonbody.check_limits(expected)
    except BadRequest as error:
        with pytest.raises(BadRequest) as refused:
            jsonbody.parse_json(raw)
        assert refused.value.message == error.message
    else:
        assert same(jsonbody.parse_json(raw), expected)
