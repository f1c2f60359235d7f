"""BAC-NEUROPSYCH, BAC-PREGNANCY and BAC-ALLERGY, each on both sides."""

from __future__ import annotations

from datetime import date, timedelta

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


def days_ago(days):
    """A date `days` before the test clock (tests/conftest.py NOW, 2026-11-21)."""
    return (date(2026, 11, 21) - timedelta(days=days)).isoformat()


def pregnancy_test(oid, days, *, answer=None, hcg=None, unit="m[IU]/mL", comparator=None):
    """A urine hCG test answered with a code, or a serum hCG with a quantity."""
    code = ("2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine")
    if hcg is not None:
        code = ("83086-9", "Choriogonadotropin [Units/volume] in Serum or Plasma by Immunoassay")
    resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "code": {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}]},
        "effectiveDateTime": days_ago(days),
    }
    if answer is not None:
        resource["valueCodeableConcept"] = {
            "coding": [{"system": SNOMED, "code": answer[0], "display": answer[1]}]
        }
    if hcg is not None:
        quantity = {"value": hcg, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        if comparator:
            quantity["comparator"] = comparator
        resource["valueQuantity"] = quantity
    return resource


POSITIVE = ("10828004", "Positive")
NEGATIVE = ("260385009", "Negative")


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        # The latest conclusive observation wins, whichever order the EHR sends them in.
        ([pregnancy_test("t1", 204, answer=POSITIVE)], ["warning"]),
        (
            [
                pregnancy_test("t1", 204, answer=POSITIVE),
                pregnancy_test("t2", 2, answer=NEGATIVE),
            ],
            [],
        ),
        (
            [
                pregnancy_test("t2", 2, answer=NEGATIVE),
                pregnancy_test("t1", 204, answer=POSITIVE),
            ],
            [],
        ),
        (
            [
                pregnancy_test("t1", 204, answer=NEGATIVE),
                pregnancy_test("t2", 2, answer=POSITIVE),
            ],
            ["warning"],
        ),
        # Status and test share one timeline.
        (
            [
                pregnancy_status("LA15173-0", "Pregnant", date=days_ago(60)),
                pregnancy_test("t2", 2, answer=NEGATIVE),
            ],
            [],
        ),
        (
            [
                pregnancy_test("t1", 60, answer=NEGATIVE),
                pregnancy_status("LA15173-0", "Pregnant", date=days_ago(2)),
            ],
            ["warning"],
        ),
        (
            [
                pregnancy_test("t1", 60, answer=POSITIVE),
                pregnancy_status("LA26683-5", "Not pregnant", date=days_ago(2)),
            ],
            [],
        ),
        # An inconclusive later answer (Unknown) does not hide an earlier positive one.
        (
            [
                pregnancy_test("t1", 60, answer=POSITIVE),
                pregnancy_status("LA4489-6", "Unknown", date=days_ago(2)),
            ],
            ["warning"],
        ),
        # Same day, one positive and one negative: the positive one wins.
        (
            [
                pregnancy_test("t1", 2, answer=NEGATIVE),
                pregnancy_test("t2", 2, answer=POSITIVE),
            ],
            ["warning"],
        ),
    ],
)
def test_pregnancy_latest_observation_wins(call, observations, expected):
    assert cards_for(call, "BAC-PREGNANCY", observations=observations) == expected


@pytest.mark.parametrize(
    ("hcg", "unit", "comparator", "expected"),
    [
        (25.1, "m[IU]/mL", None, ["warning"]),
        (25, "m[IU]/mL", None, []),  # at the cut-off: not above it
        (1200, "IU/L", None, ["warning"]),  # 1 IU/L = 1 mIU/mL
        (30, "mIU/mL", None, ["warning"]),
        (30, "pmol/L", None, []),  # a moles unit is not converted: no guess
        (25, "m[IU]/mL", ">", ["warning"]),  # "> 25"
        (5, "m[IU]/mL", ">", []),  # "> 5" may be anything above 5
        (2, "m[IU]/mL", None, []),
    ],
)
def test_pregnancy_quantitative_hcg(call, hcg, unit, comparator, expected):
    observations = [pregnancy_test("h1", 3, hcg=hcg, unit=unit, comparator=comparator)]
    assert cards_for(call, "BAC-PREGNANCY", observations=observations) == expected


@pytest.mark.parametrize(
    ("later", "expected"),
    [
        ({"hcg": 2}, []),  # below 5 mIU/mL: negative, hides the earlier positive
        ({"hcg": 5, "comparator": "<"}, []),
        ({"hcg": 12}, ["warning"]),  # equivocal 5-25: the earlier positive still stands
        ({"hcg": 50, "comparator": "<"}, ["warning"]),  # "< 50" may be anything below 50
        ({"hcg": 4, "unit": "ng/mL"}, ["warning"]),  # unit not read: no verdict
    ],
)
def test_pregnancy_quantitative_hcg_after_a_positive_test(call, later, expected):
    observations = [
        pregnancy_test("t1", 100, answer=POSITIVE),
        pregnancy_test("h2", 2, **later),
    ]
    assert cards_for(call, "BAC-PREGNANCY", observations=observations) == expected


