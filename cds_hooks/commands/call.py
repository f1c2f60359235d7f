"""cds-hooks call: build a hook request as an EHR would, from a FHIR server, and print the cards.

The draft orders come from a file: a MedicationRequest, a Bundle of them, or a whole hook
request (a fixture's request.json: its drafts, selections, patient, user and, from the fixture's
expected.json, its `now`). The patient's data comes from `--fhir`, either prefetched here with
the service's own prefetch templates (`--mode prefetch`, the default; with `--service-url`, the
templates its discovery publishes) or left for the service to fetch itself (`--mode fhirserver`:
the request carries `fhirServer` and, with `--token`, `fhirAuthorization`).

Without `--service-url` the service runs in this process (nothing is stored); with it, the
request is POSTed to `<service-url>/cds-services/<id>` (which must accept unauthenticated calls).
Cards go to stdout as the JSON response; a one-line summary per card goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from cds_hooks.commands import (
    UsageError,
    build_app,
    iso_datetime,
    load_fixtures,
    positive,
    read_input,
)

HELP = "build a hook request from a FHIR server and a draft order, and print the cards"
HOOKS = ("order-select", "order-sign", "medication-prescribe")


@dataclass
class Drafts:
    orders: list[dict]
    selections: list[str] = field(default_factory=list)
    hook: str | None = None
    patient_id: str | None = None
    user_id: str | None = None
    encounter_id: str | None = None
    now: str | None = None


def _drafts_of(bundle: Any) -> list[dict]:
    if not isinstance(bundle, dict):
        return []
    return [
        copy.deepcopy(e["resource"])
        for e in bundle.get("entry") or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def read_drafts(path: Path) -> Drafts:
    """Draft orders from a resource, a Bundle or a hook request file (see the module doc)."""
    what = "draft orders (a MedicationRequest, a Bundle or a hook request, JSON)"
    try:
        data = json.loads(read_input(str(path), what))
    except ValueError as error:  # UnicodeDecodeError is one
        raise UsageError(f"{path} is not JSON ({error}); give {what}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object; give {what}")
    if "hook" in data and isinstance(data.get("context"), dict):
        context = data["context"]
        bundle = context.get("draftOrders") or context.get("medications")
        drafts = Drafts(
            orders=_drafts_of(bundle),
            selections=[s for s in context.get("selections") or [] if isinstance(s, str)],
            hook=data.get("hook"),
            patient_id=context.get("patientId"),
            user_id=context.get("userId"),
            encounter_id=context.get("encounterId"),
        )
        expected = path.parent / "expected.json"
        # A fixture scenario: match the ids load-fixtures gave its data.
        if str(path) != "-" and expected.is_file():
            fixture = json.loads(expected.read_text(encoding="utf-8"))
            drafts.now = fixture.get("now") if isinstance(fixture, dict) else None
            scenario = load_fixtures.build_scenario(path.parent.name, data)
            _apply_ids(drafts, scenario.id_map)
        return drafts
    if data.get("resourceType") == "Bundle":
        return Drafts(orders=_drafts_of(data))
    if isinstance(data.get("resourceType"), str):
        return Drafts(orders=[copy.deepcopy(data)])
    raise UsageError(f"{path}: not a FHIR resource, Bundle or hook request; give {what}")


def _apply_ids(drafts: Drafts, id_map: dict[str, str]) -> None:
    """A draft that revises an order on record keeps pointing at it under its loaded id."""
    for order in drafts.orders:
        key = f"{order.get('resourceType')}/{order.get('id')}"
        if key in id_map:
            order["id"] = id_map[key].split("/", 1)[1]
        load_fixtures.rewrite_references(order, id_map)
    drafts.selections = [id_map.get(s, s) for s in drafts.selections]


def build_request(
    drafts: Drafts, hook: str, patient_id: str, user_id: str, encounter_id: str | None
) -> dict[str, Any]:
    orders = []
    for order in drafts.orders:
        order = copy.deepcopy(order)
        order.setdefault("status", "draft")
        if order.get("resourceType") in {"MedicationRequest", "ServiceRequest"}:
            order["subject"] = {"reference": f"Patient/{patient_id}"}
        orders.append(order)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": o} for o in orders],
    }
    context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
    if encounter_id:
        context["encounterId"] = encounter_id
    if hook == "medication-prescribe":
        context["medications"] = bundle
    else:
        if hook == "order-select":
            refs = [f"{o['resourceType']}/{o['id']}" for o in orders if o.get("id")]
            context["selections"] = [s for s in drafts.selections if s in refs] or refs
        context["draftOrders"] = bundle
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}


def prefetch(
    request: dict, templates: dict[str, str], fhir: str, token: str | None, timeout: float
) -> dict[str, Any]:
    """What an EHR would prefetch: each filled template read or searched on the FHIR server."""
    from cds_hooks.errors import FhirError
    from cds_hooks.fhir.client import FhirClient
    from cds_hooks.fhir.resolver import fill_template

    session = requests.Session()
    session.trust_env = False
    result: dict[str, Any] = {}
    with FhirClient(fhir, token, session=session, timeout=timeout) as client:
        for key, template in templates.items():
            query = fill_template(template, request)
            if query is None:
                continue
            try:
                found = client.fetch(query, time.monotonic() + timeout)
            except FhirError as exc:
                # An EHR that cannot prefetch a key leaves it out; the service then fetches it.
                print(f"cds-hooks call: prefetch {key} failed: {exc.reason}", file=sys.stderr)
                continue
            if "?" not in query:  # a read template (`Patient/{{context.patientId}}`)
                result[key] = found[0] if found else None
            else:
                result[key] = {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": len(found),
                    "entry": [{"resource": r} for r in found],
                }
    return result


def _discovery_templates(service_url: str, service_id: str, timeout: float) -> dict[str, str]:
    response = requests.get(f"{service_url}/cds-services", timeout=timeout)
    response.raise_for_status()
    for service in response.json().get("services", []):
        if service.get("id") == service_id:
            return dict(service.get("prefetch") or {})
    raise ValueError(f"{service_url} does not list a service {service_id!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fhir", required=True, help="FHIR R4 base URL holding the patient")
    parser.add_argument(
        "--patient", help="patient id on that server (default: the draft file's patientId)"
    )
    parser.add_argument(
        "--draft",
        type=Path,
        required=True,
        help="draft order(s): a MedicationRequest, a Bundle, or a hook request (fixture) file; "
        "- reads standard input",
    )
    parser.add_argument(
        "--hook", choices=HOOKS, help="hook to call (default: the draft file's, else order-sign)"
    )
    parser.add_argument("--service", help="service id (default: the one for the hook)")
    parser.add_argument(
        "--mode",
        choices=("prefetch", "fhirserver"),
        default="prefetch",
        help="prefetch the data here (default), or send fhirServer for the service to fetch",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CDS_FHIR_TOKEN"),
        help="bearer token for the FHIR server (or CDS_FHIR_TOKEN)",
    )
    parser.add_argument("--user", help="context.userId (default: the file's, else Practitioner/1)")
    parser.add_argument("--encounter", help="context.encounterId")
    parser.add_argument(
        "--now", type=iso_datetime, help="evaluate as of this ISO 8601 time (in-process only)"
    )
    parser.add_argument(
        "--service-url", help="call a running service at this base URL instead of in-process"
    )
    parser.add_argument(
        "--timeout", type=positive(float), default=10.0, help="seconds per HTTP call (default: 10)"
    )
    parser.add_argument(
        "--print-request", action="store_true", help="print the hook request to stderr too"
    )


def _fail(message: str) -> int:
    print(f"cds-hooks call: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from cds_hooks.protocol import bare_id
    from cds_hooks.services import BY_ID, SERVICES

    drafts = read_drafts(args.draft)
    hook = args.hook or (drafts.hook if drafts.hook in HOOKS else "order-sign")
    patient = args.patient or drafts.patient_id
    # `Patient/123` -> `123`, as the service reads context.patientId; `Patient/` leaves no id.
    patient = bare_id(patient) if patient else ""
    if not patient:
        return _fail("no --patient, and the draft file names none; add --patient ID")
    if not drafts.orders:
        return _fail(f"no draft orders in {args.draft}; give a file with a MedicationRequest")
    service = BY_ID.get(args.service) if args.service else None
    service = service or next((s for s in SERVICES if s.hook == hook), None)
    if service is None:
        return _fail(f"no service {args.service or hook!r}")
    fhir = args.fhir.rstrip("/")
    user = args.user or drafts.user_id or "Practitioner/1"
    encounter = args.encounter or drafts.encounter_id
    encounter = bare_id(encounter, "Encounter") if encounter else None
    request = build_request(drafts, hook, patient, user, encounter)

    if args.mode == "fhirserver":
        request["fhirServer"] = fhir
        if args.token:
            request["fhirAuthorization"] = {
                "access_token": args.token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "cds-hooks-cli",
                "patient": patient,
            }
    else:
        try:
            templates = (
                _discovery_templates(args.service_url.rstrip("/"), service.id, args.timeout)
                if args.service_url
                else _local_templates()
            )
        except (requests.RequestException, ValueError) as exc:
            return _fail(f"cannot read the service's prefetch templates: {exc}")
        request["prefetch"] = prefetch(request, templates, fhir, args.token, args.timeout)

    if args.print_request:
        shown = copy.deepcopy(request)
        if "fhirAuthorization" in shown:
            shown["fhirAuthorization"].pop("access_token", None)  # never print the token
        print(json.dumps(shown, indent=2), file=sys.stderr)

    if args.service_url:
        status, body = _call_remote(args.service_url.rstrip("/"), service.id, request, args)
    else:
        status, body = _call_local(service, request, args.now or drafts.now, fhir)
    print(json.dumps(body, indent=2, ensure_ascii=False))
    if status != 200:
        print(f"cds-hooks call: the service answered HTTP {status}", file=sys.stderr)
        return 1
    for card in body.get("cards", []):
        topic = (card.get("source") or {}).get("topic") or {}
        rule = topic.get("code") or "-"
        print(f"[{card.get('indicator')}] {rule}: {card.get('summary')}", file=sys.stderr)
    print(f"{len(body.get('cards', []))} card(s) from {service.id}", file=sys.stderr)
    return 0


def _local_templates() -> dict[str, str]:
    from cds_hooks.knowledge import Knowledge
    from cds_hooks.services import prefetch_templates

    return prefetch_templates(Knowledge.load())


def _call_local(service: Any, request: dict, now: str | None, fhir: str) -> tuple[int, dict]:
    import dataclasses

    from cds_hooks.errors import CdsError
    from cds_hooks.pipeline import call_service

    config = {
        "NOW": now or "",
        # The user named this FHIR server on the command line: a local http one is fine here.
        "ALLOW_HTTP_FHIR": fhir.lower().startswith("http://"),
        "FHIR_ALLOW_PRIVATE": True,  # ... and it may be a sandbox on this machine or network
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "ERROR",  # the server's start-up notices (authentication off) do not apply
        "DATABASE_URL": "sqlite://",  # in memory: a command-line call leaves no file behind
    }
    app = build_app(config)
    # Nothing is stored for a command-line call: no audit, no repeat suppression.
    runtime = dataclasses.replace(app.extensions["cds_hooks"], store=None)
    try:
        result = call_service(service, request, runtime)
    except CdsError as error:
        return error.status_code, error.to_dict()
    return 200, result.response


def _call_remote(
    base: str, service_id: str, request: dict, args: argparse.Namespace
) -> tuple[int, dict]:
    url = f"{base}/cds-services/{service_id}"
    try:
        response = requests.post(url, json=request, timeout=args.timeout)
    except requests.RequestException as exc:
        return 599, {"error": "unreachable", "message": f"{url}: {type(exc).__name__}"}
    try:
        body = response.json()
    except ValueError:
        body = {"error": "not_json", "message": response.text[:300]}
    return response.status_code, body
