"""Hostile input: sizes, depth, numbers, unicode, duplicate keys, wrong types; property-based runs.

Every one answers a 4xx with a message that says what is wrong, never a 5xx; hypothesis then
throws arbitrary bytes and arbitrary JSON at the parser, the schema check, the whole hook path
and the rules (any JSON in, no exception out).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_hooks import create_app, jsonbody, protocol, schemas
from cds_hooks.errors import BadRequest, CdsError
from cds_hooks.fhir.resolver import resolve
from cds_hooks.record import build_record
from cds_hooks.rules import RULES
from cds_hooks.services import BY_ID, prefetch_templates
from tests.factories import (
    HALOPERIDOL_5_TAB,
    STROKE,
    condition,
    hook_request,
    med_request,
)

SELECT = "/cds-services/antispasticity-order-select"
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # CI stays reproducible; a failure prints the example to keep as a test
    database=None,  # no .hypothesis/ folder in the work tree
)


def valid_body() -> dict[str, Any]:
    return hook_request(
        [med_request("d1"), med_request("d2", HALOPERIDOL_5_TAB)],
        conditions=[condition("c1", STROKE)],
    )


@pytest.fixture(scope="module")
def app(knowledge, tmp_path_factory):
    return create_app(
        {
            "NOW": "2026-11-21T12:00:00Z",
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path_factory.mktemp("hostile")),
            "SQLITE_SYNCHRONOUS": "NORMAL",
            "METRICS": False,
        }
    )


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def post_raw(client, raw: bytes, content_type: str = "application/json"):
    return client.post(SELECT, data=raw, content_type=content_type)


def assert_4xx(response, status: int = 400, says: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["error"] and body["message"]
    if says:
        assert says in body["message"]
    return body


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = valid_body()
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


# ---- sizes and shapes --------------------------------------------------------------------------


def test_valid_body_is_200(client):
    assert post_raw(client, json.dumps(valid_body()).encode()).status_code == 200


def test_body_over_the_byte_limit_is_413(knowledge, tmp_path):
    app = create_app({"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), "MAX_BODY_BYTES": 1000})
    raw = json.dumps(valid_body()).encode()
    assert_4xx(app.test_client().post(SELECT, data=raw, content_type="application/json"), 413)


def test_chunked_body_over_the_byte_limit_is_413(knowledge, tmp_path):
    """No Content-Length to check up front: the limit holds while reading."""
    app = create_app({"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), "MAX_BODY_BYTES": 1000})
    raw = json.dumps(valid_body()).encode()
    response = app.test_client().post(
        SELECT,
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        # What a WSGI server (gunicorn, werkzeug) says of a chunked body it has de-chunked.
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_4xx(response, 413)


@pytest.mark.parametrize("depth", [jsonbody.MAX_DEPTH + 1, 1500, 100_000])
def test_deep_nesting_is_400(client, depth):
    body = valid_body()
    raw = json.dumps(body).encode()
    raw = raw[:-1] + b',"extension":' + nested(depth) + b"}"
    assert_4xx(post_raw(client, raw), says="deeper than")


def test_nesting_at_the_limit_is_fine():
    jsonbody.parse_json(nested(jsonbody.MAX_DEPTH - 1))


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("context", "userId"), "P" * (jsonbody.MAX_STRING_CHARS + 1), "string of"),
        (("prefetch", "conditions", "entry"), [{}] * (jsonbody.MAX_ARRAY_ITEMS + 1), "items"),
        (("extension",), {f"k{i}": 1 for i in range(jsonbody.MAX_OBJECT_MEMBERS + 1)}, "members"),
        (("extension",), {"k" * (jsonbody.MAX_KEY_CHARS + 1): 1}, "key of"),
    ],
    ids=["long string", "long array", "wide object", "long key"],
)
def test_absurd_lengths_are_400_with_the_path(client, path, value, says):
    body = assert_4xx(post_raw(client, json.dumps(with_value(path, value)).encode()), says=says)
    assert body["problems"][0]["path"].startswith("$." + path[0])


def test_too_many_values_overall_is_400():
    raw = json.dumps([[0] * 1000 for _ in range(jsonbody.MAX_VALUES // 1000 + 1)]).encode()
    with pytest.raises(BadRequest, match="values"):
        jsonbody.parse_json(raw)


# ---- numbers and literals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"9" * 5000, b"-" + b"9" * 400],
    ids=["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "5000 digits", "400 digits"],
)
def test_numbers_json_cannot_carry_are_400(client, literal):
    raw = json.dumps(valid_body()).encode()
    raw = raw[:-1] + b',"extension":{"n":' + literal + b"}}"
    assert_4xx(post_raw(client, raw))


# ---- duplicate keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"hook":"order-select","hook":"order-sign"}',
        b'{"a":{"b":1,"b":2}}',
        b'{"a":1,"\\u0061":2}',  # the same key spelled with an escape
        b'{"a:":1,"a\\u003a":2}',  # and with an escaped colon (the fast path's blind spot)
    ],
    ids=["top level", "nested", "escaped key", "escaped colon"],
)
def test_duplicate_keys_are_400(client, raw):
    assert_4xx(post_raw(client, raw), says="repeats the key")


# ---- unicode -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"a":"\xff"}', "not UTF-8"),
        (b'{"a":"\xc0\xaf"}', "not UTF-8"),  # overlong encoding of "/"
        (b'{"a":"\xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded as UTF-8
        ('{"a":"x"}'.encode("utf-16"), "not UTF-8"),
        (b'{"a":"\\ud800"}', "surrogate"),
        (b'{"a":"\\udc00x"}', "surrogate"),
        (b'{"\\ud800":1}', "surrogate"),
        (b'{"a":"nul\\u0000here"}', "U+0000"),
        (b'{"a\\u0000":1}', "U+0000"),
    ],
    ids=[
        "invalid byte",
        "overlong",
        "encoded surrogate",
        "utf-16",
        "lone high surrogate",
        "lone low surrogate",
        "surrogate key",
        "NUL in a string",
        "NUL in a key",
    ],
)
def test_unicode_oddities_are_400(client, raw, says):
    assert_4xx(post_raw(client, raw), says=says)


def test_escaped_surrogate_pair_and_bom_are_fine(client):
    body = valid_body()
    body["prefetch"]["patient"]["name"] = [{"text": "\U0001f600 Zoë"}]
    raw = json.dumps(body, ensure_ascii=True).encode()  # the emoji as \\ud83d\\ude00
    assert b"\\ud83d\\ude00" in raw
    assert post_raw(client, raw).status_code == 200
    assert post_raw(client, b"\xef\xbb\xbf" + raw).status_code == 200


@pytest.mark.parametrize(
    "user_id",
    [
        "Practitioner/\u202eevil",  # right-to-left override
        "Practitioner/a\u200bb",  # zero-width space
        "Practitioner/\uff11\uff12",  # fullwidth digits
        "Practitioner/1\n",  # `$` in a pattern would match before it; ours do not
    ],
    ids=["rtl override", "zero width", "fullwidth", "newline"],
)
def test_unicode_tricks_in_ids_are_400(client, user_id):
    body = with_value(("context", "userId"), user_id)
    assert_4xx(post_raw(client, json.dumps(body).encode()))


def test_odd_but_valid_text_in_resources_is_fine(client):
    body = valid_body()
    body["prefetch"]["conditions"]["entry"][0]["resource"]["code"]["text"] = (
        "Ce\u0301re\u0301bral \u202e\u200b\U0001f9e0 \ufffd"
    )
    assert post_raw(client, json.dumps(body).encode()).status_code == 200


# ---- wrong types anywhere in the envelope -----------------------------------------------------

ENVELOPE_PATHS = [
    ("hook",),
    ("hookInstance",),
    ("context",),
    ("prefetch",),
    ("prefetch", "patient"),
    ("prefetch", "conditions"),
    ("context", "userId"),
    ("context", "patientId"),
    ("context", "selections"),
    ("context", "draftOrders"),
    ("context", "draftOrders", "entry"),
    ("context", "draftOrders", "resourceType"),
]
WRONG_VALUES = [None, True, 0, 1.5, "text", [], [1], {}, {"resourceType": 1}]


def _valid_after_all(path: tuple, value: object) -> bool:
    """The few (path, value) pairs that are not wrong: null or {} prefetch, a string id."""
    return (
        (path[0] == "prefetch" and len(path) == 2 and value is None)  # null means 'no data'
        or (path in (("hookInstance",), ("context", "patientId")) and value == "text")
        or (path == ("prefetch",) and value == {})  # keys then fetched, or 412
        or (path == ("context", "userId") and value is None)  # optional: null is no userId
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [(p, v) for p in ENVELOPE_PATHS for v in WRONG_VALUES if not _valid_after_all(p, v)],
    ids=lambda x: ".".join(x) if isinstance(x, tuple) else repr(x),
)
def test_wrong_types_in_the_envelope_are_4xx(client, path, value):
    response = post_raw(client, json.dumps(with_value(path, value)).encode())
    assert response.status_code in (400, 412), response.get_data(as_text=True)[:300]
    assert response.get_json()["message"]


@pytest.mark.parametrize(
    "extra",
    [
        {"fhirServer": 42},
        {"fhirServer": "ftp://fhir.example.org"},
        {"fhirServer": "https://fhir.example.org", "fhirAuthorization": "token"},
        {"fhirAuthorization": {"access_token": "x", "token_type": "Bearer"}},
        {"fhirServer": "https://fhir.example.org", "fhirAuthorization": {"token_type": []}},
    ],
    ids=["server number", "server ftp", "auth string", "auth without server", "auth types"],
)
def test_wrong_fhir_access_fields_are_400(client, extra):
    body = valid_body()
    del body["prefetch"]["allergies"]  # so that fhirServer would be used
    body.update(extra)
    assert_4xx(post_raw(client, json.dumps(body).encode()))


def test_a_top_level_non_object_is_400(client):
    for raw in (b"[]", b"1", b'"x"', b"null", b""):
        assert_4xx(post_raw(client, raw))


# ---- property-based: any input, no exception -------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@SETTINGS
@given(st.binary(max_size=300))
def test_parser_on_arbitrary_bytes_returns_or_says_bad_request(raw):
    try:
        jsonbody.parse_json(raw)
    except BadRequest as error:
        assert error.message


@SETTINGS
@given(json_values)
def test_parser_round_trips_any_json_within_the_limits(value):
    raw = json.dumps(value).encode()
    try:
        parsed = jsonbody.parse_json(raw)
    except BadRequest as error:  # a lone surrogate or NUL that st.text() drew
        assert "surrogate" in error.message or "U+0000" in error.message
        return
    assert json.dumps(parsed) == json.dumps(value) or parsed == value


@SETTINGS
@given(json_values, st.sampled_from(["order-select", "order-sign", "medication-prescribe"]))
def test_validation_of_any_json_raises_only_client_errors(body, hook):
    drafts = "medications" if hook == "medication-prescribe" else "draftOrders"
    try:
        protocol.validate(body, hook, drafts)
    except BadRequest as error:
        assert error.message


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


BASE_BODY = valid_body()
PATHS = sorted(_paths(BASE_BODY), key=repr)
# Values from elsewhere in a real request put plausible-but-wrong shapes into any field.


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


SAMPLES = [copy.deepcopy(_at(BASE_BODY, path)) for path in PATHS]
mutations = st.lists(
    st.tuples(st.sampled_from(PATHS), json_values | st.sampled_from(SAMPLES)),
    min_size=1,
    max_size=4,
)


def _mutate(body: dict[str, Any], changes: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for path, value in changes:
        node: Any = body
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    return body


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (
            ("context", "draftOrders", "entry", 0, "resource", "medicationCodeableConcept"),
            {"coding": [{"system": ["x"], "code": "197391"}]},
        ),
        (
            ("context", "draftOrders", "entry", 0, "resource", "medicationCodeableConcept"),
            {"coding": [{"system": "http://snomed.info/sct", "code": 7}]},
        ),
        (("prefetch", "conditions", "entry", 0, "resource", "code"), "stroke"),
        (("prefetch", "conditions", "entry", 0, "resource", "code"), {"coding": 5.5}),
    ],
    ids=["system is a list", "code is a number", "concept is a string", "coding is a number"],
)
def test_wrong_types_inside_codings_are_not_a_5xx(client, path, value):
    response = post_raw(client, json.dumps(with_value(path, value)).encode())
    assert response.status_code in (200, 400)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@SETTINGS
@given(mutations)
def test_hook_path_on_mutated_requests_never_answers_5xx(client, changes):
    body = _mutate(BASE_BODY, changes)
    errors = _Errors()
    logging.getLogger("cds_hooks").addHandler(errors)
    try:
        response = post_raw(client, json.dumps(body).encode())
    finally:
        logging.getLogger("cds_hooks").removeHandler(errors)
    assert response.status_code in (200, 400, 412), response.get_data(as_text=True)[:500]
    if response.status_code == 200:
        assert schemas.problems("response", response.get_json()) == []
    # The engine would turn a crashing rule into a degraded card; it must not need to.
    assert [r.getMessage() for r in errors.records] == []


@SETTINGS
@given(mutations)
def test_rules_on_any_record_raise_nothing(knowledge, changes):
    """Rules straight on records built from mutated resources (no engine safety net)."""
    from cds_hooks.rules.context import RuleContext

    body = _mutate(BASE_BODY, changes)
    service = BY_ID["antispasticity-order-select"]
    try:
        protocol.validate(body, service.hook, service.drafts_field)
        # What the resolver hands on is what the rules can meet (no fhirServer: nothing fetched).
        data = resolve(body, prefetch_templates(knowledge), None, time.monotonic() + 1)
    except CdsError:
        return  # the wire refuses it (400/412); the rules never see it
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    record = build_record(service, body["context"], data.resources, data.medications, {}, knowledge)
    for rule in RULES:
        ctx = RuleContext(record, knowledge, knowledge.rule(rule.id), now)
        list(rule.evaluate(ctx))
