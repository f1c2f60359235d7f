"""The one settings object: defaults, then `CDS_*` environment variables, then a mapping.

Built once by `create_app` (and by the CLI commands that need settings without an app), frozen,
typed, and read as `settings.fhir.deadline_seconds`. Each feature declares its own section next to
its code; this module only composes them. The environment variable of a field is `CDS_` plus its
name upper-cased (`CDS_DEADLINE_SECONDS`), and the mapping key is the same without `CDS_`.

An unknown key in the mapping is an error: it can only be a typo in code or a test. An unknown
`CDS_*` environment variable is logged as a warning, once per name and process, naming the
closest setting (`CDS_AUTH_ISSUER`: did you mean CDS_AUTH_ISSUERS?), and otherwise ignored. Not
refused, because the prefix is not ours alone: the environment of a host or container is shared
with launchers and tools that read their own `CDS_*` names (compose's CDS_PORT, a site's other
clinical-decision-support software), and a service that will not start over a name it does not
own is an outage. The names this project reads on purpose outside this object (OTHER_NAMES,
OTHER_PREFIXES) are not warned about. A typo that matters for safety is caught elsewhere too:
without issuers `cds-hooks serve` says "client authentication OFF" and keeps to loopback.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
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

log = logging.getLogger(__name__)

# `CDS_*` names read on purpose outside the settings object: not typos (see the module doc).
OTHER_NAMES = frozenset(
    {
        "CDS_BIND",  # gunicorn_conf.py: where `gunicorn -c cds_hooks/gunicorn_conf.py` listens
        "CDS_FHIR_TOKEN",  # commands/call.py, load_fixtures.py: the FHIR server's bearer token
        "CDS_PORT",  # docker-compose.yml: the published port
        "CDS_PG_PORT",  # docker-compose.yml, postgres profile
        "CDS_PG_PASSWORD",  # docker-compose.yml, postgres profile
    }
)
OTHER_PREFIXES = ("CDS_TEST_",)  # the test suite's (CDS_TEST_FHIR_URL, CDS_TEST_REQUIRE_FHIR...)
_warned: set[str] = set()  # unknown names already warned about in this process


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
    warn_unknown(environ)
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


def warn_unknown(environ: Mapping[str, str]) -> list[str]:
    """Log a warning for each `CDS_*` name that is no setting, once per process; return them."""
    known = sorted(env_name(field) for _section, field in fields())
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in known
        and name not in OTHER_NAMES
        and not name.startswith(OTHER_PREFIXES)
    )
    for name in unknown:
        if name in _warned:
            continue
        _warned.add(name)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "the README configuration table lists them"
        log.warning("%s is not a setting and is ignored; %s", name, hint)
    return unknown


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
