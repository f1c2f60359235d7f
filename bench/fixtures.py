"""Hook request bodies of a chosen record size, built from the shared Synthea bundles.

The record is real data: every Condition, MedicationRequest, Observation and AllergyIntolerance
of the 25 Synthea patients in `../shared/data/synthea/`, moved onto the scenario's patient, then
trimmed (or repeated with fresh ids) to the size asked for. The scenario adds the patient, a
stroke Condition and two draft orders (baclofen, selected; haloperidol by text).
"""

from __future__ import annotations

import copy
import itertools
import json
from functools import cache
from pathlib import Path
from typing import Any

from cds_hooks.knowledge import Knowledge
from cds_hooks.services import PURPOSES, observation_key

REPO = Path(__file__).resolve().parent.parent
SYNTHEA = REPO.parent / "shared" / "data" / "synthea"
SERVICE_ID = "antispasticity-order-select"
PATIENT_ID = "p1"
NOW = "2026-11-21T12:00:00Z"

# Prefetch key of each resource type we put in the record.
KEY_OF = {
    "Condition": "conditions",
    "MedicationRequest": "medications",
    "Observation": "observations",
    "AllergyIntolerance": "allergies",
}

PATIENT = {
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "birthDate": "1970-01-01",
    "gender": "female",
}
STROKE = {
    "resourceType": "Condition",
    "id": "stroke",
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "clinicalStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active",
            }
        ]
    },
    "code": {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "230690007",
                "display": "Cerebrovascular accident",
            }
        ]
    },
}
DRAFTS = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "d1",
                "status": "draft",
                "intent": "order",
                "subject": {"reference": f"Patient/{PATIENT_ID}"},
                "medicationCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                            "code": "197391",
                            "display": "baclofen 10 MG Oral Tablet",
                        }
                    ]
                },
                "dosageInstruction": [
                    {
                        "timing": {"code": {"coding": [{"code": "TID"}]}},
                        "doseAndRate": [
                            {
                                "doseQuantity": {
                                    "value": 10,
                                    "unit": "mg",
                                    "system": "http://unitsofmeasure.org",
                                    "code": "mg",
                                }
                            }
                        ],
                    }
                ],
            }
        },
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "d2",
                "status": "draft",
                "intent": "order",
                "subject": {"reference": f"Patient/{PATIENT_ID}"},
                "medicationCodeableConcept": {"text": "Haloperidol 5 mg tablet"},
            }
        },
    ],
}


@cache
def synthea_pool() -> tuple[dict, ...]:
    """Every record resource of the Synthea bundles, in a fixed order, on the scenario patient."""
    paths = sorted(SYNTHEA.glob("*.json"))
    if not paths:
        raise SystemExit(f"no Synthea bundles in {SYNTHEA}")
    pool = []
    for path in paths:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") or {}
            if resource.get("resourceType") in KEY_OF:
                resource = copy.deepcopy(resource)
                for field in ("subject", "patient"):
                    if field in resource:
                        resource[field] = {"reference": f"Patient/{PATIENT_ID}"}
                resource.pop("encounter", None)  # urn:uuid of an Encounter we do not send
                resource.pop("context", None)
                pool.append(resource)
    return tuple(pool)


def record_resources(size: int) -> list[dict]:
    """`size` resources in all: the patient, the stroke, then Synthea resources (repeated with
    new ids once the pool runs out)."""
    out: list[dict] = [PATIENT, STROKE]
    pool = synthea_pool()
    for round_no in itertools.count():
        for resource in pool:
            if len(out) >= size:
                return out
            if round_no:
                resource = {**resource, "id": f"{resource.get('id', 'r')}-{round_no}"}
            out.append(resource)
    return out


def searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{r['resourceType']}/{r.get('id')}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def prefetch(size: int) -> dict[str, Any]:
    """Every prefetch key for a record of `size` resources.

    Observations go to the key whose search asks for their code; the others (most of Synthea's)
    to `renal`, as from an EHR that ignores the code filter and sends every lab.
    """
    knowledge = _knowledge()
    keys = [key for key in PURPOSES if key != "patient"]
    by_key: dict[str, list[dict]] = {key: [] for key in keys}
    for resource in record_resources(size):
        if resource["resourceType"] == "Patient":
            continue
        key = KEY_OF[resource["resourceType"]]
        if resource["resourceType"] == "Observation":
            key = observation_key(knowledge, resource) or "renal"
        by_key[key].append(resource)
    return {"patient": PATIENT, **{key: searchset(rs) for key, rs in by_key.items()}}


@cache
def _knowledge() -> Knowledge:
    return Knowledge.load()


def request(size: int | None, *, fhir_server: str | None = None) -> dict[str, Any]:
    """An order-select request; `size=None` sends no prefetch (the service fetches it all)."""
    body: dict[str, Any] = {
        "hook": "order-select",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/1",
            "patientId": PATIENT_ID,
            "selections": ["MedicationRequest/d1"],
            "draftOrders": DRAFTS,
        },
    }
    if size is not None:
        body["prefetch"] = prefetch(size)
    if fhir_server:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {
            "access_token": "bench-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "bench",
        }
    return body


@cache
def body_bytes(size: int) -> bytes:
    return json.dumps(request(size)).encode()


# ---- The body an EHR sends for one order: the service's own prefetch templates -----------------

LISINOPRIL = {
    "resourceType": "MedicationRequest",
    "id": "d-lisinopril",
    "status": "draft",
    "intent": "order",
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "314076",
                "display": "lisinopril 10 MG Oral Tablet",
            }
        ]
    },
    "dosageInstruction": [{"timing": {"code": {"coding": [{"code": "QD"}]}}}],
}
# Placeholders of fixed width: each call gets a new hookInstance and patient id by replacing
# them in the bytes (same length, so no re-serialisation inside the timed loop).
PATIENT_SLOT = "bench-patient-000000000000"
INSTANCE_SLOT = "00000000-0000-4000-8000-000000000000"


def _matches(resource: dict[str, Any], params: list[tuple[str, str]], patient: str) -> bool:
    for name, value in params:
        if name == "patient":
            ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
            if ref != f"Patient/{value.removeprefix('Patient/')}":
                return False
        elif name == "category":
            wanted = {v.rpartition("|")[2] for v in value.split(",")}
            have = {
                c.get("code")
                for category in resource.get("category") or []
                for c in category.get("coding", [])
            }
            if not wanted & have:
                return False
        elif name == "code":
            wanted = set(value.split(","))
            have = {
                f"{c.get('system')}|{c.get('code')}"
                for c in (resource.get("code") or {}).get("coding", [])
            }
            if not wanted & have:
                return False
        elif name in {"_include", "_sort"}:
            continue  # no Medication resources in the record; order does not change the size
        else:
            raise SystemExit(f"bench: prefetch template parameter {name!r} is not understood")
    return True


def templated_prefetch(resources: list[dict], patient: str) -> dict[str, Any]:
    """What a FHIR server answers to each of the service's prefetch templates for `resources`."""
    from urllib.parse import parse_qsl

    from cds_hooks.knowledge import Knowledge
    from cds_hooks.services import prefetch_templates

    out: dict[str, Any] = {}
    for key, template in prefetch_templates(Knowledge.load()).items():
        query = template.replace("{{context.patientId}}", patient)
        kind, _, params = query.partition("?")
        if "/" in kind:  # a read: Patient/{id}
            kind, _, wanted = kind.partition("/")
            found = [r for r in resources if r["resourceType"] == kind and r.get("id") == wanted]
            out[key] = found[0] if found else None
            continue
        pairs = parse_qsl(params, keep_blank_values=True)
        out[key] = searchset(
            [r for r in resources if r["resourceType"] == kind and _matches(r, pairs, patient)]
        )
    return out


