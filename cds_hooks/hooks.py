"""The hook routes, a blueprint like every other feature: discovery and one endpoint per service.

GET /cds-services lists the services (`services.SERVICES`) with their prefetch templates;
POST /cds-services/<id> reads the body (`protocol`) and hands it to the one request path
(`pipeline.call_service`). Feedback, preview, metrics and OpenAPI are their own blueprints.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, request

from cds_hooks import observability, protocol
from cds_hooks.errors import NotFound
from cds_hooks.pipeline import Runtime, call_service
from cds_hooks.services import BY_ID, SERVICES

# observability times and logs the requests of this endpoint as hook calls.
SERVICE_ENDPOINT = "hooks.service"
# Cards held back as repeats (docs/storage.md, "Fewer repeated alerts"): their count, when any.
SUPPRESSED_HEADER = "X-CDS-Suppressed"


def blueprint() -> Blueprint:
    routes = Blueprint("hooks", __name__)

    @routes.get("/cds-services")
    def discovery() -> Response:
        templates = _runtime().templates
        return jsonify({"services": [s.discovery(templates) for s in SERVICES]})

    @routes.post("/cds-services/<service_id>")
    def service(service_id: str) -> Response:
        declared = BY_ID.get(service_id)
        if declared is None:
            raise NotFound(f"no CDS service {service_id[:100]!r}; see GET /cds-services")
        protocol.check_content_type(request.mimetype)
        body = protocol.parse_json(request.get_data(cache=False))
        observability.note_request(body)
        result = call_service(declared, body, _runtime(), g.get("client_claims"))
        observability.note_result(result)  # one log line and the metrics, after the response
        response = _json_response(result.response)
        if result.held_back:  # repeats not shown: say so, or an empty answer looks like "safe"
            response.headers[SUPPRESSED_HEADER] = str(len(result.held_back))
        return response

    return routes


def _json_response(answer: dict[str, Any]) -> Response:
    """The hook answer as JSON, by orjson: the answer is plain JSON data (dicts, lists, strings,
    numbers) built by the cards, and Flask's `jsonify` (the stdlib encoder, ensure_ascii) took
    ~4x as long for a three-card answer. Non-ASCII text is sent as UTF-8, as RFC 8259 asks."""
    return current_app.response_class(orjson.dumps(answer), mimetype="application/json")


def _runtime() -> Runtime:
    return current_app.extensions["cds_hooks"]
