"""Card preview page at /preview: pick a fixture scenario or paste a hook request, see its cards.

A local tool for integration engineers (`CDS_PREVIEW=true`; off by default). It is read-only: it
runs the same `call_service` path as a hook call, without the store (nothing audited, no repeat
suppression, nothing written). It does not take the hook authentication, and a pasted request
with a `fhirServer` makes this service fetch from that server, so never turn it on where
untrusted users can reach the service.

    GET  /preview                        the page (static HTML + one script, no build step)
    GET  /preview/api/scenarios          fixture scenarios and the services
    GET  /preview/api/scenarios/<name>   a scenario's request.json and expected.json
    POST /preview/api/cards              {"request": hook request, "service"?: id, "now"?: ISO}
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from cds_hooks import protocol
from cds_hooks.config import boolean, path, setting
from cds_hooks.errors import BadRequest, NotFound
from cds_hooks.fhir.read import parse_datetime
from cds_hooks.pipeline import call_service
from cds_hooks.services import BY_ID, SERVICES, Service

STATIC = Path(__file__).parent / "static"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The page loads only its own script and style: even a markdown bug cannot run injected code.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class PreviewSettings:
    preview: bool = setting(
        False,
        boolean(),
        "Card preview page at /preview: a local tool that runs the rules for anyone who can "
        "reach it, without the hook authentication, so off unless asked for.",
    )
    fixtures_dir: str = setting(
        "",
        path(),
        "Where /preview finds fixture scenarios; empty: the repository's fhir_fixtures/.",
    )


def fixtures_dir() -> Path:
    configured = current_app.config["SETTINGS"].preview.fixtures_dir
    if configured:
        return Path(configured)
    in_repo = Path(__file__).resolve().parent.parent / "fhir_fixtures"
    return in_repo if in_repo.is_dir() else Path.cwd() / "fhir_fixtures"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def scenarios() -> list[dict[str, Any]]:
    root = fixtures_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if not (_NAME_RE.match(folder.name) and (folder / "request.json").is_file()):
            continue
        body = _read_json(folder / "request.json")
        expected = _read_json(folder / "expected.json")
        expected = expected if isinstance(expected, dict) else {}
        found.append(
            {
                "name": folder.name,
                "hook": body.get("hook") if isinstance(body, dict) else None,
                "description": expected.get("description", ""),
            }
        )
    return found


def service_for(body: Any, service_id: str | None) -> Service:
    if service_id:
        service = BY_ID.get(service_id)
        if service is None:
            raise NotFound(f"no CDS service {service_id[:100]!r}")
        return service
    hook = body.get("hook") if isinstance(body, dict) else None
    found = next((s for s in SERVICES if s.hook == hook), None)
    if found is None:
        raise BadRequest(f"no service for hook {str(hook)[:100]!r}; pick one")
    return found


_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _asset(name: str) -> Response:
    # Three small files from a fixed allowlist: read whole, no file handle left open.
    data = (STATIC / name).read_bytes()
    return Response(data, mimetype=_TYPES[Path(name).suffix])


def blueprint() -> Blueprint:
    bp = Blueprint("preview", __name__, url_prefix="/preview")

    @bp.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("")
    @bp.get("/")
    def page() -> Response:
        return _asset("preview.html")

    @bp.get("/static/<name>")
    def static(name: str) -> Response:
        if name not in {"preview.js", "preview.css"}:
            raise NotFound("no such file")
        return _asset(name)

    @bp.get("/api/scenarios")
    def list_scenarios() -> Response:
        services = [{"id": s.id, "hook": s.hook, "title": s.title} for s in SERVICES]
        return jsonify(
            {"fixtures": str(fixtures_dir()), "scenarios": scenarios(), "services": services}
        )

    @bp.get("/api/scenarios/<name>")
    def scenario(name: str) -> Response:
        if not _NAME_RE.match(name) or name not in {s["name"] for s in scenarios()}:
            raise NotFound(f"no scenario {name[:100]!r}")
        folder = fixtures_dir() / name
        return jsonify(
            {
                "name": name,
                "request": _read_json(folder / "request.json"),
                "expected": _read_json(folder / "expected.json"),
            }
        )

    @bp.post("/api/cards")
    def cards() -> Response:
        # The same parser and limits as the hook endpoints: depth, sizes, duplicate keys.
        payload = protocol.parse_json(request.get_data(cache=False))
        if not isinstance(payload, dict) or not isinstance(payload.get("request"), dict):
            raise BadRequest('send {"request": <a hook request>, "service"?: id, "now"?: time}')
        body = payload["request"]
        requested = payload.get("service")
        if requested is not None and not isinstance(requested, str):
            raise BadRequest("service must be a service id (a string)")
        service = service_for(body, requested or None)
        # Read-only: no store, so nothing is audited and no card is suppressed as a repeat.
        runtime = dataclasses.replace(current_app.extensions["cds_hooks"], store=None)
        now = payload.get("now")
        if now:
            fixed = parse_datetime(now) if isinstance(now, str) else None
            if fixed is None:
                raise BadRequest("now must be an ISO 8601 date or date-time")
            runtime = dataclasses.replace(runtime, clock=lambda: fixed)
        result = call_service(service, body, runtime)
        return jsonify(
            {
                "service": service.id,
                "now": runtime.clock().isoformat(),
                **result.response,
                "sources": result.sources,
                "fired": result.fired,
                "skipped": result.skipped,
                "drafts": result.drafts,
            }
        )

    return bp
