"""Card preview page at /preview: pick a fixture scenario or paste a hook request, see its cards.

A local tool for integration engineers (`CDS_PREVIEW=true`; off by default). It runs the same
`call_service` path as a hook call. With `"record": true` the call is a real one: audited, with
repeat suppression, so that the page can post CDS Hooks feedback to the service's own feedback
endpoint and show what the next call holds back and why; without it nothing is written. It does
not take the hook authentication, and a pasted request with a `fhirServer` makes this service
fetch from that server, so never turn it on where untrusted users can reach the service.

    GET  /preview                        the page (static HTML + one script, no build step)
    GET  /preview/api/scenarios          fixture scenarios, the services, the suppression windows
    GET  /preview/api/scenarios/<name>   a scenario's request.json and expected.json
    POST /preview/api/cards              {"request": hook request, "service"?: id, "now"?: ISO,
                                          "record"?: bool}: the cards, and those held back
    POST /preview/api/next               the same body: what the next call would hold back and
                                          why (decided as a call would, nothing written)
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from cds_hooks import protocol
from cds_hooks.config import boolean, path, setting
from cds_hooks.errors import BadRequest, NotFound, UnsupportedMedia
from cds_hooks.fhir.read import parse_datetime
from cds_hooks.pipeline import CallResult, Runtime, call_service
from cds_hooks.services import BY_ID, SERVICES, Service
from cds_hooks.store import CallAudit, Candidate, Store
from cds_hooks.store.db import cards as card_table
from cds_hooks.store.db import feedback as feedback_table
from cds_hooks.store.suppression import OVERRIDDEN, SELECT_SIGN

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
    return scenarios_root(current_app.config["SETTINGS"].preview.fixtures_dir)


def scenarios_root(configured: str = "") -> Path:
    """Where the fixture scenarios are, for the preview and `cds-hooks load-fixtures` alike.

    FIXTURES_DIR when set; else the repository's fhir_fixtures/ (the scenarios the docs name),
    and only when the package runs without its repository, ./fhir_fixtures.
    """
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


class DryRunStore(Store):
    """The app's store answering a call with what it would hold back (`Store.held_back`), as
    `Store.audit_call` would, but writing nothing: what the page shows as "the next call would
    not show". A view for `call_service` only: fingerprints and decisions are the store's own."""

    def __init__(self, store: Store):  # no engine, migration or threads of its own
        self.store = store

    def fingerprint(self, *args: Any, **kwargs: Any) -> str:
        return self.store.fingerprint(*args, **kwargs)

    def audit_call(
        self, call: CallAudit, candidates: Sequence[Candidate] = ()
    ) -> dict[str, tuple[str, str]]:
        return self.store.held_back(call, candidates)


def _hours(window: timedelta) -> str:
    hours = window.total_seconds() / 3600
    return f"{hours:g} h" if hours >= 1 else f"{window.total_seconds() / 60:g} min"


def because(store: Store, why: str, earlier: str | None) -> str:
    """Why a card is held back, in words: the earlier card, its feedback, the window."""
    settings = store.suppression
    if why == OVERRIDDEN:
        row = None
        if earlier:
            with store.engine.connect() as conn:
                row = conn.execute(
                    select(
                        feedback_table.c.reason_display,
                        feedback_table.c.reason_code,
                        feedback_table.c.user_comment,
                        feedback_table.c.received_at,
                    )
                    .where(
                        feedback_table.c.card_uuid == earlier,
                        feedback_table.c.outcome == "overridden",
                    )
                    .order_by(feedback_table.c.received_at.desc())
                    .limit(1)
                ).first()
        reason = ""
        if row is not None:
            named = row.reason_display or row.reason_code
            reason = f" with the reason \u201c{named}\u201d" if named else ""
            if row.user_comment:
                reason += f" (comment: \u201c{row.user_comment[:200]}\u201d)"
            reason += f" at {row.received_at:%Y-%m-%d %H:%M} UTC"
        return (
            f"The clinician overrode this card{reason}: for the same patient and unchanged order "
            f"it stays quiet for {_hours(settings.overridden_window)} "
            "(CDS_SUPPRESS_OVERRIDDEN_HOURS). Critical cards are never held back."
        )
    if why == SELECT_SIGN:
        shown = None
        if earlier:
            with store.engine.connect() as conn:
                shown = conn.execute(
                    select(card_table.c.shown_at).where(card_table.c.uuid == earlier)
                ).scalar()
        when = f" at {shown:%Y-%m-%d %H:%M} UTC" if shown else ""
        return (
            f"order-select already showed this card{when} for the same unchanged order; order-sign "
            f"does not repeat it within {_hours(settings.select_sign_window)} "
            "(CDS_SUPPRESS_SELECT_SIGN, CDS_SELECT_SIGN_WINDOW_MINUTES)."
        )
    return f"held back ({why})"


