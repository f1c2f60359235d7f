"""BAC-DOSE at 60/80/160 mg/day edges, summed orders, as-needed, start-low, unknown doses."""

from __future__ import annotations

import pytest

from tests.factories import MS, condition, hook_request, med_request, rule_cards

RULE = "BAC-DOSE"
RECORD = [condition("c1", MS)]
PRIOR = med_request("old", status="completed", dose_mg=5, per_day=3)


def dose_cards(call, body):
    return rule_cards(call, body, RULE)


@pytest.mark.parametrize(
    ("dose_mg", "per_day", "expected"),
    [
        (20, 3, []),  # 60 mg/day: not above 60
        (15.25, 4, ["info"]),  # 61 mg/day
        (20, 4, ["info"]),  # 80 mg/day: at the maximum, above 60
        (26.7, 3, ["warning"]),  # 80.1 mg/day
        (39.95, 4, ["warning"]),  # 159.8 mg/day
        (40, 4, ["critical"]),  # 160 mg/day: twice the maximum
    ],
)
def test_daily_dose_tiers(call, dose_mg, per_day, expected):
    body = hook_request(
        [med_request("d1", dose_mg=dose_mg, per_day=per_day)],
        conditions=RECORD,
        medications=[PRIOR],
    )
    assert [c["indicator"] for c in dose_cards(call, body)] == expected


def test_two_orders_each_fine_together_over_the_maximum(call):
    current = med_request("b1", status="active", dose_mg=15, per_day=3)  # 45
    body = hook_request(
        [med_request("d1", dose_mg=15, per_day=3)], conditions=RECORD, medications=[current]
    )  # + 45 = 90
    cards = dose_cards(call, body)
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "90 mg/day" in cards[0]["summary"]
    assert "MedicationRequest/b1" in cards[0]["detail"]


def test_stopped_order_is_not_summed(call):
    stopped = med_request("b1", status="stopped", dose_mg=15, per_day=3)
    body = hook_request(
        [med_request("d1", dose_mg=15, per_day=3)], conditions=RECORD, medications=[stopped, PRIOR]
    )
    assert dose_cards(call, body) == []


def test_as_needed_counts_at_max_dose_per_period(call):
    order = med_request("d1", dose_mg=None)
    order["dosageInstruction"] = [
        {
            "asNeededBoolean": True,
            "timing": {"repeat": {"frequency": 1, "period": 2, "periodUnit": "h"}},
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
            "maxDosePerPeriod": {
                "numerator": {
                    "value": 90,
                    "unit": "mg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mg",
                },
                "denominator": {
                    "value": 24,
                    "unit": "h",
                    "system": "http://unitsofmeasure.org",
                    "code": "h",
                },
            },
        }
    ]
    body = hook_request([order], conditions=RECORD, medications=[PRIOR])
    assert [c["indicator"] for c in dose_cards(call, body)] == ["warning"]


def test_tablet_units_use_the_strength_in_the_product_name(call):
    order = med_request("d1", dose_mg=None)
    order["dosageInstruction"] = [
        {
            "timing": {"code": {"coding": [{"code": "QID"}]}},
            "doseAndRate": [{"doseQuantity": {"value": 3, "unit": "tablet"}}],
        }
    ]  # 3 x 10 mg x 4
    body = hook_request([order], conditions=RECORD, medications=[PRIOR])
    assert [c["indicator"] for c in dose_cards(call, body)] == ["warning"]


def test_unknown_unit_gives_no_card_never_a_guess(call):
    order = med_request("d1", dose_mg=None)
    order["dosageInstruction"] = [
        {
            "timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 300, "unit": "drops"}}],
        }
    ]
    assert dose_cards(call, hook_request([order], conditions=RECORD, medications=[PRIOR])) == []


@pytest.mark.parametrize(("dose_mg", "expected"), [(5, []), (5.5, ["info"]), (10, ["info"])])
def test_first_order_should_start_low(call, dose_mg, expected):
    body = hook_request([med_request("d1", dose_mg=dose_mg, per_day=3)], conditions=RECORD)
    cards = dose_cards(call, body)
    assert [c["indicator"] for c in cards] == expected
    if cards:
        assert "start low" in cards[0]["summary"]


def test_no_start_low_card_when_baclofen_was_taken_before(call):
    body = hook_request(
        [med_request("d1", dose_mg=10, per_day=3)], conditions=RECORD, medications=[PRIOR]
    )
    assert dose_cards(call, body) == []


def test_intrathecal_doses_are_not_oral_doses(call):
    from tests.factories import BACLOFEN_IT

    order = med_request("d1", BACLOFEN_IT, dose_mg=100, per_day=1, route="intrathecal")
    assert dose_cards(call, hook_request([order], conditions=RECORD, medications=[PRIOR])) == []


def test_a_new_order_replacing_a_prior_prescription_is_not_counted_twice(call):
    current = med_request("b1", status="active", dose_mg=20, per_day=3)  # 60
    new = med_request(
        "d1", dose_mg=25, per_day=3, priorPrescription={"reference": "MedicationRequest/b1"}
    )  # 75 instead, not 135
    body = hook_request([new], conditions=RECORD, medications=[current])
    assert [c["indicator"] for c in dose_cards(call, body)] == ["info"]
