"""Fewer repeats: order-sign after order-select, and overridden cards, with their exceptions."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import cds_hooks.engine
from cds_hooks import create_app
from cds_hooks.store.db import cards as cards_table
from tests.factories import HALOPERIDOL_5_TAB, MS, condition, hook_request, med_request
from tests.test_feedback import RULE, overridden, post

NOW = "2026-11-21T12:00:00Z"


def request(hook: str, *, dose_mg: float = 10, patient: str | None = None, route=None) -> dict:
    current = med_request("h1", HALOPERIDOL_5_TAB, status="active", dose_mg=5, per_day=1)
    body = hook_request(
        [med_request("d1", dose_mg=dose_mg, route=route)],
        hook=hook,
        conditions=[condition("c1", MS)],
        medications=[current],
    )
    if patient:
        body["context"]["patientId"] = patient
    return body


def rule_cards(client, body) -> list[dict]:
    response = client.post(f"/cds-services/antispasticity-{body['hook']}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == RULE]


def make_app(knowledge, tmp_path, **config):
    return create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), **config})


def audited(app) -> list[dict]:
    app.extensions["cds_hooks"].store.drain()  # the audit queue written first
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        rows = conn.execute(select(cards_table).order_by(cards_table.c.shown_at))
        return [dict(r._mapping) for r in rows if r.rule_id == RULE]


def test_sign_does_not_repeat_what_select_showed(app, client):
    (shown,) = rule_cards(client, request("order-select"))
    assert rule_cards(client, request("order-sign")) == []
    select_row, sign_row = audited(app)
    assert select_row["uuid"] == shown["uuid"] and select_row["shown"] is True
    assert select_row["fingerprint"] == sign_row["fingerprint"]
    assert select_row["order_ref"] == "MedicationRequest/d1"
    assert (sign_row["shown"], sign_row["suppressed_by"], sign_row["earlier_card"]) == (
        False,
        "select-sign",
        shown["uuid"],
    )


def test_sign_alone_shows_the_card(client):
    assert len(rule_cards(client, request("order-sign"))) == 1


def test_changed_order_is_shown_again(client):
    assert len(rule_cards(client, request("order-select", dose_mg=10))) == 1
    assert len(rule_cards(client, request("order-sign", dose_mg=5))) == 1


def test_changed_route_is_shown_again(client):
    assert len(rule_cards(client, request("order-select", route="oral"))) == 1
    assert len(rule_cards(client, request("order-sign"))) == 1


def test_another_patient_is_not_suppressed(client):
    assert len(rule_cards(client, request("order-select", patient="pat-1"))) == 1
    assert len(rule_cards(client, request("order-sign", patient="pat-2"))) == 1


def test_critical_cards_are_always_shown(client, monkeypatch):
    real = cds_hooks.engine.card_for

    def critical(finding, knowledge):
        return {**real(finding, knowledge), "indicator": "critical"}

    monkeypatch.setattr(cds_hooks.engine, "card_for", critical)
    assert len(rule_cards(client, request("order-select"))) == 1
    assert len(rule_cards(client, request("order-sign"))) == 1


@pytest.mark.parametrize("off", [False, "false"])
def test_setting_off_shows_the_card_at_sign(knowledge, tmp_path, off):
    client = make_app(knowledge, tmp_path, SUPPRESS_SELECT_SIGN=off).test_client()
    assert len(rule_cards(client, request("order-select"))) == 1
    assert len(rule_cards(client, request("order-sign"))) == 1


def test_select_outside_the_window_does_not_suppress(knowledge, tmp_path):
    early = make_app(knowledge, tmp_path, NOW="2026-11-21T06:00:00Z")
    assert len(rule_cards(early.test_client(), request("order-select"))) == 1
    early.extensions["cds_hooks"].store.drain()  # another process: sees it once written
    late = make_app(knowledge, tmp_path, SELECT_SIGN_WINDOW_MINUTES=60).test_client()
    assert len(rule_cards(late, request("order-sign"))) == 1
    wide = make_app(knowledge, tmp_path, SELECT_SIGN_WINDOW_MINUTES=600).test_client()
    assert rule_cards(wide, request("order-sign")) == []


def test_overridden_with_reason_stays_quiet_for_the_same_order(knowledge, tmp_path):
    client = make_app(knowledge, tmp_path, SUPPRESS_SELECT_SIGN=False).test_client()
    (card,) = rule_cards(client, request("order-select"))
    assert post(client, [overridden(card["uuid"])])[0] == 200
    assert rule_cards(client, request("order-select")) == []
    assert rule_cards(client, request("order-sign")) == []
    # A different order (dose changed) is a new question.
    assert len(rule_cards(client, request("order-select", dose_mg=5))) == 1


def test_overridden_without_reason_is_shown_again(knowledge, tmp_path):
    client = make_app(knowledge, tmp_path, SUPPRESS_SELECT_SIGN=False).test_client()
    (card,) = rule_cards(client, request("order-select"))
    assert post(client, [overridden(card["uuid"], code=None)])[0] == 200
    assert len(rule_cards(client, request("order-select"))) == 1


def test_override_window_ends_and_can_be_off(knowledge, tmp_path):
    first = make_app(knowledge, tmp_path, NOW="2026-11-20T10:00:00Z").test_client()
    (card,) = rule_cards(first, request("order-select"))
    assert post(first, [overridden(card["uuid"])])[0] == 200
    # 26 hours later, past the 24-hour default window.
    assert len(rule_cards(make_app(knowledge, tmp_path).test_client(), request("order-select")))
    wide = make_app(knowledge, tmp_path, SUPPRESS_OVERRIDDEN_HOURS=48).test_client()
    assert rule_cards(wide, request("order-select")) == []
    off = make_app(
        knowledge, tmp_path, SUPPRESS_OVERRIDDEN_HOURS=0, NOW="2026-11-20T10:05:00Z"
    ).test_client()
    assert len(rule_cards(off, request("order-select"))) == 1


def test_a_new_interacting_drug_on_the_same_order_is_shown_again(knowledge, tmp_path):
    """Same draft, same rule and card kind, but a different partner drug: a new card."""
    from cds_hooks import create_app
    from tests.factories import (
        HALOPERIDOL_5_TAB,
        METOCLOPRAMIDE_10_TAB,
        MS,
        condition,
        hook_request,
        med_request,
    )

    app = create_app(
        {"NOW": "2026-11-21T12:00:00Z", "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)}
    )
    client = app.test_client()
    prior = med_request("old", status="completed", dose_mg=5, per_day=3)
    draft = med_request("d1", dose_mg=5, per_day=3)

    def dopamine_cards(hook, partner):
        other = med_request("x1", partner, status="active", dose_mg=5, per_day=1)
        body = hook_request(
            [draft], hook=hook, conditions=[condition("c1", MS)], medications=[prior, other]
        )
        answer = client.post(f"/cds-services/antispasticity-{hook}", json=body).get_json()
        return [
            c for c in answer["cards"] if c["source"]["topic"]["code"] == "BAC-DOPAMINE-ANTAGONIST"
        ]

    assert len(dopamine_cards("order-select", HALOPERIDOL_5_TAB)) == 1
    assert dopamine_cards("order-sign", HALOPERIDOL_5_TAB) == []  # the repeat is suppressed
    assert len(dopamine_cards("order-sign", METOCLOPRAMIDE_10_TAB)) == 1  # a new partner shows


def test_held_back_is_what_the_call_would_hold_back_and_writes_nothing(app, client):
    """Store.held_back (the preview's "next call") decides as audit_call does, read-only."""
    from datetime import UTC, datetime

    from cds_hooks.store import CallAudit, Candidate

    (shown,) = rule_cards(client, request("order-select"))
    (select_row,) = audited(app)
    store = app.extensions["cds_hooks"].store
    card = {"uuid": "next-card", "indicator": "warning"}
    candidate = Candidate(card, RULE, "MedicationRequest/d1", select_row["fingerprint"])

    def call(hook: str, patient: str | None = "pat-1") -> CallAudit:
        at = datetime(2026, 11, 21, 12, tzinfo=UTC)
        return CallAudit("antispasticity-" + hook, hook, "h-next", patient, at, 0.0)

    expected = {"next-card": ("select-sign", shown["uuid"])}
    assert store.held_back(call("order-sign"), [candidate]) == expected
    assert store.held_back(call("order-select"), [candidate]) == {}
    assert store.held_back(call("order-sign", patient=None), [candidate]) == {}
    critical = Candidate({**card, "indicator": "critical"}, RULE, None, candidate.fingerprint)
    assert store.held_back(call("order-sign"), [critical]) == {}
    assert len(audited(app)) == 1  # asking wrote nothing
    assert store.audit_call(call("order-sign"), [candidate]) == expected
    assert len(audited(app)) == 2