def templated_request(size: int, drafts: list[dict], *, selected: str) -> dict[str, Any]:
    """An order-select request: `size` Synthea resources through the prefetch templates, with
    the placeholders PATIENT_SLOT and INSTANCE_SLOT for the per-call patient id and hookInstance."""
    resources = json.loads(json.dumps(record_resources(size)).replace(PATIENT_ID, PATIENT_SLOT))
    drafts = json.loads(
        json.dumps(drafts).replace(f"Patient/{PATIENT_ID}", f"Patient/{PATIENT_SLOT}")
    )
    return {
        "hook": "order-select",
        "hookInstance": INSTANCE_SLOT,
        "context": {
            "userId": "Practitioner/1",
            "patientId": PATIENT_SLOT,
            "selections": [selected],
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": drafts},
        },
        "prefetch": templated_prefetch(resources, PATIENT_SLOT),
    }


def _on_slot(value: Any) -> Any:
    """The same resources on the placeholder patient."""
    text = json.dumps(value)
    text = text.replace(f'"Patient/{PATIENT_ID}"', f'"Patient/{PATIENT_SLOT}"')
    return json.loads(text.replace(f'"id": "{PATIENT_ID}"', f'"id": "{PATIENT_SLOT}"'))


def full_request(size: int) -> dict[str, Any]:
    """request(size) (every resource in the prefetch) with the per-call placeholders."""
    body = _on_slot(request(size))
    body["hookInstance"] = INSTANCE_SLOT
    body["context"]["patientId"] = PATIENT_SLOT
    return body


# Haloperidol as the peer can see it: its plain-dict rule reads RxNorm codes (ingredient 5093)
# of *active* prefetched MedicationRequests only; the haloperidol draft is text-only.
HALOPERIDOL_ACTIVE = {
    "resourceType": "MedicationRequest",
    "id": "m-haloperidol",
    "status": "active",
    "intent": "order",
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "5093",
                "display": "haloperidol",
            }
        ],
        "text": "Haloperidol 5 mg tablet",
    },
}


def peer_request(size: int = 100) -> dict[str, Any]:
    """baclofen_request with the baclofen draft also in the medications prefetch (HealthChain
    0.16.1 drops draftOrders, so the peer looks for the draft there: ../shared/peers/README.md)
    and haloperidol there as an active, RxNorm-coded order, so that the peer's two rules both
    fire: the same two warnings (baclofen off-label after a stroke; baclofen with a dopamine
    antagonist) that our rules give on this body."""
    body = baclofen_request(size)
    baclofen = body["context"]["draftOrders"]["entry"][0]["resource"]
    body["prefetch"]["medications"]["entry"] += [
        {"resource": resource, "search": {"mode": "match"}}
        for resource in (baclofen, HALOPERIDOL_ACTIVE)
    ]
    body["prefetch"]["medications"]["total"] = len(body["prefetch"]["medications"]["entry"])
    return body


def baclofen_request(size: int = 100) -> dict[str, Any]:
    """Baclofen selected, haloperidol drafted with it: cards (stroke, dopamine antagonist)."""
    return templated_request(size, DRAFTS["entry"], selected="MedicationRequest/d1")


def unrelated_request(size: int = 100) -> dict[str, Any]:
    """Lisinopril alone: no rule is about it; the answer is no cards."""
    return templated_request(
        size, [{"resource": LISINOPRIL}], selected="MedicationRequest/d-lisinopril"
    )


def per_call(raw: bytes, n: int) -> bytes:
    """The n-th call's bytes: a new patient id and hookInstance, same length as the placeholders."""
    patient = f"bench-patient-{n:012d}".encode()
    instance = f"{n:08x}-0000-4000-8000-{n:012x}".encode()
    return raw.replace(PATIENT_SLOT.encode(), patient).replace(INSTANCE_SLOT.encode(), instance)
