"""JSON Schemas for what crosses the wire, compiled once (CDS Hooks 2.0 has no normative schema).

Two validators read the same schema files: jsonschema-rs (compiled in Rust) answers "is this
valid?" for every call, and only when it says no does the pure-Python `jsonschema` walk the body
again to list each problem in words a person understands: which field, what was expected (the
schema's `description` of that field), and what came instead, with the JSON path beside it.
"""

from __future__ import annotations

import ast
import json
from contextlib import suppress
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from cds_hooks.errors import Problem

# Enough to tell a client what is wrong without turning a hostile body into a huge answer.
MAX_PROBLEMS = 20
_SHOWN_CHARS = 60  # of an offending value quoted back in a message


@cache
def _contents() -> dict[str, Any]:
    return {
        item.name: json.loads(item.read_text(encoding="utf-8"))
        for item in resources.files(__package__).iterdir()
        if item.name.endswith(".json")
    }


@cache
def _registry() -> Registry:
    registry: Registry = Registry()
    for name, contents in _contents().items():
        registry = registry.with_resource(name, Resource.from_contents(contents))
    return registry


@cache
def validator(name: str) -> Draft202012Validator:
    """The pure-Python validator for `schemas/<name>.json` (it words the problems)."""
    schema = _contents()[f"{name}.json"]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


@cache
def _compiled(name: str) -> Any:
    """The compiled validator for `schemas/<name>.json` (it decides, fast)."""
    # The schemas name each other by relative `$id`s; the compiled side needs an absolute base.
    base = "https://cds-hooks.invalid/schemas/"
    registry = jsonschema_rs.Registry([(base + n, c) for n, c in _contents().items()])
    return jsonschema_rs.validator_for(
        _contents()[f"{name}.json"], registry=registry, base_uri=f"{base}{name}.json"
    )


def is_valid(name: str, instance: Any) -> bool:
    return bool(_compiled(name).is_valid(instance))


def problems(name: str, instance: Any) -> list[Problem]:
    """Every problem of `instance` against the schema, each with its JSON path, worst first."""
    if is_valid(name, instance):
        return []
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: (len(e.path), e.json_path))
    found = [_problem(e, name) for e in errors[:MAX_PROBLEMS]]
    return found or [Problem("$", "the body does not have the shape of this request")]


def summary(found: list[Problem]) -> str:
    """One sentence naming the first problem (and how many more there are)."""
    first = found[0]
    more = len(found) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{first.message}{tail}"


# ---- wording ----------------------------------------------------------------------------------

_KINDS = {
    "object": "an object",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _field(path: str) -> str:
    """`$.context.patientId` as a person says it: `context.patientId` (`the body` for `$`)."""
    return path.removeprefix("$.") if path != "$" else "the body"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "empty text" if value == "" else "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _shown(value: Any) -> str:
    """The offending value, quoted and cut short (a hostile body could hold anything)."""
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "..."
        return f'"{shown}" ({len(value)} characters)' if len(value) > _SHOWN_CHARS else f'"{shown}"'
    if isinstance(value, dict | list):
        return _kind(value)
    return json.dumps(value)


def _describe(schema: Any, root: str, depth: int = 0) -> str | None:
    """The `description` of a subschema, following `$ref` and `allOf` to find one."""
    if not isinstance(schema, dict) or depth > 5:
        return None
    if isinstance(schema.get("description"), str):
        return schema["description"]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _describe(_lookup(ref, root), root, depth + 1)
    for part in schema.get("allOf", []):
        if found := _describe(part, root, depth + 1):
            return found
    return None


def _lookup(ref: str, root: str) -> Any:
    """The schema a `$ref` points to. jsonschema's error does not say which file a subschema
    came from, so a local `#/$defs/...` is tried in the root schema first, then in the others."""
    for name in [f"{root}.json", *_contents()]:
        with suppress(Exception):  # not in this file (an unresolvable ref fails the schema tests)
            return _registry().resolver(base_uri=name).lookup(ref).contents
    return None


def _property_schema(schema: Any, name: str, root: str, depth: int = 0) -> Any:
    """The subschema a schema gives its property `name` (through `$ref` and `allOf`)."""
    if not isinstance(schema, dict) or depth > 5:
        return None
    if name in schema.get("properties", {}):
        return schema["properties"][name]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _property_schema(_lookup(ref, root), name, root, depth + 1)
    for part in schema.get("allOf", []):
        if (found := _property_schema(part, name, root, depth + 1)) is not None:
            return found
    return None


def _problem(error: Any, root: str) -> Problem:
    path = error.json_path
    field = _field(path)
    value = error.instance
    keyword = error.validator
    expected = _describe(error.schema, root)
    want = f"expected {expected}" if expected else ""
    limit = error.validator_value
    if keyword == "required":
        name = _quoted_name(error.message)
        path = f"{path}.{name}"
        about = _describe(_property_schema(error.schema, name, root), root)
        return Problem(path, f"{_field(path)} is missing" + (f": expected {about}" * bool(about)))
    if keyword == "dependentRequired":
        needed = next((k for k in limit if k in value and not set(limit[k]) <= set(value)), "")
        missing = ", ".join(d for d in limit.get(needed, []) if d not in value)
        return Problem(f"{path}.{missing}", f"{needed} is sent without {missing}: send both")
    if keyword == "type":
        types = [limit] if isinstance(limit, str) else list(limit)
        kinds = " or ".join(_KINDS.get(t, t) for t in types)
        return Problem(path, f"{field}: {want or 'expected ' + kinds}; got {_kind(value)}")
    if keyword in ("const", "enum"):
        options = [limit] if keyword == "const" else list(limit)
        listed = " or ".join(json.dumps(o) for o in options)
        return Problem(path, f"{field}: expected {listed}; got {_shown(value)}")
    if keyword == "minLength":
        return Problem(path, f"{field} is empty" + (f": {want}" if want else ""))
    if keyword == "maxLength":
        return Problem(path, f"{field} is {len(value)} characters long: at most {limit} accepted")
    if keyword == "minItems":
        return Problem(path, f"{field} is an empty list" + (f": {want}" if want else ""))
    if keyword == "maxItems":
        return Problem(path, f"{field} has {len(value)} items: at most {limit} accepted")
    if keyword == "additionalProperties":
        return Problem(path, f"{field} has members this answer may not carry")
    if keyword == "anyOf" and all("required" in part for part in limit):
        names = " or ".join(name for part in limit for name in part["required"])
        return Problem(path, f"{field} needs {names}")
    if keyword in ("pattern", "format", "minimum", "maximum"):
        return Problem(path, f"{field}: {want or 'an unexpected value'}; got {_shown(value)}")
    return Problem(path, f"{field}: {want or 'not acceptable here'}; got {_shown(value)}")


def _quoted_name(message: str) -> str:
    """The property named by jsonschema's `'x' is a required property`."""
    quoted = message.partition(" is a required property")[0]
    try:
        name = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        return quoted
    return str(name)
