"""The wire: discovery, the error matrix (400/404/412/413/415), CORS, health."""

from __future__ import annotations

import json

import pytest
import responses

from cds_hooks import schemas
from cds_hooks.services import PURPOSES, SERVICES
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
        assert list(service["prefetch"]) == list(PURPOSES)
        assert service["usageRequirements"]
        assert "http://loinc.org|2164-2" in service["prefetch"]["renal"]
        # The description says what each key is for.
        for key, purpose in PURPOSES.items():
            assert f"{key}: {purpose}" in service["description"]


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


# Words a person would not write: regular expressions, schema keywords, Python reprs.
JARGON = ("does not match", "is not of type", "required property", "(?!", "^[", "{1,", "None")


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda b: b.pop("hookInstance"), "$.hookInstance", "hookInstance is missing"),
        (lambda b: b["context"].pop("patientId"), "$.context.patientId", "patient's FHIR id"),
        (lambda b: b["context"].pop("draftOrders"), "$.context.draftOrders", "Bundle"),
        (lambda b: b["context"].update(selections=[]), "$.context.selections", "empty list"),
        (
            lambda b: b["context"].update(selections="MedicationRequest/d1"),
            "$.context.selections",
            "got text",
        ),
        (lambda b: b["context"].update(userId=42), "$.context.userId", "Practitioner/123"),
        (lambda b: b.update(prefetch=[]), "$.prefetch", "got a list"),
        (
            lambda b: b.update(fhirAuthorization={"access_token": "x", "token_type": "Bearer"}),
            "$.fhirServer",
            "fhirAuthorization is sent without fhirServer",
        ),
        (
            lambda b: b["context"]["draftOrders"].update(resourceType="Patient"),
            "$.context.draftOrders.resourceType",
            'expected "Bundle"; got "Patient"',
        ),
        (
            lambda b: b["context"].update(patientId="Patient/has space"),
            "$.context.patientId",
            "at most 256 letters, digits",
        ),
        (
            lambda b: b["context"].update(selections=["MedicationRequest/" + "x" * 257]),
            "$.context.selections[0]",
            "at most 256",
        ),
        (
            lambda b: b.update(fhirServer="https://f", fhirAuthorization={"token_type": "MAC"}),
            "$.fhirAuthorization.access_token",
            "bearer token",
        ),
    ],
)
def test_schema_problems_are_400_in_words_with_json_paths(call, mutate, path, words):
    body = _valid()
    mutate(body)
    status, answer = call(body)
    assert status == 400
    problems = {p["path"]: p["message"] for p in answer["problems"]}
    assert path in problems, problems
    assert words in problems[path]
    # The top message names the first problem in words too, and nothing reads like a schema.
    assert answer["message"].startswith("the hook request is not valid: ")
    for text in [answer["message"], *problems.values()]:
        assert not any(j in text for j in JARGON), text


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
    assert [p["path"] for p in answer["problems"]] == [f"$.prefetch.{k}" for k in PURPOSES]


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


def test_the_schemas_and_the_code_share_one_id_pattern():
    """Ids as long as Epic's: the schema patterns spell fhir.read.ID_PATTERN, nothing shorter."""
    from cds_hooks.fhir.read import ID_PATTERN, MAX_ID_CHARS

    assert MAX_ID_CHARS >= 256
    raw = json.dumps(schemas._contents())
    assert raw.count(json.dumps(ID_PATTERN)[1:-1]) >= 5  # reference, user, patient, encounter, ...
    assert "{1,64}" not in raw


@pytest.mark.parametrize(
    "body",
    [
        _valid(),
        {},
        [],
        {"hook": "order-select", "hookInstance": 1, "context": {}},
        {"hook": "order-select", "hookInstance": "x", "context": {"patientId": None}},
    ],
    ids=["valid", "empty", "list", "bad types", "null patient"],
)
def test_the_compiled_validator_agrees_with_the_worded_one(body):
    for name in ("request-order-select", "request-order-sign", "request-medication-prescribe"):
        worded = list(schemas.validator(name).iter_errors(body))
        assert schemas.is_valid(name, body) == (not worded)


def test_patient_reference_is_read_as_the_bare_id_and_user_is_optional(call):
    body = _valid()
    body["context"]["patientId"] = "https://ehr.example.org/fhir/Patient/p1"
    body["context"]["encounterId"] = "Encounter/e1"
    del body["context"]["userId"]
    body["prefetch"].pop("patient")
    body["fhirServer"] = "https://ehr.example.org/fhir"
    with responses.RequestsMock() as mock:
        mock.get(
            "https://ehr.example.org/fhir/Patient/p1",
            json={"resourceType": "Patient", "id": "p1", "gender": "female"},
        )
        status, answer = call(body)
    assert status == 200 and answer["cards"]


def test_http_fhir_server_is_ignored_when_the_prefetch_is_complete(call):
    body = _valid()
    body["fhirServer"] = "http://ehr.example.org/fhir"
    status, answer = call(body)
    assert status == 200 and answer["cards"]
    # ... and refused as soon as it would be used.
    body["prefetch"]["allergies"] = {"resourceType": "OperationOutcome", "issue": []}
    status, answer = call(body)
    assert status == 400 and answer["problems"][0]["path"] == "$.fhirServer"


def test_suggestions_always_say_whether_they_are_recommended():
    from cds_hooks.cards import make_card

    card = make_card(
        summary="s",
        indicator="info",
        source={"label": "l"},
        suggestions=[{"label": "plain"}, {"label": "best", "isRecommended": True}],
    )
    assert [s["isRecommended"] for s in card["suggestions"]] == [False, True]
    assert schemas.problems("response", {"cards": [card]}) == []
    del card["suggestions"][0]["isRecommended"]
    assert schemas.problems("response", {"cards": [card]})


def test_the_hook_routes_are_a_blueprint_like_every_other_feature(app):
    from cds_hooks import hooks

    endpoints = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints["/cds-services"] == "hooks.discovery"
    assert endpoints["/cds-services/<service_id>"] == hooks.SERVICE_ENDPOINT
