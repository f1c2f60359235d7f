"""cds-hooks load-fixtures: put the fhir_fixtures/ patients into a FHIR server, in transactions.

Each scenario's prefetch resources go in one `transaction` Bundle of PUTs with stable ids, so
loading twice changes nothing (idempotent). The scenarios reuse ids for their own resources
(`Condition/cond-ms` exists in most of them, each for its own patient), so on a shared server
every resource of a patient's compartment gets a per-scenario id: `<id>-<8 hex of the scenario>`,
with the references inside the scenario rewritten to match. Patients keep their ids (they are
unique across scenarios, and `cds-hooks call --patient` uses them), as do shared resources
(Medication, Practitioner...); the same shared id with different content in two scenarios is an
error. Practitioners referenced but not in the data get a minimal stub, so servers that enforce
referential integrity (HAPI does by default) accept the bundles.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from cds_hooks.commands import positive

HELP = "load the fixture patients into a FHIR server (transaction bundles, PUT, stable ids)"

# Resource types that are not one patient's data: their ids are kept as written.
SHARED_TYPES = frozenset(
    {"Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Medication"}
)
# Which stubs to create for references to resources no scenario carries.
STUB_TYPES = frozenset({"Practitioner", "Organization"})
_ORDER = {"Practitioner": 0, "Organization": 0, "Patient": 1, "Medication": 2}
FHIR_JSON = "application/fhir+json"


class FixtureError(Exception):
    """The fixtures cannot be loaded as they are (unreadable, or conflicting shared ids)."""


@dataclass
class Scenario:
    name: str
    patient_id: str | None
    resources: list[dict] = field(default_factory=list)
    id_map: dict[str, str] = field(default_factory=dict)  # "Type/old" -> "Type/new"
    stubs: set[str] = field(default_factory=set)  # "Type/id" of the stubs we made up


def server_id(scenario: str, resource_id: str) -> str:
    """A stable per-scenario id: valid FHIR (`[A-Za-z0-9-.]{1,64}`) and the same on every run."""
    digest = hashlib.sha256(scenario.encode("utf-8")).hexdigest()[:8]
    return f"{resource_id[:55]}-{digest}"


def default_fixtures_dir(environ: Mapping[str, str] | None = None) -> Path:
    """CDS_FIXTURES_DIR read as the service reads it (the preview's one rule for the folder)."""
    from cds_hooks.config import ENV_PREFIX, build_section
    from cds_hooks.preview import PreviewSettings, scenarios_root

    environ = os.environ if environ is None else environ
    values = {k[len(ENV_PREFIX) :]: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    return scenarios_root(build_section(PreviewSettings, values).fixtures_dir)


def _prefetch_resources(request: dict) -> Iterator[dict]:
    for value in (request.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    yield resource
        else:
            yield value


def _references(node: Any) -> Iterator[dict]:
    """Every FHIR Reference object (a dict with a string `reference`) inside a resource."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def rewrite_references(node: Any, id_map: dict[str, str]) -> None:
    """Point relative references (and fhirServer-absolute ones ending in Type/id) at new ids."""
    for ref in _references(node):
        value = ref["reference"]
        tail = "/".join(value.rstrip("/").split("/")[-2:])
        if tail in id_map and (value == tail or value.endswith("/" + tail)):
            ref["reference"] = id_map[tail]


def build_scenario(name: str, request: dict) -> Scenario:
    """A scenario's resources, with per-scenario ids for patient data (see the module doc)."""
    from cds_hooks.protocol import bare_id

    context = request.get("context") if isinstance(request.get("context"), dict) else {}
    patient = context.get("patientId") if isinstance(context, dict) else None
    # `Patient/123` names the patient loaded as Patient/123, as the service reads it.
    scenario = Scenario(name, bare_id(patient) if isinstance(patient, str) else None)
    seen: dict[str, dict] = {}
    for resource in _prefetch_resources(request):
        kind, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(kind, str) or kind == "OperationOutcome" or not isinstance(rid, str):
            continue
        seen.setdefault(f"{kind}/{rid}", copy.deepcopy(resource))
    for key in seen:
        kind, rid = key.split("/", 1)
        if kind not in SHARED_TYPES:
            scenario.id_map[key] = f"{kind}/{server_id(name, rid)}"
    for key, resource in seen.items():
        resource.pop("meta", None)  # versionId/lastUpdated belong to the server
        resource["id"] = scenario.id_map.get(key, key).split("/", 1)[1]
        rewrite_references(resource, scenario.id_map)
        scenario.resources.append(resource)
    have = {f"{r['resourceType']}/{r['id']}" for r in scenario.resources}
    for ref in _references(scenario.resources):
        parts = ref["reference"].split("/")
        if len(parts) == 2 and parts[0] in STUB_TYPES and ref["reference"] not in have:
            have.add(ref["reference"])
            scenario.stubs.add(ref["reference"])
            stub: dict[str, Any] = {"resourceType": parts[0], "id": parts[1]}
            if isinstance(ref.get("display"), str):
                stub["name"] = (
                    [{"text": ref["display"]}] if parts[0] == "Practitioner" else ref["display"]
                )
            scenario.resources.append(stub)
    scenario.resources.sort(key=lambda r: _ORDER.get(r["resourceType"], 3))
    return scenario


def read_scenarios(root: Path, names: Iterable[str] = ()) -> list[Scenario]:
    wanted = set(names)
    if not root.is_dir():
        raise FixtureError(f"no fixtures folder at {root}")
    folders = sorted(p for p in root.iterdir() if (p / "request.json").is_file())
    if wanted:
        missing = wanted - {p.name for p in folders}
        if missing:
            raise FixtureError(f"no scenario {', '.join(sorted(missing))} in {root}")
        folders = [p for p in folders if p.name in wanted]
    scenarios = []
    for folder in folders:
        try:
            request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FixtureError(f"{folder / 'request.json'}: {exc}") from None
        if not isinstance(request, dict):
            raise FixtureError(f"{folder / 'request.json'} is not a hook request object")
        scenarios.append(build_scenario(folder.name, request))
    # A stub must never overwrite the real resource another scenario carries.
    real = {
        f"{r['resourceType']}/{r['id']}"
        for s in scenarios
        for r in s.resources
        if f"{r['resourceType']}/{r['id']}" not in s.stubs
    }
    for scenario in scenarios:
        scenario.resources = [
            r
            for r in scenario.resources
            if f"{r['resourceType']}/{r['id']}" not in scenario.stubs & real
        ]
    _check_shared(scenarios)
    return scenarios


def _canonical(resource: dict) -> str:
    return json.dumps(resource, sort_keys=True, separators=(",", ":"))


def _check_shared(scenarios: list[Scenario]) -> None:
    """A kept id must mean one resource: otherwise the last scenario loaded would win silently."""
    owner: dict[str, tuple[str, str]] = {}
    conflicts = []
    for scenario in scenarios:
        for resource in scenario.resources:
            key = f"{resource['resourceType']}/{resource['id']}"
            if key in scenario.stubs:
                continue
            text = _canonical(resource)
            first = owner.setdefault(key, (scenario.name, text))
            if first[1] != text:
                conflicts.append(f"{key} differs between {first[0]} and {scenario.name}")
    if conflicts:
        raise FixtureError("; ".join(conflicts[:10]))


def transaction(scenario: Scenario) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": resource,
                "request": {
                    "method": "PUT",
                    "url": f"{resource['resourceType']}/{resource['id']}",
                },
            }
            for resource in scenario.resources
        ],
    }


