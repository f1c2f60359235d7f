"""ITB-PATHWAY: the prior oral trial, and the intrathecal dose unit error at both sides."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest

from cds_hooks import engine
from cds_hooks.record import build_record
from cds_hooks.rules import itb_pathway
from cds_hooks.services import BY_ID
from tests.factories import (
    BACLOFEN_10_TAB,
    BACLOFEN_IT,
    CEREBRAL_PALSY,
    MS,
    TIZANIDINE_4_TAB,
    condition,
    hook_request,
    med_request,
    patient,
    rules_of,
)

RULE = "ITB-PATHWAY"


def itb_order(
    rid: str = "itb",
    *,
    value: float = 50,
    unit: str = "ug",
    per_day: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An intrathecal baclofen order with one dose Quantity (default: a 50 mcg bolus, given once;
    with `per_day`, a scheduled daily dose)."""
    order = med_request(
        rid, BACLOFEN_IT, dose_mg=1, per_day=per_day or 1, route="intrathecal", **extra
    )
    if per_day is None:
        order["dosageInstruction"][0]["timing"] = {"repeat": {"count": 1}}
    order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": value,
        "unit": {"ug": "mcg"}.get(unit, unit),
        "system": "http://unitsofmeasure.org",
        "code": unit,
    }
    return order


def prior(rid: str, drug=BACLOFEN_10_TAB, status: str = "completed", **extra: Any) -> dict:
    return med_request(rid, drug, status=status, authoredOn="2025-06-10", **extra)


def pathway(call, drafts, *, medications=(), conditions=None, **kwargs) -> list[dict]:
    request = hook_request(
        list(drafts),
        conditions=conditions if conditions is not None else [condition("c-ms", MS)],
        medications=list(medications),
        **kwargs,
    )
    status, answer = call(request)
    assert status == 200
    return [c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE]


def indicators(cards) -> list[str]:
    return [c["indicator"] for c in cards]


# --- second line ------------------------------------------------------------------------------


def test_no_oral_trial_on_record_is_info(call):
    cards = pathway(call, [itb_order()])
    assert indicators(cards) == ["info"]
    assert cards[0]["summary"] == (
        "Intrathecal baclofen: no oral baclofen or tizanidine trial on record"
    )
    assert "overrideReasons" not in cards[0]
    assert "suggestions" not in cards[0]


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([prior("p1", status="completed")], []),
        ([prior("p1", status="stopped")], []),
        ([prior("p1", status="active")], []),
        ([prior("p1", TIZANIDINE_4_TAB, status="stopped")], []),
        ([prior("p1", status="entered-in-error")], ["info"]),
        # An earlier intrathecal order is not an oral trial, but it means the pathway decision
        # was already taken (screening bolus done or pump in place): quiet by default.
        ([itb_order("p1", status="completed")], []),
        (
            [med_request("p1", ("314076", "lisinopril 10 MG Oral Tablet"), status="active")],
            ["info"],
        ),
    ],
)
def test_prior_oral_trial(call, history, expected):
    assert indicators(pathway(call, [itb_order()], medications=history)) == expected


def test_earlier_itb_is_not_an_oral_trial_with_the_setting_off(knowledge):
    rule = knowledge.rule(RULE)
    settings = {k: dict(v) for k, v in rule.settings.items()}
    settings["quiet_when_itb_on_record"]["value"] = False
    ctx = _ctx(knowledge, [itb_order()], [itb_order("p1", status="completed")])
    ctx.settings = dataclasses.replace(rule, settings=settings)
    assert [f.template for f in _run(ctx)] == ["no_oral_trial"]


def test_cerebral_palsy_itb_gets_pathway_info_but_no_indication_card(call):
    request = hook_request(
        [itb_order()], conditions=[condition("c-cp", CEREBRAL_PALSY)], pat=patient("2002-04-01")
    )
    status, answer = call(request)
    assert status == 200
    assert rules_of(answer) == [(RULE, "info")]


def test_oral_baclofen_order_gets_no_pathway_card(call):
    oral = med_request("oral", BACLOFEN_10_TAB, dose_mg=50, per_day=1, route="oral")
    assert pathway(call, [oral]) == []


def test_text_only_lioresal_intrathecal_is_in_scope_and_says_so(call):
    order = med_request("itb", None, text="Lioresal Intrathecal", dose_mg=0.05, per_day=1)
    cards = pathway(call, [order])
    assert indicators(cards) == ["info"]
    assert (
        "Lioresal Intrathecal (MedicationRequest/itb) (identified by name only)"
        in (cards[0]["detail"])
    )


