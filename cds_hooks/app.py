"""The Flask app factory and its thin views (CONVENTIONS.md items 1-2).

Configuration: DEFAULTS, then `CDS_*` environment variables (`CDS_DEADLINE_SECONDS=1.5`, values
parsed as JSON when they can be), then the mapping given to `create_app`.
"""

from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds_hooks import auth, observability, openapi, preview, protocol
from cds_hooks.errors import CdsError, MethodNotAllowed, NotFound, PayloadTooLarge
from cds_hooks.feedback import blueprint as feedback_blueprint
from cds_hooks.fhir.read import parse_datetime
from cds_hooks.knowledge import Knowledge
from cds_hooks.pipeline import Runtime, call_service
from cds_hooks.services import BY_ID, SERVICES, prefetch_templates
from cds_hooks.store import open_store

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    # Largest request body accepted; a patient's prefetch rarely passes a few MB.
    "MAX_BODY_BYTES": 10 * 1024 * 1024,
    # Whole budget for fetching missing data from the EHR's FHIR server, per hook call.
    "DEADLINE_SECONDS": 2.5,
    "FHIR_TIMEOUT_SECONDS": 2.0,
    "FHIR_MAX_PAGES": 20,
    "FHIR_MAX_BYTES": 20 * 1024 * 1024,
    "FHIR_WORKERS": 8,
    # fhirServer must be https (CDS Hooks 2.0); set true only for local test servers.
    "ALLOW_HTTP_FHIR": False,
    "CORS_ORIGINS": "*",
    # Fixed clock for tests and `cds-hooks evaluate --now` (ISO 8601); empty means the real time.
    "NOW": "",
    # Card preview page at /preview: a local tool (it runs the rules for anyone who can reach it,
    # without the hook auth), so off unless asked for: `CDS_PREVIEW=true make serve` locally.
    "PREVIEW": False,
    # Where /preview finds fixture scenarios; empty means the repo's fhir_fixtures/ (or ./).
    "FIXTURES_DIR": "",
    # Prometheus metrics at /metrics (no patient data: service ids, rule ids, prefetch keys).
    "METRICS": True,
    # "json" (one object per line), "text", or "none" (leave logging to the host program).
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    # Storage (docs/storage.md): a SQLite file under DATA_DIR unless DATABASE_URL names a database
    # (postgresql+psycopg://...). FULL: every commit is fsynced before the answer goes out.
    "DATA_DIR": "var",
    "DATABASE_URL": "",
    "SQLITE_SYNCHRONOUS": "FULL",
    "SQLITE_BUSY_TIMEOUT_MS": 5000,
    # Patient id in the audit: "plain", or "hash" (HMAC-SHA256 under AUDIT_PATIENT_KEY).
    "AUDIT_PATIENT_ID": "plain",
    "AUDIT_PATIENT_KEY": "",
    # Keep feedback userComment text (clinician free text); false stores only that one was given.
    "FEEDBACK_KEEP_COMMENTS": True,
    # Repeat suppression: order-sign does not repeat a non-critical card order-select showed for
    # the same unchanged order within the window; overridden-with-reason cards stay quiet for
    # SUPPRESS_OVERRIDDEN_HOURS (0 turns that off).
    "SUPPRESS_SELECT_SIGN": True,
    "SELECT_SIGN_WINDOW_MINUTES": 240,
    "SUPPRESS_OVERRIDDEN_HOURS": 24,
    # Client JWT authentication (docs/security.md). No issuers: auth off, and `cds-hooks serve`
    # binds only loopback unless ALLOW_UNAUTHENTICATED / --allow-unauthenticated.
    # AUTH_ISSUERS: {iss: {jku, jwks, jwks_file, jwks_url, tenants}} as a mapping, JSON or a path.
    "AUTH_ISSUERS": "",
    "AUTH_ALGORITHMS": "ES384,RS384",  # asymmetric only; none/HS* are refused at start
    "AUTH_CLOCK_SKEW_SECONDS": 30,
    "AUTH_MAX_TOKEN_AGE_SECONDS": 300,  # iat older than this is refused, whatever exp says
    "AUTH_JWKS_TIMEOUT_SECONDS": 2.0,
    "AUTH_JWKS_CACHE_SECONDS": 3600,
    "AUTH_JWKS_MIN_REFRESH_SECONDS": 30,  # unknown kid: refetch a jku at most this often
    # The URL the EHR calls us at (scheme://host[:port][/prefix]): the JWT aud is this + path.
    "PUBLIC_BASE_URL": "",
    "ALLOW_UNAUTHENTICATED": False,
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.request_class = protocol.BoundedRequest  # a chunked body over the limit is a 413
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env("CDS")
    app.config.update(config or {})
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_BODY_BYTES"])
    app.json.sort_keys = False  # type: ignore[attr-defined]

    knowledge = app.config.get("KNOWLEDGE") or Knowledge.load()
    app.extensions["cds_hooks"] = Runtime(
        config=app.config,
        knowledge=knowledge,
        templates=prefetch_templates(knowledge),
        session=_session(),
        executor=ThreadPoolExecutor(int(app.config["FHIR_WORKERS"]), "fhir"),
        clock=_clock(app.config["NOW"]),
        store=open_store(app.config, _clock(app.config["NOW"])),
    )
    observability.init_app(app)
    shared = app.extensions["cds_hooks"]  # jti replays are remembered in the shared store
    shared.verifier = auth.build_verifier(app.config, shared.store.replay)
    app.before_request(auth.require_client_jwt)
    _register_errors(app)
    _register_views(app)
    for blueprint in _features(app):
        app.register_blueprint(blueprint)
    app.after_request(_cors)
    return app


