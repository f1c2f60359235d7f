"""Reading a hook call off the wire: content type, size, JSON, schema, and cross-field checks.

Everything a client can get wrong answers a 4xx with the JSON path of each problem (CDS Hooks
2.0 names no schema; ours are in `schemas/`). Nothing here knows about rules or FHIR servers.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import orjson
from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from cds_hooks import schemas
from cds_hooks.errors import BadRequest, HookMismatch, Problem, UnsupportedMedia
from cds_hooks.fhir.read import as_dict, bundle_resources, ref_of

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/fhir+json")

# Limits on the shape of a body, far above any real hook call (a Bundle entry of a FHIR resource
# nests ~12 deep) and far below what makes parsing, validation or logging costly. Each breach
# answers 400 naming the JSON path; the byte size itself is MAX_BODY_BYTES (413) in app.py.
MAX_DEPTH = 64
MAX_STRING_CHARS = 1_000_000  # no FHIR element we read comes near; attachments don't belong here
MAX_KEY_CHARS = 256
MAX_ARRAY_ITEMS = 10_000
MAX_OBJECT_MEMBERS = 1_000
MAX_VALUES = 500_000  # containers' members, all levels together
MAX_NUMBER_DIGITS = 100
# An escaped NUL or UTF-16 surrogate in the raw text: only then are strings scanned one by one.
_ODD_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_ODD_CHAR = re.compile("[\\x00\\ud800-\\udfff]")


def check_content_type(mimetype: str | None) -> None:
    if (mimetype or "").lower() not in JSON_TYPES:
        raise UnsupportedMedia(f"send the hook request as application/json, not {mimetype!r}")


class BoundedRequest(Request):
    """A Request whose streamed body (chunked, no Content-Length) over the limit is a 413.

    Werkzeug stops reading such a body at MAX_CONTENT_LENGTH but hands back the cut-off bytes
    without an error, which would read as broken JSON (or, cut at the right place, as a shorter
    valid document).
    """

    def get_data(self, *args: Any, **kwargs: Any) -> Any:
        data = super().get_data(*args, **kwargs)
        limit = self.max_content_length
        if limit is not None and self.content_length is None and len(data) >= limit:
            raise RequestEntityTooLarge()
        return data


def parse_json(raw: bytes) -> Any:
    """The body as JSON within the limits above; anything else is a BadRequest saying why.

    Client errors: not UTF-8 (RFC 8259 §8.1; a leading BOM is tolerated), not JSON, NaN or
    Infinity, numbers of absurd length, duplicate keys, U+0000 or a lone surrogate in a string,
    and any breach of the depth, length and count limits.
    """
    parsed = _fast_parse(raw)
    if parsed is _SLOW:
        parsed = _slow_parse(raw)
    raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")
    scan_strings = _ODD_ESCAPE.search(raw_bytes) is not None
    # A string has at most as many characters as the body has bytes: short bodies skip the check.
    if scan_strings or not _within_limits(parsed, len(raw_bytes) > MAX_STRING_CHARS):
        check_limits(parsed, scan_strings=scan_strings)  # finds and words the breach
    return parsed


def _slow_parse(raw: bytes | str) -> Any:
    """The stdlib parser decides (and words) everything the fast path declined."""
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is not UTF-8 text: {error.reason}") from None
    try:
        return json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_integer,
            parse_float=_finite,
        )
    except _DuplicateKey as error:
        raise BadRequest(f"the body repeats the key {str(error)[:100]!r} in one object") from None
    except _BadNumber as error:
        raise BadRequest(f"the body has a number JSON cannot carry safely: {error}") from None
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"the body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    except RecursionError:
        raise BadRequest(f"the body nests JSON deeper than {MAX_DEPTH} levels") from None


class _BadNumber(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not JSON")


def _integer(digits: str) -> int:
    if len(digits) > MAX_NUMBER_DIGITS:
        raise _BadNumber(f"an integer of {len(digits)} digits")
    return int(digits)


def _finite(literal: str) -> float:
    if not math.isfinite(value := float(literal)):
        raise _BadNumber(f"{literal[:40]} is out of range")
    return value


def check_limits(value: Any, *, scan_strings: bool = True) -> None:
    """BadRequest at the first breach of the shape limits (one walk, no recursion).

    `scan_strings` also looks inside every string and key for U+0000 and lone surrogates;
    the caller skips it when the raw text has no escape that could produce them.
    """
    if not isinstance(value, dict | list):
        check_limits([value], scan_strings=scan_strings)  # a bare scalar body: same checks
        return
    counted = 0
    # (container, depth, parent entry, key in parent): the parent chain builds a path on failure.
    stack: list[tuple[Any, int, Any, Any]] = [(value, 1, None, None)]
    while stack:
        entry = stack.pop()
        node, depth = entry[0], entry[1]
        if depth > MAX_DEPTH:
            _breach(entry, None, f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if len(node) > MAX_OBJECT_MEMBERS:
                _breach(entry, None, f"has {len(node)} members (limit {MAX_OBJECT_MEMBERS})")
            items: Any = node.items()
        else:
            if len(node) > MAX_ARRAY_ITEMS:
                _breach(entry, None, f"has {len(node)} items (limit {MAX_ARRAY_ITEMS})")
            items = enumerate(node)
        counted += len(node)
        if counted > MAX_VALUES:
            _breach(entry, None, f"makes the body hold over {MAX_VALUES} values")
        for key, item in items:
            if isinstance(key, str):
                if len(key) > MAX_KEY_CHARS:
                    _breach(entry, key[:40], f"is a key of {len(key)} characters")
                if scan_strings and _ODD_CHAR.search(key):
                    _breach(entry, key[:40], "is a key holding U+0000 or a lone surrogate")
            if isinstance(item, str):
                if len(item) > MAX_STRING_CHARS:
                    _breach(entry, key, f"is a string of {len(item)} characters")
                if scan_strings and _ODD_CHAR.search(item):
                    _breach(entry, key, "holds U+0000 or a lone surrogate (broken UTF-16)")
            elif isinstance(item, dict | list):
                stack.append((item, depth + 1, entry, key))


_CONTAINERS = (dict, list)


def _within_limits(value: Any, long_strings: bool) -> bool:
    """True when check_limits would pass (its scan_strings aside), measured 1.3-2.5x faster.

    The same limits, walked level by level with no path bookkeeping: a hook call of 1,000
    resources holds ~16,000 containers and ~37,000 values (docs/performance.md). Key lengths are
    checked once per distinct key (the parser shares equal keys).
    """
    if type(value) not in _CONTAINERS:
        return not (long_strings and type(value) is str and len(value) > MAX_STRING_CHARS)
    level, depth, total, keys = [value], 0, 0, set()
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return False
        below: list[Any] = []
        add = below.append
        for node in level:
            size = len(node)
            total += size
            if type(node) is dict:
                if size > MAX_OBJECT_MEMBERS:
                    return False
                keys.update(node)
                items = node.values()
            elif size > MAX_ARRAY_ITEMS:
                return False
            else:
                items = node
            for item in items:
                kind = type(item)
                if kind is dict or kind is list:
                    add(item)
                elif long_strings and kind is str and len(item) > MAX_STRING_CHARS:
                    return False
        if total > MAX_VALUES:
            return False
        level = below
    return all(type(key) is str and len(key) <= MAX_KEY_CHARS for key in keys)


def _breach(entry: tuple[Any, int, Any, Any], key: Any, what: str) -> None:
    parts: list[Any] = [] if key is None else [key]
    while entry is not None and entry[2] is not None:
        parts.append(entry[3])
        entry = entry[2]
    path = "$" + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(parts[:MAX_DEPTH])
    )
    path = path if len(path) <= 300 else path[:297] + "..."
    raise BadRequest(f"the body is out of bounds: {path} {what}", [Problem(path, what)])


_SLOW = object()


def _fast_parse(raw: bytes) -> Any:
    """orjson's parse when it is certainly what _slow_parse would return, else _SLOW.

    orjson parses ~3x faster than json.loads with the hooks above (docs/performance.md) but keeps
    the last of repeated keys silently. Repeats are found by counting colons: the raw text has
    one per key plus the literal ones inside strings, orjson's re-serialisation one per kept key
    plus the ones inside kept strings, so the counts differ exactly when a key was dropped. An
    escaped colon (\\u003a) would break the count, and orjson reads integers past 64 bits as
    floats and accepts numbers of any length, so bodies with such escapes or with 19 digits in a
    row take the slow path, as does anything orjson rejects (NaN, a BOM, deep nesting): the
    answers and the error messages stay _slow_parse's.
    """
    if not isinstance(raw, bytes):
        return _SLOW
    # \\u003 covers \\u003a and \\u003A; 19 zeros after the translation are 19 digits in a row.
    if b"\\u003" in raw or b"0" * 19 in raw.translate(_ZERO_DIGITS):
        return _SLOW
    try:
        value = orjson.loads(raw)
        again = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _SLOW
    return value if raw.count(b":") == again.count(b":") else _SLOW


_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def validate(body: Any, hook: str, drafts_field: str) -> None:
    """Raise BadRequest listing every problem of a request for the service serving `hook`.

    A valid request is normalised in place where EHRs differ harmlessly: `patientId` and
    `encounterId` sent as references (`Patient/123`) or absolute URLs become the bare id (logged),
    as every prefetch template and rule expects (docs/integration.md).
    """
    if not isinstance(body, dict):
        raise BadRequest(
            "the body must be a JSON object (the hook request), not " + _kind(body),
            [Problem("$", "expected a JSON object")],
        )
    sent = body.get("hook")
    if isinstance(sent, str) and sent != hook:
        raise HookMismatch(
            f"this service answers the {hook!r} hook, not {sent[:100]!r}: call the service "
            "registered for that hook (see GET /cds-services)",
            [Problem("$.hook", f"expected {hook!r}")],
        )
    problems = schemas.problems(f"request-{hook}", body)
    if problems:
        raise BadRequest(f"the hook request is not valid: {schemas.summary(problems)}", problems)
    context = body["context"]
    _normalise_ids(context, body.get("hookInstance"))
    drafts = {ref_of(r) for r in bundle_resources(as_dict(context.get(drafts_field)))}
    problems = [
        Problem(
            f"$.context.selections[{i}]",
            f"context.selections[{i}] names {selection}, which is not one of the draftOrders: "
            "each selection must be the MedicationRequest/<id> of an order in draftOrders",
        )
        for i, selection in enumerate(context.get("selections", []))
        if selection not in drafts
    ]
    if problems:
        raise BadRequest(f"the hook request is not valid: {schemas.summary(problems)}", problems)


# `Patient/123`, `https://ehr.example.org/fhir/Patient/123` (the schema has checked the shape).
_CONTEXT_IDS = {"patientId": "Patient", "encounterId": "Encounter"}


def _normalise_ids(context: dict[str, Any], hook_instance: Any) -> None:
    for field, kind in _CONTEXT_IDS.items():
        value = context.get(field)
        if isinstance(value, str) and "/" in value:
            bare = value.rsplit(f"{kind}/", 1)[-1]
            log.info(
                "hook %s: context.%s sent as a reference; read as the id %r",
                str(hook_instance)[:100],
                field,
                bare[:100],
            )
            context[field] = bare
    if context.get("userId") is None:
        log.info("hook %s: no context.userId (no rule needs it)", str(hook_instance)[:100])


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else "null"