# --- dose unit error --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.1, "mg", []),
        (0.999, "mg", []),
        (1, "mg", ["critical"]),
        (50, "mg", ["critical"]),
        (0.05, "g", ["critical"]),  # 50 mg
        (100, "ug", []),  # 0.1 mg: an ordinary screening bolus
        (50, "ug", []),
        (1000, "ug", []),  # a high pump daily dose, written in micrograms: not a unit error
        (50, "mL", []),  # no mass: never a guess
    ],
)
def test_intrathecal_dose_unit_error(call, value, unit, expected):
    history = [prior("p1")]
    cards = pathway(call, [itb_order(value=value, unit=unit)], medications=history)
    assert indicators(cards) == expected


@pytest.mark.parametrize(
    ("value", "unit", "per_day", "expected"),
    [
        (0.9, "mg", 1, []),
        (1, "mg", 1, ["warning"]),  # 1 mg/day: a high pump dose, or mg for mcg: confirm
        (1.199, "mg", 1, ["warning"]),  # the top of the labelled range, written in mg
        (0.6, "mg", 3, ["warning"]),  # 1.8 mg/day
        (1.999, "mg", 1, ["warning"]),
        (2, "mg", 1, ["critical"]),
        (50, "mg", 1, ["critical"]),
        (1199, "ug", 1, []),  # the labelled maximum written in micrograms
        (2500, "ug", 1, []),  # micrograms are the expected notation: never a unit error
    ],
)
def test_scheduled_intrathecal_dose_is_a_daily_amount(call, value, unit, per_day, expected):
    order = itb_order(value=value, unit=unit, per_day=per_day)
    assert indicators(pathway(call, [order], medications=[prior("p1")])) == expected


def test_a_bolus_given_once_with_a_frequency_is_still_a_bolus(call):
    order = itb_order(value=1, unit="mg", per_day=1)
    order["dosageInstruction"][0]["timing"]["repeat"]["count"] = 1
    assert indicators(pathway(call, [order], medications=[prior("p1")])) == ["critical"]


def test_confirm_unit_card_asks_to_confirm_and_not_to_cut(call):
    order = itb_order(value=1.5, unit="mg", per_day=1)
    cards = pathway(call, [order], medications=[prior("p1")])
    assert indicators(cards) == ["warning"]
    card = cards[0]
    assert card["summary"] == (
        "Intrathecal baclofen: dose 1.5 mg once a day = 1.5 mg/day; confirm the unit (mg, not mcg?)"
    )
    assert "1500 mcg" in card["detail"]
    assert "Do not cut an established pump dose" in card["detail"]
    assert card["overrideReasons"]


def test_unit_error_card_names_the_dose_and_suggests_cancelling(call):
    order = itb_order(value=50, unit="mg")
    order["dosageInstruction"][0]["text"] = "50 mg intrathecal once"
    cards = pathway(call, [order], medications=[prior("p1")])
    assert indicators(cards) == ["critical"]
    card = cards[0]
    assert card["summary"].startswith("Intrathecal baclofen: bolus 50 mg")
    assert "unit error" in card["summary"]
    assert len(card["summary"]) < 140
    assert '- Dosage line 1: bolus 50 mg ("50 mg intrathecal once")' in card["detail"]
    assert "50000 mcg" in card["detail"]
    assert card["overrideReasons"]
    assert card["suggestions"][0]["label"] == "Cancel this intrathecal baclofen order"
    assert card["suggestions"][0]["actions"] == [
        {
            "type": "delete",
            "description": "Remove the draft order MedicationRequest/itb",
            "resourceId": "MedicationRequest/itb",
        }
    ]


def test_dose_range_high_is_read(call):
    order = itb_order()
    order["dosageInstruction"][0]["doseAndRate"] = [
        {
            "doseRange": {
                "low": {"value": 0.5, "unit": "mg", "code": "mg"},
                "high": {"value": 2, "unit": "mg", "code": "mg"},
            }
        }
    ]
    assert indicators(pathway(call, [order], medications=[prior("p1")])) == ["critical"]


def test_unit_error_and_no_oral_trial_are_two_cards(call):
    cards = pathway(call, [itb_order(value=50, unit="mg")])
    assert indicators(cards) == ["critical", "info"]


def test_a_stopped_itb_order_gets_no_pathway_card(call):
    order = itb_order(value=50, unit="mg", status="stopped")
    assert pathway(call, [order], hook="order-sign") == []


# --- rate unit error -------------------------------------------------------------------------


def rate_order(rate: dict[str, Any], where: str = "rateQuantity") -> dict[str, Any]:
    """A 50 mcg intrathecal order whose doseAndRate also carries a rate."""
    order = itb_order()
    order["dosageInstruction"][0]["doseAndRate"][0][where] = rate
    return order


def qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (qty(0.999, "mg/d"), []),
        (qty(1, "mg/d"), ["warning"]),  # 1 mg/day: confirm the unit
        (qty(1.199, "mg/d"), ["warning"]),  # the labelled pump maximum, written in mg
        (qty(1.999, "mg/d"), ["warning"]),
        (qty(2, "mg/d"), ["critical"]),  # 2 mg/day: above any labelled pump dose
        (qty(300, "mg/d"), ["critical"]),  # 300 mcg/day written as mg
        (qty(0.5, "mg/h"), ["critical"]),  # numerator under 1 mg, but 12 mg/day
        (qty(0.04, "mg/h"), []),  # 0.96 mg/day
        (qty(2, "mg/(24.h)"), ["critical"]),
        (qty(5, "mg/wk"), []),  # 0.71 mg/day averaged over the week
        (qty(0.002, "g/d"), ["critical"]),  # 2 mg/day
        (qty(5, "mg"), ["critical"]),  # no period in the unit: compared as written
        (qty(500, "ug/d"), []),  # micrograms are the expected notation
        (qty(2000, "ug/d"), []),
        (qty(10, "mL/h"), []),  # a volume rate: concentration not read, never a guess
        (qty(1, "mg/kg/h"), []),  # not a plain mass over time
    ],
)
def test_intrathecal_rate_quantity_unit_error(call, rate, expected):
    cards = pathway(call, [rate_order(rate)], medications=[prior("p1")])
    assert indicators(cards) == expected


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (qty(5, "mg"), {"value": 1, "unit": "day", "code": "d"}, ["critical"]),
        (qty(0.5, "mg"), {"value": 1, "unit": "hour", "code": "h"}, ["critical"]),
        (qty(0.9, "mg"), {"value": 1, "unit": "day", "code": "d"}, []),
        (qty(1.5, "mg"), {"value": 1, "unit": "day", "code": "d"}, ["warning"]),
        (qty(20, "mg"), {"value": 30, "unit": "days", "code": "d"}, []),  # 0.67 mg/day
        (qty(500, "ug"), {"value": 1, "unit": "day", "code": "d"}, []),
        (qty(5, "mg"), {"value": 1, "unit": "fortnight"}, []),  # unknown period: no guess
    ],
)
def test_intrathecal_rate_ratio_unit_error(call, numerator, denominator, expected):
    order = rate_order({"numerator": numerator, "denominator": denominator}, "rateRatio")
    assert indicators(pathway(call, [order], medications=[prior("p1")])) == expected


def test_rate_range_high_is_read(call):
    order = rate_order({"low": qty(0.5, "mg/d"), "high": qty(2, "mg/d")}, "rateRange")
    assert indicators(pathway(call, [order], medications=[prior("p1")])) == ["critical"]


def test_rate_unit_error_card_names_the_rate_and_the_daily_amount(call):
    order = rate_order(qty(0.5, "mg/h"))
    order["dosageInstruction"][0]["text"] = "0.5 mg/h intrathecal infusion"
    cards = pathway(call, [order], medications=[prior("p1")])
    assert indicators(cards) == ["critical"]
    card = cards[0]
    assert card["summary"] == (
        "Intrathecal baclofen: rate 0.5 mg/h = 12 mg/day, an oral-size daily dose;"
        " likely a unit error"
    )
    assert (
        '- Dosage line 1: rate 0.5 mg/h (= 12 mg/day) ("0.5 mg/h intrathecal infusion")'
        in card["detail"]
    )
    assert "12000 mcg" in card["detail"]
    assert card["overrideReasons"]
    assert card["suggestions"][0]["label"] == "Cancel this intrathecal baclofen order"


def test_a_dose_and_a_rate_unit_error_make_one_card(call):
    order = itb_order(value=50, unit="mg")
    order["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"] = qty(50, "mg/d")
    cards = pathway(call, [order], medications=[prior("p1")])
    assert indicators(cards) == ["critical"]
    assert cards[0]["summary"].startswith("Intrathecal baclofen: bolus 50 mg")


def test_stu3_dosage_level_rate_is_read(call):
    order = itb_order()
    order["dosageInstruction"][0]["rateQuantity"] = qty(3, "mg/d")
    assert indicators(pathway(call, [order], medications=[prior("p1")])) == ["critical"]


# --- data unavailable -------------------------------------------------------------------------


def _ctx(knowledge, drafts, history, unavailable=None):
    request = hook_request(drafts, medications=history)
    service = BY_ID["antispasticity-order-select"]
    resources = {"medications": history, "conditions": [], "coagulation": []}
    record = build_record(service, request["context"], resources, {}, unavailable or {}, knowledge)
    return engine.RuleContext(
        record, knowledge, knowledge.rule(RULE), datetime.fromisoformat("2026-11-21T12:00:00+00:00")
    )


def _run(ctx):
    return list(itb_pathway.evaluate(ctx))


def test_unit_error_still_found_when_medication_history_is_unavailable(knowledge):
    ctx = _ctx(
        knowledge,
        [itb_order(value=50, unit="mg")],
        [],
        unavailable={"medications": "the FHIR search failed"},
    )
    # No guess about the oral trial without the history; the unit error needs only the order.
    assert [f.template for f in _run(ctx)] == ["unit_error"]
