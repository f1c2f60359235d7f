"""GET /openapi.json: consistent with our JSON Schemas and routes, and exercised by schemathesis.

Schemathesis generates requests from the document (valid and invalid bodies) and checks each
answer: no 5xx, only documented statuses and content types, and 200 bodies that match the
response schema. Examples are few and derandomized so CI stays fast and reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, given, settings
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from cds_hooks import create_app
from cds_hooks.hooks import SUPPRESSED_HEADER
from cds_hooks.openapi import schema_components
from cds_hooks.services import SERVICES
from tests.test_suppression import request as order_request


@pytest.fixture(scope="module")
def app(knowledge, tmp_path_factory):
    return create_app(
        {
            "NOW": "2026-11-21T12:00:00Z",
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path_factory.mktemp("openapi")),
            "SQLITE_SYNCHRONOUS": "NORMAL",
            "DEADLINE_SECONDS": 0.3,
            "METRICS": False,
        }
    )


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_lists_every_route_and_service(app, document):
    paths = document["paths"]
    assert "/cds-services" in paths and "/healthz" in paths
    for service in SERVICES:
        operation = paths[f"/cds-services/{service.id}"]["post"]
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema == {"$ref": f"#/components/schemas/request-{service.hook}"}
        assert {"200", "400", "412", "413", "415"} <= set(operation["responses"])
        assert f"/cds-services/{service.id}/feedback" in paths
    assert "security" not in paths["/cds-services"]["get"]  # no issuers: no auth


def test_document_carries_every_schema_file(document):
    folder = resources.files("cds_hooks.schemas")
    files = {i.name.removesuffix(".json") for i in folder.iterdir() if i.name.endswith(".json")}
    assert files <= set(document["components"]["schemas"])
    assert document["components"]["schemas"] == {
        **schema_components(),
        "Error": document["components"]["schemas"]["Error"],
    }


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves_inside_the_document(document):
    resolver = Registry().with_resource("", Resource.opaque(document)).resolver()
    for ref in set(_refs(document)):
        assert ref.startswith(("#/components/schemas/", "#/components/headers/"))
        try:
            resolver.lookup(ref)
        except Unresolvable:
            pytest.fail(f"{ref} does not resolve")


# Headers of HTTP itself and of CORS (app._cors): the protocols define them, not this document.
PROTOCOL_HEADERS = {"content-type", "content-length", "vary"}


def _undeclared(document: dict[str, Any], path: str, response: Any) -> list[str]:
    answer = document["paths"][path]["post"]["responses"][str(response.status_code)]
    declared = {name.lower() for name in answer.get("headers", {})}
    return [
        name
        for name in response.headers.keys()  # Headers iterates (name, value) pairs
        if name.lower() not in declared | PROTOCOL_HEADERS
        and not name.lower().startswith("access-control-")
    ]


def test_every_header_a_hook_call_sets_is_declared(knowledge, tmp_path):
    """Calls that set each header we add (a card held back; an error) against the document."""
    app = create_app(
        {"NOW": "2026-11-21T12:00:00Z", "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)}
    )
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    answers = {}
    for hook in ("order-select", "order-sign"):  # sign holds back the card select showed
        path = f"/cds-services/antispasticity-{hook}"
        answers[hook] = (path, client.post(path, json=order_request(hook)))
    answers["bad"] = (path, client.post(path, json={"hook": "order-sign"}))
    assert int(answers["order-sign"][1].headers[SUPPRESSED_HEADER]) >= 1
    assert answers["bad"][1].status_code == 400
    for path, response in answers.values():
        assert _undeclared(document, path, response) == [], response.status_code
    header = document["components"]["headers"][SUPPRESSED_HEADER]
    assert re.fullmatch(
        header["schema"]["pattern"], answers["order-sign"][1].headers[SUPPRESSED_HEADER]
    )


def test_secured_app_documents_the_bearer_scheme(knowledge, tmp_path):
    jwk = {"kty": "EC", "crv": "P-384", "kid": "k1", "x": "x", "y": "y"}
    app = create_app(
        {
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path),
            "METRICS": False,
            "AUTH_ISSUERS": {"https://ehr.example.org": {"jwks": {"keys": [jwk]}}},
            "PUBLIC_BASE_URL": "https://cds.example.org",
        }
    )
    doc = app.test_client().get("/openapi.json").get_json()
    discovery = doc["paths"]["/cds-services"]["get"]
    assert discovery["security"] == [{"cdsClientJwt": []}]
    assert "401" in discovery["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert doc["servers"] == [{"url": "https://cds.example.org"}]


# ---- schemathesis ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_network() -> Iterator[None]:
    """Generated bodies may name any fhirServer: nothing may leave the machine."""
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        yield


@pytest.fixture(scope="module")
def api_schema(app, no_network):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


# Listed here rather than read from the document so pytest can name each case (schemathesis'
# own pytest loader, `from_fixture`, does not work with pytest 9).
OPERATIONS = [
    ("GET", "/cds-services"),
    *[("POST", f"/cds-services/{s.id}") for s in SERVICES],
    # One feedback path: all share one handler and one schema (and its generation is slow).
    ("POST", f"/cds-services/{SERVICES[0].id}/feedback"),
    ("GET", "/healthz"),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


# A GET has no parameters or body to get wrong: negative generation only for POSTs.
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if method == "POST" or mode is GenerationMode.POSITIVE
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_conforms_to_its_openapi_document(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        case.call_and_validate(checks=CHECKS)

    run()