def test_pregnancy_card_names_the_quantitative_result(call):
    body = hook_request(
        [med_request("d1", dose_mg=5, per_day=3)],
        conditions=[condition("c0", MS)],
        medications=[PRIOR],
        observations=[pregnancy_test("h1", 3, hcg=1200, unit="IU/L")],
    )
    status, answer = call(body)
    assert status == 200
    (card,) = [c for c in answer["cards"] if c["source"]["topic"]["code"] == "BAC-PREGNANCY"]
    assert f"= 1200 IU/L (Observation/h1, {days_ago(3)})" in card["detail"]


def test_pregnancy_condition_warns_even_after_a_negative_test(call):
    observations = [pregnancy_test("t2", 2, answer=NEGATIVE)]
    conditions = [condition("c1", PREGNANT)]
    assert cards_for(call, "BAC-PREGNANCY", conditions, observations) == ["warning"]


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


# -- BAC-PREGNANCY, planning a pregnancy (clinical-rules.md Round 2) --------------------------

WANTS_PREGNANCY = (SNOMED, "454411000124108", "Wants to become pregnant (finding)")
YES = (LOINC, "LA26438-4", "Yes, I want to become pregnant")
NO = (LOINC, "LA26440-0", "No, I don't want to become pregnant")
UNSURE = (LOINC, "LA14072-5", "Unsure")


def intention(oid, days, answer, status="final"):
    """LOINC 86645-9 Pregnancy intention in the next year, answered `answer` `days` ago."""
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "code": {
            "coding": [
                {
                    "system": LOINC,
                    "code": "86645-9",
                    "display": "Pregnancy intention in the next year - Reported",
                }
            ]
        },
        "effectiveDateTime": days_ago(days),
        "valueCodeableConcept": {
            "coding": [{"system": answer[0], "code": answer[1], "display": answer[2]}]
        },
    }


@pytest.mark.parametrize(
    ("conditions", "observations", "expected"),
    [
        ([condition("c1", WANTS_PREGNANCY)], [], ["info"]),
        ([condition("c1", WANTS_PREGNANCY, clinical="resolved")], [], []),
        ([condition("c1", WANTS_PREGNANCY, verification="entered-in-error")], [], []),
        ([], [intention("i1", 10, YES)], ["info"]),
        ([], [intention("i1", 10, WANTS_PREGNANCY)], ["info"]),  # SNOMED CT answer
        ([], [intention("i1", 10, (LOINC, "LA33-6", "Yes"))], ["info"]),  # generic yes
        ([], [intention("i1", 10, NO)], []),
        ([], [intention("i1", 10, UNSURE)], []),
        ([], [intention("i1", 10, (LOINC, "LA32-8", "No"))], []),
        ([], [intention("i1", 10, YES, status="entered-in-error")], []),
        # asked "in the next year": an answer older than 365 days is not current
        ([], [intention("i1", 365, YES)], ["info"]),
        ([], [intention("i1", 366, YES)], []),
        # the latest answer decides
        ([], [intention("i1", 100, YES), intention("i2", 10, NO)], []),
        ([], [intention("i1", 100, NO), intention("i2", 10, YES)], ["info"]),
        # pregnancy outranks planning: one card per order, the warning
        ([condition("c1", PREGNANT)], [intention("i1", 10, YES)], ["warning"]),
        ([condition("c1", WANTS_PREGNANCY), condition("c2", PREGNANT)], [], ["warning"]),
    ],
)
def test_planning_pregnancy(call, conditions, observations, expected):
    assert cards_for(call, "BAC-PREGNANCY", conditions, observations) == expected


def test_planning_card_names_its_evidence_and_offers_no_cancel(call):
    body = hook_request(
        [med_request("d1", dose_mg=5, per_day=3)],
        conditions=[condition("c0", MS)],
        medications=[PRIOR],
        observations=[intention("i1", 10, YES)],
    )
    status, answer = call(body)
    assert status == 200
    (card,) = [c for c in answer["cards"] if c["source"]["topic"]["code"] == "BAC-PREGNANCY"]
    assert (
        card["summary"] == "Baclofen: patient wishes to become pregnant; discuss before prescribing"
    )
    assert f"Yes, I want to become pregnant (Observation/i1, {days_ago(10)})" in card["detail"]
    assert "suggestions" not in card or card["suggestions"] == []


def test_the_pregnancy_search_asks_for_the_intention_question(knowledge):
    from cds_hooks.services import prefetch_templates

    assert "http://loinc.org|86645-9" in prefetch_templates(knowledge)["pregnancy"]
