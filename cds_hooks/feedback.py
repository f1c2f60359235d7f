"""POST /cds-services/{id}/feedback (CDS Hooks 2.0 "Feedback"): validated, stored, then answered.

The 200 goes out only after the transaction holding every entry of the POST has committed (and,
on SQLite with synchronous=FULL, been fsynced). Duplicates are answered 200 and stored once; an
entry for a card the audit never saw is stored, flagged, and listed in the answer.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from cds_hooks import protocol, schemas
from cds_hooks.errors import BadRequest, NotFound, Problem
from cds_hooks.fhir.read import parse_datetime
from cds_hooks.services import BY_ID
from cds_hooks.store import Caller


def blueprint() -> Blueprint:
    bp = Blueprint("feedback", __name__)

    @bp.post("/cds-services/<service_id>/feedback")
    def feedback(service_id: str) -> Response:
        if service_id not in BY_ID:
            raise NotFound(f"no CDS service {service_id[:100]!r}; see GET /cds-services")
        protocol.check_content_type(request.mimetype)
        body = protocol.parse_json(request.get_data(cache=False))
        problems = schemas.problems("feedback", body) or _timestamp_problems(body)
        if problems:
            raise BadRequest("the body is not valid CDS Hooks feedback", problems)
        runtime = current_app.extensions["cds_hooks"]
        if runtime.store is None:
            raise NotFound("this service keeps no feedback")
        # Only the client that received a card may silence it (issue 10): the verified sender.
        sender = Caller.of(g.get("client_claims"), None)
        receipt = runtime.store.save_feedback(service_id, body["feedback"], runtime.clock(), sender)
        return jsonify(receipt.to_dict())

    return bp


def _timestamp_problems(body: dict) -> list[Problem]:
    """Dates the schema's pattern lets through but the calendar does not (2026-02-30)."""
    return [
        Problem(f"$.feedback[{i}].outcomeTimestamp", "not a real date-time")
        for i, entry in enumerate(body["feedback"])
        if parse_datetime(entry["outcomeTimestamp"]) is None
    ]
