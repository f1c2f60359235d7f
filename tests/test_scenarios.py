"""Every fixture scenario, twice: with prefetch, and through a FHIR server faked with `responses`.

`fhir_fixtures/<scenario>/expected.json` lists the cards a correct service returns (rule,
indicator, targeted order); both runs must give exactly that.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import responses

from cds_hooks.fhir.read import bundle_resources
from tests.conftest import assert_valid_response
from tests.factories import fhir_authorization

FIXTURES = Path(__file__).resolve().parents[1] / "fhir_fixtures"
SCENARIOS = sorted(p.parent for p in FIXTURES.glob("*/request.json"))
BASE = "https://ehr.example.org/fhir"


def load(scenario: Path) -> tuple[dict, dict]:
    request = json.loads((scenario / "request.json").read_text(encoding="utf-8"))
    expected = json.loads((scenario / "expected.json").read_text(encoding="utf-8"))
    return request, expected


def card_keys(cards: list[dict]) -> list[tuple]:
    return sorted((c["source"]["topic"]["code"], c["indicator"]) for c in cards)


def expected_keys(expected: dict) -> list[tuple]:
    return sorted((c["rule"], c["indicator"]) for c in expected["cards"])


def targeted_orders(cards: list[dict]) -> set[str]:
    """Orders named by the cards' suggestions or text (a card names the order it targets)."""
    found = set()
    for card in cards:
        found.update(re.findall(r"MedicationRequest/[A-Za-z0-9\-.]+", json.dumps(card)))
    return found


def app_for(expected: dict, knowledge, tmp_path):
    from cds_hooks import create_app

    return create_app(
        {
            "NOW": expected.get("now", "2026-11-21T12:00:00Z"),
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path),
            # Correctness, not speed: a loaded CI machine must not turn a faked fetch into a
            # "checks could not run" card (the deadline itself is tested in test_fhir_failures).
            "DEADLINE_SECONDS": 30,
            "FHIR_TIMEOUT_SECONDS": 30,
        }
    )


def check(body: dict, expected: dict) -> None:
    assert_valid_response(body)
    assert card_keys(body["cards"]) == expected_keys(expected), expected["description"]
    named = targeted_orders(body["cards"])
    for card in expected["cards"]:
        if card.get("order"):
            assert card["order"] in named, f"no card names {card['order']}"
        if "actions" in card:  # the action types of the card's suggestions, in order
            (found,) = [
                c
                for c in body["cards"]
                if (c["source"]["topic"]["code"], c["indicator"])
                == (card["rule"], card["indicator"])
            ]
            types = [a["type"] for s in found.get("suggestions", []) for a in s["actions"]]
            assert types == card["actions"], expected["description"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_scenario_with_prefetch(scenario, knowledge, tmp_path):
    request, expected = load(scenario)
    client = app_for(expected, knowledge, tmp_path).test_client()
    response = client.post(f"/cds-services/antispasticity-{request['hook']}", json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    check(response.get_json(), expected)


def fake_server(prefetch: dict) -> responses.RequestsMock:
    """A FHIR server holding exactly the scenario's prefetched resources."""
    by_type: dict[str, list[dict]] = {}
    for value in prefetch.values():
        items = (
            bundle_resources(value)
            if value and value.get("resourceType") == "Bundle"
            else [value]
            if value
            else []
        )
        for resource in items:
            by_type.setdefault(resource["resourceType"], []).append(resource)

    def answer(request):
        path = urlsplit(request.url).path[len(urlsplit(BASE).path) + 1 :]
        assert request.headers["Authorization"] == "Bearer test-token"
        parts = path.split("/")
        if len(parts) == 2:
            match = [r for r in by_type.get(parts[0], []) if r.get("id") == parts[1]]
            if not match:
                return 404, {}, json.dumps({"resourceType": "OperationOutcome", "issue": []})
            return 200, {"Content-Type": "application/fhir+json"}, json.dumps(match[0])
        resources = list(by_type.get(parts[0], []))
        if parts[0] == "MedicationRequest":
            resources += by_type.get("Medication", [])
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(resources),
            "entry": [{"resource": r} for r in resources],
        }
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle)

    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/.*"), callback=answer)
    return mock


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_scenario_through_fhir_server(scenario, knowledge, tmp_path):
    request, expected = load(scenario)
    prefetch = request.pop("prefetch", {})
    request = copy.deepcopy(request)
    request["fhirServer"] = BASE
    request["fhirAuthorization"] = fhir_authorization("test-token")
    client = app_for(expected, knowledge, tmp_path).test_client()
    with fake_server(prefetch):
        response = client.post(f"/cds-services/antispasticity-{request['hook']}", json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    check(response.get_json(), expected)