def _outcome_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip()
    issues = body.get("issue") if isinstance(body, dict) else None
    texts = [
        str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
        for i in issues or []
        if isinstance(i, dict)
    ]
    return "; ".join(texts)[:500] or str(body)[:300]


@dataclass
class LoadResult:
    scenario: str
    patient_id: str | None
    created: int = 0
    updated: int = 0
    error: str | None = None


def post_transaction(
    session: requests.Session, base: str, scenario: Scenario, headers: dict, timeout: float
) -> LoadResult:
    result = LoadResult(scenario.name, scenario.patient_id)
    try:
        response = session.post(
            base, data=json.dumps(transaction(scenario)), headers=headers, timeout=timeout
        )
    except requests.RequestException as exc:
        result.error = f"cannot reach the FHIR server ({type(exc).__name__})"
        return result
    if not 200 <= response.status_code < 300:
        result.error = f"HTTP {response.status_code}: {_outcome_text(response)}"
        return result
    try:
        entries = response.json().get("entry") or []
    except (ValueError, AttributeError):
        result.error = "the server's answer is not a transaction-response Bundle"
        return result
    for entry in entries:
        status = str(((entry or {}).get("response") or {}).get("status", ""))
        if status.startswith("201"):
            result.created += 1
        elif status.startswith("2"):
            result.updated += 1
    return result


def wait_for(session: requests.Session, base: str, headers: dict, seconds: float) -> bool:
    """Poll `metadata` until the server answers 200 (a server still starting says 404/503)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = session.get(f"{base}/metadata", headers=headers, timeout=10)
            if response.status_code == 200:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() + 2 > deadline:
            return False
        time.sleep(2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fhir", required=True, help="FHIR R4 base URL, e.g. http://localhost:8081/fhir"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CDS_FHIR_TOKEN"),
        help="bearer token for the FHIR server (or CDS_FHIR_TOKEN)",
    )
    parser.add_argument(
        "--fixtures",
        type=Path,
        default=None,
        help="scenario folders (default: CDS_FIXTURES_DIR, else the repository's fhir_fixtures)",
    )
    parser.add_argument(
        "--scenario", action="append", default=[], help="load only this scenario (repeatable)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        help="seconds to wait for the server to answer /metadata first (0: do not wait)",
    )
    parser.add_argument(
        "--timeout", type=positive(float), default=60, help="seconds per transaction (default: 60)"
    )


def run(args: argparse.Namespace) -> int:
    base = args.fhir.rstrip("/")
    root = args.fixtures or default_fixtures_dir()
    try:
        scenarios = read_scenarios(root, args.scenario)
    except FixtureError as exc:
        print(f"cds-hooks load-fixtures: {exc}", file=sys.stderr)
        return 2
    session = requests.Session()
    session.trust_env = False  # ~/.netrc would replace our Authorization header
    headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    if args.wait and not wait_for(session, base, headers, args.wait):
        print(f"cds-hooks load-fixtures: {base} not ready after {args.wait:g} s", file=sys.stderr)
        return 1
    failed = 0
    created = updated = 0
    for scenario in scenarios:
        result = post_transaction(session, base, scenario, headers, args.timeout)
        if result.error:
            failed += 1
            print(f"FAILED  {scenario.name}: {result.error}")
            continue
        created += result.created
        updated += result.updated
        print(
            f"ok      {scenario.name}: Patient/{scenario.patient_id}, "
            f"{result.created} created, {result.updated} updated"
        )
    print(
        f"{len(scenarios) - failed} of {len(scenarios)} scenarios loaded into {base}: "
        f"{created} resources created, {updated} updated"
    )
    if scenarios and not failed:
        first = scenarios[0]
        print(
            "try: cds-hooks call --fhir "
            f"{base} --draft {root / first.name / 'request.json'}  (patient and time from the file)"
        )
    return 1 if failed else 0
