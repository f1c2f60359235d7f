"""BAC-DOSE and TIZ-DOSE offer the same order at the label maximum next to "Cancel"."""

from __future__ import annotations

import pytest

from tests.factories import TIZANIDINE_4_TAB, hook_request, med_request, rule_cards


def suggestions_of(card):
    return {s["label"]: s["actions"] for s in card.get("suggestions", [])}


def new_dose(actions):
    (action,) = actions
    assert action["type"] == "update"
    (line,) = action["resource"]["dosageInstruction"]
    return line["doseAndRate"][0]["doseQuantity"], line["timing"]["repeat"], action["resource"]


@pytest.mark.parametrize(
    ("dose_mg", "per_day", "label", "each", "times"),
    [
        (30, 3, "Change to 25 mg three times a day (within the 80 mg/day maximum)", 25, 3),
        (25, 4, "Change to 20 mg four times a day (within the 80 mg/day maximum)", 20, 4),
        (50, 2, "Change to 40 mg twice a day (within the 80 mg/day maximum)", 40, 2),
        (90, 2, "Change to 40 mg twice a day (within the 80 mg/day maximum)", 40, 2),  # critical
    ],
)
def test_baclofen_over_the_maximum_offers_the_same_order_at_it(
    call, dose_mg, per_day, label, each, times
):
    body = hook_request([med_request("d1", dose_mg=dose_mg, per_day=per_day)])
    (card,) = rule_cards(call, body, "BAC-DOSE")
    offered = suggestions_of(card)
    assert list(offered) == ["Cancel this baclofen order", label]
    quantity, repeat, resource = new_dose(offered[label])
    assert quantity == {
        "value": each,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    assert repeat == {"frequency": times, "period": 1, "periodUnit": "d"}
    assert resource["id"] == "d1"
    assert (
        resource["medicationCodeableConcept"]
        == body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    )


def test_baclofen_suggestion_leaves_room_for_the_other_current_orders(call):
    current = med_request("cur", status="active", dose_mg=10, per_day=3)
    body = hook_request([med_request("d1", dose_mg=20, per_day=3)], medications=[current])
    (card,) = rule_cards(call, body, "BAC-DOSE")  # 30 + 60 = 90 mg/day
    offered = suggestions_of(card)
    label = "Change to 15 mg three times a day (within the 80 mg/day maximum)"  # 50/3 -> 15
    assert label in offered  # 30 + 45 = 75 mg/day, in whole 5 mg steps


def test_no_room_left_offers_only_cancel(call):
    current = med_request("cur", status="active", dose_mg=20, per_day=4)  # already 80 mg/day
    body = hook_request([med_request("d1", dose_mg=5, per_day=3)], medications=[current])
    (card,) = rule_cards(call, body, "BAC-DOSE")
    assert list(suggestions_of(card)) == ["Cancel this baclofen order"]


def test_the_info_tier_offers_nothing(call):
    (card,) = rule_cards(call, hook_request([med_request("d1", dose_mg=25, per_day=3)]), "BAC-DOSE")
    assert card["indicator"] == "info" and "suggestions" not in card


def tizanidine(dose_mg, per_day, **kw):
    return med_request("t1", TIZANIDINE_4_TAB, dose_mg=dose_mg, per_day=per_day, **kw)


@pytest.mark.parametrize(
    ("dose_mg", "per_day", "label", "each", "times"),
    [
        (16, 3, "Change to 12 mg three times a day (the 36 mg/day maximum)", 12, 3),
        # Four doses a day become three: the label's maximum of three doses in 24 hours.
        (10, 4, "Change to 12 mg three times a day (the 36 mg/day maximum)", 12, 3),
        # A single dose over 16 mg: each at most 16 mg, same two doses a day.
        (18, 2, "Change to 16 mg twice a day (at most 16 mg a dose)", 16, 2),
        (20, 3, "Change to 12 mg three times a day (the labelled maximum)", 12, 3),
    ],
)
def test_tizanidine_over_a_maximum_offers_the_same_order_at_it(
    call, dose_mg, per_day, label, each, times
):
    (card,) = rule_cards(call, hook_request([tizanidine(dose_mg, per_day)]), "TIZ-DOSE")
    offered = suggestions_of(card)
    assert list(offered) == ["Cancel this tizanidine order", label]
    quantity, repeat, _resource = new_dose(offered[label])
    assert quantity["value"] == each and repeat["frequency"] == times


def test_a_dose_in_tablets_or_as_needed_gets_no_rewritten_order(call):
    order = tizanidine(16, 3)
    order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": 4,
        "unit": "tablet",
        "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
        "code": "TAB",
    }
    (card,) = rule_cards(call, hook_request([order]), "TIZ-DOSE")
    assert list(suggestions_of(card)) == ["Cancel this tizanidine order"]
