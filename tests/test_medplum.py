"""Against a FHIR server nobody on this project wrote: Medplum's router over its in-memory store.

`../shared/fhir-server/` is a small launcher around `@medplum/fhir-router` (Node, from the npm
registry). CI (`.ci/run`) installs and starts it on loopback and passes its base URL in
`CDS_TEST_FHIR_URL` (with `CDS_TEST_REQUIRE_FHIR=1`, so these tests can never skip there).
Without that variable the `fhir_server` fixture starts the launcher itself when node and npm are
installed (installed once under `var/fhir-server/`), and skips only when they are not.

What runs through it: `cds-hooks load-fixtures` loads every scenario; every scenario then goes
through `cds-hooks call` in fetch mode (the service reads everything from the server itself) and
must give the cards its `expected.json` lists (the cards it gives with its prefetch, as
test_scenarios checks); and every discovery template, rendered for every fixture patient, must
be a search the server understands: it finds exactly the resources the fixture's own prefetch
holds for that key (this server answers an unknown parameter with an empty 200, so "accepted"
must mean "found the data", not "did not fail").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cds_hooks.cli import main
from cds_hooks.commands.load_fixtures import read_scenarios
from cds_hooks.fhir.client import FhirClient
from cds_hooks.fhir.resolver import fill_template
from cds_hooks.services import prefetch_templates
from tests.servers import free_port, stop

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO.parent / "shared" / "fhir-server"
FIXTURES = REPO / "fhir_fixtures"
SCENARIOS = sorted(p.parent for p in FIXTURES.glob("*/request.json"))
WORK = REPO / "var" / "fhir-server"  # npm install of the launcher, kept between runs


def _wait_ready(base: str, process: subprocess.Popen | None = None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the FHIR server exited with status {process.returncode}")
        try:
            if requests.get(f"{base}/metadata", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the FHIR server at {base} did not answer within {seconds:.0f} s")


def _install() -> Path:
    """The launcher copied to var/fhir-server and `npm ci`-installed (again when it changed)."""
    lock = (LAUNCHER / "package-lock.json").read_bytes() + (LAUNCHER / "server.mjs").read_bytes()
    stamp = WORK / ".installed"
    digest = hashlib.sha256(lock).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return WORK
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.copytree(LAUNCHER, WORK)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=WORK,
        check=True,
        capture_output=True,
        timeout=600,
    )
    stamp.write_text(digest)
    return WORK


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[str]:
    """The Medplum server's base URL: CI's, or one started here (see the module doc)."""
    given = os.environ.get("CDS_TEST_FHIR_URL")
    if given:
        _wait_ready(given.rstrip("/"))
        yield given.rstrip("/")
        return
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing or not LAUNCHER.is_dir():
        why = f"{' and '.join(missing)} not installed" if missing else f"no {LAUNCHER}"
        if os.environ.get("CDS_TEST_REQUIRE_FHIR"):
            pytest.fail(f"CDS_TEST_REQUIRE_FHIR is set but the FHIR server cannot run: {why}")
        pytest.skip(f"the Medplum FHIR server cannot run here: {why}")
    folder = _install()
    port = free_port()
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        ["node", str(folder / "server.mjs")],
        env={**os.environ, "PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        _wait_ready(base, process)
        yield base
    finally:
        stop(process, timeout=10)
        log.close()


@pytest.fixture(scope="session")
def loaded(fhir_server) -> str:
    """Every fixture scenario loaded with `cds-hooks load-fixtures` (idempotent)."""
    assert main(["load-fixtures", "--fhir", fhir_server, "--fixtures", str(FIXTURES)]) == 0
    return fhir_server


@pytest.fixture(autouse=True)
def _service_settings(monkeypatch):
    # The server is on loopback: the outbound policy refuses private addresses unless told.
    monkeypatch.setenv("CDS_FHIR_ALLOW_PRIVATE", "true")
    # Node answers one request at a time and scans every stored resource of a type per search
    # (its README); on a busy 2-core CI machine the parallel searches of one call queue behind
    # each other, so the production budget (2.5 s) would test the machine, not the service.
    monkeypatch.setenv("CDS_DEADLINE_SECONDS", "30")
    monkeypatch.setenv("CDS_FHIR_TIMEOUT_SECONDS", "25")


def _cards(expected: dict) -> list[tuple[str, str]]:
    return sorted((c["rule"], c["indicator"]) for c in expected["cards"])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_every_scenario_in_fetch_mode_gives_the_prefetch_cards(loaded, scenario, capsys):
    expected = json.loads((scenario / "expected.json").read_text(encoding="utf-8"))
    draft = str(scenario / "request.json")
    status = main(["call", "--fhir", loaded, "--draft", draft, "--mode", "fhirserver"])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    body = json.loads(captured.out)
    got = sorted((c["source"]["topic"]["code"], c["indicator"]) for c in body["cards"])
    assert got == _cards(expected), expected["description"]


def test_the_prefetch_mode_of_cds_hooks_call_agrees_too(loaded, capsys):
    """The EHR side: `call --mode prefetch` renders our templates against the server."""
    for scenario in SCENARIOS[:: max(1, len(SCENARIOS) // 8)]:
        expected = json.loads((scenario / "expected.json").read_text(encoding="utf-8"))
        draft = str(scenario / "request.json")
        assert main(["call", "--fhir", loaded, "--draft", draft]) == 0
        body = json.loads(capsys.readouterr().out)
        got = sorted((c["source"]["topic"]["code"], c["indicator"]) for c in body["cards"])
        assert got == _cards(expected), scenario.name


def _prefetched(request: dict, key: str) -> list[str]:
    """Resource types of what the fixture's own prefetch holds for a key (its match entries)."""
    value = (request.get("prefetch") or {}).get(key)
    if not value:
        return []
    if value.get("resourceType") != "Bundle":
        return [value["resourceType"]]
    return sorted(
        e["resource"]["resourceType"]
        for e in value.get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    )


