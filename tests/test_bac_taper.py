"""BAC-TAPER: plain stop, ITB stop, the 50% cut edge, the switch, and the taper suggestion."""

from __future__ import annotations

import logging

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest

from cds_hooks.clinical.dose import daily_dose
from tests.factories import (
    BACLOFEN_IT,
    MS,
    TIZANIDINE_4_TAB,
    condition,
    hook_request,
    med_request,
    rule_cards,
)

RULE = "BAC-TAPER"
RECORD = [condition("c1", MS)]


def taper_cards(call, body):
    return rule_cards(call, body, RULE)


def stop_body(current, hook="order-sign", extra_drafts=()):
    stop = dict(current, status="stopped")
    return hook_request([stop, *extra_drafts], hook=hook, conditions=RECORD, medications=[current])


def test_stopping_oral_baclofen_warns_with_a_valid_stepped_taper(call):
    current = med_request("b1", status="active", dose_mg=20, per_day=3)  # 60 mg/day
    cards = taper_cards(call, stop_body(current))
    assert [c["indicator"] for c in cards] == ["warning"]
    action = cards[0]["suggestions"][0]["actions"][0]
    assert action["type"] == "update"
    taper = action["resource"]
    MedicationRequest.model_validate(taper)
    assert taper["id"] == "b1" and taper["status"] == "draft"
    steps = [line["doseAndRate"][0]["doseQuantity"]["value"] for line in taper["dosageInstruction"]]
    assert steps == sorted(steps, reverse=True) and steps[0] < 20 and steps[-1] > 0
    assert [line["sequence"] for line in taper["dosageInstruction"]] == list(
        range(1, len(steps) + 1)
    )
    # The first step is already lower than the current dose: a taper, not a continuation.
    assert daily_dose(taper).mg_per_day < 60


def test_stopping_intrathecal_baclofen_is_critical_and_offers_to_keep_it(call):
    current = med_request(
        "b1", BACLOFEN_IT, status="active", dose_mg=0.2, per_day=1, route="intrathecal"
    )
    cards = taper_cards(call, stop_body(current))
    assert [c["indicator"] for c in cards] == ["critical"]
    keep = cards[0]["suggestions"][0]["actions"][0]["resource"]
    assert keep["status"] == "active"


@pytest.mark.parametrize(
    "bad",
    [
        {"dispenseRequest": {"validityPeriod": {"start": "2026-02-30"}}},  # no such day
        {"validityPeriod": {"start": "2026-02-01"}},  # not a MedicationRequest field
    ],
    ids=["impossible-date", "unknown-key"],
)
def test_invalid_current_itb_order_keeps_the_critical_card(call, caplog, bad):
    """Regression (issue 12): the EHR's bad data costs the suggestion, never the critical card."""
    current = med_request(
        "b1", BACLOFEN_IT, status="active", dose_mg=0.2, per_day=1, route="intrathecal"
    )
    stop = dict(current, status="stopped")
    body = hook_request([stop], hook="order-sign", conditions=RECORD, medications=[current | bad])
    with caplog.at_level(logging.WARNING, logger="cds_hooks"):  # whatever a test set before
        status, answer = call(body)
    assert status == 200
    cards = [c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE]
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "suggestions" not in cards[0]  # the "keep" copy of the bad order was the only one
    assert not [c for c in answer["cards"] if c["indicator"] == "info"]  # no "could not run"
    assert "suggestion 'keep' dropped" in caplog.text


@pytest.mark.parametrize("stop", ["stopped", "cancelled", "on-hold"])
def test_stopped_cancelled_or_put_on_hold_is_a_stop(call, stop):
    """An active order put on hold is not taken any more: a stop, as a cancel is."""
    current = med_request("b1", status="active", dose_mg=20, per_day=3)
    body = hook_request(
        [dict(current, status=stop)],
        hook="order-sign",
        conditions=RECORD,
        medications=[current],
    )
    assert [c["indicator"] for c in taper_cards(call, body)] == ["warning"]


def test_stopping_an_order_that_was_not_current_is_quiet(call):
    old = med_request("b1", status="completed")
    body = hook_request(
        [dict(old, status="stopped")], hook="order-sign", conditions=RECORD, medications=[old]
    )
    assert taper_cards(call, body) == []


@pytest.mark.parametrize(
    ("new_dose", "expected"), [(10, []), (9.95, ["warning"]), (5, ["warning"])]
)
def test_cut_of_the_daily_dose_edge_at_half(call, new_dose, expected):
    current = med_request("b1", status="active", dose_mg=20, per_day=3)  # 60
    revised = dict(med_request("b1", status="active", dose_mg=new_dose, per_day=3))
    body = hook_request([revised], hook="order-sign", conditions=RECORD, medications=[current])
    cards = taper_cards(call, body)
    assert [c["indicator"] for c in cards] == expected
    if cards:
        assert cards[0]["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"]


