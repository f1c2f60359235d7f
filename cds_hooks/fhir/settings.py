"""Settings of the FHIR side of a hook call: the time budget and the limits of what is fetched."""

from __future__ import annotations

from dataclasses import dataclass

from cds_hooks.config import boolean, integer, number, setting


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
        8, integer(min=1, max=64), "Threads fetching FHIR searches in parallel, per process."
    )
    allow_http_fhir: bool = setting(
        False,
        boolean(),
        "Allow a clear-text http `fhirServer` (the access token travels in clear): local test "
        "servers only; CDS Hooks 2.0 requires https.",
    )
