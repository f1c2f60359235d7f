"""The engine and the card edge: a crashing rule, an invalid suggestion, unavailable data."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from cds_hooks import suggestions
from cds_hooks.cards import Finding, card_for
from cds_hooks.engine import Evaluation, evaluate
from cds_hooks.record import build_record
from cds_hooks.rules import RULES, Rule
from cds_hooks.services import BY_ID
from tests.factories import hook_request, med_request

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def record_for(knowledge, unavailable=None):
    body = hook_request([med_request("d1")], hook="order-sign")
    resources = {k: [] for k in body["prefetch"]}
    return build_record(
        BY_ID["antispasticity-order-sign"],
        body["context"],
        resources,
        {},
        unavailable or {},
        knowledge,
    )


def crashing(ctx):
    raise ZeroDivisionError("a bug in the rule")


def test_a_crashing_rule_gets_its_own_wording(knowledge, caplog):
    rules = [Rule("BAC-DOSE", ("medications",), ("drug/baclofen",), crashing)]
    result = evaluate(record_for(knowledge), knowledge, NOW, rules)
    assert result.failed == ["BAC-DOSE"] and result.skipped == {}
    (card,) = result.cards(knowledge)
    assert card["indicator"] == "info"
    assert card["source"]["topic"]["code"] == "CHECK-FAILED"
    assert "this check failed; please report" in card["detail"]
    assert "unavailable" not in card["summary"] + card["detail"]
    assert "rule BAC-DOSE failed" in caplog.text


def test_unavailable_data_keeps_the_data_wording(knowledge):
    record = record_for(knowledge, {"medications": "medications: FHIR server timed out"})
    rules = [r for r in RULES if r.id == "BAC-DOSE"]
    result = evaluate(record, knowledge, NOW, rules)
    (card,) = result.cards(knowledge)
    assert card["source"]["topic"]["code"] == "DATA-UNAVAILABLE"
    assert "patient data was unavailable" in card["summary"]
    assert "FHIR server timed out" in card["detail"]
    assert "please report" not in card["detail"]


def test_the_card_edge_drops_only_the_invalid_suggestion(knowledge, caplog):
    caplog.set_level("WARNING", logger="cds_hooks")  # whatever level an earlier app left
    record = record_for(knowledge)
    order = record.drafts[0]
    bad = suggestions.replace(
        order, {**order.resource, "authoredOn": "2026-02-30"}, "Replace it", "taper"
    )
    finding = Finding(
        "BAC-TAPER",
        "stop_itb",
        order.ref,
        {"order": order.label()},
        (),
        (bad, suggestions.cancel(order)),
    )
    with caplog.at_level(logging.WARNING, logger="cds_hooks"):  # whatever an app set before
        card = card_for(finding, knowledge)
    assert card["indicator"] == "critical"  # the finding's indicator, whatever the suggestions
    assert [s["actions"][0]["type"] for s in card["suggestions"]] == ["delete"]
    assert "suggestion 'taper' dropped" in caplog.text


def test_a_valid_suggestion_leaves_validated(knowledge):
    record = record_for(knowledge)
    order = record.drafts[0]
    good = suggestions.replace(order, dict(order.resource), "Replace it", "taper")
    finding = Finding("BAC-TAPER", "stop_itb", order.ref, {}, (), (good,))
    (suggestion,) = card_for(finding, knowledge)["suggestions"]
    resource = suggestion["actions"][0]["resource"]
    assert resource["resourceType"] == "MedicationRequest" and resource["id"] == "d1"


def test_cards_come_most_severe_first_in_rule_order(knowledge):
    """Issue 14: critical, then warning, then info; ties keep the rules' order."""
    record = record_for(knowledge)
    order = record.drafts[0]
    facts = {"order": order.label()}
    result = Evaluation(
        findings=[
            Finding("BAC-DOSE", "adverse", order.ref, facts),  # info
            Finding("BAC-DOSE", "over_max", order.ref, facts),  # warning
            Finding("BAC-INDICATION", "no_indication", order.ref, facts),  # info
            Finding("BAC-TAPER", "stop_itb", order.ref, facts),  # critical
        ],
        failed=["BAC-RENAL"],
    )
    cards = result.cards(knowledge)
    assert [c["indicator"] for c in cards] == ["critical", "warning", "info", "info", "info"]
    assert [c["source"]["topic"]["code"] for c in cards] == [
        "BAC-TAPER",
        "BAC-DOSE",
        "BAC-DOSE",
        "BAC-INDICATION",
        "CHECK-FAILED",
    ]


def test_kidney_function_and_current_therapy_are_computed_once_per_call(call, monkeypatch):
    """BAC-RENAL and TIZ-RENAL both read kidney function; it is worked out once per call."""
    from cds_hooks.rules import common
    from tests.factories import TIZANIDINE_4_TAB, observation

    computed = []
    real = common.renal_function
    monkeypatch.setattr(
        common, "renal_function", lambda *a, **k: computed.append(1) or real(*a, **k)
    )
    body = hook_request(
        [med_request("d1"), med_request("d2", TIZANIDINE_4_TAB, dose_mg=2)],
        hook="order-sign",
        observations=[observation("o1", "2164-2", 20)],
    )
    status, answer = call(body)
    assert status == 200
    fired = {c["source"]["topic"]["code"] for c in answer["cards"]}
    assert {"BAC-RENAL", "TIZ-RENAL"} <= fired
    assert computed == [1]


def test_each_orders_daily_dose_is_computed_once_per_call(call, monkeypatch):
    """BAC-DOSE reads the new order's dose, then every current order's for the total."""
    from cds_hooks import record

    computed = []
    real = record.daily_dose
    monkeypatch.setattr(
        record,
        "daily_dose",
        lambda resource, *a: computed.append(resource["id"]) or real(resource, *a),
    )
    current = med_request("b1", status="active", dose_mg=30, per_day=3)
    body = hook_request([med_request("d1", dose_mg=30, per_day=3)], medications=[current])
    status, answer = call(body)
    assert status == 200
    assert "BAC-DOSE" in {c["source"]["topic"]["code"] for c in answer["cards"]}
    assert sorted(computed) == ["b1", "d1"]  # each order once
