"""Small typed readers over FHIR resources kept as plain dicts (the hot path never builds models).

Every reader tolerates imperfect FHIR: a missing or wrongly typed field reads as "absent", never as
an exception, because EHRs send what they send (docs/conventions.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")

# A logical id as real EHRs send it: FHIR's alphabet, but Epic's ids run past FHIR's 64
# characters (to about 200), so the cap is 256 (docs/integration.md). The request schemas
# (schemas/request-envelope.json) spell the same pattern; a test checks they agree.
MAX_ID_CHARS = 256
ID_PATTERN = rf"[A-Za-z0-9\-.]{{1,{MAX_ID_CHARS}}}"


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def codings(concept: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    """(system, code, display) of each Coding in a CodeableConcept dict."""
    for coding in as_list(as_dict(concept).get("coding")):
        if isinstance(coding, dict):
            yield text(coding.get("system")), text(coding.get("code")), text(coding.get("display"))


def concept_text(concept: Any) -> str | None:
    """The best human name of a CodeableConcept: its text, else the first coding display."""
    concept = as_dict(concept)
    if name := text(concept.get("text")):
        return name
    for _system, _code, display in codings(concept):
        if display:
            return display
    return None


def reference(value: Any) -> str | None:
    return text(as_dict(value).get("reference"))


def ref_of(resource: Mapping) -> str | None:
    """`Type/id` of a resource dict, or None when it has no id."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return None


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime (partial dates at their start)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if _DATE_RE.match(value):
            parts = [int(p) for p in value.split("-")] + [1, 1]
            return datetime(parts[0], parts[1], parts[2], tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_date(value: Any) -> date | None:
    parsed = parse_datetime(value)
    return parsed.date() if parsed else None


def effective_time(resource: Mapping) -> datetime | None:
    """When an Observation or Condition applies: effective[x]/onset[x], else issued/recorded."""
    for key in ("effectiveDateTime", "effectiveInstant", "onsetDateTime", "issued", "recordedDate"):
        if moment := parse_datetime(resource.get(key)):
            return moment
    for key in ("effectivePeriod", "onsetPeriod"):
        period = as_dict(resource.get(key))
        if moment := parse_datetime(period.get("end")) or parse_datetime(period.get("start")):
            return moment
    return None


def quantity(value: Any) -> tuple[float, str | None, str | None] | None:
    """(value, unit code or unit, comparator) of a Quantity dict, or None when it has no number."""
    value = as_dict(value)
    number = value.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    unit = text(value.get("code")) or text(value.get("unit"))
    return float(number), unit, text(value.get("comparator"))


def bundle_resources(bundle: Any) -> list[dict]:
    """The resources in a Bundle's entries (any Bundle type), skipping entries without one."""
    out = []
    for entry in as_list(as_dict(bundle).get("entry")):
        resource = as_dict(entry).get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            out.append(resource)
    return out


def next_link(bundle: Any) -> str | None:
    for link in as_list(as_dict(bundle).get("link")):
        if isinstance(link, dict) and link.get("relation") == "next":
            return text(link.get("url"))
    return None
