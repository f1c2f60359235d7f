"""Trusted issuers (AUTH_ISSUERS): their keys, tenants and FHIR servers, checked at start.

A mistake here (an unknown field, an http URL, a symmetric or private key) stops the start:
a typo must not switch a check off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_hooks import outbound

log = logging.getLogger("cds_hooks.auth")  # one logger for the package (docs/security.md)


# Asymmetric algorithms only: CDS Hooks 2.0 forbids `none` and every symmetric (HMAC) algorithm.
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_ISSUER_FIELDS = frozenset({"jwks", "jwks_file", "jwks_url", "jku", "tenants", "fhir_servers"})
MAX_TOKEN_BYTES = 16 * 1024  # a CDS Hooks JWT is well under 2 KB; bigger is an attack
MAX_JWKS_BYTES = 256 * 1024
MAX_CLAIM_CHARS = 2048  # iss, jti, tenant, kid, jku: longer values are refused, not stored
MIN_RSA_BITS = 2048


class AuthError(Exception):
    """Why a token was refused: for the log only, never for the client."""


@dataclass(frozen=True)
class Issuer:
    """One trusted EHR (a CDS Client): where its keys are, and which tenants it may name."""

    iss: str
    jwks: dict[str, dict] = field(default_factory=dict)  # kid -> JWK, pre-registered
    jwks_url: str | None = None  # pre-registered JWKS URL, fetched and cached like a jku
    jku: frozenset[str] = frozenset()  # allowlist of `jku` header values
    tenants: frozenset[str] | None = None  # None: `tenant` not checked
    # FHIR base URLs this issuer's calls may name as fhirServer; any other is never contacted.
    fhir_servers: tuple[str, ...] = ()


def load_issuers(raw: Any) -> dict[str, Issuer]:
    """AUTH_ISSUERS as {iss: Issuer}: a mapping, JSON text, or the path of a JSON file.

    The JSON is an object keyed by issuer URI: `{"https://ehr.example.org": {"jku": [...],
    "jwks": {...}, "jwks_file": "keys.json", "jwks_url": "https://...", "tenants": [...]}}`.
    A `jwks_file` is relative to the issuers file. Any mistake raises ValueError at start.
    """
    raw = raw or {}
    base = Path.cwd()
    if isinstance(raw, str):
        text = raw.strip()
        if not text.startswith("{"):
            path = Path(text).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as error:
                raise ValueError(f"AUTH_ISSUERS: cannot read {path}: {error.strerror}") from None
            base = path.parent
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ValueError(f"AUTH_ISSUERS is not valid JSON: {error}") from None
    if not isinstance(raw, Mapping):
        raise ValueError("AUTH_ISSUERS must be a JSON object keyed by issuer URI")
    return {str(iss): _issuer(str(iss), entry, base) for iss, entry in raw.items()}


def _issuer(iss: str, entry: Any, base: Path) -> Issuer:
    where = f"AUTH_ISSUERS[{iss!r}]"
    if not iss or not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be an object")
    unknown = set(entry) - _ISSUER_FIELDS
    if unknown:  # a typo ("tenant" for "tenants") must not silently switch a check off
        raise ValueError(
            f"{where}: unknown field(s) {sorted(unknown)}; use {sorted(_ISSUER_FIELDS)}"
        )
    jwks: dict[str, dict] = {}
    if "jwks" in entry:
        jwks.update(_static_keys(entry["jwks"], where))
    if "jwks_file" in entry:
        path = base / str(entry["jwks_file"])
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{where}: cannot read jwks_file {path}: {error}") from None
        jwks.update(_static_keys(document, where))
    jwks_url = entry.get("jwks_url")
    if jwks_url is not None:
        _require_https(jwks_url, f"{where}.jwks_url")
    jku = entry.get("jku") or []
    if isinstance(jku, str):
        jku = [jku]
    if not isinstance(jku, list):
        raise ValueError(f"{where}.jku must be a list of URLs")
    for url in jku:
        _require_https(url, f"{where}.jku")
    tenants = entry.get("tenants")
    if tenants is not None and (
        not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants)
    ):
        raise ValueError(f"{where}.tenants must be a list of strings")
    fhir_servers = entry.get("fhir_servers") or []
    if not isinstance(fhir_servers, list):
        raise ValueError(f"{where}.fhir_servers must be a list of https URLs")
    for url in fhir_servers:
        _require_https(url, f"{where}.fhir_servers")
    if not jwks and not jwks_url and not jku:
        raise ValueError(f"{where} needs keys: jwks, jwks_file, jwks_url or a jku allowlist")
    return Issuer(
        iss=iss,
        jwks=jwks,
        jwks_url=jwks_url,
        jku=frozenset(jku),
        tenants=frozenset(tenants) if tenants is not None else None,
        fhir_servers=tuple(fhir_servers),
    )


def _require_https(url: Any, where: str) -> None:
    try:  # read as the HTTP library will connect to it (no user info, backslash, ...)
        outbound.parse(url, schemes=("https",))
    except outbound.UnsafeURL as error:
        message = f"{where}: {str(url)[:200]!r} is not a usable https URL: {error}"
        raise ValueError(message) from None


def _static_keys(document: Any, where: str) -> dict[str, dict]:
    keys, refused = usable_keys(document)
    if refused:
        raise ValueError(f"{where}: unusable keys in the JWKS: {'; '.join(refused)}")
    if not keys:
        raise ValueError(f"{where}: the JWKS has no keys")
    return keys


def usable_keys(document: Any) -> tuple[dict[str, dict], list[str]]:
    """Public signing keys of a JWK Set by `kid`, and why any other key was left out."""
    keys: dict[str, dict] = {}
    refused: list[str] = []
    items = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(items, list):
        return {}, ["not a JWK Set (no 'keys' array)"]
    for item in items:
        if not isinstance(item, dict):
            refused.append("a key is not an object")
            continue
        kid = item.get("kid")
        if not isinstance(kid, str) or not kid:
            refused.append("a key has no kid")
        elif item.get("kty") not in ("RSA", "EC", "OKP"):
            refused.append(f"{kid}: key type {item.get('kty')!r} is not an asymmetric key")
        elif "d" in item:
            refused.append(f"{kid}: is a private key; publish only the public part")
        elif item.get("use", "sig") != "sig":
            continue  # an encryption key in the same set is not ours to judge
        else:
            keys[kid] = item
    return keys, refused


def accepted_algorithms(value: tuple[str, ...]) -> tuple[str, ...]:
    algorithms = tuple(value)
    refused = [a for a in algorithms if a not in _ASYMMETRIC]
    if refused or not algorithms:
        raise ValueError(
            f"AUTH_ALGORITHMS may list only asymmetric algorithms ({', '.join(sorted(_ASYMMETRIC))}"
            f"); refused: {refused or 'an empty list'}"
        )
    return algorithms
