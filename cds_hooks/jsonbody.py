"""A request body as JSON, within limits: one parser entry, one implementation of the limits.

Every JSON body the service reads (hook calls, feedback, the preview) goes through `parse_json`.
Client errors answer a 400 saying what is wrong (with the JSON path of a limit breach): not
UTF-8 (a leading BOM is tolerated), not JSON, NaN or Infinity, numbers of absurd length,
duplicate keys, U+0000 or a lone surrogate in a string, and the depth, length and count limits
below. The byte size itself is MAX_BODY_BYTES (413) in the app.

A body is first read by msgspec's typed decoder, which enforces the limits in C while it reads
(`_checked_parse`); it only ever says "within the limits". Anything it declines (a breach, an
oddity, or a body nesting deeper than its type stack) is read as before (orjson, else the stdlib
parser with hooks) and walked (`check_limits`), which words the breach with its JSON path.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, NewType

import msgspec
import orjson

from cds_hooks.errors import BadRequest, Problem

# Far above any real hook call (a Bundle entry of a FHIR resource nests ~12 deep) and far below
# what makes parsing, validation or logging costly.
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


def parse_json(raw: bytes) -> Any:
    """The body as JSON within the limits above; anything else is a BadRequest saying why.

    Client errors: not UTF-8 (RFC 8259 §8.1; a leading BOM is tolerated), not JSON, NaN or
    Infinity, numbers of absurd length, duplicate keys, U+0000 or a lone surrogate in a string,
    and any breach of the depth, length and count limits.
    """
    parsed = _checked_parse(raw)
    if parsed is not _SLOW:
        return parsed
    # Whatever the checked parse declined is read and walked as before, and the walk words the
    # breach: the checked parse only ever says "within the limits".
    parsed = _fast_parse(raw)
    if parsed is _SLOW:
        parsed = _slow_parse(raw)
    raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")
    scan_strings = _ODD_ESCAPE.search(raw_bytes) is not None
    long_strings = len(raw_bytes) > MAX_STRING_CHARS  # a string has at most that many chars
    check_limits(parsed, scan_strings=scan_strings, long_strings=long_strings)
    return parsed


# ---- The checked parse: the limits enforced in C while the body is read ------------------------
#
# msgspec's typed decoder checks each object's and array's length, each key's and string's length
# and each integer's range as it reads. The depth limit is a stack of types, one per level:
# level k is an object of level k-1 values, an array of level k-1 items, or a scalar; level 0 is
# scalars only, so a body nesting deeper than _TYPED_DEPTH levels is refused. msgspec builds its
# decoder as a tree (no node shared): with objects and arrays in every level's values the tree
# doubles per level (16 levels: 0.3 s at import). FHIR JSON never puts an array directly in an
# array, and neither does CDS Hooks, so an item is an object or a scalar and an array of arrays is
# declined: the tree then grows by Fibonacci (~1.6x per level; 20 levels: ~0.1 s). The stack stops
# at _TYPED_DEPTH, below MAX_DEPTH but above the hook calls we know (a resource in a prefetched
# Bundle starts 6 deep and nested extensions reach ~18; the 10,000-resource bench body nests 13).
# Deeper bodies, up to MAX_DEPTH, and arrays of arrays are read and walked as before.
_TYPED_DEPTH = 20


def limited_decoder(
    depth: int = _TYPED_DEPTH,
    members: int = MAX_OBJECT_MEMBERS,
    items: int = MAX_ARRAY_ITEMS,
    key_chars: int = MAX_KEY_CHARS,
    string_chars: int = MAX_STRING_CHARS,
) -> msgspec.json.Decoder[Any]:
    """A decoder of JSON values nesting at most `depth` containers, within the other limits,
    with no array directly in an array.

    Integers are held to the 64-bit range (19 digits at most, so none is of absurd length).
    """
    text: Any = Annotated[str, msgspec.Meta(max_length=string_chars)]
    key: Any = Annotated[str, msgspec.Meta(max_length=key_chars)]
    integer: Any = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    scalar: Any = text | integer | float | bool | None
    # A value nesting at most `level` containers, and an array's item (no array) likewise.
    value: Any = scalar
    item: Any = scalar
    for level in range(depth):
        # A NewType per level: typing hashes a union's members, and without it the hash of
        # level k would recurse into every branch below, exponentially many times.
        values: Any = NewType(f"Value{level}", value)  # type: ignore[misc]
        items_below: Any = NewType(f"Item{level}", item)  # type: ignore[misc]
        obj: Any = Annotated[dict[key, values], msgspec.Meta(max_length=members)]
        value = obj | Annotated[list[items_below], msgspec.Meta(max_length=items)] | scalar
        item = obj | scalar
    return msgspec.json.Decoder(value)


_CHECKED = limited_decoder()


def _checked_parse(raw: bytes) -> Any:
    """The body when it is certainly within every limit and what _slow_parse would return, else
    _SLOW (and the caller reads it the old way, and words any breach).

    In C while reading: syntax, UTF-8, lone surrogates (msgspec refuses every unpaired escape),
    NaN/Infinity and out-of-range floats (refused), integers outside the 64-bit range (refused),
    depth up to _TYPED_DEPTH, object members, array items, key and string lengths. Floats are
    read to the same double as float() (correctly rounded; tested against it). Around it:
    * U+0000 can only come from the escape \\u0000 (a raw control character is refused), and an
      escaped colon (\\u003a) would break the colon count below: a body holding either text is
      declined (one search for both).
    * The total of values: every member of a container owns two bytes of the text no other
      member owns, the first of its value and the comma before it (a container's first member:
      the container's closing bracket), so a body of at most 2 * MAX_VALUES bytes holds at most
      MAX_VALUES; a longer one is bounded by its commas, brackets and braces (every member but a
      container's first follows a comma), counted with its colons in one pass.
    * Duplicate keys are found by counting colons (`_no_key_dropped`).
    """
    if not isinstance(raw, bytes) or _ESCAPED_NUL_OR_COLON.search(raw):
        return _SLOW
    if len(raw) > 2 * MAX_VALUES:
        marks = raw.translate(None, _ALL_BUT_MARKS)
        colons = marks.count(b":")
        if len(marks) - colons > MAX_VALUES:
            return _SLOW
    else:
        colons = raw.count(b":")
    try:
        value = _CHECKED.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _SLOW
    return value if _no_key_dropped(colons, value) else _SLOW


_ESCAPED_NUL_OR_COLON = re.compile(rb"\\u00(?:00|3)")
_ALL_BUT_MARKS = bytes(set(range(256)) - set(b",[{:"))  # deleted, leaving commas ... colons


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


def check_limits(value: Any, *, scan_strings: bool = True, long_strings: bool = True) -> None:
    """BadRequest naming the JSON path of the first breach of the limits above.

    One walk, level by level with no path bookkeeping (a hook call of 1,000 resources holds
    ~16,000 containers and ~37,000 values: docs/performance.md); only when it finds a breach is
    the path of the offending container looked up. Key lengths are checked once per distinct key
    (the parser shares equal keys). `scan_strings` also looks inside every string and key for
    U+0000 and lone surrogates, `long_strings` measures every string: callers skip them when the
    raw text cannot hold such a string.
    """
    breach = _first_breach(value, scan_strings, long_strings)
    if breach is None:
        return
    container, key, what = breach
    parts = _path_to(value, container) if container is not None else []
    if key is not None:
        parts.append(key)
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[:MAX_DEPTH])
    path = path if len(path) <= 300 else path[:297] + "..."
    raise BadRequest(f"the body is out of bounds: {path} {what}", [Problem(path, what)])


_Breach = tuple[Any, Any, str]  # (container or None for the body itself, key in it, what)


def _first_breach(value: Any, scan_strings: bool, long_strings: bool) -> _Breach | None:
    kind = type(value)
    if kind is not dict and kind is not list:
        return _string_breach(None, None, value, scan_strings, long_strings)
    level, depth, total = [value], 0, 0
    keys: set[str] = set()
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return level[0], None, f"nests deeper than {MAX_DEPTH} levels"
        below: list[Any] = []
        add = below.append
        for node in level:
            size = len(node)
            total += size
            if type(node) is dict:
                if size > MAX_OBJECT_MEMBERS:
                    return node, None, f"has {size} members (limit {MAX_OBJECT_MEMBERS})"
                keys.update(node)
                items = node.values()
            elif size > MAX_ARRAY_ITEMS:
                return node, None, f"has {size} items (limit {MAX_ARRAY_ITEMS})"
            else:
                items = node
            for item in items:
                kind = type(item)
                if kind is dict or kind is list:
                    add(item)
                elif kind is str and (scan_strings or long_strings):
                    if found := _string_breach(node, item, item, scan_strings, long_strings):
                        return found
            if total > MAX_VALUES:
                return node, None, f"makes the body hold over {MAX_VALUES} values"
        level = below
    for key in keys:
        if type(key) is str and len(key) > MAX_KEY_CHARS:
            return _holder(value, key), key[:40], f"is a key of {len(key)} characters"
        if scan_strings and _ODD_CHAR.search(key):
            return _holder(value, key), key[:40], "is a key holding U+0000 or a lone surrogate"
    return None


def _string_breach(
    container: Any, item: Any, text: Any, scan_strings: bool, long_strings: bool
) -> _Breach | None:
    """A breach by one string value; `item` is found again in `container` for its key."""
    if type(text) is not str:
        return None
    what = None
    if long_strings and len(text) > MAX_STRING_CHARS:
        what = f"is a string of {len(text)} characters"
    elif scan_strings and _ODD_CHAR.search(text):
        what = "holds U+0000 or a lone surrogate (broken UTF-16)"
    if what is None:
        return None
    if container is None:
        return None, None, what
    pairs = container.items() if type(container) is dict else enumerate(container)
    return container, next(k for k, v in pairs if v is item), what


def _holder(root: Any, key: str) -> Any:
    """The first object (breadth first) that has `key`: where a bad key is reported."""
    level = [root]
    while level:
        for node in level:
            if type(node) is dict and key in node:
                return node
        level = [
            c
            for n in level
            for c in (n.values() if type(n) is dict else n)
            if type(c) in (dict, list)
        ]
    return root


def _path_to(root: Any, target: Any) -> list[Any]:
    """Keys and indexes from the body to `target` (found by identity; only after a breach)."""
    stack: list[tuple[Any, list[Any]]] = [(root, [])]
    while stack:
        node, parts = stack.pop()
        if node is target:
            return parts
        if len(parts) >= MAX_DEPTH:
            continue
        pairs = node.items() if type(node) is dict else enumerate(node)
        for key, child in pairs:
            if type(child) is dict or type(child) is list:
                stack.append((child, [*parts, key]))
    return []


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
    except orjson.JSONDecodeError:
        return _SLOW
    return value if _no_key_dropped(raw.count(b":"), value) else _SLOW


def _no_key_dropped(colons: int, value: Any) -> bool:
    """True when the parser that read a text holding `colons` colons into `value` kept every key
    (no key repeated).

    Both parsers keep the last of repeated keys silently. The raw text has one colon per key plus
    the literal ones inside strings, the re-serialisation one per kept key plus the ones inside
    kept strings, so the counts differ exactly when a key was dropped. Callers decline bodies
    with an escaped colon (\\u003a), which would break the count.
    """
    try:
        again = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return colons == again.count(b":")


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
