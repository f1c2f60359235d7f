"""`cds-hooks call`: fixtures loaded into a fake FHIR server give the same cards as the fixtures."""

from __future__ import annotations

import dataclasses
import json

import pytest
import responses

from cds_hooks import create_app
from cds_hooks.cli import main
from cds_hooks.commands.call import read_drafts
from cds_hooks.pipeline import call_service
from cds_hooks.services import PURPOSES, SERVICES
from tests.test_load_fixtures import BASE, FIXTURES, FakeFhirServer, copy_fixtures

# One of each kind: order-select, order-sign revising an order on record (taper), a
# medicationReference to a Medication resource, the deprecated medication-prescribe hook, and
# patientId/encounterId sent as references (`Patient/...`, an absolute Encounter URL).
SCENARIOS = (
    "bac-indication-stroke-warning",
    "bac-taper-dose-cut-over-50-warning",
    "bac-indication-medication-reference-rheumatoid-warning",
    "medication-prescribe-bac-indication-stroke-warning",
    "ehr-patient-reference-no-user-warning",
)
REFERENCED = "ehr-patient-reference-no-user-warning"


def rules_and_indicators(cards):
    return sorted((c["source"].get("topic", {}).get("code"), c["indicator"]) for c in cards)


def direct_cards(name: str, knowledge, tmp_path) -> list[dict]:
    """The cards for the fixture's own request (its prefetch), evaluated in-process."""
    request = json.loads((FIXTURES / name / "request.json").read_text())
    now = json.loads((FIXTURES / name / "expected.json").read_text())["now"]
    app = create_app({"NOW": now, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)})
    runtime = dataclasses.replace(app.extensions["cds_hooks"], store=None)
    service = next(s for s in SERVICES if s.hook == request["hook"])
    return call_service(service, request, runtime).response["cards"]


@pytest.fixture
def loaded(tmp_path, capsys):
    root = copy_fixtures(tmp_path, *SCENARIOS)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        server = FakeFhirServer(mock)
        assert main(["load-fixtures", "--fhir", BASE, "--fixtures", str(root)]) == 0
        capsys.readouterr()
        yield root, server, mock


def run_call(capsys, *argv: str) -> tuple[int, dict, str]:
    status = main(["call", *argv])
    captured = capsys.readouterr()
    body = json.loads(captured.out) if captured.out.strip() else {}
    return status, body, captured.err


