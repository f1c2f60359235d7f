"""Settings of the FHIR side of a hook call: the time budget and the limits of what is fetched."""

from __future__ import annotations

from dataclasses import dataclass

from cds_hooks.config import boolean, integer, items, number, path, setting, url


@dataclass(frozen=True)
class FhirSettings:
    deadline_seconds: float = setting(
        2.5,
        number(min=0, max=60, above=True),
        "Whole budget for fetching missing data from the EHR's FHIR server, per hook call.",
    )
    fhir_timeout_seconds: float = setting(
        2.0,
        number(min=0, max=60, above=True),
        "Timeout of one FHIR request (connect and each read), within the deadline.",
    )
    fhir_max_pages: int = setting(
        20, integer(min=1, max=1000), "Most pages followed for one FHIR search."
    )
    fhir_max_bytes: int = setting(
        20 * 1024 * 1024, integer(min=1024), "Largest FHIR response page accepted, in bytes."
    )
    fhir_workers: int = setting(
        36,
        integer(min=1, max=256),
        "Threads fetching FHIR searches in parallel, per process, shared by its request threads "
        "(a call runs up to 9 searches at once: 9 x 4 threads per worker), and the connections "
        "kept open per FHIR server.",
    )
    allow_http_fhir: bool = setting(
        False,
        boolean(),
        "Allow a clear-text http `fhirServer` (the access token travels in clear): local test "
        "servers only; CDS Hooks 2.0 requires https.",
    )
    fhir_allow_private: bool = setting(
        False,
        boolean(),
        "Let FHIR and JWKS requests reach loopback and private addresses (RFC 1918, fc00::/7, "
        "100.64/10): local sandboxes, or a hospital's internal FHIR server together with an "
        "allowlist (issuer `fhir_servers` or `FHIR_SERVERS`). Link-local (cloud metadata) and "
        "other special addresses stay refused (docs/security.md).",
    )
    fhir_servers: tuple[str, ...] = setting(
        (),
        items(),
        "Without `AUTH_ISSUERS`: the FHIR base URLs a call's `fhirServer` may name (origin and "
        "path prefix); any other is never contacted. Empty: any public https server. With "
        "issuers, each issuer's `fhir_servers` decides instead.",
    )
    fhir_max_bytes_per_call: int = setting(
        50 * 1024 * 1024,
        integer(min=1024),
        "Most bytes read from FHIR servers for one hook call, all pages and searches together; "
        "past it the data still missing is reported unavailable.",
    )
    ca_bundle: str = setting(
        "",
        path(),
        "A PEM file of extra CA certificates (a hospital's internal CA) trusted for FHIR and "
        "JWKS requests, in addition to the public roots (certifi).",
    )
    https_proxy: str = setting(
        "",
        url(schemes=("http", "https")),
        "The proxy for FHIR and JWKS requests (`http://proxy.example:3128`); proxy environment "
        "variables are ignored on purpose.",
    )
