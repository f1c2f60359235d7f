"""The CDS services, declared once: discovery is derived from this ordered list.

Every service runs the same path (parse -> resolve data -> evaluate rules -> cards); what differs
per hook is where the draft orders are and which of them the guidance targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.knowledge import Knowledge
from cds_hooks.services import medication_prescribe, order_select, order_sign


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str
    drafts_field: str  # context field holding the Bundle of draft orders
    targets_selections: bool  # guidance targets `selections` only (order-select)

    @property
    def schema(self) -> str:
        return f"request-{self.hook}"

    def discovery(self, prefetch: Mapping[str, str]) -> dict[str, Any]:
        keys = "; ".join(f"{key}: {PURPOSES.get(key, key)}" for key in prefetch)
        return {
            "hook": self.hook,
            "title": self.title,
            "description": f"{self.description} Prefetch keys: {keys}.",
            "id": self.id,
            "prefetch": dict(prefetch),
            "usageRequirements": self.usage_requirements,
        }


SERVICES: tuple[Service, ...] = tuple(
    Service(**m.DECLARATION) for m in (order_select, order_sign, medication_prescribe)
)
BY_ID: dict[str, Service] = {s.id: s for s in SERVICES}


@dataclass(frozen=True)
class ObservationSearch:
    """One Observation search per data need: which value sets, which category, and why."""

    key: str
    value_sets: tuple[str, ...]
    category: str | None  # FHIR observation-category code; None when the codes span several
    purpose: str


# Split so that each search is small (every rendered URL well under the 2,048 bytes many EHRs and
# proxies accept), carries the `category` the EHR indexes labs and vitals by, and fails alone: a
# rule skipped for missing data names only the search it needs (rules' NEEDS use these keys).
# Pregnancy has no category: status (82810-3) and intention (86645-9) are social history, the
# tests are laboratory.
OBSERVATION_SEARCHES: tuple[ObservationSearch, ...] = (
    ObservationSearch(
        "renal",
        (
            "observation/creatinine-clearance",
            "observation/egfr",
            "observation/serum-creatinine",
        ),
        "laboratory",
        "kidney function (creatinine clearance, eGFR, serum creatinine) for renal dosing",
    ),
    ObservationSearch(
        "coagulation",
        ("observation/inr", "observation/platelet-count"),
        "laboratory",
        "INR and platelet count, for the intrathecal baclofen bleeding-risk check",
    ),
    ObservationSearch(
        "liver",
        ("observation/alt", "observation/ast"),
        "laboratory",
        "liver tests (ALT, AST), for tizanidine's hepatic check",
    ),
    ObservationSearch(
        "weight",
        ("observation/body-weight",),
        "vital-signs",
        "body weight, for a creatinine clearance computed from serum creatinine",
    ),
    ObservationSearch(
        "pregnancy",
        (
            "observation/pregnancy-status",
            "observation/pregnancy-test",
            "observation/pregnancy-intention",
        ),
        None,
        "pregnancy status, pregnancy tests and pregnancy intention",
    ),
)

# What each prefetch key is for (discovery's description lists them); the order is discovery's.
PURPOSES: dict[str, str] = {
    "patient": "the patient (age and sex, for kidney function and pregnancy checks)",
    "conditions": "the patient's conditions (indications, contraindications, kidney disease)",
    "medications": (
        "the patient's medication orders (interactions, duplicates, dose totals, tapers); the "
        "service reads each referenced Medication itself, so _include is not needed"
    ),
    **{s.key: s.purpose for s in OBSERVATION_SEARCHES},
    "allergies": "the patient's allergies",
}

# LOINC answer codes (LA...) are values of an Observation, never its code: a search by them
# matches nothing, so they stay out of `code=` (the rules still read them as answers).
_ANSWER_CODE = re.compile(r"^LA\d+-\d$")


def observation_codes(knowledge: Knowledge, search: ObservationSearch) -> list[str]:
    """`system|code` of each Observation code a search asks for (answer codes left out)."""
    terminology = knowledge.terminology
    codes = [
        f"{system}|{code}"
        for key in search.value_sets
        for system, code, _display in terminology.codes(key)
        if not _ANSWER_CODE.match(code)
    ]
    return list(dict.fromkeys(codes))


def prefetch_templates(knowledge: Knowledge) -> dict[str, str]:
    """Narrow templates (CDS Hooks 2.0 "Prefetch Template"), only the data the rules read.

    Patient searches are written `patient=Patient/{{context.patientId}}`, which every server reads
    the same way (some in-memory and older servers match a bare id to nothing, and an empty answer
    cannot be told from "no data"). Observation codes are system-qualified so a server cannot
    match another system's code of the same spelling. Only the CDS Hooks 2.0 recommended subset
    of search parameters: no `_include` (Epic ignores it; the service reads Medications itself).
    """
    patient = "patient=Patient/{{context.patientId}}"
    observations = {
        s.key: f"Observation?{patient}"
        + (f"&category={s.category}" if s.category else "")
        + f"&code={','.join(observation_codes(knowledge, s))}&_sort=-date"
        for s in OBSERVATION_SEARCHES
    }
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "conditions": f"Condition?{patient}",
        "medications": f"MedicationRequest?{patient}",
        **observations,
        "allergies": f"AllergyIntolerance?{patient}",
    }
    return {key: templates[key] for key in PURPOSES}


def observation_key(knowledge: Knowledge, observation: Mapping[str, Any]) -> str | None:
    """The prefetch key whose search returns this Observation (by code), or None."""
    terminology = knowledge.terminology
    concept = observation.get("code")
    for search in OBSERVATION_SEARCHES:
        if any(terminology.in_valueset(concept, key) for key in search.value_sets):
            return search.key
    return None