@pytest.mark.parametrize("mode", ["prefetch", "fhirserver"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_round_trip_through_a_fhir_server_gives_the_fixture_cards(
    name, mode, loaded, capsys, knowledge, tmp_path
):
    root, server, _mock = loaded
    draft = root / name / "request.json"
    status, body, err = run_call(capsys, "--fhir", BASE, "--draft", str(draft), "--mode", mode)
    assert status == 0, err
    expected = direct_cards(name, knowledge, tmp_path)
    assert expected, "each chosen scenario has a card, so a lost id would show"
    assert rules_and_indicators(body["cards"]) == rules_and_indicators(expected)
    assert "card(s) from antispasticity-" in err
    reads = [h for h in server.headers if "Content-Type" not in h]
    assert reads, "the patient's data was read from the FHIR server"


def test_a_revised_order_keeps_pointing_at_the_loaded_order(loaded):
    root, server, _mock = loaded
    drafts = read_drafts(root / "bac-taper-dose-cut-over-50-warning" / "request.json")
    on_server = {
        key.split("/", 1)[1] for key in server.store if key.startswith("MedicationRequest/")
    }
    assert any(order["id"] in on_server for order in drafts.orders)
    assert drafts.now and drafts.patient_id


@pytest.mark.parametrize("mode", ["prefetch", "fhirserver"])
def test_a_patient_id_sent_as_a_reference_is_read_as_the_id(loaded, capsys, mode):
    """The fixture says `Patient/pat-ehr-ref-no-user`: the call names the patient as the service
    does (protocol.bare_id), never `Patient/Patient/...`."""
    root, _server, _mock = loaded
    draft = root / REFERENCED / "request.json"
    argv = ["--fhir", BASE, "--draft", str(draft), "--mode", mode, "--print-request"]
    status, _body, err = run_call(capsys, *argv, "--token", "t0k")
    assert status == 0, err
    printed = json.loads(err[: err.index("\n}\n") + 2])
    assert printed["context"]["patientId"] == "pat-ehr-ref-no-user"
    assert "/" not in printed["context"]["encounterId"]
    order = printed["context"]["draftOrders"]["entry"][0]["resource"]
    assert order["subject"] == {"reference": "Patient/pat-ehr-ref-no-user"}
    if mode == "fhirserver":
        assert printed["fhirAuthorization"]["patient"] == "pat-ehr-ref-no-user"
    else:
        assert printed["prefetch"]["patient"]["id"] == "pat-ehr-ref-no-user"


def test_token_goes_to_the_fhir_server_and_is_never_printed(loaded, capsys):
    root, server, _mock = loaded
    server.headers.clear()
    draft = root / SCENARIOS[0] / "request.json"
    argv = ["--fhir", BASE, "--draft", str(draft), "--token", "s3cret-token", "--print-request"]
    status, _body, err = run_call(capsys, *argv)
    assert status == 0
    assert server.headers and all(
        h["Authorization"] == "Bearer s3cret-token" for h in server.headers
    )
    assert "s3cret-token" not in err
    printed = json.loads(err[: err.index("\n}\n") + 2])
    assert set(printed["prefetch"]) == set(PURPOSES)


def test_fhirserver_mode_sends_fhir_server_and_authorization(loaded, capsys):
    root, _server, _mock = loaded
    draft = root / SCENARIOS[0] / "request.json"
    argv = ["--fhir", BASE, "--draft", str(draft), "--mode", "fhirserver", "--token", "t0k"]
    status, _body, err = run_call(capsys, *argv, "--print-request")
    assert status == 0
    printed = json.loads(err[: err.index("\n}\n") + 2])
    assert printed["fhirServer"] == BASE
    assert "prefetch" not in printed
    assert printed["fhirAuthorization"]["token_type"] == "Bearer"
    assert "access_token" not in printed["fhirAuthorization"]  # not printed


def test_a_single_medication_request_as_draft(tmp_path, capsys):
    order = {
        "resourceType": "MedicationRequest",
        "id": "new-1",
        "intent": "order",
        "medicationCodeableConcept": {"text": "baclofen 10 mg tablet"},
    }
    draft = tmp_path / "draft.json"
    draft.write_text(json.dumps(order))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakeFhirServer(mock).store["Patient/p9"] = {"resourceType": "Patient", "id": "p9"}
        argv = ["--fhir", BASE, "--patient", "p9", "--draft", str(draft), "--print-request"]
        status, body, err = run_call(capsys, *argv, "--now", "2026-11-21T12:00:00Z")
    assert status == 0, err
    assert isinstance(body["cards"], list)
    printed = json.loads(err[: err.index("\n}\n") + 2])
    assert printed["hook"] == "order-sign"
    sent = printed["context"]["draftOrders"]["entry"][0]["resource"]
    assert sent["status"] == "draft" and sent["subject"] == {"reference": "Patient/p9"}


def test_calls_a_running_service_with_its_discovery_templates(loaded, capsys):
    root, _server, mock = loaded
    templates = {"patient": "Patient/{{context.patientId}}"}
    discovery = {
        "services": [
            {"id": "antispasticity-order-select", "hook": "order-select", "prefetch": templates}
        ]
    }
    mock.add(responses.GET, "http://svc.test/cds-services", json=discovery)
    answer = {"cards": [{"summary": "s", "indicator": "info", "source": {"label": "x"}}]}
    mock.add(
        responses.POST, "http://svc.test/cds-services/antispasticity-order-select", json=answer
    )
    draft = root / SCENARIOS[0] / "request.json"
    status, body, err = run_call(
        capsys, "--fhir", BASE, "--draft", str(draft), "--service-url", "http://svc.test/"
    )
    assert status == 0, err
    assert body == answer
    sent = json.loads(mock.calls[-1].request.body)
    assert set(sent["prefetch"]) == {"patient"}
    assert sent["context"]["selections"]
    assert "[info] -: s" in err


def test_errors(tmp_path, capsys):
    draft = tmp_path / "d.json"
    draft.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}))
    status, _b, err = run_call(capsys, "--fhir", BASE, "--draft", str(draft))
    assert status == 2 and "no --patient" in err
    status, _b, err = run_call(capsys, "--fhir", BASE, "--draft", str(draft), "--patient", "p")
    assert status == 2 and "no draft orders" in err
    draft.write_text("[1]")
    status, _b, err = run_call(capsys, "--fhir", BASE, "--draft", str(draft), "--patient", "p")
    assert status == 2 and "expected a JSON object" in err


def call_with_an_order(tmp_path, capsys, *args: str):
    """`cds-hooks call` with one minimal draft order against the fake FHIR server."""
    order = {"resourceType": "MedicationRequest", "id": "x", "intent": "order"}
    draft = tmp_path / "d.json"
    draft.write_text(json.dumps(order))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakeFhirServer(mock)
        return run_call(capsys, "--fhir", BASE, "--draft", str(draft), *args)


def test_a_patient_reference_without_an_id_is_refused_like_no_patient(tmp_path, capsys):
    status, _b, err = call_with_an_order(tmp_path, capsys, "--patient", "Patient/")
    assert status == 2, err
    assert err.strip().splitlines() == [
        "cds-hooks call: no --patient, and the draft file names none; add --patient ID"
    ]


def test_a_request_the_service_rejects_exits_non_zero(tmp_path, capsys):
    status, body, err = call_with_an_order(tmp_path, capsys, "--patient", "p", "--user", "nobody")
    assert status == 1
    assert body["error"] == "bad_request" and "HTTP 400" in err
