"""Subcommands of `cds-hooks`, one module each, and what they share: mistakes said in one line.

A command raises `UsageError` for a person's mistake (a missing file, a bad date, a bad setting):
`cli.main` prints it as one line, `cds-hooks <command>: <problem>; <fix>`, and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

EXAMPLE_TIME = "2026-11-21T12:00:00Z"


class UsageError(Exception):
    """A person's mistake; str() is one line naming the problem and how to fix it."""


def read_input(name: str, what: str = "a hook request (JSON)") -> bytes:
    """The bytes of the file `name`, or of standard input for `-`; UsageError when it cannot be."""
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise UsageError(
            f"{name}: no such file; give the path of {what}, or - to read standard input"
        ) from error
    except IsADirectoryError as error:
        inside = path / "request.json"
        hint = f"did you mean {inside}?" if inside.is_file() else f"give {what} file inside it"
        raise UsageError(f"{name} is a folder, not a file; {hint}") from error
    except PermissionError as error:
        raise UsageError(f"{name}: permission denied; make it readable (chmod u+r)") from error
    except OSError as error:
        raise UsageError(f"{name}: cannot read it ({error.strerror}); check the path") from error


def iso_datetime(text: str) -> str:
    """argparse type: an ISO 8601 date or date-time, kept as given."""
    from cds_hooks.fhir.read import parse_datetime

    if parse_datetime(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time; write e.g. {EXAMPLE_TIME}"
        )
    return text


def positive(kind: type) -> Any:
    """argparse type: a number (int or float) of at least 1, or above 0 for floats."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (value < 1 if kind is int else value <= 0):
            least = "a whole number of at least 1" if kind is int else "a number above 0"
            raise argparse.ArgumentTypeError(f"{text!r} is not {least}")
        return value

    parse.__name__ = kind.__name__
    return parse


def setting_problem(error: Exception) -> UsageError:
    """A configuration error raised while building the app, as a one-line mistake with its fix."""
    text = " ".join(str(error).split()) or type(error).__name__
    return UsageError(f"{text} (fix or unset that CDS_* variable; README: Configuration)")


def build_app(config: Mapping[str, Any] | None = None) -> Flask:
    """`create_app(config)`; a bad setting (CDS_* variable or file it names) is a UsageError.

    create_app raises ValueError (SettingsError is one) only for its configuration: a command's
    own input never reaches it.
    """
    from cds_hooks.app import create_app

    try:
        return create_app(config)
    except ValueError as error:
        raise setting_problem(error) from error
