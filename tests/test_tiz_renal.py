"""TIZ-RENAL at both sides of each threshold: CrCl 25, the eGFR stand-in, age 65, comparators."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from tests.factories import (
    ICD10,
    LOINC,
    PATIENT_ID,
    SNOMED,
    TIZANIDINE_4_TAB,
    hook_request,
    med_request,
    observation,
    patient,
    rule_cards,
)
from tests.factories import (
    condition as make_condition,
)

RULE = "TIZ-RENAL"
CRCL = "2164-2"
EGFR = "98979-8"
CREATININE = "2160-0"
WEIGHT = "29463-7"
AGED_64 = "1961-11-22"  # 65th birthday is the day after the frozen "now" (2026-11-21)
AGED_65 = "1961-11-21"


def tizanidine(rid: str = "d1", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("dose_mg", 2)
    return med_request(rid, TIZANIDINE_4_TAB, **kwargs)


def renal_cards(call, body):
    return rule_cards(call, body, RULE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(24.9, ["warning"]), (25, []), (10, ["warning"]), (24.99, ["warning"]), (68, [])],
)
def test_measured_creatinine_clearance_threshold(call, value, expected):
    body = hook_request([tizanidine()], observations=[observation("o1", CRCL, value)])
    cards = renal_cards(call, body)
    assert [c["indicator"] for c in cards] == expected
    if expected:
        assert "creatinine clearance" in cards[0]["summary"]
        assert "2026-11-17" in cards[0]["detail"]
        assert "Observation/o1" in cards[0]["detail"]
        assert "MedicationRequest/d1" in cards[0]["detail"]


@pytest.mark.parametrize(("value", "expected"), [(21, ["warning"]), (24.9, ["warning"]), (25, [])])
def test_egfr_stands_in_and_the_card_says_so(call, value, expected):
    egfr = observation("o1", EGFR, value, "mL/min/{1.73_m2}", when="2026-11-12")
    cards = renal_cards(call, hook_request([tizanidine()], observations=[egfr]))
    assert [c["indicator"] for c in cards] == expected
    if expected:
        assert cards[0]["summary"].startswith("Tizanidine: eGFR")
        assert "the eGFR stands in" in cards[0]["detail"]
        assert "LOINC 98979-8, 2026-11-12" in cards[0]["detail"]


def test_newer_egfr_wins_over_an_older_clearance(call):
    observations = [
        observation("o1", CRCL, 30, when="2026-11-01"),
        observation("o2", EGFR, 20, "mL/min/{1.73_m2}", when="2026-11-15"),
    ]
    body = hook_request([tizanidine()], observations=observations)
    assert [c["indicator"] for c in renal_cards(call, body)] == ["warning"]


def test_same_day_clearance_wins_over_a_lower_egfr(call):
    observations = [
        observation("o1", CRCL, 30, when="2026-11-15"),
        observation("o2", EGFR, 20, "mL/min/{1.73_m2}", when="2026-11-15"),
    ]
    assert renal_cards(call, hook_request([tizanidine()], observations=observations)) == []


@pytest.mark.parametrize(
    ("comparator", "value", "expected"),
    [
        (">", 60, []),
        (">=", 20, []),  # at least 20: may be above 25, so not certainly low
        ("<", 25, ["warning"]),  # below 25
        ("<", 30, []),  # below 30: may be 25-29
        ("<=", 24, ["warning"]),
        ("<=", 25, []),
    ],
)
def test_comparators_fire_only_when_certainly_below(call, comparator, value, expected):
    egfr = observation("o1", EGFR, value, "mL/min/{1.73_m2}", comparator=comparator)
    # An elderly patient: a value given only as "> 60" is still data, so no "missing" info either.
    body = hook_request([tizanidine()], observations=[egfr], pat=patient(AGED_65))
    assert [c["indicator"] for c in renal_cards(call, body)] == expected


def test_cockcroft_gault_estimate_counts_as_clearance(call):
    # (140 - 51) x 50 kg / (72 x 3 mg/dL) x 0.85 = 17.5 mL/min
    observations = [
        observation("o1", CREATININE, 3, "mg/dL", when="2026-11-15"),
        observation("o2", WEIGHT, 50, "kg", when="2026-11-15"),
    ]
    cards = renal_cards(call, hook_request([tizanidine()], observations=observations))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "estimated creatinine clearance 17.5" in cards[0]["summary"]
    assert "Cockcroft-Gault" in cards[0]["detail"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ((ICD10, "N18.4", "Chronic kidney disease, stage 4 (severe)"), ["warning"]),
        ((ICD10, "Z99.2", "Dependence on renal dialysis"), ["warning"]),
        ((ICD10, "N18.30", "Chronic kidney disease, stage 3 unspecified"), []),
        # Round 2 renal fallback: kidney failure not stated as acute warns too
        ((ICD10, "N19", "Unspecified kidney failure"), ["warning"]),
        ((SNOMED, "42399005", "Renal failure syndrome"), ["warning"]),
    ],
)
def test_kidney_condition_without_any_value(call, code, expected):
    body = hook_request([tizanidine()], conditions=[make_condition("c1", code)])
    cards = renal_cards(call, body)
    assert [c["indicator"] for c in cards] == expected
    if expected:
        assert code[1] in cards[0]["detail"]


AKI = (ICD10, "N17.9", "Acute kidney failure, unspecified")


@pytest.mark.parametrize("birth_date", [AGED_64, AGED_65, "1990-05-01"])
def test_acute_kidney_injury_without_a_value_informs_at_any_age(call, birth_date):
    body = hook_request(
        [tizanidine()], conditions=[make_condition("c1", AKI)], pat=patient(birth_date)
    )
    cards = renal_cards(call, body)
    # One card, the acute kidney injury one, also for a patient aged 65 (not the age card too).
    assert [c["indicator"] for c in cards] == ["info"]
    assert cards[0]["summary"].startswith("Tizanidine: acute kidney injury on record")
    assert "N17.9" in cards[0]["detail"]
    (suggestion,) = cards[0]["suggestions"]
    (action,) = suggestion["actions"]
    ServiceRequest.model_validate(action["resource"])
    assert action["resource"]["code"]["coding"][0]["code"] == CREATININE


@pytest.mark.parametrize(("value", "expected"), [(24.9, ["warning"]), (25, []), (60, [])])
def test_a_recent_value_decides_over_an_acute_kidney_injury(call, value, expected):
    body = hook_request(
        [tizanidine()],
        conditions=[make_condition("c1", AKI)],
        observations=[observation("o1", CRCL, value)],
    )
    assert [c["indicator"] for c in renal_cards(call, body)] == expected


def test_an_acute_kidney_injury_resolved_is_no_finding(call):
    body = hook_request([tizanidine()], conditions=[make_condition("c1", AKI, clinical="resolved")])
    assert renal_cards(call, body) == []


def test_dialysis_warns_even_next_to_an_egfr_above_the_threshold(call):
    body = hook_request(
        [tizanidine()],
        conditions=[make_condition("c1", (ICD10, "Z99.2", "Dependence on renal dialysis"))],
        observations=[observation("o1", EGFR, 40, "mL/min/{1.73_m2}")],
    )
    cards = renal_cards(call, body)
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "dialysis" in cards[0]["detail"]


@pytest.mark.parametrize(("birth_date", "expected"), [(AGED_64, []), (AGED_65, ["info"])])
def test_no_renal_data_is_reported_from_age_65(call, birth_date, expected):
    body = hook_request([tizanidine()], pat=patient(birth_date))
    cards = renal_cards(call, body)
    assert [c["indicator"] for c in cards] == expected
    if expected:
        assert (
            cards[0]["summary"]
            == "Tizanidine: no recent creatinine clearance for a patient aged 65"
        )
        assert "overrideReasons" not in cards[0]


def test_no_renal_data_evidence_names_every_kind_of_kidney_finding_it_looked_for(call):
    (card,) = renal_cards(call, hook_request([tizanidine()], pat=patient(AGED_65)))
    evidence = card["detail"].split("**Evidence**")[1]
    # Each of these alone would have given a TIZ-RENAL card (kidney failure since Round 2).
    for looked_for in ("creatinine clearance", "eGFR", "CKD 4-5", "kidney failure", "dialysis"):
        assert looked_for in evidence


def test_no_renal_data_card_suggests_a_valid_r4_creatinine_clearance_order(call):
    cards = renal_cards(call, hook_request([tizanidine()], pat=patient(AGED_65)))
    suggestion = cards[0]["suggestions"][0]
    assert cards[0]["selectionBehavior"] == "at-most-one"
    assert suggestion["isRecommended"] is True
    assert "LOINC 2160-0" in suggestion["label"]  # serum creatinine, not a 24-hour urine
    (action,) = suggestion["actions"]
    assert action["type"] == "create"
    resource = action["resource"]
    ServiceRequest.model_validate(resource)  # raises on invalid FHIR R4(B)
    assert resource["resourceType"] == "ServiceRequest"
    assert resource["status"] == "draft"
    assert resource["intent"] == "order"
    assert resource["code"]["coding"][0]["system"] == LOINC
    assert resource["code"]["coding"][0]["code"] == "2160-0"
    assert resource["subject"] == {"reference": f"Patient/{PATIENT_ID}"}


def test_a_clearance_older_than_the_look_back_counts_as_missing(call):
    stale = observation("o1", CRCL, 20, when="2025-11-01")
    body = hook_request([tizanidine()], observations=[stale], pat=patient(AGED_65))
    assert [c["indicator"] for c in renal_cards(call, body)] == ["info"]


def test_a_cancelled_observation_is_not_used(call):
    cancelled = observation("o1", CRCL, 20, status="cancelled")
    assert renal_cards(call, hook_request([tizanidine()], observations=[cancelled])) == []


def test_unknown_age_and_no_renal_data_is_quiet(call):
    pat = {"resourceType": "Patient", "id": PATIENT_ID, "gender": "female"}
    assert renal_cards(call, hook_request([tizanidine()], pat=pat)) == []


def test_text_only_tizanidine_is_matched_and_says_so(call):
    order = med_request("d1", None, text="Tizanidine 4 mg tablet", dose_mg=4)
    cards = renal_cards(call, hook_request([order], observations=[observation("o1", CRCL, 20)]))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "identified by name only" in cards[0]["detail"]


def test_a_tizanidine_stop_is_not_new_therapy(call):
    order = tizanidine(status="stopped")
    body = hook_request([order], hook="order-sign", observations=[observation("o1", CRCL, 20)])
    assert renal_cards(call, body) == []


def test_baclofen_order_does_not_trigger(call):
    body = hook_request([med_request("d1")], observations=[observation("o1", CRCL, 20)])
    assert renal_cards(call, body) == []


def test_crcl_order_code_is_in_the_clearance_value_set(knowledge):
    settings = knowledge.rule(RULE)
    code = settings.value("crcl_order_code")
    rows = [r for key in settings.keys("crcl_order") for r in knowledge.terminology.codes(key)]
    assert any(row[1] == code for row in rows)
