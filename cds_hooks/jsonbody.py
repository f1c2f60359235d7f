"""A request body as JSON, within limits: one parser entry, one implementation of the limits.

Every JSON body the service reads (hook calls, feedback, the preview) goes through `parse_json`.
Client errors answer a 400 saying what is wrong (with the JSON path of a limit breach): not
UTF-8 (a leading BOM is tolerated), not JSON, NaN or Infinity, numbers of absurd length,
duplicate keys, U+0000 or a lone surrogate in a string, and the depth, length and count limits
below. The byte size itself is MAX_BODY_BYTES (413) in the app.
"""

from __future__ import annotations

import json
import math
import re
from itertools import chain, compress
from typing import Any

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
    parsed = _fast_parse(raw)
    if parsed is _SLOW:
        parsed = _slow_parse(raw)
    raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")
    scan_strings = _ODD_ESCAPE.search(raw_bytes) is not None
    long_strings = len(raw_bytes) > MAX_STRING_CHARS  # a string has at most that many chars
    if scan_strings or len(raw_bytes) < C_WALK_BYTES or not _clean(parsed, long_strings):
        check_limits(parsed, scan_strings=scan_strings, long_strings=long_strings)
    return parsed


# From this size on `_clean` (loops in C) replaces `_first_breach` (a Python loop over every
# value) for bodies within the limits. Measured in the app (whole calls, alternating, load ~1.8):
# 2.7 MB 77 -> 72 ms, 9 MB 276 -> 260 ms; at 0.9 MB and below the walk is as fast or faster
# (alone, on a body parsed long before, `_clean` looked 2.5x faster: a cold-cache artefact).
C_WALK_BYTES = 1_000_000
_CONTAINER = frozenset((dict, list)).__contains__
_DICT = frozenset((dict,)).__contains__
_LIST = frozenset((list,)).__contains__
_STR = frozenset((str,)).__contains__


def _clean(value: Any, long_strings: bool = True) -> bool:
    """True when `value` breaches none of the depth, count, key-length and (`long_strings`)
    string-length limits.

    The same limits as `_first_breach` (which runs, and words the breach, whenever this says
    False), checked level by level with the loops in C: each level's containers are split by
    type with `itertools.compress` and measured with `map(len, ...)`; the next level is their
    values (`chain` over `dict.values` and the lists) filtered to dicts and lists. A level is
    taken in slices of _SLICE containers, so that the several passes over a slice find it in
    the CPU cache (whole levels of a 10,000-resource body did not fit: twice the time).
    U+0000 and lone surrogates are not looked for: callers use `check_limits` when the raw text
    may hold one.
    """
    if type(value) is not dict and type(value) is not list:
        return False
    level: list[Any] = [value]
    depth = total = 0
    keys: set[str] = set()
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return False
        below: list[Any] = []
        for start in range(0, len(level), _SLICE):
            part = level[start : start + _SLICE]
            kinds = list(map(type, part))
            dicts = list(compress(part, map(_DICT, kinds)))
            lists = list(compress(part, map(_LIST, kinds))) if len(dicts) < len(part) else []
            if dicts and max(map(len, dicts)) > MAX_OBJECT_MEMBERS:
                return False
            if lists and max(map(len, lists)) > MAX_ARRAY_ITEMS:
                return False
            total += sum(map(len, part))
            if total > MAX_VALUES:
                return False
            keys.update(*dicts)
            found = list(chain(chain.from_iterable(map(dict.values, dicts)), *lists))
            kinds = list(map(type, found))
            if long_strings and max(map(len, compress(found, map(_STR, kinds))), default=0) > (
                MAX_STRING_CHARS
            ):
                return False
            below += compress(found, map(_CONTAINER, kinds))
        level = below
    return max(map(len, keys), default=0) <= MAX_KEY_CHARS  # JSON keys are strings


_SLICE = 256


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
