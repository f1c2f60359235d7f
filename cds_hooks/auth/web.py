"""Flask glue: the before_request hooks that admit a request (known Host, valid client JWT)."""

from __future__ import annotations

import functools
import ipaddress
import logging
from urllib.parse import urlsplit

from flask import Response, current_app, g, jsonify, request

from cds_hooks.auth.issuers import AuthError
from cds_hooks.auth.verify import Verifier
from cds_hooks.errors import BadRequest, Unauthorized

log = logging.getLogger("cds_hooks.auth")  # one logger for the package (docs/security.md)


def is_protected(path: str) -> bool:
    """Discovery, service and feedback routes: everything under /cds-services."""
    return path == "/cds-services" or path.startswith("/cds-services/")


def audience_for(path: str, public_base_url: str) -> str:
    """The exact URL the client called, as the token's `aud` must name it."""
    return public_base_url.rstrip("/") + path


def require_client_jwt() -> Response | None:
    """Flask before_request hook: a bare 401 unless the request carries a valid client JWT."""
    verifier: Verifier | None = current_app.extensions["cds_hooks"].verifier
    # CORS preflights carry no Authorization header by design (Fetch spec); they reveal nothing.
    if verifier is None or request.method == "OPTIONS" or not is_protected(request.path):
        return None
    audience = audience_for(request.path, current_app.config["SETTINGS"].app.public_base_url)
    try:
        claims = verifier.verify(request.headers.get("Authorization"), audience)
    except AuthError as error:
        log.warning("401 for %s %s: %s", request.method, request.path[:200], error)
        response = jsonify(Unauthorized("").to_dict())
        response.status_code = 401
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    g.client_claims = claims  # who is calling, for the pipeline (FHIR allowlist, scoping)
    log.debug("client JWT ok: iss=%s kid=%s", claims.iss[:200], claims.kid[:64])
    return None


def require_known_host() -> None:
    """Flask before_request hook: without issuers, answer only loopback and PUBLIC_BASE_URL hosts.

    Such a service is bound to loopback, and a web page can still reach it by rebinding its own
    name to 127.0.0.1 (DNS rebinding): its requests then carry `Host: evil.example`. With issuers,
    every call needs a JWT whose `aud` is the PUBLIC_BASE_URL, so the Host is not relied upon.
    """
    if current_app.extensions["cds_hooks"].verifier is not None:
        return
    if _known_host(request.host, current_app.config["SETTINGS"].app.public_base_url):
        return
    raise BadRequest(
        f"this service answers only the Host names localhost, 127.0.0.1, [::1] and that of "
        f"PUBLIC_BASE_URL, not {request.host[:100]!r}"
    )


_LOOPBACK_NAMES = frozenset({"localhost"})


@functools.lru_cache(maxsize=256)  # a client sends one Host again and again; ~20 -> ~1 us
def _known_host(host: str, public_base_url: str) -> bool:
    name = _host_name(host)
    public = urlsplit(public_base_url).hostname
    return name in _LOOPBACK_NAMES or name == public or is_loopback_address(name)


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_address(host: str) -> bool:
    """A literal loopback address (127.0.0.0/8, ::1), brackets allowed; names are not."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
