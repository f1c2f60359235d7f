"""Prefetch resolution: prefetched, fetched, failed or 412, and Medication lookups."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import pytest
import requests
import responses
from responses.matchers import query_string_matcher

from cds_hooks.errors import BadRequest, PreconditionFailed
from cds_hooks.fhir.client import FhirClient
from cds_hooks.fhir.resolver import ResolvedData, client_for, fill_template, resolve

BASE = "https://fhir.example.org/r4"
TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
    "meds": "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication",
}
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


def bundle(*resources: dict, next_url: str | None = None) -> dict:
    out: dict = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    out["entry"] = [{"resource": r} for r in resources]
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


def patient() -> dict:
    return {"resourceType": "Patient", "id": "p1"}


def cond(cid: str) -> dict:
    return {"resourceType": "Condition", "id": cid}


def med(mid: str) -> dict:
    return {"resourceType": "Medication", "id": mid}


def medreq(rid: str, medication_ref: str | None = None) -> dict:
    out: dict = {"resourceType": "MedicationRequest", "id": rid, "status": "draft"}
    if medication_ref:
        out["medicationReference"] = {"reference": medication_ref}
    return out


def hook_request(prefetch: dict | None = None, *, server: bool = False, **context) -> dict:
    body: dict = {
        "hook": "order-select",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/u1",
            "patientId": "p1",
            "selections": ["MedicationRequest/r1"],
            "draftOrders": bundle(medreq("r1")),
            **context,
        },
    }
    if server:
        body["fhirServer"] = BASE
        body["fhirAuthorization"] = {"access_token": "tok", "token_type": "Bearer"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def full_prefetch() -> dict:
    return {"patient": patient(), "conditions": bundle(cond("c1")), "meds": bundle()}


@pytest.fixture
def fhir() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with (
        requests.Session() as session,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        yield FhirClient(BASE, "tok", session=session, executor=pool, timeout=2.0)


def soon() -> float:
    return time.monotonic() + 5.0


def query(q: str) -> list:
    return [query_string_matcher(q)]


# ---- templates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Patient/{{context.patientId}}", "Patient/p1"),
        ("Condition?patient={{ context.patientId }}", "Condition?patient=p1"),
        ("{{context.userId}}", "Practitioner/u1"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/u1"),
        ("PractitionerRole/{{userPractitionerRoleId}}", None),
        ("Patient/{{userPatientId}}", None),
        ("RelatedPerson/{{userRelatedPersonId}}", None),
        ("Encounter/{{context.encounterId}}", None),
        ("Medication/{{context.medication.id}}", None),
        ("X?s={{context.selections}}", None),
        ("X?y={{unknownToken}}", None),
    ],
)
def test_fill_template(template, expected):
    assert fill_template(template, hook_request()) == expected


def test_fill_template_encodes_values_and_user_types():
    req = hook_request(patientId="a b&c", userId="RelatedPerson/rp-1", encounterId="e.1")
    assert fill_template("Patient?_id={{context.patientId}}", req) == "Patient?_id=a%20b%26c"
    assert fill_template("RelatedPerson/{{userRelatedPersonId}}", req) == "RelatedPerson/rp-1"
    assert fill_template("{{context.userId}}", req) == "RelatedPerson/rp-1"
    assert fill_template("Practitioner/{{userPractitionerId}}", req) is None
    assert fill_template("Encounter/{{context.encounterId}}", req) == "Encounter/e.1"
    req = hook_request(userId="PractitionerRole/r9")
    assert (
        fill_template("PractitionerRole/{{userPractitionerRoleId}}", req) == "PractitionerRole/r9"
    )
    req = hook_request(userId="Patient/pt")
    assert fill_template("Patient/{{userPatientId}}", req) == "Patient/pt"
    assert fill_template("no tokens", req) == "no tokens"


# ---- client_for ---------------------------------------------------------------------------


def build(req: dict, *, allow_http: bool = False) -> FhirClient | None:
    return client_for(
        req,
        requests.Session(),
        None,
        timeout=1.0,
        max_pages=5,
        max_bytes=1000,
        allow_http=allow_http,
    )


def test_client_for_without_server_is_none():
    assert build(hook_request()) is None


def test_client_for_builds_client():
    c = build(hook_request(server=True))
    assert c is not None and c.base_url == BASE
    assert c._headers["Authorization"] == "Bearer tok"
    assert "tok" not in repr(c)


@pytest.mark.parametrize("server", ["http://fhir.example.org/r4", "ftp://x/r4", "fhir", 5])
def test_client_for_rejects_non_https(server):
    req = hook_request()
    req["fhirServer"] = server
    with pytest.raises(BadRequest) as err:
        build(req)
    assert [p.path for p in err.value.problems] == ["$.fhirServer"]


def test_client_for_allows_http_when_configured():
    req = hook_request()
    req["fhirServer"] = "http://localhost:8080/fhir"
    c = build(req, allow_http=True)
    assert c is not None and "Authorization" not in c._headers


# ---- resolve ------------------------------------------------------------------------------


def test_prefetch_used_as_is(fhir, client):
    data = resolve(hook_request(full_prefetch(), server=True), TEMPLATES, client, soon())
    assert isinstance(data, ResolvedData)
    assert data.resources == {"patient": [patient()], "conditions": [cond("c1")], "meds": []}
    assert data.sources == dict.fromkeys(TEMPLATES, "prefetch")
    assert data.failures == {}
    assert len(fhir.calls) == 0


def test_prefetch_without_server_needs_no_client():
    data = resolve(hook_request(full_prefetch()), TEMPLATES, None, soon())
    assert data.sources == dict.fromkeys(TEMPLATES, "prefetch")


def test_null_prefetch_is_empty():
    prefetch = {**full_prefetch(), "patient": None}
    data = resolve(hook_request(prefetch), TEMPLATES, None, soon())
    assert data.resources["patient"] == []
    assert data.sources["patient"] == "prefetch"


@pytest.mark.parametrize("bad", [OUTCOME, bundle(OUTCOME), "<html>error</html>"])
def test_operation_outcome_prefetch_is_fetched(fhir, client, bad):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("c9")))
    prefetch = {**full_prefetch(), "conditions": bad}
    data = resolve(hook_request(prefetch, server=True), TEMPLATES, client, soon())
    assert data.resources["conditions"] == [cond("c9")]
    assert data.sources["conditions"] == "fetched"
    assert data.sources["patient"] == "prefetch"
    assert len(fhir.calls) == 1
    assert fhir.calls[0].request.url == f"{BASE}/Condition?patient=p1&clinical-status=active"


def test_operation_outcome_prefetch_without_server_is_412():
    prefetch = {**full_prefetch(), "conditions": OUTCOME}
    with pytest.raises(PreconditionFailed) as err:
        resolve(hook_request(prefetch), TEMPLATES, None, soon())
    assert [p.path for p in err.value.problems] == ["$.prefetch.conditions"]
    assert "OperationOutcome" in err.value.problems[0].message


def test_missing_keys_fetched_from_server(fhir, client):
    fhir.get(f"{BASE}/Patient/p1", json=patient())
    fhir.get(f"{BASE}/Condition", json=bundle(cond("c1")))
    fhir.get(f"{BASE}/MedicationRequest", json=bundle(medreq("r5", "Medication/m5"), med("m5")))
    data = resolve(hook_request(server=True), TEMPLATES, client, soon())
    assert data.sources == dict.fromkeys(TEMPLATES, "fetched")
    assert data.resources["patient"] == [patient()]
    assert data.resources["meds"] == [medreq("r5", "Medication/m5"), med("m5")]
    assert data.medications == {"Medication/m5": med("m5")}  # from _include, no extra read
    assert len(fhir.calls) == 3
    assert all(c.request.headers["Authorization"] == "Bearer tok" for c in fhir.calls)


def test_missing_keys_without_server_is_412_listing_paths():
    prefetch = {"conditions": bundle()}
    with pytest.raises(PreconditionFailed) as err:
        resolve(hook_request(prefetch), TEMPLATES, None, soon())
    assert err.value.status_code == 412
    problems = {p.path: p.message for p in err.value.problems}
    assert set(problems) == {"$.prefetch.patient", "$.prefetch.meds"}
    assert problems["$.prefetch.patient"].endswith("expected Patient/p1")
    assert "no fhirServer" in problems["$.prefetch.meds"]
    assert "patient" in err.value.message and "meds" in err.value.message


def test_no_prefetch_at_all_without_server_is_412():
    with pytest.raises(PreconditionFailed) as err:
        resolve(hook_request(), TEMPLATES, None, soon())
    assert len(err.value.problems) == 3


def test_partial_prefetch_fetches_only_missing(fhir, client):
    fhir.get(f"{BASE}/MedicationRequest", json=bundle())
    prefetch = {"patient": patient(), "conditions": bundle(cond("c1"))}
    data = resolve(hook_request(prefetch, server=True), TEMPLATES, client, soon())
    assert data.sources == {"patient": "prefetch", "conditions": "prefetch", "meds": "fetched"}
    assert [c.request.url.split("?")[0] for c in fhir.calls] == [f"{BASE}/MedicationRequest"]


def test_unfillable_template_is_no_data(fhir, client):
    templates = {"encounter": "Encounter/{{context.encounterId}}"}
    data = resolve(hook_request(server=True), templates, client, soon())
    assert data.resources == {"encounter": []}
    assert len(fhir.calls) == 0
    assert resolve(hook_request(), templates, None, soon()).resources == {"encounter": []}


def test_paged_prefetch_is_followed(fhir, client):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("c2")), match=query("page=2"))
    prefetch = {
        **full_prefetch(),
        "conditions": bundle(cond("c1"), next_url=f"{BASE}/Condition?page=2"),
    }
    data = resolve(hook_request(prefetch, server=True), TEMPLATES, client, soon())
    assert data.resources["conditions"] == [cond("c1"), cond("c2")]
    assert data.sources["conditions"] == "prefetch"


def test_paged_prefetch_without_server_keeps_first_page(caplog):
    prefetch = {**full_prefetch(), "conditions": bundle(cond("c1"), next_url=f"{BASE}/p2")}
    data = resolve(hook_request(prefetch), TEMPLATES, None, soon())
    assert data.resources["conditions"] == [cond("c1")]
    assert "more pages" in caplog.text


def test_paged_prefetch_follow_failure_is_failed(fhir, client):
    fhir.get(f"{BASE}/p2", status=500)
    prefetch = {**full_prefetch(), "conditions": bundle(cond("c1"), next_url=f"{BASE}/p2")}
    data = resolve(hook_request(prefetch, server=True), TEMPLATES, client, soon())
    assert data.sources["conditions"] == "failed"
    assert data.resources["conditions"] == []
    assert "HTTP 500" in data.failures["conditions"]


def test_fetch_failure_is_failed_with_reason(fhir, client):
    fhir.get(f"{BASE}/Patient/p1", json=patient())
    fhir.get(f"{BASE}/Condition", status=401)
    fhir.get(f"{BASE}/MedicationRequest", body=requests.ConnectionError("refused"))
    data = resolve(hook_request(server=True), TEMPLATES, client, soon())
    assert data.sources == {"patient": "fetched", "conditions": "failed", "meds": "failed"}
    assert data.resources["conditions"] == [] and data.resources["meds"] == []
    assert data.failures["conditions"] == "the FHIR server refused the access token (HTTP 401)"
    assert data.failures["meds"] == "the FHIR server could not be reached"


def test_medication_reference_read_from_server(fhir, client):
    fhir.get(f"{BASE}/Medication/m1", json=med("m1"))
    fhir.get(f"{BASE}/Medication/m2", json=med("m2"))
    fhir.get(f"{BASE}/Medication/gone", status=404)
    prefetch = {
        **full_prefetch(),
        "meds": bundle(medreq("a", "Medication/m2"), medreq("b", "Medication/gone")),
    }
    req = hook_request(prefetch, server=True, draftOrders=bundle(medreq("r1", "Medication/m1")))
    data = resolve(req, TEMPLATES, client, soon())
    assert data.medications == {"Medication/m1": med("m1"), "Medication/m2": med("m2")}
    assert sorted(c.request.url for c in fhir.calls) == [
        f"{BASE}/Medication/gone",
        f"{BASE}/Medication/m1",
        f"{BASE}/Medication/m2",
    ]


def test_medications_in_draft_bundle_or_elsewhere_not_read(fhir, client):
    drafts = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:1111", "resource": {"resourceType": "Medication"}},
            {"resource": medreq("r1", "urn:uuid:1111")},
            {"resource": medreq("r2", "Medication/in-bundle")},
            {"resource": med("in-bundle")},
            {"resource": medreq("r3", "#contained")},
            {"resource": medreq("r4", "https://other.example/fhir/Medication/x")},
            {"resource": medreq("r5", "Medication/1/_history/2")},
        ],
    }
    data = resolve(
        hook_request(full_prefetch(), server=True, draftOrders=drafts), TEMPLATES, client, soon()
    )
    assert data.medications == {
        "urn:uuid:1111": {"resourceType": "Medication"},
        "Medication/in-bundle": med("in-bundle"),
    }
    assert len(fhir.calls) == 0


def test_absolute_same_server_medication_reference(fhir, client):
    fhir.get(f"{BASE}/Medication/m7", json=med("m7"))
    drafts = bundle(medreq("r1", f"{BASE}/Medication/m7"))
    data = resolve(
        hook_request(full_prefetch(), server=True, draftOrders=drafts), TEMPLATES, client, soon()
    )
    assert data.medications["Medication/m7"] == med("m7")
    assert data.medications[f"{BASE}/Medication/m7"] == med("m7")


def test_medication_prescribe_medications_bundle_without_server():
    req = hook_request(full_prefetch())
    del req["context"]["draftOrders"]
    req["context"]["medications"] = bundle(medreq("r1", "Medication/m1"), med("m1"))
    data = resolve(req, TEMPLATES, None, soon())
    assert data.medications == {"Medication/m1": med("m1")}


def test_searchset_of_only_informational_outcomes_is_an_empty_result():
    informational = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "entry": [
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "information",
                            "code": "informational",
                            "diagnostics": "no matches",
                        }
                    ],
                },
                "search": {"mode": "outcome"},
            }
        ],
    }
    request = {"context": {"patientId": "p1"}, "prefetch": {"allergies": informational}}
    data = resolve(
        request,
        {"allergies": "AllergyIntolerance?patient={{context.patientId}}"},
        None,
        time.monotonic() + 1,
    )
    assert data.resources["allergies"] == []
    assert data.sources["allergies"] == "prefetch"


def test_searchset_of_error_outcomes_is_a_failed_prefetch():
    failed = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "timeout"}],
                }
            }
        ],
    }
    request = {"context": {"patientId": "p1"}, "prefetch": {"allergies": failed}}
    with pytest.raises(PreconditionFailed):
        resolve(
            request,
            {"allergies": "AllergyIntolerance?patient={{context.patientId}}"},
            None,
            time.monotonic() + 1,
        )