def test_switch_to_tizanidine_on_order_select(call):
    current = med_request("b1", status="active")
    tizanidine = med_request("t1", TIZANIDINE_4_TAB, dose_mg=2, per_day=3)
    body = hook_request(
        [tizanidine, dict(current, status="stopped")],
        selections=["MedicationRequest/t1"],
        conditions=RECORD,
        medications=[current],
    )
    cards = taper_cards(call, body)
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "tizanidine" in cards[0]["summary"]


def test_tizanidine_added_while_baclofen_continues_is_not_a_switch(call):
    current = med_request("b1", status="active")
    tizanidine = med_request("t1", TIZANIDINE_4_TAB, dose_mg=2, per_day=3)
    body = hook_request([tizanidine], conditions=RECORD, medications=[current])
    assert taper_cards(call, body) == []


def test_switch_on_order_sign_gives_one_card_on_the_stop(call):
    current = med_request("b1", status="active")
    tizanidine = med_request("t1", TIZANIDINE_4_TAB, dose_mg=2, per_day=3)
    cards = taper_cards(call, stop_body(current, extra_drafts=[tizanidine]))
    assert len(cards) == 1
    assert "MedicationRequest/b1" in cards[0]["detail"]


def _qhs(rid, dose_mg, status="active"):
    order = med_request(rid, status=status, dose_mg=dose_mg, per_day=1)
    return order


def test_cut_of_one_of_two_orders_tapers_that_order_only_and_never_above_it(call):
    tid = med_request("b1", status="active", dose_mg=20, per_day=3)  # 60
    bedtime = _qhs("b2", 10)  # + 10 = 70
    revised = med_request("b1", status="active", dose_mg=5, per_day=3)  # 15 + 10 = 25
    body = hook_request([revised], hook="order-sign", conditions=RECORD, medications=[tid, bedtime])
    cards = taper_cards(call, body)
    assert [c["indicator"] for c in cards] == ["warning"]
    taper = cards[0]["suggestions"][0]["actions"][0]["resource"]
    doses = [line["doseAndRate"][0]["doseQuantity"]["value"] for line in taper["dosageInstruction"]]
    assert doses[0] < 20  # the first step is below the order's own current dose
    assert doses == sorted(doses, reverse=True)
    assert doses[-1] == 5  # and it ends on the prescriber's new dose
    assert daily_dose(taper).mg_per_day + 10 < 70  # never more than the patient took before


def test_stopping_a_low_dose_still_gets_a_real_step(call):
    current = _qhs("b1", 5)  # 5 mg/day
    cards = taper_cards(call, stop_body(current))
    assert [c["indicator"] for c in cards] == ["warning"]
    taper = cards[0]["suggestions"][0]["actions"][0]["resource"]
    assert taper["dosageInstruction"], "a taper always has a dosage"
    assert taper["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 2.5
    assert "; then stop" in cards[0]["detail"] and "Taper**: ;" not in cards[0]["detail"]


def test_partial_stop_leaving_most_of_the_dose_is_quiet(call):
    tid = med_request("b1", status="active", dose_mg=20, per_day=3)  # 60 continues
    bedtime = _qhs("b2", 10)
    body = hook_request(
        [dict(bedtime, status="stopped")],
        hook="order-sign",
        conditions=RECORD,
        medications=[tid, bedtime],
    )
    assert taper_cards(call, body) == []


def test_partial_stop_leaving_less_than_half_warns(call):
    small = _qhs("b1", 10)
    big = med_request("b2", status="active", dose_mg=20, per_day=3)  # stopping 60 of 70
    body = hook_request(
        [dict(big, status="stopped")],
        hook="order-sign",
        conditions=RECORD,
        medications=[small, big],
    )
    assert [c["indicator"] for c in taper_cards(call, body)] == ["warning"]


def test_switch_while_intrathecal_baclofen_stops_is_critical(call):
    current = med_request(
        "b1", BACLOFEN_IT, status="active", dose_mg=0.2, per_day=1, route="intrathecal"
    )
    tizanidine = med_request("t1", TIZANIDINE_4_TAB, dose_mg=2, per_day=3)
    body = hook_request(
        [tizanidine, dict(current, status="stopped")],
        selections=["MedicationRequest/t1"],
        conditions=RECORD,
        medications=[current],
    )
    cards = taper_cards(call, body)
    assert [c["indicator"] for c in cards] == ["critical"]
