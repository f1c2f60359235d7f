"""TIZ-CYP1A2: strong vs other inhibitors, both directions, current vs stopped, text-only drugs."""

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

RULE = "TIZ-CYP1A2"
CIPROFLOXACIN_500 = ("309309", "ciprofloxacin 500 MG Oral Tablet")
CIPROFLOXACIN_EYE = ("309307", "ciprofloxacin 3 MG/ML Ophthalmic Solution")
FLUVOXAMINE_50 = ("903891", "fluvoxamine maleate 50 MG Oral Tablet")
VERAPAMIL_80 = ("897683", "verapamil hydrochloride 80 MG Oral Tablet")
FAMOTIDINE_10 = ("199047", "famotidine 10 MG Oral Tablet")
COC_PACK = ("748878", "{21 (ethinyl estradiol 0.03 MG / levonorgestrel 0.15 MG Oral Tablet)} Pack")


def drug(rid: str, product: tuple[str, str] | None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("status", "active")
    kwargs.setdefault("dose_mg", None)
    return med_request(rid, product, **kwargs)


def tizanidine(rid: str = "d1", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("dose_mg", 2)
    return med_request(rid, TIZANIDINE_4_TAB, **kwargs)


def cyp_cards(call, body):
    return rule_cards(call, body, RULE)


@pytest.mark.parametrize(
    ("product", "expected", "name"),
    [
        (CIPROFLOXACIN_500, "critical", "ciprofloxacin"),
        (FLUVOXAMINE_50, "critical", "fluvoxamine"),
        (VERAPAMIL_80, "warning", "verapamil"),
        (FAMOTIDINE_10, "warning", "famotidine"),
        (CIPROFLOXACIN_EYE, None, None),  # eye drops: no relevant systemic exposure
        (COC_PACK, None, None),  # reported by TIZ-CONTRACEPTIVE only
    ],
)
def test_tizanidine_ordered_with_an_inhibitor_on_record(call, product, expected, name):
    body = hook_request([tizanidine()], medications=[drug("x1", product)])
    cards = cyp_cards(call, body)
    assert [c["indicator"] for c in cards] == ([expected] if expected else [])
    if expected:
        assert cards[0]["summary"].startswith(f"Tizanidine with {name}:")
        assert "MedicationRequest/x1" in cards[0]["detail"]
        assert cards[0]["overrideReasons"]


@pytest.mark.parametrize(("status", "fires"), CURRENT_THERAPY_STATUSES)
def test_only_current_inhibitors_count(call, status, fires):
    body = hook_request([tizanidine()], medications=[drug("x1", CIPROFLOXACIN_500, status=status)])
    assert [c["indicator"] for c in cyp_cards(call, body)] == (["critical"] if fires else [])


def test_critical_card_suggests_cancelling_the_new_tizanidine_order(call):
    body = hook_request([tizanidine()], medications=[drug("x1", FLUVOXAMINE_50)])
    (card,) = cyp_cards(call, body)
    assert card["suggestions"][0]["actions"] == [
        {
            "type": "delete",
            "description": "Remove the draft order MedicationRequest/d1",
            "resourceId": "MedicationRequest/d1",
        }
    ]


def test_warning_card_has_no_cancel_suggestion(call):
    (card,) = cyp_cards(call, hook_request([tizanidine()], medications=[drug("x1", VERAPAMIL_80)]))
    assert "suggestions" not in card


@pytest.mark.parametrize(
    ("product", "expected"), [(CIPROFLOXACIN_500, "critical"), (VERAPAMIL_80, "warning")]
)
def test_inhibitor_ordered_while_tizanidine_is_current(call, product, expected):
    body = hook_request(
        [drug("d1", product, status="draft")], medications=[tizanidine("t1", status="active")]
    )
    cards = cyp_cards(call, body)
    assert [c["indicator"] for c in cards] == [expected]
    assert "MedicationRequest/t1" in cards[0]["detail"]
    if expected == "critical":
        assert cards[0]["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/d1"


def test_inhibitor_ordered_after_tizanidine_was_stopped_is_quiet(call):
    body = hook_request(
        [drug("d1", CIPROFLOXACIN_500, status="draft")],
        medications=[tizanidine("t1", status="stopped")],
    )
    assert cyp_cards(call, body) == []


def test_one_card_at_the_highest_tier_naming_every_inhibitor(call):
    body = hook_request(
        [tizanidine()], medications=[drug("x1", VERAPAMIL_80), drug("x2", CIPROFLOXACIN_500)]
    )
    cards = cyp_cards(call, body)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "ciprofloxacin" in cards[0]["summary"]
    assert "MedicationRequest/x1" in cards[0]["detail"]
    assert "MedicationRequest/x2" in cards[0]["detail"]


def test_inhibitor_in_another_draft_counts(call):
    body = hook_request([tizanidine("d1"), drug("d2", CIPROFLOXACIN_500, status="draft")])
    cards = cyp_cards(call, body)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "another draft order in this session" in cards[0]["detail"]


@pytest.mark.parametrize("text", ["Cipro 500 mg twice daily", "fluvoxamine 50 mg"])
def test_text_only_inhibitor_is_matched_and_says_so(call, text):
    body = hook_request([tizanidine()], medications=[drug("x1", None, text=text)])
    cards = cyp_cards(call, body)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "identified by name only" in cards[0]["detail"]


def test_text_only_tizanidine_is_matched(call):
    order = med_request("d1", None, text="Zanaflex 2 mg", dose_mg=2)
    cards = cyp_cards(call, hook_request([order], medications=[drug("x1", VERAPAMIL_80)]))
    assert [c["indicator"] for c in cards] == ["warning"]


def test_inhibitor_without_tizanidine_is_quiet(call):
    baclofen = med_request("b1", status="active")
    body = hook_request([drug("d1", CIPROFLOXACIN_500, status="draft")], medications=[baclofen])
    assert cyp_cards(call, body) == []
