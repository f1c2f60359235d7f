"""jsonbody's C-level limit check (`_clean`, large bodies) refuses exactly what the walk refuses."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_hooks import jsonbody
from cds_hooks.errors import BadRequest

PAD = "p" * jsonbody.C_WALK_BYTES  # makes a body large enough for the C-level check


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
    "too many values": [[0] * 1000 for _ in range(jsonbody.MAX_VALUES // 1000 + 1)],
    "long string": {"s": ["P" * (jsonbody.MAX_STRING_CHARS + 1)]},
}
AT_THE_LIMIT = {
    "deep": deep(jsonbody.MAX_DEPTH - 1),
    "wide object": {f"k{i}": 1 for i in range(jsonbody.MAX_OBJECT_MEMBERS - 1)},  # + "pad"
    "long array": [0] * jsonbody.MAX_ARRAY_ITEMS,
    "long key": {"k" * jsonbody.MAX_KEY_CHARS: 1},
    "long string": {"s": ["P" * jsonbody.MAX_STRING_CHARS]},
}


def body_with(value: Any) -> bytes:
    return json.dumps({"pad": PAD, "x": value}).encode()


@pytest.mark.parametrize("name", BREACHES)
def test_a_large_body_over_a_limit_is_refused_as_the_walk_words_it(name):
    raw = body_with(BREACHES[name])
    assert len(raw) >= jsonbody.C_WALK_BYTES
    parsed = json.loads(raw)
    long_strings = len(raw) > jsonbody.MAX_STRING_CHARS
    assert not jsonbody._clean(parsed, long_strings)
    with pytest.raises(BadRequest) as refused:
        jsonbody.parse_json(raw)
    with pytest.raises(BadRequest) as walked:
        jsonbody.check_limits(parsed, scan_strings=False, long_strings=long_strings)
    assert refused.value.message == walked.value.message


@pytest.mark.parametrize("name", AT_THE_LIMIT)
def test_a_large_body_at_a_limit_is_read(name):
    raw = body_with(AT_THE_LIMIT[name])
    assert jsonbody._clean(json.loads(raw))
    assert jsonbody.parse_json(raw) == json.loads(raw)


def test_wide_and_long_containers_deep_inside_are_found():
    hidden = {"a": [{"b": [1, {"c": BREACHES["wide object"]}]}]}
    assert not jsonbody._clean(json.loads(body_with(hidden)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=7),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_the_c_level_check_agrees_with_the_walk(value):
    """With small limits, so that random documents breach each of them now and then, and
    small slices, so that the totals and keys carried from one slice to the next are tested."""
    small = {
        "MAX_DEPTH": 4,
        "MAX_OBJECT_MEMBERS": 3,
        "MAX_ARRAY_ITEMS": 4,
        "MAX_VALUES": 25,
        "MAX_KEY_CHARS": 4,
        "MAX_STRING_CHARS": 5,
    }
    value = json.loads(json.dumps(value))  # as a parser returns it
    for slice_size in (1, 2, 256):
        with mock.patch.multiple(jsonbody, _SLICE=slice_size, **small):
            for long_strings in (False, True):
                walked = jsonbody._first_breach(value, False, long_strings) is None
                clean = jsonbody._clean(value, long_strings)
                assert clean == walked or type(value) not in (dict, list)
