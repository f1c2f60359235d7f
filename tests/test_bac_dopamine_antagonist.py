"""BAC-DOPAMINE-ANTAGONIST: both directions, current vs stopped, other drafts."""

from __future__ import annotations

import pytest

from tests.factories import (
    CURRENT_THERAPY_STATUSES,
    HALOPERIDOL_5_TAB,
    METOCLOPRAMIDE_10_TAB,
    MS,
    condition,
    hook_request,
    med_request,
    rule_cards,
)

RULE = "BAC-DOPAMINE-ANTAGONIST"


def interaction_cards(call, body):
    return rule_cards(call, body, RULE)


MS_RECORD = [condition("c1", MS)]


@pytest.mark.parametrize(("status", "fires"), CURRENT_THERAPY_STATUSES)
def test_baclofen_order_with_haloperidol_on_record(call, status, fires):
    current = med_request("h1", HALOPERIDOL_5_TAB, status=status, dose_mg=5, per_day=1)
    body = hook_request([med_request("d1")], conditions=MS_RECORD, medications=[current])
    cards = interaction_cards(call, body)
    assert [c["indicator"] for c in cards] == (["warning"] if fires else [])
    if fires:
        assert "haloperidol 5 MG Oral Tablet" in cards[0]["summary"]
        assert "MedicationRequest/h1" in cards[0]["detail"]


def test_dopamine_antagonist_ordered_while_baclofen_is_current(call):
    baclofen = med_request("b1", status="active")
    order = med_request("d1", METOCLOPRAMIDE_10_TAB, dose_mg=10, per_day=3)
    cards = interaction_cards(
        call, hook_request([order], conditions=MS_RECORD, medications=[baclofen])
    )
    assert len(cards) == 1
    assert cards[0]["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/d1"


def test_dopamine_antagonist_without_baclofen_is_quiet(call):
    order = med_request("d1", METOCLOPRAMIDE_10_TAB)
    assert interaction_cards(call, hook_request([order], conditions=MS_RECORD)) == []


def test_other_draft_in_the_session_counts(call):
    quetiapine = med_request("d2", ("312743", "quetiapine 100 MG Oral Tablet"), dose_mg=100)
    body = hook_request(
        [med_request("d1"), quetiapine], selections=["MedicationRequest/d1"], conditions=MS_RECORD
    )
    cards = interaction_cards(call, body)
    assert len(cards) == 1
    assert "another draft order" in cards[0]["detail"]


def test_text_only_antipsychotic_is_recognised(call):
    current = med_request("h1", None, text="Haloperidol 2 mg tablets", status="active")
    body = hook_request([med_request("d1")], conditions=MS_RECORD, medications=[current])
    assert len(interaction_cards(call, body)) == 1