def test_every_discovery_template_is_a_search_the_server_understands(loaded, knowledge):
    templates = prefetch_templates(knowledge)
    scenarios = {s.name: s for s in read_scenarios(FIXTURES)}
    session = requests.Session()
    session.trust_env = False
    checked = 0
    with FhirClient(loaded, None, session=session, timeout=10) as client:
        for folder in SCENARIOS:
            request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
            # As the service reads it (a fixture may send `Patient/<id>`).
            patient = str(scenarios[folder.name].patient_id).rsplit("Patient/", 1)[-1]
            filled_for = {"context": {**request["context"], "patientId": patient}}
            for key, template in templates.items():
                query = fill_template(template, filled_for)
                assert query is not None
                found = client.fetch(query, time.monotonic() + 10)
                got = sorted(r["resourceType"] for r in found)
                assert got == _prefetched(request, key), (folder.name, key, query[:120])
                checked += 1
    assert checked == len(SCENARIOS) * len(templates)


def test_a_search_too_long_for_a_url_goes_as_post_and_the_server_answers_it(loaded, knowledge):
    """The same renal search, padded past 2,048 bytes with codes that match nothing."""
    scenario = FIXTURES / "bac-renal-crcl-29-warning"
    request = json.loads((scenario / "request.json").read_text(encoding="utf-8"))
    query = fill_template(prefetch_templates(knowledge)["renal"], request)
    assert query is not None
    padding = ",".join(f"http://loinc.org|{n}-9" for n in range(90000, 90100))
    long_query = query.replace("&code=", f"&code={padding},")
    assert len(f"{loaded}/{long_query}".encode()) > 2048
    session = requests.Session()
    session.trust_env = False
    with FhirClient(loaded, None, session=session, timeout=10) as client:
        found = client.search(long_query, time.monotonic() + 10)
    assert sorted(r["resourceType"] for r in found) == _prefetched(request, "renal")
    assert found, "the scenario has a renal lab, so a search that matched nothing would show"


def test_the_server_really_is_medplum(fhir_server):
    answer = requests.get(f"{fhir_server}/metadata", timeout=5).json()
    assert "Medplum" in answer["software"]["name"]
