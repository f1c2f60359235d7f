"""BAC-RENAL at the 30 and 60 mL/min edges, each data source, dialysis, and ITB."""

from __future__ import annotations

import pytest

from tests.factories import (
    BACLOFEN_IT,
    ICD10,
    MS,
    SNOMED,
    condition,
    hook_request,
    med_request,
    observation,
)

RULE = "BAC-RENAL"
PRIOR = med_request("old", status="completed", dose_mg=5, per_day=3)


def crcl(value, **kw):
    return observation("o1", ("2164-2", "Creatinine renal clearance"), value, **kw)


def egfr(value, **kw):
    return observation("o2", ("98979-8", "eGFR CKD-EPI 2021"), value, "mL/min/{1.73_m2}", **kw)


def renal_cards(call, observations=(), conditions=(), order=None):
    body = hook_request(
        [order or med_request("d1", dose_mg=5, per_day=3)],
        conditions=[condition("c1", MS), *conditions],
        observations=list(observations),
        medications=[PRIOR],
    )
    status, answer = call(body)
    assert status == 200
    return [c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(29.9, ["warning"]), (30, ["info"]), (59.9, ["info"]), (60, []), (95, [])],
)
def test_creatinine_clearance_edges(call, value, expected):
    cards = renal_cards(call, [crcl(value)])
    assert [c["indicator"] for c in cards] == expected
    if cards:
        assert "creatinine clearance" in cards[0]["detail"]
        assert "2026-11-17" in cards[0]["detail"]


@pytest.mark.parametrize("system", ["urn:oid:2.16.840.1.113883.6.1", "http://loinc.org/"])
def test_clearance_coded_with_a_loinc_alias_warns(call, system):
    """Regression (issue 12): the LOINC OID and a trailing slash are LOINC, for every rule."""
    observation = crcl(20)
    observation["code"]["coding"][0]["system"] = system
    cards = renal_cards(call, [observation])
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "creatinine clearance 20 mL/min (LOINC 2164-2" in cards[0]["detail"]


def test_egfr_stands_in_when_no_clearance(call):
    cards = renal_cards(call, [egfr(25)])
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "eGFR" in cards[0]["detail"]


def test_clearance_wins_over_egfr(call):
    assert renal_cards(call, [crcl(70), egfr(25)]) == []


def test_stale_value_is_ignored(call):
    assert renal_cards(call, [crcl(20, when="2025-11-20")]) == []


def test_greater_than_comparator_is_not_low(call):
    assert renal_cards(call, [egfr(60, comparator=">")]) == []


def test_mL_per_second_is_converted(call):
    assert [c["indicator"] for c in renal_cards(call, [crcl(0.4, unit="mL/s")])] == ["warning"]


def test_dialysis_condition_says_particularly_low_dose(call):
    dialysis = condition("c2", (ICD10, "Z99.2", "Dependence on renal dialysis"))
    cards = renal_cards(call, conditions=[dialysis])
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "5 mg/day" in cards[0]["detail"]


def test_ckd_stage_4_condition_without_labs(call):
    ckd4 = condition("c2", (ICD10, "N18.4", "Chronic kidney disease, stage 4 (severe)"))
    assert [c["indicator"] for c in renal_cards(call, conditions=[ckd4])] == ["warning"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # Round 2 renal fallback: kidney failure (not stated as acute) warns like CKD 4-5 ...
        ((ICD10, "N19", "Unspecified kidney failure"), "warning"),
        ((SNOMED, "42399005", "Renal failure syndrome"), "warning"),
        # ... an acute kidney injury alone informs (and suggests a serum creatinine).
        ((ICD10, "N17.9", "Acute kidney failure, unspecified"), "info"),
        ((SNOMED, "14669001", "Acute renal failure syndrome"), "info"),
        ((ICD10, "O90.49", "Other postpartum acute kidney failure"), "info"),
    ],
)
def test_kidney_failure_warns_and_acute_kidney_injury_informs_without_labs(call, code, expected):
    cards = renal_cards(call, conditions=[condition("c2", code)])
    assert [c["indicator"] for c in cards] == [expected]
    assert code[1] in cards[0]["detail"]
    actions = [a["type"] for s in cards[0].get("suggestions", []) for a in s["actions"]]
    assert actions == (["create"] if expected == "info" else [])


@pytest.mark.parametrize(
    "code",
    [(ICD10, "N19", "Unspecified kidney failure"), (ICD10, "N17.9", "Acute kidney failure")],
)
@pytest.mark.parametrize(("value", "expected"), [(65, []), (45, ["info"]), (25, ["warning"])])
def test_a_recent_lab_decides_over_a_kidney_failure_or_injury_condition(
    call, code, value, expected
):
    cards = renal_cards(call, [egfr(value)], conditions=[condition("c2", code)])
    assert [c["indicator"] for c in cards] == expected


def test_kidney_failure_wins_over_an_acute_kidney_injury(call):
    failure = condition("c2", (ICD10, "N19", "Unspecified kidney failure"))
    aki = condition("c3", (ICD10, "N17.9", "Acute kidney failure, unspecified"))
    cards = renal_cards(call, conditions=[aki, failure])
    assert [c["indicator"] for c in cards] == ["warning"]


def test_ckd_stage_3_condition_alone_is_quiet(call):
    ckd3 = condition("c2", (ICD10, "N18.3", "Chronic kidney disease, stage 3 (moderate)"))
    assert renal_cards(call, conditions=[ckd3]) == []


def test_intrathecal_order_is_left_alone(call):
    order = med_request("d1", BACLOFEN_IT, dose_mg=0.1, per_day=1, route="intrathecal")
    assert renal_cards(call, [crcl(20)], order=order) == []
