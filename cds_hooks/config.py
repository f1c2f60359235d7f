"""Setting primitives: declare a field once, parse it strictly, refuse a bad value in one line.

A feature declares its settings next to its code as a frozen dataclass whose fields come from
`setting(...)`; `cds_hooks.settings` composes the sections and builds them once per app.

Why strict: a setting that reads "off" must be off. Each type has one parser, and any value it does
not recognise stops the start with `CDS_NAME: got 'value'; expected ...` rather than being guessed
(`CDS_PREVIEW=no` once switched the unauthenticated preview on because a non-empty string was
truthy). Values arrive as text from the environment and as text or Python values from a mapping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "CDS_"


class SettingsError(ValueError):
    """A setting that cannot be used; str() is one line naming the variable, value and remedy."""


@dataclass(frozen=True)
class Parser:
    """Turns a raw value into the field's type, or raises ValueError; `expected` is for people."""

    convert: Callable[[Any], Any]
    expected: str


def setting(default: Any, parse: Parser, help: str, *, secret: bool = False) -> Any:
    """A settings field: its default, its parser and the help text the README table shows."""
    return dataclasses.field(
        default=default,
        repr=not secret,  # a secret never reaches a log line through repr(settings)
        metadata={"parse": parse, "help": help, "secret": secret},
    )


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def boolean() -> Parser:
    return Parser(_to_bool, "true/false, 1/0, yes/no or on/off")


def _ranged(kind: type, low: float | None, high: float | None) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError  # True is an int to Python, not a number to a person
        number = kind(value.strip() if isinstance(value, str) else value)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError
        return number

    return convert


def _range_text(noun: str, low: float | None, high: float | None, above: bool) -> str:
    if low is not None and high is not None:
        return (
            f"{noun} above {low:g} and at most {high:g}"
            if above
            else f"{noun} from {low:g} to {high:g}"
        )
    if low is not None:
        return f"{noun} {'above' if above else 'of at least'} {low:g}"
    if high is not None:
        return f"{noun} of at most {high:g}"
    return noun


def integer(min: int | None = None, max: int | None = None) -> Parser:
    return Parser(_ranged(int, min, max), _range_text("a whole number", min, max, False))


def number(min: float | None = None, max: float | None = None, *, above: bool = False) -> Parser:
    """A finite float; `above=True` makes `min` exclusive (a deadline of 0 is refused)."""
    convert = _ranged(float, min, max)
    if above and min is not None:
        inner = convert

        def convert(value: Any) -> Any:
            result = inner(value)
            if result <= min:
                raise ValueError
            return result

    return Parser(convert, _range_text("a number", min, max, above))


def text(choices: tuple[str, ...] | None = None, *, upper: bool = False) -> Parser:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError
        value = value.strip()
        if choices is None:
            return value
        folded = value.upper() if upper else value.lower()
        if folded not in choices:
            raise ValueError
        return folded

    expected = "text" if choices is None else "one of " + ", ".join(choices)
    return Parser(convert, expected)


def url(schemes: tuple[str, ...] = ("https", "http")) -> Parser:
    """An absolute URL with one of `schemes`, or empty (unset)."""

    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError
        value = value.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme.lower() not in schemes or not parts.hostname:
            raise ValueError
        return value

    return Parser(convert, f"an absolute {' or '.join(schemes)} URL, or empty")


def path() -> Parser:
    """A filesystem path as text (empty: unset); whether it must exist is the feature's call."""

    def convert(value: Any) -> str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise ValueError
        return value.strip()

    return Parser(convert, "a file or folder path")


def items() -> Parser:
    """A comma-separated list (or a list) of non-empty strings, as a tuple."""

    def convert(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError
        return tuple(v.strip() for v in value if v.strip())

    return Parser(convert, "a comma-separated list")


def raw(expected: str) -> Parser:
    """Text or an already-parsed mapping, checked later by its feature (e.g. AUTH_ISSUERS)."""

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, Mapping):
            return value
        raise ValueError

    return Parser(convert, expected)


def env_name(field: dataclasses.Field[Any]) -> str:
    return ENV_PREFIX + field.name.upper()


def build_section(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of section `cls` from `values` keyed by upper-case field name (no prefix)."""
    kwargs = {}
    for field in dataclasses.fields(cls):
        key = field.name.upper()
        if key not in values:
            continue
        parser: Parser = field.metadata["parse"]
        value = values[key]
        try:
            kwargs[field.name] = parser.convert(value)
        except (ValueError, TypeError, OverflowError):
            shown = "<hidden>" if field.metadata.get("secret") else _short(value)
            raise SettingsError(
                f"{env_name(field)}: got {shown}; expected {parser.expected}"
            ) from None
    return cls(**kwargs)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
