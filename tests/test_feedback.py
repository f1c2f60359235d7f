"""Feedback endpoint: round trip to the report, schema errors, duplicates, batches, unknowns."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid

import pytest
from sqlalchemy import select

from cds_hooks.commands import report as report_command
from cds_hooks.store.db import feedback as feedback_table
from tests.factories import HALOPERIDOL_5_TAB, MS, condition, hook_request, med_request

SERVICE = "antispasticity-order-select"
RULE = "BAC-DOPAMINE-ANTAGONIST"
WHEN = "2026-11-21T12:01:00Z"


def warning_request(hook: str = "order-select", dose_mg: float = 10) -> dict:
    """Baclofen drafted while haloperidol is current: one BAC-DOPAMINE-ANTAGONIST warning."""
    current = med_request("h1", HALOPERIDOL_5_TAB, status="active", dose_mg=5, per_day=1)
    return hook_request(
        [med_request("d1", dose_mg=dose_mg)],
        hook=hook,
        conditions=[condition("c1", MS)],
        medications=[current],
    )


def shown_card(call, rule: str = RULE, hook: str = "order-select") -> dict:
    status, answer = call(warning_request(hook))
    assert status == 200
    cards = [c for c in answer["cards"] if c["source"]["topic"]["code"] == rule]
    assert len(cards) == 1, answer
    return cards[0]


def overridden(card_uuid: str, code: str | None = "patient-aware", **extra) -> dict:
    entry = {"card": card_uuid, "outcome": "overridden", "outcomeTimestamp": WHEN, **extra}
    if code:
        entry["overrideReason"] = {
            "reason": {"system": "https://example.org/override", "code": code},
            "userComment": "discussed with patient",
        }
    return entry


def accepted(card: dict) -> dict:
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": s["uuid"]} for s in card.get("suggestions", [])[:1]],
        "outcomeTimestamp": WHEN,
    }


def post(client, entries, service: str = SERVICE):
    response = client.post(f"/cds-services/{service}/feedback", json={"feedback": entries})
    return response.status_code, response.get_json()


def stored(app) -> list[dict]:
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(feedback_table))]


def report(app, start: str = "2026-11-01", end: str = "2026-12-01"):
    from cds_hooks.commands.report import parse_day

    return app.extensions["cds_hooks"].store.report(parse_day(start), parse_day(end))


def test_round_trip_card_feedback_report(app, client, call):
    first, second, third = (shown_card(call) for _ in range(3))
    assert post(client, [overridden(first["uuid"])]) == (
        200,
        {"stored": 1, "duplicates": 0, "unknownCards": []},
    )
    assert post(client, [accepted(second)])[0] == 200
    rules = {r.rule_id: r for r in report(app).rules}
    row = rules[RULE]
    assert (row.shown, row.accepted, row.overridden, row.no_feedback) == (3, 1, 1, 1)
    assert row.override_rate == 0.5
    assert dict(row.reasons) == {"patient-aware": 1}
    assert third["uuid"]  # shown, never answered: counted under no feedback
    # Outside the date range: nothing.
    assert report(app, "2026-12-01", "2026-12-31").rules == []


def test_latest_feedback_for_a_card_wins(app, client, call):
    card = shown_card(call)
    later = {**accepted(card), "outcomeTimestamp": "2026-11-21T12:05:00Z"}
    assert post(client, [overridden(card["uuid"])])[0] == 200
    assert post(client, [later])[0] == 200
    row = report(app).rules[0]
    assert (row.accepted, row.overridden) == (1, 0)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "$"),
        ({"feedback": []}, "$.feedback"),
        ({"feedback": [{"outcome": "overridden", "outcomeTimestamp": WHEN}]}, "$.feedback[0]"),
        ({"feedback": [{"card": "x", "outcome": "ignored", "outcomeTimestamp": WHEN}]}, "outcome"),
        ({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": WHEN}]}, "[0]"),
        ({"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "today"}]}, "Ti"),
        (
            {
                "feedback": [
                    {
                        "card": "x",
                        "outcome": "overridden",
                        "outcomeTimestamp": "2026-02-30T00:00:00Z",
                    }
                ]
            },
            "outcomeTimestamp",
        ),
        (
            {"feedback": [{**overridden("x"), "overrideReason": {}}]},
            "overrideReason",
        ),
        (
            {"feedback": [overridden("x"), {"card": 7, "outcome": "overridden"}]},
            "$.feedback[1]",
        ),
    ],
)
def test_schema_errors_answer_400_with_problems(app, client, body, path):
    response = client.post(f"/cds-services/{SERVICE}/feedback", json=body)
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "bad_request"
    assert any(path in p["path"] for p in answer["problems"]), answer
    assert stored(app) == []  # nothing of a bad batch is kept


def test_not_json_and_wrong_type(client):
    response = client.post(
        f"/cds-services/{SERVICE}/feedback", data="{", content_type="application/json"
    )
    assert response.status_code == 400
    response = client.post(f"/cds-services/{SERVICE}/feedback", data="x", content_type="text/plain")
    assert response.status_code == 415


def test_unknown_service_is_404(client):
    assert post(client, [overridden("x")], service="no-such-service")[0] == 404


def test_duplicates_are_stored_once(app, client, call):
    card = shown_card(call)
    entry = overridden(card["uuid"])
    assert post(client, [entry, entry]) == (200, {"stored": 1, "duplicates": 1, "unknownCards": []})
    # A retry of the same POST, with the keys in another order and the same instant spelt +00:00.
    retry = dict(reversed(list(entry.items())))
    retry["outcomeTimestamp"] = "2026-11-21T12:01:00+00:00"
    assert post(client, [retry]) == (200, {"stored": 0, "duplicates": 1, "unknownCards": []})
    assert len(stored(app)) == 1


def test_batch_over_several_cards_and_unknown_card_is_kept_and_flagged(app, client, call):
    first, second = shown_card(call), shown_card(call)
    ghost = str(uuid.uuid4())
    status, answer = post(
        client, [overridden(first["uuid"]), accepted(second), overridden(ghost, code=None)]
    )
    assert status == 200
    assert answer == {"stored": 3, "duplicates": 0, "unknownCards": [ghost]}
    rows = {r["card_uuid"]: r for r in stored(app)}
    assert rows[ghost]["known_card"] is False
    assert rows[first["uuid"]]["known_card"] is True
    assert rows[first["uuid"]]["reason_code"] == "patient-aware"
    assert rows[first["uuid"]]["user_comment"] == "discussed with patient"
    assert rows[second["uuid"]]["accepted_suggestions"] == [
        s["uuid"] for s in second.get("suggestions", [])[:1]
    ]
    assert report(app).unknown_card_feedback == 1


def test_comments_can_be_left_out(knowledge, tmp_path):
    from cds_hooks import create_app

    app = create_app(
        {"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), "FEEDBACK_KEEP_COMMENTS": False}
    )
    assert post(app.test_client(), [overridden("x")])[0] == 200
    (row,) = stored(app)
    assert row["user_comment"] is None and row["with_reason"] is True


def test_concurrent_feedback_from_threads_loses_nothing(app):
    ids = [[str(uuid.uuid4()) for _ in range(15)] for _ in range(8)]
    failures = []

    def worker(batch):
        client = app.test_client()
        for card in batch:
            status, _ = post(client, [overridden(card)])
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=worker, args=(b,)) for b in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert {r["card_uuid"] for r in stored(app)} == {c for b in ids for c in b}


def test_report_command_formats(app, client, call, capsys, tmp_path):
    card = shown_card(call)
    assert post(client, [overridden(card["uuid"])])[0] == 200
    args = ["report", "--data-dir", str(tmp_path), "--from", "2026-11-21", "--to", "2026-11-21"]
    from cds_hooks.cli import main

    assert main([*args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rules"][0] == {
        "rule": RULE,
        "shown": 1,
        "suppressed": 0,
        "accepted": 0,
        "overridden": 1,
        "noFeedback": 0,
        "overrideRate": 1.0,
        "overrideReasons": {"patient-aware": 1},
    }
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["rule"] == RULE and rows[0]["override_rate"] == "1.0000"
    assert main(args) == 0
    text = capsys.readouterr().out
    assert RULE in text and "100.0%" in text and "patient-aware: 1" in text
    assert main([*args[:3], "--from", "2026-11-22", "--to", "2026-11-21"]) == 2
    assert report_command.HELP
