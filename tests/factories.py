"""One-line builders of FHIR R4 resources and hook requests for tests (real codes, plain dicts)."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

from cds_hooks.knowledge import Knowledge
from cds_hooks.services import OBSERVATION_SEARCHES, observation_key

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
PATIENT_ID = "pat-1"

BACLOFEN_10_TAB = ("197391", "baclofen 10 MG Oral Tablet")
BACLOFEN_IT = ("308517", "baclofen 0.5 MG/ML Injectable Solution")
TIZANIDINE_4_TAB = ("313413", "tizanidine 4 MG Oral Tablet")
HALOPERIDOL_5_TAB = ("310672", "haloperidol 5 MG Oral Tablet")
METOCLOPRAMIDE_10_TAB = ("311666", "metoclopramide 10 MG Oral Tablet")
LISINOPRIL_10_TAB = ("314076", "lisinopril 10 MG Oral Tablet")

STROKE = (SNOMED, "230690007", "Cerebrovascular accident")
MS = (SNOMED, "24700007", "Multiple sclerosis")
MS_ICD = (ICD10, "G35", "Multiple sclerosis")
CEREBRAL_PALSY = (SNOMED, "128188000", "Cerebral palsy")
PARKINSONS = (SNOMED, "49049000", "Parkinson's disease")
SPINAL_CORD_INJURY = (
    ICD10,
    "S14.109A",
    "Unspecified injury at unspecified level of cervical spinal cord",
)

# Observation.status and whether a result in that status is used (fhir/status.py, which the
# record and the renal engine both ask).
OBSERVATION_STATUSES = [
    ("final", True),
    ("amended", True),
    ("corrected", True),
    ("preliminary", True),
    ("registered", False),
    ("cancelled", False),
    ("entered-in-error", False),
    ("unknown", False),
    ("Final", False),  # FHIR codes are case-sensitive
    (None, False),
]

# MedicationRequest statuses and whether an order in that status is current therapy
# (clinical-rules.md "Patient data used").
CURRENT_THERAPY_STATUSES = [
    ("active", True),
    ("on-hold", True),
    ("draft", True),
    ("stopped", False),
    ("completed", False),
    ("cancelled", False),
    ("entered-in-error", False),
]


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def med_request(
    rid: str,
    drug: tuple[str, str] | None = BACLOFEN_10_TAB,
    *,
    status: str = "draft",
    dose_mg: float | None = 10,
    per_day: int = 3,
    route: str | None = None,
    text: str | None = None,
    reason: tuple[str, str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": "2026-11-21",
    }
    if drug is not None:
        resource["medicationCodeableConcept"] = concept(RXNORM, drug[0], drug[1])
    elif text is not None:
        resource["medicationCodeableConcept"] = {"text": text}
    if dose_mg is not None:
        dosage: dict[str, Any] = {
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [
                {
                    "doseQuantity": {
                        "value": dose_mg,
                        "unit": "mg",
                        "system": "http://unitsofmeasure.org",
                        "code": "mg",
                    }
                }
            ],
        }
        if route == "intrathecal":
            dosage["route"] = concept(SNOMED, "72607000", "Intrathecal route")
        elif route == "oral":
            dosage["route"] = concept(SNOMED, "26643006", "Oral route")
        resource["dosageInstruction"] = [dosage]
    if reason is not None:
        resource["reasonCode"] = [concept(*reason)]
    resource.update(extra)
    return resource


def condition(
    cid: str,
    code: tuple[str, str, str],
    *,
    clinical: str | None = "active",
    verification: str | None = None,
    onset: str = "2024-03-02",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "code": concept(*code),
        "onsetDateTime": onset,
    }
    if clinical:
        resource["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        }
    if verification:
        resource["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        }
    return resource


def observation(
    oid: str,
    code: str | tuple[str, str],
    value: float | None = None,
    unit: str | None = "mL/min",
    *,
    when: str = "2026-11-17T08:00:00Z",
    status: str = "final",
    comparator: str | None = None,
    system: str = LOINC,
    **extra: Any,
) -> dict[str, Any]:
    """An Observation: `code` a LOINC code, or (code, display); `value` in `unit` (UCUM, as unit
    and code; None: no unit); no value, no valueQuantity. `extra` sets or overrides fields."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": (
            concept(system, *code)
            if isinstance(code, tuple)
            else {"coding": [{"system": system, "code": code}]}
        ),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when,
    }
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update(unit=unit, system="http://unitsofmeasure.org", code=unit)
        if comparator:
            quantity["comparator"] = comparator
        resource["valueQuantity"] = quantity
    resource.update(extra)
    return resource


def patient(birth_date: str = "1975-05-01", gender: str = "female") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": birth_date, "gender": gender}


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def fhir_authorization(
    token: str, patient: str | None = None, subject: str = "cds-service"
) -> dict[str, Any]:
    """A hook request's `fhirAuthorization` (CDS Hooks 2.0): a bearer token for 5 minutes."""
    granted: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": subject,
    }
    if patient is not None:
        granted["patient"] = patient
    return granted


def hook_request(
    drafts: list[dict[str, Any]],
    *,
    hook: str = "order-select",
    selections: list[str] | None = None,
    conditions: list | None = None,
    medications: list | None = None,
    observations: list | None = None,
    allergies: list | None = None,
    pat: dict | None = None,
) -> dict[str, Any]:
    """A complete request with all five prefetch keys filled."""
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": d} for d in drafts],
    }
    context: dict[str, Any] = {"userId": "Practitioner/prac-1", "patientId": PATIENT_ID}
    if hook == "medication-prescribe":
        context["medications"] = bundle
    else:
        context["draftOrders"] = bundle
    if hook == "order-select":
        context["selections"] = selections or [f"MedicationRequest/{drafts[0]['id']}"]
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": {
            "patient": pat or patient(),
            "conditions": searchset(conditions or []),
            "medications": searchset(medications or []),
            **_observation_searches(observations or []),
            "allergies": searchset(allergies or []),
        },
    }


def _observation_searches(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """Each Observation under the prefetch key whose search asks for its code; one no search
    asks for goes with `renal` (an EHR may send more than it was asked for)."""
    knowledge = _knowledge()
    by_key: dict[str, list] = {s.key: [] for s in OBSERVATION_SEARCHES}
    for obs in observations:
        by_key[observation_key(knowledge, obs) or "renal"].append(obs)
    return {key: searchset(found) for key, found in by_key.items()}


@cache
def _knowledge() -> Knowledge:
    return Knowledge.load()


def rules_of(response: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule id, indicator) of each card, in order."""
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in response["cards"]]


def rule_cards(call, body: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    """The cards of one rule in the service's answer (which must be a 200)."""
    status, answer = call(body)
    assert status == 200, answer
    return [c for c in answer["cards"] if c["source"]["topic"]["code"] == rule]
