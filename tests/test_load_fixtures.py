"""`cds-hooks load-fixtures` against a fake FHIR server (responses): ids, bundles, idempotence."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from cds_hooks.cli import main
from cds_hooks.commands import load_fixtures
from cds_hooks.commands.load_fixtures import build_scenario, read_scenarios, server_id

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
BASE = "https://fhir.test/r4"
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class FakeFhirServer:
    """Just enough FHIR REST for these tests: transaction PUTs, reads, and the prefetch searches."""

    def __init__(self, mock: responses.RequestsMock, base: str = BASE):
        self.base = base
        self.store: dict[str, dict] = {}
        self.transactions: list[dict] = []
        self.headers: list[dict] = []
        mock.add_callback(responses.POST, base, callback=self._transaction)
        pattern = re.compile(re.escape(base) + r"/[A-Za-z]+(/[^?]*)?(\?.*)?$")
        mock.add_callback(responses.GET, pattern, callback=self._get)

    def _transaction(self, request):
        self.headers.append(dict(request.headers))
        bundle = json.loads(request.body)
        self.transactions.append(bundle)
        answers = []
        for entry in bundle["entry"]:
            key = entry["request"]["url"]
            status = "200 OK" if key in self.store else "201 Created"
            self.store[key] = entry["resource"]
            answers.append({"response": {"status": status, "location": f"{key}/_history/1"}})
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(body)

    def _get(self, request):
        self.headers.append(dict(request.headers))
        parts = urlsplit(request.url)
        path = parts.path[len(urlsplit(self.base).path) + 1 :]
        if path == "metadata":
            return 200, {}, json.dumps({"resourceType": "CapabilityStatement"})
        if "/" in path:
            found = self.store.get(path)
            return (200, {}, json.dumps(found)) if found else (404, {}, "{}")
        return 200, {}, json.dumps(self._search(path, parse_qs(parts.query)))

    def _search(self, kind: str, query: dict) -> dict:
        wanted = query["patient"][0]
        patient = wanted if "/" in wanted else f"Patient/{wanted}"  # bare ids typed, as Medplum
        codes = set(query["code"][0].split(",")) if "code" in query else None
        matches = []
        for key, resource in self.store.items():
            if not key.startswith(kind + "/"):
                continue
            ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
            if ref != patient:
                continue
            if codes is not None:
                have = {f"{c.get('system')}|{c.get('code')}" for c in resource["code"]["coding"]}
                if not have & codes:
                    continue
            matches.append(resource)
        entries = [{"resource": r, "search": {"mode": "match"}} for r in matches]
        if "_include" in query:
            for resource in matches:
                ref = (resource.get("medicationReference") or {}).get("reference")
                if ref in self.store:
                    entries.append({"resource": self.store[ref], "search": {"mode": "include"}})
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": entries,
        }


def copy_fixtures(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "fixtures"
    root.mkdir(exist_ok=True)
    for name in names:
        shutil.copytree(FIXTURES / name, root / name)
    return root


def fixture_request(name: str) -> dict:
    return json.loads((FIXTURES / name / "request.json").read_text())


# ---- ids and references ----------------------------------------------------------------------


def test_patient_keeps_its_id_and_patient_data_gets_per_scenario_ids():
    request = fixture_request("bac-indication-stroke-warning")
    scenario = build_scenario("bac-indication-stroke-warning", request)
    patient_id = request["context"]["patientId"]
    kinds = {r["resourceType"] for r in scenario.resources}
    assert {"Patient", "Condition"} <= kinds
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in scenario.resources}
    assert f"Patient/{patient_id}" in by_key
    for resource in scenario.resources:
        assert _ID_RE.match(resource["id"])
        assert "meta" not in resource
        if resource["resourceType"] in {"Condition", "Observation", "MedicationRequest"}:
            assert resource["id"].endswith(server_id("bac-indication-stroke-warning", "x")[-9:])
            assert resource["subject"]["reference"] == f"Patient/{patient_id}"


def test_a_patient_id_sent_as_a_reference_names_the_loaded_patient(tmp_path, capsys):
    name = "ehr-patient-reference-no-user-warning"
    assert fixture_request(name)["context"]["patientId"] == "Patient/pat-ehr-ref-no-user"
    scenario = build_scenario(name, fixture_request(name))
    assert scenario.patient_id == "pat-ehr-ref-no-user"
    assert "Patient/pat-ehr-ref-no-user" in {
        f"{r['resourceType']}/{r['id']}" for r in scenario.resources
    }
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakeFhirServer(mock)
        root = copy_fixtures(tmp_path, name)
        assert main(["load-fixtures", "--fhir", BASE, "--fixtures", str(root)]) == 0
    assert f"ok      {name}: Patient/pat-ehr-ref-no-user," in capsys.readouterr().out


def test_references_follow_renamed_resources_and_stubs_fill_missing_practitioners():
    request = {
        "context": {"patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"}},
            "medications": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "MedicationRequest",
                            "id": "mr1",
                            "subject": {"reference": "Patient/p1"},
                            "requester": {"reference": "Practitioner/dr", "display": "Dr X"},
                            "medicationReference": {"reference": "Medication/m1"},
                            "basedOn": [
                                {"reference": "https://ehr.example.org/fhir/MedicationRequest/mr0"}
                            ],
                        }
                    },
                    {
                        "resource": {
                            "resourceType": "MedicationRequest",
                            "id": "mr0",
                            "subject": {"reference": "Patient/p1"},
                        }
                    },
                    {"resource": {"resourceType": "Medication", "id": "m1"}},
                    {"resource": {"resourceType": "OperationOutcome"}},
                ],
            },
            "observations": None,
        },
    }
    scenario = build_scenario("s1", request)
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in scenario.resources}
    mr1 = by_key[f"MedicationRequest/{server_id('s1', 'mr1')}"]
    assert mr1["medicationReference"]["reference"] == "Medication/m1"  # shared: kept
    assert mr1["basedOn"][0]["reference"] == f"MedicationRequest/{server_id('s1', 'mr0')}"
    assert by_key["Practitioner/dr"] == {
        "resourceType": "Practitioner",
        "id": "dr",
        "name": [{"text": "Dr X"}],
    }
    assert "meta" not in by_key["Patient/p1"]
    assert [r["resourceType"] for r in scenario.resources][:2] == ["Practitioner", "Patient"]
    assert scenario.id_map == {
        "MedicationRequest/mr1": f"MedicationRequest/{server_id('s1', 'mr1')}",
        "MedicationRequest/mr0": f"MedicationRequest/{server_id('s1', 'mr0')}",
    }


def test_server_id_is_stable_valid_and_distinct_per_scenario():
    assert server_id("a", "cond-ms") == server_id("a", "cond-ms")
    assert server_id("a", "cond-ms") != server_id("b", "cond-ms")
    assert _ID_RE.match(server_id("a" * 200, "x" * 64))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="no fhir_fixtures/ in this checkout")
def test_all_bundled_fixtures_load_without_collisions():
    scenarios = read_scenarios(FIXTURES)
    assert scenarios
    owners: dict[str, str] = {}
    for scenario in scenarios:
        keys = {f"{r['resourceType']}/{r['id']}" for r in scenario.resources}
        for resource in scenario.resources:
            assert _ID_RE.match(resource["id"]), resource["id"]
            key = f"{resource['resourceType']}/{resource['id']}"
            if resource["resourceType"] not in load_fixtures.SHARED_TYPES:
                assert owners.setdefault(key, scenario.name) == scenario.name, key
            for ref in load_fixtures._references(resource):
                target = ref["reference"]
                if "://" in target:  # another organisation's server: never ours to load
                    continue
                if target.split("/")[0] not in load_fixtures.SHARED_TYPES | {"Encounter"}:
                    assert target in keys, f"{scenario.name}: {target} dangles"


def test_conflicting_shared_resources_are_refused(tmp_path, capsys):
    root = tmp_path / "fixtures"
    for name, form in (("a", "tablet"), ("b", "capsule")):
        (root / name).mkdir(parents=True)
        medication = {"resourceType": "Medication", "id": "m1", "form": {"text": form}}
        body = {"context": {"patientId": name}, "prefetch": {"medications": medication}}
        (root / name / "request.json").write_text(json.dumps(body))
    assert main(["load-fixtures", "--fhir", BASE, "--fixtures", str(root)]) == 2
    assert "Medication/m1 differs between a and b" in capsys.readouterr().err


# ---- against the fake server ------------------------------------------------------------------


def test_loads_transactions_and_is_idempotent(tmp_path, capsys):
    root = copy_fixtures(tmp_path, "bac-indication-stroke-warning", "bac-taper-stop-warning")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        server = FakeFhirServer(mock)
        argv = ["load-fixtures", "--fhir", BASE + "/", "--fixtures", str(root), "--token", "tkn"]
        assert main(argv) == 0
        first = capsys.readouterr().out
        stored = dict(server.store)
        assert main(argv) == 0
        second = capsys.readouterr().out
    assert len(server.transactions) == 4
    for bundle in server.transactions:
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert entry["request"] == {
                "method": "PUT",
                "url": f"{resource['resourceType']}/{resource['id']}",
            }
    assert server.transactions[:2] == server.transactions[2:]  # same ids, same content
    assert server.store == stored
    assert all(h.get("Authorization") == "Bearer tkn" for h in server.headers)
    assert all(h.get("Content-Type") == "application/fhir+json" for h in server.headers)
    assert "2 of 2 scenarios loaded" in first and " 0 updated" in first
    assert "0 resources created" in second and "updated" in second
    patient = fixture_request("bac-taper-stop-warning")["context"]["patientId"]
    assert f"ok      bac-taper-stop-warning: Patient/{patient}" in first
    assert "tkn" not in first + second


def test_server_errors_are_reported_and_fail_the_run(tmp_path, capsys):
    root = copy_fixtures(tmp_path, "bac-indication-stroke-warning")
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "HAPI-0001: nope"}],
    }
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, BASE, json=outcome, status=400)
        assert main(["load-fixtures", "--fhir", BASE, "--fixtures", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAILED  bac-indication-stroke-warning: HTTP 400: HAPI-0001: nope" in out
    assert "0 of 1 scenarios loaded" in out


def test_waits_for_the_server_to_come_up(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(load_fixtures.time, "sleep", lambda _s: None)
    root = copy_fixtures(tmp_path, "bac-indication-stroke-warning")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{BASE}/metadata", status=503)
        mock.add(responses.GET, f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
        FakeFhirServer(mock)
        assert main(["load-fixtures", "--fhir", BASE, "--fixtures", str(root), "--wait", "30"]) == 0
    assert "1 of 1 scenarios loaded" in capsys.readouterr().out


def test_unknown_scenario_and_missing_folder(tmp_path, capsys):
    root = copy_fixtures(tmp_path, "bac-indication-stroke-warning")
    argv = ["load-fixtures", "--fhir", BASE, "--fixtures", str(root), "--scenario", "nope"]
    assert main(argv) == 2
    assert main(["load-fixtures", "--fhir", BASE, "--fixtures", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no scenario nope" in err and "no fixtures folder" in err


def test_the_default_folder_is_the_one_the_preview_uses(tmp_path, monkeypatch):
    """One rule for where the scenarios are: FIXTURES_DIR, else the repository's folder, even
    when the current folder has a fhir_fixtures/ of its own."""
    from cds_hooks.preview import scenarios_root

    repo = Path(load_fixtures.__file__).resolve().parents[2] / "fhir_fixtures"
    (tmp_path / "fhir_fixtures").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_fixtures.default_fixtures_dir({}) == repo == scenarios_root("")
    chosen = load_fixtures.default_fixtures_dir({"CDS_FIXTURES_DIR": str(tmp_path / "mine")})
    assert chosen == tmp_path / "mine"
