"""Prefetch an EHR can fulfil: one search per data need, short URLs, real codes, typed patients."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cds_hooks.fhir.resolver import fill_template
from cds_hooks.rules import RULES
from cds_hooks.services import OBSERVATION_SEARCHES, PURPOSES, prefetch_templates

FIXTURES = Path(__file__).resolve().parents[1] / "fhir_fixtures"
REQUESTS = sorted(FIXTURES.glob("*/request.json"))
# The limit many EHRs, proxies and servers put on a GET request line (the CDS Hooks sandbox's
# "URI too long": cds-hooks/sandbox#47).
URL_LIMIT = 2048
BASE = "https://fhir.example-health-system.org/interconnect-fhir-oauth/api/FHIR/R4"


@pytest.fixture(scope="module")
def templates(knowledge):
    return prefetch_templates(knowledge)


def rendered(template: str, request: dict) -> str:
    """The URL an EHR requests for a template, percent-encoded as it goes on the wire."""
    from requests.models import PreparedRequest

    filled = fill_template(template, request)
    assert filled is not None
    prepared = PreparedRequest()
    prepared.prepare_url(f"{BASE}/{filled}", None)
    return prepared.url


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.parent.name)
def test_every_template_rendered_for_a_fixture_patient_is_under_2048_bytes(templates, path):
    request = json.loads(path.read_text(encoding="utf-8"))
    for key, template in templates.items():
        url = rendered(template, request)
        assert len(url.encode()) < URL_LIMIT, (key, len(url))


def test_templates_stay_short_even_for_the_longest_id_we_accept(templates):
    request = {"context": {"patientId": "e" + "x" * 255}}
    for key, template in templates.items():
        assert len(rendered(template, request).encode()) < URL_LIMIT, key


def test_no_loinc_answer_code_is_searched_as_an_observation_code(knowledge, templates):
    for key, template in templates.items():
        assert not re.search(r"[|=,]LA\d+-\d", template), key
    # ... though the rules still read them as answers (the value set keeps them).
    status = knowledge.terminology.codes("observation/pregnancy-status")
    assert any(code.startswith("LA") for _system, code, _display in status)


def test_patient_searches_name_the_patient_as_a_typed_reference(templates):
    for key, template in templates.items():
        if key == "patient":
            assert template == "Patient/{{context.patientId}}"
        else:
            assert "patient=Patient/{{context.patientId}}" in template, key
            assert "patient={{" not in template


def test_one_search_per_need_with_category_and_no_include(templates):
    assert list(templates) == list(PURPOSES)
    for template in templates.values():
        assert "_include" not in template and "_revinclude" not in template
    for search in OBSERVATION_SEARCHES:
        template = templates[search.key]
        assert template.startswith("Observation?")
        if search.category:
            assert f"&category={search.category}&" in template
        else:
            assert "category=" not in template
    assert "category=laboratory" in templates["renal"]
    assert "category=vital-signs" in templates["weight"]


def test_every_key_a_rule_needs_is_a_template_key(templates):
    for rule in RULES:
        assert set(rule.needs) <= set(templates), rule.id


def test_a_search_longer_than_2048_bytes_goes_as_a_form_encoded_post():
    import time

    import requests
    import responses

    from cds_hooks.fhir.client import FhirClient

    base = "https://ehr.example.org/fhir"
    codes = ",".join(f"http://loinc.org|{n}-0" for n in range(10000, 10120))
    long_query = f"Observation?patient=Patient/p1&code={codes}"
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    with responses.RequestsMock() as mock:
        post = mock.post(f"{base}/Observation/_search", json=empty)
        get = mock.get(f"{base}/Observation", json=empty)
        client = FhirClient(base, "tok", session=requests.Session())
        deadline = time.monotonic() + 5
        assert client.search(long_query, deadline) == []
        assert client.search("Observation?patient=Patient/p1&code=x|1", deadline) == []
    assert post.call_count == 1 and get.call_count == 1
    sent = post.calls[0].request
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.headers["Authorization"] == "Bearer tok"
    assert sent.body.startswith("patient=Patient/p1&code=http://loinc.org|10000-0,")
