"""The one settings object: defaults, then `CDS_*` environment variables, then a mapping.

Built once by `create_app` (and by the CLI commands that need settings without an app), frozen,
typed, and read as `settings.fhir.deadline_seconds`. Each feature declares its own section next to
its code; this module only composes them. The environment variable of a field is `CDS_` plus its
name upper-cased (`CDS_DEADLINE_SECONDS`), and the mapping key is the same without `CDS_`.

Unknown `CDS_*` variables are ignored (the CLI reads a few of its own, such as `CDS_FHIR_TOKEN`);
an unknown key in the mapping is an error, since it can only be a typo in code or a test.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cds_hooks.auth import AuthSettings
from cds_hooks.config import (
    ENV_PREFIX,
    Parser,
    SettingsError,
    boolean,
    build_section,
    env_name,
    integer,
    setting,
    text,
    url,
)
from cds_hooks.fhir.read import parse_datetime
from cds_hooks.fhir.settings import FhirSettings
from cds_hooks.observability import ObservabilitySettings
from cds_hooks.preview import PreviewSettings
from cds_hooks.store import StoreSettings

__all__ = ["Settings", "SettingsError", "fields", "load", "markdown_table"]


def _instant() -> Parser:
    def convert(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if not isinstance(value, str):
            raise ValueError
        if not value.strip():
            return None
        parsed = parse_datetime(value.strip())
        if parsed is None:
            raise ValueError
        return parsed

    return Parser(convert, "an ISO 8601 date-time such as 2026-03-01T09:00:00Z, or empty")


@dataclass(frozen=True)
class AppSettings:
    max_body_bytes: int = setting(
        10 * 1024 * 1024,
        integer(min=256),
        "Largest request body accepted, in bytes; a patient's prefetch rarely passes a few MB.",
    )
    cors_origins: str = setting(
        "*",
        text(),
        "Browser origins allowed by CORS: `*`, or a comma-separated list of origins.",
    )
    # One clock for everything: stamping rows and judging their age must agree, or a demo dated
    # in the past would see its own audit, feedback and overrides pruned as old at once.
    # (RUF009: setting() returns a dataclasses.field, as for every field here.)
    now: datetime | None = setting(  # noqa: RUF009
        None,
        _instant(),
        "Fixed clock for reproducible tests and demos (ISO 8601); empty means the real time. "
        "Everything runs on it: the rules, audit and feedback times, the suppression windows and "
        "retention pruning (what the service writes is judged old by the clock that dated it). "
        "Never set it in production.",
    )
    public_base_url: str = setting(
        "",
        url(),
        "The URL the EHR calls the service at (scheme://host[:port][/prefix]); each client "
        "JWT's `aud` must be this plus the path called. Required with `AUTH_ISSUERS`.",
    )
    allow_unauthenticated: bool = setting(
        False,
        boolean(),
        "Let `cds-hooks serve` listen on a non-loopback address without client authentication.",
    )


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, by feature."""

    app: AppSettings = dataclasses.field(default_factory=AppSettings)
    fhir: FhirSettings = dataclasses.field(default_factory=FhirSettings)
    store: StoreSettings = dataclasses.field(default_factory=StoreSettings)
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    observability: ObservabilitySettings = dataclasses.field(default_factory=ObservabilitySettings)
    preview: PreviewSettings = dataclasses.field(default_factory=PreviewSettings)


# Objects rather than settings that create_app also takes in its mapping.
INJECTED = frozenset({"KNOWLEDGE"})


def sections() -> Iterator[tuple[str, type]]:
    for section in dataclasses.fields(Settings):
        yield section.name, section.default_factory  # type: ignore[misc]


def fields() -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """(section name, field) for every setting, in declaration order."""
    for name, cls in sections():
        for field in dataclasses.fields(cls):
            yield name, field


def load(
    mapping: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from defaults, then `CDS_*` variables of `environ`, then `mapping`.

    Raises SettingsError (one line) for a value its parser refuses or an unknown mapping key.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {
        key[len(ENV_PREFIX) :]: value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX)
    }
    given = {k: v for k, v in (mapping or {}).items() if k not in INJECTED}
    known = {field.name.upper() for _section, field in fields()}
    if unknown := sorted(set(given) - known):
        raise SettingsError(
            f"unknown setting {', '.join(unknown)}; the README configuration table lists them all"
        )
    values.update(given)
    return Settings(**{name: build_section(cls, values) for name, cls in sections()})


def markdown_table() -> str:
    """The README configuration table, generated so it cannot drift from the declarations."""
    lines = ["| Variable | Default | What it does |", "| --- | --- | --- |"]
    for _section, field in fields():
        default = _shown(field.default)
        help_text = field.metadata["help"].replace("|", "\\|")
        expected = field.metadata["parse"].expected
        lines.append(f"| `{env_name(field)}` | {default} | {help_text} ({expected}) |")
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value in ("", (), None):
        return "(empty)"
    if isinstance(value, tuple):
        value = ",".join(value)
    return f"`{value}`"
