"""Settings of client JWT authentication (docs/security.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.config import integer, items, number, raw, setting

DEFAULT_ALGORITHMS = ("ES384", "RS384")


@dataclass(frozen=True)
class AuthSettings:
    auth_issuers: str | Mapping[str, Any] = setting(
        "",
        raw("a JSON object keyed by issuer URI, or the path of a JSON file holding one"),
        "Trusted EHRs for client JWT authentication (docs/security.md): "
        "`{iss: {jku, jwks, jwks_file, jwks_url, tenants}}` as JSON or a file path. "
        "Empty: authentication off, and `cds-hooks serve` binds only loopback.",
    )
    auth_algorithms: tuple[str, ...] = setting(
        DEFAULT_ALGORITHMS,
        items(),
        "JWT algorithms accepted; asymmetric only (none and HS* are refused at start).",
    )
    auth_clock_skew_seconds: float = setting(
        30, number(min=0, max=600), "Clock skew allowed on exp, iat and nbf."
    )
    auth_max_token_age_seconds: float = setting(
        300,
        number(min=1, max=3600),
        "A token whose iat is older than this is refused, whatever its exp says.",
    )
    auth_jwks_timeout_seconds: float = setting(
        2.0, number(min=0, max=60, above=True), "Timeout of one JWKS fetch."
    )
    auth_jwks_cache_seconds: int = setting(
        3600, integer(min=0), "How long a fetched JWK Set is trusted before it is fetched again."
    )
    auth_jwks_min_refresh_seconds: int = setting(
        30, integer(min=0), "For an unknown kid, refetch a JWKS URL at most this often."
    )