def _features(app: Flask) -> list[Blueprint]:
    """Routes beyond the hook path (feedback, preview, metrics...), one blueprint per module."""
    features = [feedback_blueprint()]
    if app.config["METRICS"]:
        features.append(observability.blueprint())
    if app.config["PREVIEW"]:
        features.append(preview.blueprint())
    features.append(openapi.blueprint())
    return features


def _session() -> requests.Session:
    session = requests.Session()
    # Never let ~/.netrc or proxy variables replace the EHR's bearer token or reroute it.
    session.trust_env = False
    # Shared by every user's calls: a cookie one EHR call sets must not ride on the next one.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def runtime() -> Runtime:
    return current_app.extensions["cds_hooks"]


def _clock(now: str) -> Callable[[], datetime]:
    if not now:
        return lambda: datetime.now(UTC)
    fixed = parse_datetime(now)
    if fixed is None:
        raise ValueError(f"CDS_NOW must be an ISO 8601 date-time, not {now!r}")
    return lambda: fixed


def _register_views(app: Flask) -> None:
    @app.get("/cds-services")
    def discovery() -> Response:
        templates = runtime().templates
        return jsonify({"services": [s.discovery(templates) for s in SERVICES]})

    @app.post("/cds-services/<service_id>")
    def service(service_id: str) -> Response:
        declared = BY_ID.get(service_id)
        if declared is None:
            raise NotFound(f"no CDS service {service_id[:100]!r}; see GET /cds-services")
        protocol.check_content_type(request.mimetype)
        body = protocol.parse_json(request.get_data(cache=False))
        observability.note_request(body)
        result = call_service(declared, body, runtime())
        observability.note_result(result)  # one log line and the metrics, after the response
        return jsonify(result.response)

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


def _cors(response: Response) -> Response:
    """CORS for browser clients such as the CDS Hooks sandbox (spec: services 'require CORS')."""
    origins = str(current_app.config["CORS_ORIGINS"])
    origin = request.headers.get("Origin")
    if origins == "*":
        response.headers["Access-Control-Allow-Origin"] = "*"
    else:
        # The answer depends on Origin whether or not it matched: caches must key on it.
        response.vary.add("Origin")
        if not origin or origin not in {o.strip() for o in origins.split(",")}:
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response.headers["Access-Control-Max-Age"] = "600"
    return response
