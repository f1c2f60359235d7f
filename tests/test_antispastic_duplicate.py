"""ANTISPASTIC-DUPLICATE: baclofen with tizanidine, the same drug from two prescribers, stops."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import (
    CURRENT_THERAPY_STATUSES,
    TIZANIDINE_4_TAB,
    hook_request,
    med_request,
    rule_cards,
)

RULE = "ANTISPASTIC-DUPLICATE"
DR_A = {"reference": "Practitioner/prac-1", "display": "Dr. A"}
DR_B = {"reference": "Practitioner/prac-2", "display": "Dr. B"}


def baclofen(rid: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("requester", DR_A)
    return med_request(rid, **kwargs)


def tizanidine(rid: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("dose_mg", 2)
    kwargs.setdefault("requester", DR_A)
    return med_request(rid, TIZANIDINE_4_TAB, **kwargs)


def duplicate_cards(call, body):
    return rule_cards(call, body, RULE)


@pytest.mark.parametrize(("status", "fires"), CURRENT_THERAPY_STATUSES)
def test_tizanidine_ordered_while_baclofen_is_on_record(call, status, fires):
    body = hook_request([tizanidine("d1")], medications=[baclofen("b1", status=status)])
    cards = duplicate_cards(call, body)
    assert [c["indicator"] for c in cards] == (["info"] if fires else [])
    if fires:
        assert cards[0]["summary"] == (
            "Tizanidine with baclofen: two antispastic agents, additive sedation"
        )
        assert "MedicationRequest/b1" in cards[0]["detail"]
        assert "overrideReasons" not in cards[0]


def test_baclofen_ordered_while_tizanidine_is_current(call):
    body = hook_request([baclofen("d1")], medications=[tizanidine("t1", status="active")])
    cards = duplicate_cards(call, body)
    assert [c["summary"] for c in cards] == [
        "Baclofen with tizanidine: two antispastic agents, additive sedation"
    ]


@pytest.mark.parametrize(
    ("current_requester", "fires"),
    [(DR_B, True), (DR_A, False), (None, False)],
    ids=["different-prescriber", "same-prescriber", "no-requester"],
)
def test_same_drug_twice(call, current_requester, fires):
    current = baclofen("b1", status="active", requester=current_requester)
    if current_requester is None:
        del current["requester"]
    cards = duplicate_cards(call, hook_request([baclofen("d1")], medications=[current]))
    assert [c["indicator"] for c in cards] == (["info"] if fires else [])
    if fires:
        assert cards[0]["summary"] == "Baclofen: a second current order from a different prescriber"
        assert "Dr. B" in cards[0]["detail"]
        assert "MedicationRequest/b1" in cards[0]["detail"]


def test_two_tizanidine_orders_from_different_prescribers(call):
    current = tizanidine("t1", status="active", requester=DR_B)
    cards = duplicate_cards(call, hook_request([tizanidine("d1")], medications=[current]))
    assert [c["summary"] for c in cards] == [
        "Tizanidine: a second current order from a different prescriber"
    ]


def test_stopped_same_drug_order_is_no_duplicate(call):
    current = baclofen("b1", status="stopped", requester=DR_B)
    assert duplicate_cards(call, hook_request([baclofen("d1")], medications=[current])) == []


def test_baclofen_being_stopped_in_this_session_is_no_duplicate(call):
    """order-sign: the draft stops the record's baclofen order and starts tizanidine."""
    on_record = baclofen("b1", status="active")
    stop = baclofen("b1", status="stopped")
    body = hook_request([stop, tizanidine("d1")], hook="order-sign", medications=[on_record])
    assert duplicate_cards(call, body) == []


def test_tizanidine_being_stopped_is_not_new_therapy(call):
    on_record = tizanidine("t1", status="active")
    stop = tizanidine("t1", status="stopped")
    body = hook_request(
        [stop], hook="order-sign", medications=[on_record, baclofen("b1", status="active")]
    )
    assert duplicate_cards(call, body) == []


def test_other_draft_counts_and_order_select_targets_only_the_selection(call):
    body = hook_request(
        [tizanidine("d1"), baclofen("d2", status="draft")], selections=["MedicationRequest/d1"]
    )
    cards = duplicate_cards(call, body)
    assert len(cards) == 1
    assert "another draft order in this session" in cards[0]["detail"]
    assert cards[0]["summary"].startswith("Tizanidine with baclofen")


def test_text_only_baclofen_on_record_is_matched_and_says_so(call):
    current = med_request("b1", None, text="Baclofen 10 mg tablets", status="active")
    cards = duplicate_cards(call, hook_request([tizanidine("d1")], medications=[current]))
    assert [c["indicator"] for c in cards] == ["info"]
    assert "identified by name only" in cards[0]["detail"]


def test_unrelated_drug_is_quiet(call):
    body = hook_request([tizanidine("d1")], medications=[med_request("x1", None, text="Aspirin")])
    assert duplicate_cards(call, body) == []
