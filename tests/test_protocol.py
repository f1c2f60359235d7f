"""The wire: discovery, the error matrix (400/404/412/413/415), CORS, health."""

from __future__ import annotations

import json

import pytest

from cds_hooks import schemas
from cds_hooks.services import SERVICES
from tests.factories import STROKE, condition, hook_request, med_request

SELECT = "/cds-services/antispasticity-order-select"


def test_discovery_lists_one_service_per_hook_and_is_schema_valid(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    body = response.get_json()
    assert schemas.problems("discovery", body) == []
    assert [s["hook"] for s in body["services"]] == [
        "order-select",
        "order-sign",
        "medication-prescribe",
    ]
    assert [s["id"] for s in body["services"]] == [s.id for s in SERVICES]
    for service in body["services"]:
        assert set(service["prefetch"]) == {
            "patient",
            "conditions",
            "medications",
            "observations",
            "allergies",
        }
        assert service["usageRequirements"]
        assert "http://loinc.org|2164-2" in service["prefetch"]["observations"]


def test_healthz(client):
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_cors_headers_on_discovery_service_and_preflight(client):
    assert client.get("/cds-services").headers["Access-Control-Allow-Origin"] == "*"
    preflight = client.options(
        SELECT,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_cors_allowlist(knowledge, tmp_path):
    from cds_hooks import create_app

    app = create_app(
        {"KNOWLEDGE": knowledge, "CORS_ORIGINS": "https://a.example", "DATA_DIR": str(tmp_path)}
    )
    client = app.test_client()
    ok = client.get("/cds-services", headers={"Origin": "https://a.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://a.example"
    other = client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"] and "Origin" in ok.headers["Vary"]


def _valid() -> dict:
    return hook_request([med_request("d1")], conditions=[condition("c1", STROKE)])


def test_valid_request_answers_cards(call):
    status, body = call(_valid())
    assert status == 200
    assert body["cards"]


def test_unknown_service_is_404(client):
    response = client.post("/cds-services/nope", json=_valid())
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_unknown_route_is_json_404(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.is_json


def test_wrong_method_is_json_405(client):
    response = client.get(SELECT)
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_body_that_is_not_json_is_400(client):
    response = client.post(SELECT, data=b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.get_json()["message"]


def test_wrong_content_type_is_415(client):
    response = client.post(SELECT, data=json.dumps(_valid()), content_type="text/plain")
    assert response.status_code == 415


def test_fhir_json_content_type_is_accepted(client):
    response = client.post(
        SELECT, data=json.dumps(_valid()), content_type="application/fhir+json; charset=utf-8"
    )
    assert response.status_code == 200


def test_body_over_the_limit_is_413(knowledge, tmp_path):
    from cds_hooks import create_app

    app = create_app({"KNOWLEDGE": knowledge, "MAX_BODY_BYTES": 1000, "DATA_DIR": str(tmp_path)})
    response = app.test_client().post(SELECT, json=_valid())
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"


def test_hook_that_does_not_match_the_service_is_400(call):
    body = _valid()
    status, answer = call(body, "antispasticity-order-sign")
    assert status == 400
    assert answer["error"] == "hook_mismatch"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b.pop("hookInstance"), "$"),
        (lambda b: b["context"].pop("patientId"), "$.context"),
        (lambda b: b["context"].pop("draftOrders"), "$.context"),
        (lambda b: b["context"].update(selections=[]), "$.context.selections"),
        (lambda b: b["context"].update(selections="MedicationRequest/d1"), "$.context.selections"),
        (lambda b: b["context"].update(userId=42), "$.context.userId"),
        (lambda b: b.update(prefetch=[]), "$.prefetch"),
        (lambda b: b.update(fhirAuthorization={"access_token": "x", "token_type": "Bearer"}), "$"),
        (
            lambda b: b["context"]["draftOrders"].update(resourceType="Patient"),
            "$.context.draftOrders.resourceType",
        ),
    ],
)
def test_schema_problems_are_400_with_json_paths(call, mutate, path):
    body = _valid()
    mutate(body)
    status, answer = call(body)
    assert status == 400
    assert path in [p["path"] for p in answer["problems"]]


def test_selection_must_point_into_draft_orders(call):
    body = _valid()
    body["context"]["selections"] = ["MedicationRequest/elsewhere"]
    status, answer = call(body)
    assert status == 400
    assert answer["problems"][0]["path"] == "$.context.selections[0]"


def test_duplicate_keys_are_400(client):
    raw = b'{"hook": "order-select", "hook": "order-sign"}'
    response = client.post(SELECT, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "repeats the key" in response.get_json()["message"]


def test_no_prefetch_and_no_fhir_server_is_412_naming_each_key(call):
    body = _valid()
    del body["prefetch"]
    status, answer = call(body)
    assert status == 412
    assert {p["path"] for p in answer["problems"]} == {
        "$.prefetch.patient",
        "$.prefetch.conditions",
        "$.prefetch.medications",
        "$.prefetch.observations",
        "$.prefetch.allergies",
    }


def test_partial_prefetch_without_server_is_412_for_the_missing_key(call):
    body = _valid()
    del body["prefetch"]["allergies"]
    status, answer = call(body)
    assert status == 412
    assert [p["path"] for p in answer["problems"]] == ["$.prefetch.allergies"]


def test_null_prefetch_means_no_data_not_missing(call):
    body = _valid()
    body["prefetch"]["allergies"] = None
    status, _ = call(body)
    assert status == 200


def test_http_fhir_server_is_rejected_unless_allowed(call):
    body = _valid()
    del body["prefetch"]
    body["fhirServer"] = "http://ehr.example.org/fhir"
    status, answer = call(body)
    assert status == 400
    assert answer["problems"][0]["path"] == "$.fhirServer"


def test_unrelated_draft_order_gets_no_cards(call):
    from tests.factories import LISINOPRIL_10_TAB

    status, body = call(hook_request([med_request("d1", LISINOPRIL_10_TAB)]))
    assert (status, body) == (200, {"cards": []})
