"""TIZ-DOSE at both sides of 36 mg/day and 16 mg per dose, summed over current orders."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import TIZANIDINE_4_TAB, hook_request, med_request, rule_cards

RULE = "TIZ-DOSE"


def tizanidine(rid: str = "d1", dose_mg: float | None = 4, per_day: int = 3, **kw: Any) -> dict:
    return med_request(rid, TIZANIDINE_4_TAB, dose_mg=dose_mg, per_day=per_day, **kw)


def dose_cards(call, body):
    return rule_cards(call, body, RULE)


@pytest.mark.parametrize(
    ("dose_mg", "per_day", "summary"),
    [
        (12, 3, None),  # 36 mg/day, 12 mg doses: at both maxima, not above
        (9.025, 4, "Tizanidine 36.1 mg/day is above the 36 mg/day maximum"),
        (9, 4, None),  # 36
        (12, 2, None),  # single 12 mg
        (12.5, 2, None),  # above 12 mg (the old, wrong limit) but studied
        (16, 2, None),  # 16 mg: studied (16 mg at night in trials), not above
        (
            16.5,
            2,
            "Tizanidine: a single dose of 16.5 mg; doses above 16 mg have not been studied",
        ),
        (
            16.5,
            3,
            "Tizanidine 49.5 mg/day and 16.5 mg doses: above 36 mg/day; doses over 16 mg not"
            " studied",
        ),
    ],
)
def test_daily_and_single_dose_thresholds(call, dose_mg, per_day, summary):
    cards = dose_cards(call, hook_request([tizanidine(dose_mg=dose_mg, per_day=per_day)]))
    assert [c["summary"] for c in cards] == ([summary] if summary else [])
    if summary:
        assert cards[0]["indicator"] == "warning"
        assert cards[0]["overrideReasons"]
        assert cards[0]["suggestions"][0]["label"] == "Cancel this tizanidine order"


def test_advice_keeps_three_doses_a_day_and_the_renal_order_of_steps(call):
    (card,) = dose_cards(call, hook_request([tizanidine(dose_mg=18, per_day=2)]))
    detail = card["detail"]
    assert "not more doses a day" in detail
    assert "at most 3 doses in 24 hours" in detail
    assert "raise the individual dose before the frequency" in detail
    assert "splitting" not in detail and "more, smaller doses" not in detail


@pytest.mark.parametrize(
    ("status", "new_dose", "fires"),
    [
        ("active", 4, False),  # 24 + 12 = 36
        ("active", 4.1, True),  # 24 + 12.3 = 36.3
        ("on-hold", 4.1, True),
        ("stopped", 4.1, False),
        ("completed", 4.1, False),
    ],
)
def test_current_orders_are_summed_with_the_new_one(call, status, new_dose, fires):
    current = tizanidine("t1", dose_mg=8, per_day=3, status=status)
    body = hook_request([tizanidine("d1", dose_mg=new_dose)], medications=[current])
    cards = dose_cards(call, body)
    assert len(cards) == (1 if fires else 0)
    if fires:
        assert "MedicationRequest/t1" in cards[0]["detail"]
        assert "8 mg 3 times a day = 24 mg/day" in cards[0]["detail"]


def test_other_draft_is_summed_too(call):
    body = hook_request(
        [tizanidine("d1", dose_mg=8), tizanidine("d2", dose_mg=6)],
        selections=["MedicationRequest/d1"],
    )
    cards = dose_cards(call, body)
    assert [c["summary"] for c in cards] == ["Tizanidine 42 mg/day is above the 36 mg/day maximum"]


def test_a_dose_in_tablets_uses_the_strength_in_the_name(call):
    order = tizanidine(dose_mg=None)
    order["dosageInstruction"] = [
        {
            "timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 3, "unit": "tablet"}}],
        }
    ]
    cards = dose_cards(call, hook_request([order]))
    assert [c["summary"] for c in cards] == ["Tizanidine 48 mg/day is above the 36 mg/day maximum"]


@pytest.mark.parametrize(
    "dosage",
    [
        pytest.param(None, id="no-dosage"),
        pytest.param(
            [{"doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg", "code": "mg"}}]}],
            id="no-frequency",
        ),
        pytest.param(
            [
                {
                    "timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 20, "unit": "puff"}}],
                }
            ],
            id="unknown-unit",
        ),
    ],
)
def test_a_dose_that_cannot_be_computed_is_quiet(call, dosage):
    order = tizanidine(dose_mg=None)
    if dosage is not None:
        order["dosageInstruction"] = dosage
    assert dose_cards(call, hook_request([order])) == []


def test_a_current_order_without_a_computable_dose_is_named_not_counted(call):
    unknown = tizanidine("t1", dose_mg=None, status="active")
    body = hook_request([tizanidine("d1", dose_mg=10, per_day=4)], medications=[unknown])
    cards = dose_cards(call, body)
    assert [c["summary"] for c in cards] == ["Tizanidine 40 mg/day is above the 36 mg/day maximum"]
    assert "MedicationRequest/t1" in cards[0]["detail"]
    assert "not counted" in cards[0]["detail"]


def test_text_only_tizanidine_is_matched_and_says_so(call):
    order = med_request("d1", None, text="tizanidine 4 mg tablet", dose_mg=10, per_day=4)
    cards = dose_cards(call, hook_request([order]))
    assert len(cards) == 1
    assert "identified by name only" in cards[0]["detail"]


def test_a_stopped_order_is_not_dosed(call):
    body = hook_request([tizanidine(dose_mg=20, status="stopped")], hook="order-sign")
    assert dose_cards(call, body) == []


def test_baclofen_doses_do_not_count(call):
    baclofen = med_request("b1", status="active", dose_mg=20, per_day=4)
    body = hook_request([tizanidine("d1", dose_mg=4)], medications=[baclofen])
    assert dose_cards(call, body) == []
