"""BAC-NEUROPSYCH, BAC-PREGNANCY and BAC-ALLERGY, each on both sides."""

from __future__ import annotations

import pytest

from tests.factories import (
    ICD10,
    LOINC,
    MS,
    PATIENT_ID,
    SNOMED,
    condition,
    hook_request,
    med_request,
)

PRIOR = med_request("old", status="completed", dose_mg=5, per_day=3)
BIPOLAR = (ICD10, "F31.9", "Bipolar disorder, unspecified")
SCHIZOPHRENIA = (ICD10, "F20.9", "Schizophrenia, unspecified")
DEPRESSION = (ICD10, "F33.1", "Major depressive disorder, recurrent, moderate")
REMISSION = (ICD10, "F33.42", "Major depressive disorder, recurrent, in full remission")
PREGNANT = (SNOMED, "77386006", "Pregnant")


def cards_for(call, rule, conditions=(), observations=(), allergies=()):
    body = hook_request(
        [med_request("d1", dose_mg=5, per_day=3)],
        conditions=[condition("c0", MS), *conditions],
        medications=[PRIOR],
        observations=list(observations),
        allergies=list(allergies),
    )
    status, answer = call(body)
    assert status == 200
    return [c["indicator"] for c in answer["cards"] if c["source"]["topic"]["code"] == rule]


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([condition("c1", BIPOLAR)], ["warning"]),
        ([condition("c1", SCHIZOPHRENIA)], ["warning"]),
        ([condition("c1", DEPRESSION)], ["warning"]),
        ([condition("c1", REMISSION)], ["info"]),
        ([condition("c1", REMISSION), condition("c2", BIPOLAR)], ["warning"]),
        ([condition("c1", BIPOLAR, verification="entered-in-error")], []),
        ([condition("c1", BIPOLAR, clinical="resolved")], []),
        ([], []),
    ],
)
def test_neuropsych(call, conditions, expected):
    assert cards_for(call, "BAC-NEUROPSYCH", conditions) == expected


def pregnancy_status(answer_code, display, date="2026-11-01", status="final"):
    return {
        "resourceType": "Observation",
        "id": "p1",
        "status": status,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "code": {"coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}]},
        "effectiveDateTime": date,
        "valueCodeableConcept": {
            "coding": [{"system": LOINC, "code": answer_code, "display": display}]
        },
    }


@pytest.mark.parametrize(
    ("conditions", "observations", "expected"),
    [
        ([condition("c1", PREGNANT)], [], ["warning"]),
        ([condition("c1", PREGNANT, clinical="resolved")], [], []),
        ([], [pregnancy_status("LA15173-0", "Pregnant")], ["warning"]),
        ([], [pregnancy_status("LA26683-5", "Not pregnant")], []),
        ([], [pregnancy_status("LA15173-0", "Pregnant", date="2025-01-01")], []),
        ([], [pregnancy_status("LA15173-0", "Pregnant", status="entered-in-error")], []),
    ],
)
def test_pregnancy(call, conditions, observations, expected):
    assert cards_for(call, "BAC-PREGNANCY", conditions, observations) == expected


def allergy(
    code=("387342009", SNOMED, "Baclofen (substance)"),
    clinical="active",
    verification="confirmed",
    text=None,
):
    concept = (
        {"text": text}
        if text
        else {"coding": [{"system": code[1], "code": code[0], "display": code[2]}]}
    )
    return {
        "resourceType": "AllergyIntolerance",
        "id": "a1",
        "patient": {"reference": f"Patient/{PATIENT_ID}"},
        "code": concept,
        "clinicalStatus": {"coding": [{"code": clinical}]},
        "verificationStatus": {"coding": [{"code": verification}]},
        "recordedDate": "2020-05-01",
    }


@pytest.mark.parametrize(
    ("allergies", "expected"),
    [
        ([allergy()], ["critical"]),
        (
            [allergy(("1292", "http://www.nlm.nih.gov/research/umls/rxnorm", "baclofen"))],
            ["critical"],
        ),
        ([allergy(text="Baclofen - rash")], ["critical"]),
        ([allergy(verification="refuted")], []),
        ([allergy(clinical="resolved")], []),
        ([allergy(("7980", "http://www.nlm.nih.gov/research/umls/rxnorm", "penicillin G"))], []),
    ],
)
def test_allergy(call, allergies, expected):
    assert cards_for(call, "BAC-ALLERGY", allergies=allergies) == expected


def test_intolerance_is_a_warning_and_a_true_allergy_outranks_it(call):
    intolerance = dict(allergy(), type="intolerance")
    assert cards_for(call, "BAC-ALLERGY", allergies=[intolerance]) == ["warning"]
    low = dict(allergy(), criticality="low")
    assert cards_for(call, "BAC-ALLERGY", allergies=[low]) == ["warning"]
    both = [intolerance, dict(allergy(), id="a2", type="allergy", criticality="high")]
    assert cards_for(call, "BAC-ALLERGY", allergies=both) == ["critical"]


def test_bipolar_in_remission_stays_a_warning(call):
    # F31.75: bipolar disorder, in full remission, most recent episode depressed.
    bipolar_remission = (ICD10, "F31.75", "Bipolar disorder, in full remission")
    assert cards_for(call, "BAC-NEUROPSYCH", [condition("c1", bipolar_remission)]) == ["warning"]
