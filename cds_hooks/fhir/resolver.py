"""Per prefetch key: use what the EHR prefetched, else fetch it from `fhirServer`, else answer 412.

CDS Hooks 2.0 "Providing FHIR Resources to a CDS Service": a key that is absent was not satisfied
(the service must fetch it itself or, unable to, return 412); `null` means no data; an
OperationOutcome means the EHR's prefetch failed; a searchset may carry `next` links to follow.
Medications referenced by `medicationReference` are then read so rules can name the drug.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from cds_hooks import outbound
from cds_hooks.errors import BadRequest, FhirError, FhirFatalError, PreconditionFailed, Problem
from cds_hooks.fhir.client import FhirClient
from cds_hooks.fhir.read import (
    ID_PATTERN,
    as_dict,
    as_list,
    next_link,
    ref_of,
    reference,
    text,
)

log = logging.getLogger(__name__)

PREFETCH, FETCHED, FAILED = "prefetch", "fetched", "failed"

_TOKEN_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_USER_RE = re.compile(rf"^([A-Za-z]+)/({ID_PATTERN})$")
_MEDICATION_REF_RE = re.compile(rf"^Medication/{ID_PATTERN}$")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
# Context fields holding Bundles of draft orders (order-select/order-sign, medication-prescribe).
_DRAFT_BUNDLES = ("draftOrders", "medications")


@dataclass
class ResolvedData:
    resources: dict[str, list[dict]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "prefetch" | "fetched" | "failed"
    failures: dict[str, str] = field(default_factory=dict)  # key -> short human reason
    medications: dict[str, dict] = field(default_factory=dict)  # "Medication/<id>" -> resource


def fill_template(template: str, request: Mapping) -> str | None:
    """The template with its tokens filled (URL-encoded), or None when a token cannot be filled."""
    context = as_dict(request.get("context"))
    failed = False

    def value_of(match: re.Match[str]) -> str:
        nonlocal failed
        value = _token_value(match.group(1), context)
        if value is None:
            failed = True
            return ""
        return value

    filled = _TOKEN_RE.sub(value_of, template)
    return None if failed else filled


def _token_value(name: str, context: Mapping) -> str | None:
    user_id = context.get("userId")
    user = _USER_RE.match(user_id) if isinstance(user_id, str) else None
    if name in _USER_TOKENS:
        if user and user.group(1) == _USER_TOKENS[name]:
            return quote(user.group(2), safe="")
        return None
    if name == "context.userId":  # `Type/id`, usable alone as a read template
        return f"{quote(user.group(1), safe='')}/{quote(user.group(2), safe='')}" if user else None
    if name.startswith("context."):
        # Only root-level primitive context fields are tokens (`{{context.medication.id}}` is not).
        value = context.get(name.removeprefix("context."))
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            return None
        return quote(str(value), safe="")
    return None


def client_for(
    request: Mapping,
    session: requests.Session,
    executor: concurrent.futures.Executor | None,
    *,
    timeout: float,
    max_pages: int,
    max_bytes: int,
    allow_http: bool,
    max_bytes_per_call: int | None = None,
    allowed: Sequence[str] | None = None,
) -> FhirClient | None:
    """A FhirClient for the request's `fhirServer` and access token, or None without fhirServer.

    `allowed`: the FHIR base URLs this caller may name (None: any). A `fhirServer` under none of
    them (origin and path prefix) is never contacted: the client refuses every request, so data
    the EHR did not prefetch is reported unavailable (the degraded card), not fetched.
    """
    server = request.get("fhirServer")
    if server is None:
        return None
    schemes = ("https", "http") if allow_http else ("https",)
    try:  # read as the HTTP library will connect to it: no user info, backslash, odd host
        target = outbound.parse(server, schemes)
    except outbound.UnsafeURL as unsafe:
        message = "fhirServer must be an https URL" + (" (or http)" if allow_http else "")
        message = f"{message}: {unsafe}"
        raise BadRequest(message, problems=[Problem("$.fhirServer", message)]) from None
    refusal = None
    if allowed is not None and not any(target.under(base) for base in _bases(allowed)):
        log.warning(
            "fhirServer %s is not on this caller's FHIR server allowlist; not contacted",
            f"{target.scheme}://{target.host}:{target.port}{target.path}"[:200],
        )
        refusal = "this service is not configured to read from this FHIR server"
    token = text(as_dict(request.get("fhirAuthorization")).get("access_token"))
    return FhirClient(
        server,
        token,
        session=session,
        timeout=timeout,
        max_pages=max_pages,
        max_bytes=max_bytes,
        max_bytes_per_call=max_bytes_per_call,
        executor=executor,
        refusal=refusal,
    )


def _bases(allowed: Sequence[str]) -> Iterable[outbound.Target]:
    for url in allowed:
        try:
            yield outbound.parse(url)
        except outbound.UnsafeURL:
            log.warning("FHIR server allowlist entry %r is not a usable URL; ignored", url[:200])


def _is_outcome(value: Any) -> bool:
    """A failed prefetch: an OperationOutcome, or a Bundle holding only OperationOutcomes that
    report an error. A searchset whose only entries are informational outcomes (Epic and HAPI
    add one when nothing matched) is an empty result, not a failure."""
    value = as_dict(value)
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") != "Bundle":
        return False
    entries = as_list(value.get("entry"))
    outcomes = []
    # Stops at the first other resource: a searchset of 10,000 costs one look, not 10,000.
    for entry in entries:
        resource = as_dict(as_dict(entry).get("resource"))
        if resource.get("resourceType") != "OperationOutcome":
            return False
        outcomes.append(resource)
    return any(
        as_dict(issue).get("severity") in ("error", "fatal")
        for outcome in outcomes
        for issue in as_list(outcome.get("issue"))
    )


def _entries(bundle: Any) -> Iterable[tuple[str | None, dict]]:
    """(fullUrl, resource) of each Bundle entry holding a resource, OperationOutcomes left out."""
    for entry in as_list(as_dict(bundle).get("entry")):
        resource = as_dict(as_dict(entry).get("resource"))
        kind = resource.get("resourceType")
        if isinstance(kind, str) and kind != "OperationOutcome":
            yield text(as_dict(entry).get("fullUrl")), resource


def _flatten(value: dict) -> list[dict]:
    if value.get("resourceType") == "Bundle":
        # What _entries yields, without the fullUrl: this runs once per prefetched resource.
        return [
            resource
            for entry in as_list(value.get("entry"))
            if isinstance(entry, dict)
            and isinstance(resource := entry.get("resource"), dict)
            and isinstance(kind := resource.get("resourceType"), str)
            and kind != "OperationOutcome"
        ]
    return [value]


def fetch_needed(request: Mapping, templates: Mapping[str, str]) -> bool:
    """Whether `resolve` would ask `fhirServer` for a prefetch key (missing, unusable or paged).

    With a complete prefetch the server is never contacted for them, so an unusable `fhirServer`
    need not stop the call (the pipeline then ignores it; docs/integration.md).
    """
    prefetch = as_dict(request.get("prefetch"))
    for key, template in templates.items():
        if key not in prefetch:
            if fill_template(template, request) is not None:
                return True
            continue
        value = prefetch[key]
        if value is None:
            continue
        if _is_outcome(value) or not isinstance(value, dict):
            return True
        if not isinstance(value.get("resourceType"), str):
            return True
        if value.get("resourceType") == "Bundle" and next_link(value):
            return True
    return False


def resolve(
    request: Mapping,
    templates: Mapping[str, str],
    client: FhirClient | None,
    deadline: float,
) -> ResolvedData:
    """Resolve every prefetch key of a service for one validated hook request (see module doc)."""
    prefetch = as_dict(request.get("prefetch"))
    data = ResolvedData()
    to_fetch: dict[str, str] = {}
    to_follow: dict[str, dict] = {}
    problems: list[Problem] = []

    for key, template in templates.items():
        filled = fill_template(template, request)
        value = prefetch.get(key)
        unusable = None
        if key in prefetch and value is None:
            data.resources[key], data.sources[key] = [], PREFETCH
            continue
        if key in prefetch:
            if _is_outcome(value):
                unusable = "the EHR sent an OperationOutcome instead of data"
            elif not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
                unusable = "the EHR sent something that is not a FHIR resource"
            else:
                data.resources[key], data.sources[key] = _flatten(value), PREFETCH
                if value.get("resourceType") == "Bundle" and next_link(value):
                    if client is not None:
                        to_follow[key] = value
                    else:
                        log.warning("prefetch %r has more pages and no fhirServer; first kept", key)
                continue
            log.warning("prefetch %r unusable: %s", key, unusable)
        if filled is None:
            # A token the request cannot fill (e.g. no encounterId): nothing exists to ask for,
            # so the EHR could not have prefetched it either; treated like `null`.
            log.info("prefetch template %r cannot be filled from this request; no data", key)
            data.resources[key], data.sources[key] = [], PREFETCH
            continue
        if client is not None:
            to_fetch[key] = filled
            continue
        why = f"{unusable}, and" if unusable else "missing and"
        problems.append(
            Problem(f"$.prefetch.{key}", f"{why} no fhirServer to fetch it from: expected {filled}")
        )

    if problems:
        keys = ", ".join(p.path.removeprefix("$.prefetch.") for p in problems)
        raise PreconditionFailed(
            f"prefetch data is missing or unusable for {keys}, and the request has no fhirServer "
            "to fetch it from",
            problems=problems,
        )

    if client is not None and to_fetch:
        for key, result in client.fetch_all(to_fetch, deadline).items():
            _record(data, key, result, FETCHED)
    if client is not None:
        for key, bundle in to_follow.items():
            try:
                pages: list[dict] | FhirError = client.follow_pages(bundle, deadline)
            except FhirError as exc:
                pages = exc
            except Exception:  # a FHIR server's answer must never turn into a 500
                log.exception("unexpected error following the pages of prefetch %r", key)
                pages = FhirFatalError("an unexpected error occurred while reading FHIR data")
            # Half a search reads as "nothing there" to a rule: treat it as not available.
            _record(data, key, pages, PREFETCH)

    _resolve_medications(data, request, client, deadline)
    return data


def _record(data: ResolvedData, key: str, result: list[dict] | FhirError, source: str) -> None:
    if isinstance(result, FhirError):
        log.warning("FHIR data for %r not available: %s", key, result.reason)
        data.resources[key], data.sources[key] = [], FAILED
        data.failures[key] = result.reason
    else:
        data.resources[key], data.sources[key] = result, source


def _resolve_medications(
    data: ResolvedData, request: Mapping, client: FhirClient | None, deadline: float
) -> None:
    """Index Medications we already hold, then read the referenced ones still missing.

    Only an order's medicationReference is looked up in this index (`record`), so a call
    without one (most: EHRs send a medicationCodeableConcept) indexes nothing.
    """
    context = as_dict(request.get("context"))
    drafts = [context.get(name) for name in _DRAFT_BUNDLES]
    # Cheap type tests first: these loops see every resource of the record (docs/performance.md).
    orders = [
        r
        for resources in data.resources.values()
        for r in resources
        if r.get("resourceType") == "MedicationRequest"
    ]
    orders += [r for bundle in drafts for _url, r in _entries(bundle)]
    referring = [
        ref
        for resource in orders
        if resource.get("resourceType") == "MedicationRequest"
        and (ref := reference(resource.get("medicationReference")))
    ]
    if not referring:
        return
    found = data.medications
    wanted: list[str] = []
    prefetched = list(as_dict(request.get("prefetch")).values())

    def index(full_url: str | None, resource: dict) -> None:
        if resource.get("resourceType") != "Medication":
            return
        if key := ref_of(resource):
            found.setdefault(key, resource)
        if full_url:  # draft bundles may reference by urn:uuid fullUrl
            found.setdefault(full_url, resource)

    for resources in data.resources.values():
        for resource in resources:
            if resource.get("resourceType") == "Medication":
                index(None, resource)
    for bundle in [*drafts, *prefetched]:
        for entry in as_list(as_dict(bundle).get("entry")):
            item = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(item, dict) and item.get("resourceType") == "Medication":
                index(text(entry.get("fullUrl")), item)

    for ref in referring:
        if ref.startswith("#") or ref in found:
            continue
        local = client.relative_reference(ref) if client else ref
        if not local or not _MEDICATION_REF_RE.match(local):
            continue  # another server, a urn:uuid not in the bundle, a versioned reference...
        if local in found:
            found.setdefault(ref, found[local])
        elif client is not None:
            wanted.append(ref)

    if not wanted or client is None:
        return
    by_local = {ref: client.relative_reference(ref) or ref for ref in wanted}
    read = client.read_all(dict.fromkeys(by_local.values()), deadline)
    for ref, local in by_local.items():
        medication = read.get(local)
        if medication is None or medication.get("resourceType") != "Medication":
            continue
        found.setdefault(local, medication)
        found.setdefault(ref, medication)  # absolute references are looked up as written
