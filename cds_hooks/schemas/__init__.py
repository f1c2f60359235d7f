"""JSON Schemas for what crosses the wire, compiled once (CDS Hooks 2.0 has no normative schema)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from cds_hooks.errors import Problem

# Enough to tell a client what is wrong without turning a hostile body into a huge answer.
MAX_PROBLEMS = 20


@cache
def _registry() -> Registry:
    registry: Registry = Registry()
    for item in resources.files(__package__).iterdir():
        if item.name.endswith(".json"):
            contents = json.loads(item.read_text(encoding="utf-8"))
            registry = registry.with_resource(item.name, Resource.from_contents(contents))
    return registry


@cache
def validator(name: str) -> Draft202012Validator:
    """The compiled validator for `schemas/<name>.json`."""
    schema = _registry().contents(f"{name}.json")
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def problems(name: str, instance: Any) -> list[Problem]:
    """Every problem of `instance` against the schema, each with its JSON path, worst first."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: (len(e.path), e.json_path))
    return [Problem(e.json_path, _message(e)) for e in errors[:MAX_PROBLEMS]]


def _message(error: Any) -> str:
    # jsonschema repeats the whole offending instance in its message; a hostile body could be huge.
    message = str(error.message)
    return message if len(message) <= 300 else message[:297] + "..."
