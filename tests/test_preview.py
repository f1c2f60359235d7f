"""The /preview API and page: off by default, read-only, same cards as the hook endpoint."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cds_hooks import create_app

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
SCENARIO = "bac-indication-stroke-warning"
NOW = "2026-11-21T12:00:00Z"


@pytest.fixture
def fixtures(tmp_path) -> Path:
    root = tmp_path / "fixtures"
    root.mkdir()
    shutil.copytree(FIXTURES / SCENARIO, root / SCENARIO)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "request.json").write_text("{}")
    (root / "no-request").mkdir()
    return root


@pytest.fixture
def client(tmp_path, fixtures, knowledge):
    config = {
        "PREVIEW": True,
        "FIXTURES_DIR": str(fixtures),
        "DATA_DIR": str(tmp_path),
        "KNOWLEDGE": knowledge,
        "NOW": "2001-01-01T00:00:00Z",  # the preview's `now` must win over the app clock
    }
    return create_app(config).test_client()


def hook_request() -> dict:
    return json.loads((FIXTURES / SCENARIO / "request.json").read_text())


def without_uuids(cards):
    text = json.dumps(cards)
    for card in cards:
        text = text.replace(card["uuid"], "u")
        for suggestion in card.get("suggestions", []):
            text = text.replace(suggestion["uuid"], "u")
    return json.loads(text)


def test_off_by_default(tmp_path):
    client = create_app({"DATA_DIR": str(tmp_path)}).test_client()
    assert client.get("/preview").status_code == 404
    assert client.post("/preview/api/cards", json={"request": {}}).status_code == 404


def test_page_and_assets_with_a_strict_policy(client):
    page = client.get("/preview")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'src="/preview/static/preview.js"' in page.data
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert client.get("/preview/static/preview.js").status_code == 200
    assert client.get("/preview/static/preview.css").mimetype == "text/css"
    assert client.get("/preview/static/preview.html").status_code == 404
    assert client.get("/preview/static/..%2f..%2fapp.py").status_code == 404


def test_lists_scenarios_and_services(client):
    body = client.get("/preview/api/scenarios").get_json()
    assert [s["name"] for s in body["scenarios"]] == [SCENARIO]
    assert body["scenarios"][0]["hook"] == "order-select"
    assert body["scenarios"][0]["description"]
    assert {s["hook"] for s in body["services"]} >= {"order-select", "order-sign"}
    one = client.get(f"/preview/api/scenarios/{SCENARIO}").get_json()
    assert one["request"] == hook_request()
    assert one["expected"]["now"] == NOW
    for bad in ("no-request", ".hidden", "..", "nope"):
        assert client.get(f"/preview/api/scenarios/{bad}").status_code == 404


def test_cards_are_those_of_the_hook_endpoint(client, tmp_path, knowledge):
    preview = client.post("/preview/api/cards", json={"request": hook_request(), "now": NOW})
    assert preview.status_code == 200
    body = preview.get_json()
    assert body["service"] == "antispasticity-order-select"
    assert body["now"] == "2026-11-21T12:00:00+00:00"
    assert body["sources"]["patient"] == "prefetch"
    hook_app = create_app({"NOW": NOW, "DATA_DIR": str(tmp_path / "h"), "KNOWLEDGE": knowledge})
    direct = hook_app.test_client().post(
        "/cds-services/antispasticity-order-select", json=hook_request()
    )
    assert body["cards"], "the scenario has a card"
    assert without_uuids(body["cards"]) == without_uuids(direct.get_json()["cards"])


def test_read_only_the_store_is_never_touched(client):
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the preview used the store ({name})")

    client.application.extensions["cds_hooks"].store = Untouchable()
    response = client.post("/preview/api/cards", json={"request": hook_request(), "now": NOW})
    assert response.status_code == 200


def test_bad_input_is_a_400_with_a_reason(client):
    post = lambda payload: client.post("/preview/api/cards", json=payload)  # noqa: E731
    assert post({"nope": 1}).status_code == 400
    assert (
        post({"request": hook_request(), "now": "yesterday"})
        .get_json()["message"]
        .startswith("now must be")
    )
    assert post({"request": {**hook_request(), "hook": "patient-view"}}).status_code == 400
    assert post({"request": hook_request(), "service": "nope"}).status_code == 404
    broken = hook_request()
    del broken["context"]["patientId"]
    answer = post({"request": broken})
    assert answer.status_code == 400 and answer.get_json()["problems"]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="no fhir_fixtures/ in this checkout")
def test_every_bundled_scenario_previews(tmp_path, knowledge):
    client = create_app(
        {"PREVIEW": True, "DATA_DIR": str(tmp_path), "KNOWLEDGE": knowledge}
    ).test_client()
    listed = client.get("/preview/api/scenarios").get_json()["scenarios"]
    assert len(listed) == len([p for p in FIXTURES.iterdir() if (p / "request.json").is_file()])
    for scenario in listed:
        loaded = client.get(f"/preview/api/scenarios/{scenario['name']}").get_json()
        payload = {"request": loaded["request"], "now": loaded["expected"]["now"]}
        response = client.post("/preview/api/cards", json=payload)
        assert response.status_code == 200, (scenario["name"], response.get_json())
        for card in response.get_json()["cards"]:
            assert card["summary"] and card["indicator"] in {"info", "warning", "critical"}
            assert card["source"]["label"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"request": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"request": {"hook": "order-select"}, "service": 5}',
        b'{"request": {"hook": "order-select"}, "service": ["x"]}',
        b'{"request": {}, "request": {}}',
    ],
    ids=["deep nesting", "service number", "service list", "duplicate key"],
)
def test_preview_api_refuses_odd_bodies_with_4xx(knowledge, tmp_path, raw):
    from cds_hooks import create_app

    app = create_app({"KNOWLEDGE": knowledge, "PREVIEW": True, "DATA_DIR": str(tmp_path)})
    response = app.test_client().post(
        "/preview/api/cards", data=raw, content_type="application/json"
    )
    assert 400 <= response.status_code < 500


def test_scenarios_name_no_filesystem_path(client, fixtures):
    text = client.get("/preview/api/scenarios").get_data(as_text=True)
    assert str(fixtures) not in text and "/tmp" not in text
    assert client.get("/preview/api/scenarios").get_json()["suppression"]["overridden_hours"] == 24


def test_favicon(client):
    icon = client.get("/preview/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert b'rel="icon"' in client.get("/preview").data


def _count(app, table) -> int:
    from sqlalchemy import func, select

    app.extensions["cds_hooks"].store.drain()  # the audit queue written first
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


# The service's own clock (feedback time) runs after the scenario's `now`, as in real use; or
# before it (a scenario dated days ahead): the override holds either way.
LATER = (datetime.now(UTC) + timedelta(days=3)).isoformat()


@pytest.mark.parametrize("now", [NOW, LATER], ids=["scenario-before", "scenario-after"])
def test_record_feedback_then_the_card_is_held_back_with_the_reason(
    tmp_path, fixtures, knowledge, now
):
    from cds_hooks.store.db import cards, hook_calls

    config = {"PREVIEW": True, "FIXTURES_DIR": str(fixtures), "DATA_DIR": str(tmp_path)}
    app = create_app({**config, "KNOWLEDGE": knowledge})
    client = app.test_client()
    recorded = client.post(
        "/preview/api/cards", json={"request": hook_request(), "now": now, "record": True}
    ).get_json()
    assert recorded["recorded"] is True and recorded["held_back"] == []
    card = recorded["cards"][0]
    assert _count(app, hook_calls) == 1 and _count(app, cards) == len(recorded["cards"])
    # Asking what the next call would hold back writes nothing.
    nothing = client.post("/preview/api/next", json={"request": hook_request(), "now": now})
    assert nothing.get_json()["held_back"] == []
    assert _count(app, hook_calls) == 1
    reason = card["overrideReasons"][1]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": "seen in clinic"},
                "outcomeTimestamp": "2026-11-21T12:01:00Z",
            }
        ]
    }
    answer = client.post("/cds-services/antispasticity-order-select/feedback", json=feedback)
    assert answer.status_code == 200
    upcoming = client.post("/preview/api/next", json={"request": hook_request(), "now": now})
    held = upcoming.get_json()["held_back"]
    assert [h["rule"] for h in held] == [card["source"]["topic"]["code"]]
    assert reason["display"] in held[0]["because"] and "seen in clinic" in held[0]["because"]
    assert _count(app, hook_calls) == 1
    again = client.post(
        "/preview/api/cards", json={"request": hook_request(), "now": now, "record": True}
    ).get_json()
    assert [c["uuid"] for c in again["cards"]] == [
        c["uuid"] for c in again["cards"] if c["summary"] != card["summary"]
    ]
    assert [h["card"]["summary"] for h in again["held_back"]] == [card["summary"]]
    assert again["held_back"][0]["why"] == "overridden"
    # Not recorded: the same request shows every card, and nothing more is written.
    plain = client.post("/preview/api/cards", json={"request": hook_request(), "now": now})
    assert card["summary"] in [c["summary"] for c in plain.get_json()["cards"]]
    assert _count(app, hook_calls) == 2


def test_record_must_be_a_boolean(client):
    answer = client.post("/preview/api/cards", json={"request": hook_request(), "record": "yes"})
    assert answer.status_code == 400 and "record" in answer.get_json()["message"]