def _held_back(store: Store, result: CallResult) -> list[dict[str, Any]]:
    return [
        {**held, "because": because(store, held["why"], held.get("earlier"))}
        for held in result.held_back
    ]


_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


def _asset(name: str) -> Response:
    # Three small files from a fixed allowlist: read whole, no file handle left open.
    data = (STATIC / name).read_bytes()
    return Response(data, mimetype=_TYPES[Path(name).suffix])


def blueprint() -> Blueprint:
    bp = Blueprint("preview", __name__, url_prefix="/preview")

    @bp.before_request
    def json_only() -> None:
        # A cross-site form can post text/plain (no CORS preflight) to a local service; not JSON.
        if request.method == "POST" and request.mimetype != "application/json":
            raise UnsupportedMedia(f"send application/json, not {request.mimetype!r}")

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
        if name not in {"preview.js", "preview.css", "favicon.svg"}:
            raise NotFound("no such file")
        return _asset(name)

    @bp.get("/api/scenarios")
    def list_scenarios() -> Response:
        services = [{"id": s.id, "hook": s.hook, "title": s.title} for s in SERVICES]
        # Names only: the folder the fixtures come from is this machine's business.
        store = current_app.extensions["cds_hooks"].store
        suppression = (
            {
                "overridden_hours": store.suppression.overridden_window.total_seconds() / 3600,
                "select_sign": store.suppression.select_sign,
                "select_sign_minutes": store.suppression.select_sign_window.total_seconds() / 60,
            }
            if store is not None
            else None
        )
        return jsonify({"scenarios": scenarios(), "services": services, "suppression": suppression})

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
        service, body, runtime, record = _call_of(request.get_data(cache=False))
        store = runtime.store if record else None
        # Not recorded: nothing audited, no card suppressed as a repeat.
        runtime = dataclasses.replace(runtime, store=store)
        result = call_service(service, body, runtime)
        return jsonify(
            {
                "service": service.id,
                "now": runtime.clock().isoformat(),
                "recorded": store is not None,
                **result.response,
                "held_back": _held_back(store, result) if store is not None else [],
                "sources": result.sources,
                "fired": result.fired,
                "skipped": result.skipped,
                "drafts": result.drafts,
            }
        )

    @bp.post("/api/next")
    def next_call() -> Response:
        service, body, runtime, _record = _call_of(request.get_data(cache=False))
        store = runtime.store
        if store is None:
            raise NotFound("this service keeps no store: nothing is ever held back")
        result = call_service(service, body, dataclasses.replace(runtime, store=DryRunStore(store)))
        return jsonify(
            {
                "service": service.id,
                "shown": [_brief(c) for c in result.response["cards"]],
                "held_back": [
                    {**_brief(h["card"]), "why": h["why"], "because": h["because"]}
                    for h in _held_back(store, result)
                ],
            }
        )

    return bp


def _brief(card: dict[str, Any]) -> dict[str, Any]:
    topic = (card.get("source") or {}).get("topic") or {}
    return {
        "uuid": card.get("uuid"),
        "rule": topic.get("code"),
        "indicator": card.get("indicator"),
        "summary": card.get("summary"),
    }


def _call_of(raw: bytes) -> tuple[Service, Any, Runtime, bool]:
    """The service, hook request, runtime (clock at `now`) and record flag of a preview call."""
    # The same parser and limits as the hook endpoints: depth, sizes, duplicate keys.
    payload = protocol.parse_json(raw)
    if not isinstance(payload, dict) or not isinstance(payload.get("request"), dict):
        raise BadRequest(
            'send {"request": <a hook request>, "service"?: id, "now"?: time, "record"?: bool}'
        )
    body = payload["request"]
    requested = payload.get("service")
    if requested is not None and not isinstance(requested, str):
        raise BadRequest("service must be a service id (a string)")
    record = payload.get("record", False)
    if not isinstance(record, bool):
        raise BadRequest("record must be true or false")
    service = service_for(body, requested or None)
    runtime: Runtime = current_app.extensions["cds_hooks"]
    now = payload.get("now")
    if now:
        fixed = parse_datetime(now) if isinstance(now, str) else None
        if fixed is None:
            raise BadRequest("now must be an ISO 8601 date or date-time")
        runtime = dataclasses.replace(runtime, clock=lambda: fixed)
    return service, body, runtime, record
