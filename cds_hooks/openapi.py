"""GET /openapi.json: an OpenAPI 3.1 description of our endpoints, generated from `schemas/*.json`.

CDS Hooks 2.0 publishes no normative OpenAPI (the cds-hooks/api draft was never merged), so this
document is ours. It is built from the same JSON Schemas the service validates with, so it cannot
drift from them: each `schemas/<name>.json` becomes `components/schemas/<name>` and each of its
`$defs` `<name>.<def>`, with `$ref`s rewritten to point there (OpenAPI 3.1 schemas are JSON Schema
2020-12, so nothing else changes). One path per declared service gives each its own request body.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from cds_hooks.hooks import SUPPRESSED_HEADER
from cds_hooks.observability import REQUEST_ID_HEADER
from cds_hooks.services import SERVICES

_COMPONENT = "#/components/schemas/"
_HEADER = "#/components/headers/"
_JSON = "application/json"


def blueprint() -> Blueprint:
    bp = Blueprint("openapi", __name__)

    @bp.get("/openapi.json")
    def openapi_json() -> Response:
        cache = current_app.extensions.setdefault("openapi", {})
        if "document" not in cache:
            cache["document"] = document(current_app)
        return jsonify(cache["document"])

    return bp


def schema_components() -> dict[str, Any]:
    """Every schema file (and each of its $defs) as OpenAPI components, refs rewritten."""
    components: dict[str, Any] = {}
    folder = resources.files("cds_hooks.schemas")
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        if not item.name.endswith(".json"):
            continue
        name = item.name.removesuffix(".json")
        schema = json.loads(item.read_text(encoding="utf-8"))
        definitions = schema.pop("$defs", {})
        schema.pop("$schema", None)
        schema.pop("$id", None)
        components[name] = _rewrite(schema, name)
        for key, definition in definitions.items():
            components[f"{name}.{key}"] = _rewrite(definition, name)
    return components


def _rewrite(node: Any, owner: str) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, owner) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rewrite(value, owner) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        out["$ref"] = _component_ref(ref, owner)
    return out


def _component_ref(ref: str, owner: str) -> str:
    """`#/$defs/x` -> owner.x; `other.json` -> other; `other.json#/$defs/x` -> other.x."""
    file_part, _, pointer = ref.partition("#")
    name = file_part.removesuffix(".json") if file_part else owner
    if file_part and not file_part.endswith(".json"):
        raise ValueError(f"schema $ref {ref!r} does not name a schema file")
    if not pointer:
        return f"{_COMPONENT}{name}"
    if pointer.startswith("/$defs/") and pointer.count("/") == 2:
        return f"{_COMPONENT}{name}.{pointer.removeprefix('/$defs/')}"
    raise ValueError(f"schema $ref {ref!r} points inside a schema; use a $defs entry")


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "message"],
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }


def _headers() -> dict[str, Any]:
    """The response headers we set, named by the constants the code that sets them uses."""
    return {
        SUPPRESSED_HEADER: {
            "description": "How many cards were held back as repeats the clinician already "
            "answered (docs/storage.md, 'Fewer repeated alerts'); absent when none were.",
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        },
        REQUEST_ID_HEADER: {
            "description": "The request id in the service's log line: the caller's own when it "
            "sent a short plain one, else a new one.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
        },
    }


def _json_body(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": f"{_COMPONENT}{schema_ref}"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "The body is not a valid request; `problems` lists each error with its JSON path.",
        401: "Missing or invalid client JWT (a bare answer; the reason is only in the log).",
        404: "No such service.",
        412: "Prefetch data missing and no fhirServer to fetch it from.",
        413: "The body is larger than the configured limit.",
        415: "The body is not application/json.",
    }
    return {str(code): _json_body("Error", texts[code]) for code in codes}


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for `app` (security and server follow its configuration)."""
    secured = app.extensions["cds_hooks"].verifier is not None
    auth = [401] if secured else []
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    request_types = ("application/json", "application/fhir+json")
    paths: dict[str, Any] = {
        "/cds-services": {
            "get": {
                "operationId": "discovery",
                "summary": "Discovery: the CDS services offered here",
                "responses": {
                    "200": _json_body("discovery", "The services."),
                    **_errors(*auth),
                },
            }
        }
    }
    for service in SERVICES:
        paths[f"/cds-services/{service.id}"] = {
            "post": {
                "operationId": f"call-{service.id}",
                "summary": f"{service.hook} hook: {service.title}",
                "description": service.description,
                "requestBody": {
                    "required": True,
                    "content": {
                        t: {"schema": {"$ref": f"{_COMPONENT}{service.schema}"}}
                        for t in request_types
                    },
                },
                "responses": {
                    "200": {
                        **_json_body("response", "Cards (possibly none) and systemActions."),
                        "headers": {SUPPRESSED_HEADER: {"$ref": f"{_HEADER}{SUPPRESSED_HEADER}"}},
                    },
                    **_errors(400, *auth, 412, 413, 415),
                },
            }
        }
        if "/cds-services/<service_id>/feedback" in rules:
            paths[f"/cds-services/{service.id}/feedback"] = {
                "post": {
                    "operationId": f"feedback-{service.id}",
                    "summary": "Feedback on the cards of this service",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": {"$ref": f"{_COMPONENT}feedback"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Stored.",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        **_errors(400, *auth, 404, 413, 415),
                    },
                }
            }
    if secured:
        for item in paths.values():
            for operation in item.values():
                operation["security"] = [{"cdsClientJwt": []}]
    paths["/healthz"] = {
        "get": {
            "operationId": "health",
            "summary": "Liveness (no authentication)",
            "responses": {
                "200": {
                    "description": "The service is up.",
                    "content": {_JSON: {"schema": {"type": "object", "required": ["status"]}}},
                }
            },
        }
    }
    for item in paths.values():  # every answer names its request id (observability.py)
        for operation in item.values():
            for response in operation["responses"].values():
                response.setdefault("headers", {})[REQUEST_ID_HEADER] = {
                    "$ref": f"{_HEADER}{REQUEST_ID_HEADER}"
                }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "CDS Hooks 2.0 antispasticity service",
            "version": "1.0.0",
            "description": "HL7 CDS Hooks 2.0 discovery, service and feedback endpoints. Request "
            "and response bodies are the JSON Schemas the service validates with. When the "
            "service is configured with issuers, every /cds-services call needs a client JWT "
            "(CDS Hooks 2.0 'Trusting CDS Clients').",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": {**schema_components(), "Error": _error_schema()},
            "headers": _headers(),
            "securitySchemes": {
                "cdsClientJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT signed by the CDS Client (ES384 or RS384), aud = the "
                    "URL called.",
                }
            },
        },
    }
    if base := app.config["SETTINGS"].app.public_base_url.rstrip("/"):
        doc["servers"] = [{"url": base}]
    return doc
