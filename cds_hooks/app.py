"""The Flask app factory and its thin views.

Configuration is the one typed settings object (`cds_hooks.settings`): defaults, then `CDS_*`
environment variables, then the mapping given to `create_app`. A bad value stops the start with
`SettingsError`, one line naming the variable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds_hooks import auth, hooks, observability, openapi, outbound, preview, protocol
from cds_hooks import settings as settings_module
from cds_hooks.errors import CdsError, MethodNotAllowed, NotFound, PayloadTooLarge
from cds_hooks.feedback import blueprint as feedback_blueprint
from cds_hooks.knowledge import Knowledge
from cds_hooks.pipeline import Runtime
from cds_hooks.services import prefetch_templates
from cds_hooks.store import open_store

log = logging.getLogger(__name__)

SUPPRESSED_HEADER = hooks.SUPPRESSED_HEADER  # set by the hook route; CORS exposes it


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    settings = settings_module.load(config)
    app = Flask(__name__)
    app.request_class = protocol.BoundedRequest  # a chunked body over the limit is a 413
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.app.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    knowledge = (config or {}).get("KNOWLEDGE") or Knowledge.load()
    clock = _clock(settings.app.now)
    app.extensions["cds_hooks"] = Runtime(
        settings=settings,
        knowledge=knowledge,
        templates=prefetch_templates(knowledge),
        session=_session(settings),
        executor=ThreadPoolExecutor(settings.fhir.fhir_workers, "fhir"),
        clock=clock,
        store=open_store(settings.store, clock),  # one service clock: calls, feedback, windows
    )
    observability.init_app(app)
    shared = app.extensions["cds_hooks"]  # jti replays are remembered in the shared store
    shared.verifier = auth.build_verifier(settings, shared.store.replay, shared.session)
    app.before_request(auth.require_known_host)  # DNS rebinding: before anything else answers
    app.before_request(auth.require_client_jwt)
    _register_errors(app)
    _register_views(app)
    for blueprint in _features(app):
        app.register_blueprint(blueprint)
    app.after_request(_cors(settings.app.cors_origins))
    return app


def _features(app: Flask) -> list[Blueprint]:
    """The routes: the hooks, then feedback, preview, metrics..., one blueprint per module."""
    settings = app.config["SETTINGS"]
    features = [hooks.blueprint(), feedback_blueprint()]
    observe = settings.observability
    # With issuers the service faces a network: /metrics only when asked for (docs/security.md).
    if observe.metrics and (app.extensions["cds_hooks"].verifier is None or observe.metrics_public):
        features.append(observability.blueprint())
    if settings.preview.preview:
        features.append(preview.blueprint())
    features.append(openapi.blueprint())
    return features


def _session(settings: settings_module.Settings) -> requests.Session:
    """The one outbound session (FHIR and JWKS): destination policy, CA bundle, proxy."""
    fhir = settings.fhir
    return outbound.session(
        outbound.Destinations(allow_private=fhir.fhir_allow_private),
        ca_bundle=fhir.ca_bundle,
        https_proxy=fhir.https_proxy,
        pool_size=fhir.fhir_workers,  # one kept connection per parallel FHIR request
    )


def runtime() -> Runtime:
    return current_app.extensions["cds_hooks"]


def _clock(now: datetime | None) -> Callable[[], datetime]:
    """The service clock: CDS_NOW (parsed by the settings) when set, else the real time."""
    if now is None:
        return lambda: datetime.now(UTC)
    return lambda: now


def _register_views(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "knowledge": runtime().knowledge.version})


def _register_errors(app: Flask) -> None:
    @app.errorhandler(CdsError)
    def cds_error(error: CdsError) -> tuple[Response, int]:
        return jsonify(error.to_dict()), error.status_code

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: HTTPException) -> tuple[Response, int]:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return cds_error(PayloadTooLarge(f"the body is larger than {limit} bytes"))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        if error.code == 404:
            return cds_error(NotFound("no such endpoint; see GET /cds-services"))
        if error.code == 405:
            return cds_error(MethodNotAllowed(f"{request.method} is not allowed here"))
        status = error.code or 400
        return jsonify({"error": "http_error", "message": error.description}), status

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # Our bug, not the client's: log it whole, tell the client nothing internal.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(
            {"error": "internal_error", "message": "the service failed; see its log"}
        ), 500


def _cors(origins: str) -> Callable[[Response], Response]:
    """CORS for browser clients such as the CDS Hooks sandbox (spec: services 'require CORS').

    The after_request hook for the CORS_ORIGINS setting, its origin list parsed once.
    """
    allowed = None if origins == "*" else frozenset(o.strip() for o in origins.split(","))
    common = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
        "Access-Control-Expose-Headers": SUPPRESSED_HEADER,  # readable by scripts
    }

    def cors(response: Response) -> Response:
        headers = response.headers
        if allowed is None:
            headers["Access-Control-Allow-Origin"] = "*"
        else:
            # The answer depends on Origin whether or not it matched: caches must key on it.
            response.vary.add("Origin")
            origin = request.headers.get("Origin")
            if not origin or origin not in allowed:
                return response
            headers["Access-Control-Allow-Origin"] = origin
        headers.update(common)
        return response

    return cors
