"""Client authentication: verify the EHR's signed JWT on each `/cds-services` call (CDS Hooks §7).

What a token must satisfy, in order (any failure is a bare 401; the reason goes to the log only):
  1. `Authorization: Bearer <JWT>`, a compact JWS of sane size;
  2. header: `alg` in the accepted list (ES384/RS384 by default; `none` and HMAC never), `kid`
     present, `typ` absent or `JWT`;
  3. `iss` on the issuer allowlist (AUTH_ISSUERS);
  4. the key: `kid` in the issuer's pre-registered JWKS (inline, file or registered URL), or, when
     the token names a `jku`, in the JWKS fetched from that URL if it is on the issuer's allowlist
     (cached; an unknown `kid` triggers one refetch, rate-limited; fetches bounded by a timeout);
  5. the signature, with that key and the header's algorithm only;
  6. `aud` equal to the exact URL called (PUBLIC_BASE_URL + path; for proxies), `exp` not passed,
     `nbf`/`iat` not in the future, `iat` no older than AUTH_MAX_TOKEN_AGE_SECONDS (all with
     AUTH_CLOCK_SKEW_SECONDS of leeway), `tenant` allowlisted when the issuer lists tenants;
  7. `jti` never seen before (ReplayStore, remembered until the token can no longer be accepted).

Tokens are never logged; log lines carry the reason, the (truncated) issuer and `kid` at most.
With no issuer configured there is no verifier: the app is open, and the bind policy
(`cds_hooks.commands.serve.check_bind_allowed`, used by every launcher) keeps it on loopback
unless `--allow-unauthenticated` is given; `require_known_host` then answers only loopback names
and the PUBLIC_BASE_URL host (a browser page rebinding its own name to 127.0.0.1 is refused).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard
from urllib.parse import urlsplit

import jwt
import requests
from flask import Response, current_app, g, jsonify, request
from jwt.api_jws import PyJWS

from cds_hooks import outbound
from cds_hooks.config import integer, items, number, raw, setting
from cds_hooks.errors import BadRequest, Unauthorized

if TYPE_CHECKING:
    from cds_hooks.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ALGORITHMS = ("ES384", "RS384")


@dataclass(frozen=True)
class AuthSettings:
    auth_issuers: str | Mapping[str, Any] = setting(
        "",
        raw("a JSON object keyed by issuer URI, or the path of a JSON file holding one"),
        "Trusted EHRs for client JWT authentication (docs/security.md): "
        "`{iss: {jku, jwks, jwks_file, jwks_url, tenants}}` as JSON or a file path. "
        "Empty: authentication off, and `cds-hooks serve` binds only loopback.",
    )
    auth_algorithms: tuple[str, ...] = setting(
        DEFAULT_ALGORITHMS,
        items(),
        "JWT algorithms accepted; asymmetric only (none and HS* are refused at start).",
    )
    auth_clock_skew_seconds: float = setting(
        30, number(min=0, max=600), "Clock skew allowed on exp, iat and nbf."
    )
    auth_max_token_age_seconds: float = setting(
        300,
        number(min=1, max=3600),
        "A token whose iat is older than this is refused, whatever its exp says.",
    )
    auth_jwks_timeout_seconds: float = setting(
        2.0, number(min=0, max=60, above=True), "Timeout of one JWKS fetch."
    )
    auth_jwks_cache_seconds: int = setting(
        3600, integer(min=0), "How long a fetched JWK Set is trusted before it is fetched again."
    )
    auth_jwks_min_refresh_seconds: int = setting(
        30, integer(min=0), "For an unknown kid, refetch a JWKS URL at most this often."
    )


# Asymmetric algorithms only: CDS Hooks 2.0 forbids `none` and every symmetric (HMAC) algorithm.
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_ISSUER_FIELDS = frozenset({"jwks", "jwks_file", "jwks_url", "jku", "tenants", "fhir_servers"})
MAX_TOKEN_BYTES = 16 * 1024  # a CDS Hooks JWT is well under 2 KB; bigger is an attack
MAX_JWKS_BYTES = 256 * 1024
MAX_CLAIM_CHARS = 2048  # iss, jti, tenant, kid, jku: longer values are refused, not stored
MIN_RSA_BITS = 2048


class AuthError(Exception):
    """Why a token was refused: for the log only, never for the client."""


# ---- replay store -----------------------------------------------------------------------------


class ReplayStore(Protocol):
    """Remembers each `jti` until `expires_at`; atomic across workers in the real implementation."""

    def remember(self, jti: str, expires_at: datetime) -> bool:
        """True the first time `jti` is seen; False when it was seen and has not expired."""
        ...


class MemoryReplayStore:
    """A per-process ReplayStore (tests, single-process use): not shared between workers."""

    def __init__(self, clock: Callable[[], datetime] | None = None):
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seen: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def remember(self, jti: str, expires_at: datetime) -> bool:
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls % 100 == 0:  # purge now and then so memory stays bounded
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            seen = self._seen.get(jti)
            if seen is not None and seen > now:
                return False
            self._seen[jti] = expires_at
            return True


# ---- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    """One trusted EHR (a CDS Client): where its keys are, and which tenants it may name."""

    iss: str
    jwks: dict[str, dict] = field(default_factory=dict)  # kid -> JWK, pre-registered
    jwks_url: str | None = None  # pre-registered JWKS URL, fetched and cached like a jku
    jku: frozenset[str] = frozenset()  # allowlist of `jku` header values
    tenants: frozenset[str] | None = None  # None: `tenant` not checked
    # FHIR base URLs this issuer's calls may name as fhirServer; any other is never contacted.
    fhir_servers: tuple[str, ...] = ()


def load_issuers(raw: Any) -> dict[str, Issuer]:
    """AUTH_ISSUERS as {iss: Issuer}: a mapping, JSON text, or the path of a JSON file.

    The JSON is an object keyed by issuer URI: `{"https://ehr.example.org": {"jku": [...],
    "jwks": {...}, "jwks_file": "keys.json", "jwks_url": "https://...", "tenants": [...]}}`.
    A `jwks_file` is relative to the issuers file. Any mistake raises ValueError at start.
    """
    raw = raw or {}
    base = Path.cwd()
    if isinstance(raw, str):
        text = raw.strip()
        if not text.startswith("{"):
            path = Path(text).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as error:
                raise ValueError(f"AUTH_ISSUERS: cannot read {path}: {error.strerror}") from None
            base = path.parent
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ValueError(f"AUTH_ISSUERS is not valid JSON: {error}") from None
    if not isinstance(raw, Mapping):
        raise ValueError("AUTH_ISSUERS must be a JSON object keyed by issuer URI")
    return {str(iss): _issuer(str(iss), entry, base) for iss, entry in raw.items()}


def _issuer(iss: str, entry: Any, base: Path) -> Issuer:
    where = f"AUTH_ISSUERS[{iss!r}]"
    if not iss or not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be an object")
    unknown = set(entry) - _ISSUER_FIELDS
    if unknown:  # a typo ("tenant" for "tenants") must not silently switch a check off
        raise ValueError(
            f"{where}: unknown field(s) {sorted(unknown)}; use {sorted(_ISSUER_FIELDS)}"
        )
    jwks: dict[str, dict] = {}
    if "jwks" in entry:
        jwks.update(_static_keys(entry["jwks"], where))
    if "jwks_file" in entry:
        path = base / str(entry["jwks_file"])
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{where}: cannot read jwks_file {path}: {error}") from None
        jwks.update(_static_keys(document, where))
    jwks_url = entry.get("jwks_url")
    if jwks_url is not None:
        _require_https(jwks_url, f"{where}.jwks_url")
    jku = entry.get("jku") or []
    if isinstance(jku, str):
        jku = [jku]
    if not isinstance(jku, list):
        raise ValueError(f"{where}.jku must be a list of URLs")
    for url in jku:
        _require_https(url, f"{where}.jku")
    tenants = entry.get("tenants")
    if tenants is not None and (
        not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants)
    ):
        raise ValueError(f"{where}.tenants must be a list of strings")
    fhir_servers = entry.get("fhir_servers") or []
    if not isinstance(fhir_servers, list):
        raise ValueError(f"{where}.fhir_servers must be a list of https URLs")
    for url in fhir_servers:
        _require_https(url, f"{where}.fhir_servers")
    if not jwks and not jwks_url and not jku:
        raise ValueError(f"{where} needs keys: jwks, jwks_file, jwks_url or a jku allowlist")
    return Issuer(
        iss=iss,
        jwks=jwks,
        jwks_url=jwks_url,
        jku=frozenset(jku),
        tenants=frozenset(tenants) if tenants is not None else None,
        fhir_servers=tuple(fhir_servers),
    )


def _require_https(url: Any, where: str) -> None:
    try:  # read as the HTTP library will connect to it (no user info, backslash, ...)
        outbound.parse(url, schemes=("https",))
    except outbound.UnsafeURL as error:
        message = f"{where}: {str(url)[:200]!r} is not a usable https URL: {error}"
        raise ValueError(message) from None


def _static_keys(document: Any, where: str) -> dict[str, dict]:
    keys, refused = _usable_keys(document)
    if refused:
        raise ValueError(f"{where}: unusable keys in the JWKS: {'; '.join(refused)}")
    if not keys:
        raise ValueError(f"{where}: the JWKS has no keys")
    return keys


def _usable_keys(document: Any) -> tuple[dict[str, dict], list[str]]:
    """Public signing keys of a JWK Set by `kid`, and why any other key was left out."""
    keys: dict[str, dict] = {}
    refused: list[str] = []
    items = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(items, list):
        return {}, ["not a JWK Set (no 'keys' array)"]
    for item in items:
        if not isinstance(item, dict):
            refused.append("a key is not an object")
            continue
        kid = item.get("kid")
        if not isinstance(kid, str) or not kid:
            refused.append("a key has no kid")
        elif item.get("kty") not in ("RSA", "EC", "OKP"):
            refused.append(f"{kid}: key type {item.get('kty')!r} is not an asymmetric key")
        elif "d" in item:
            refused.append(f"{kid}: is a private key; publish only the public part")
        elif item.get("use", "sig") != "sig":
            continue  # an encryption key in the same set is not ours to judge
        else:
            keys[kid] = item
    return keys, refused


def accepted_algorithms(value: tuple[str, ...]) -> tuple[str, ...]:
    algorithms = tuple(value)
    refused = [a for a in algorithms if a not in _ASYMMETRIC]
    if refused or not algorithms:
        raise ValueError(
            f"AUTH_ALGORITHMS may list only asymmetric algorithms ({', '.join(sorted(_ASYMMETRIC))}"
            f"); refused: {refused or 'an empty list'}"
        )
    return algorithms


# ---- remote key sets --------------------------------------------------------------------------


@dataclass
class _CachedSet:
    keys: dict[str, dict]
    fetched_at: float


class JwksCache:
    """JWK Sets fetched from allowlisted URLs: cached, refetched when stale or on an unknown kid.

    An unknown `kid` refetches at most once per `min_refresh` seconds per URL, so a stream of
    tokens with made-up kids cannot turn the service into a request amplifier.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout: float = 2.0,
        max_age: float = 3600.0,
        min_refresh: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._session = session
        self._timeout = timeout
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._clock = clock
        self._sets: dict[str, _CachedSet] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def key(self, url: str, kid: str) -> dict:
        with self._guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:  # one fetch per URL at a time; others wait and reuse it
            cached = self._sets.get(url)
            now = self._clock()
            fresh = cached is not None and now - cached.fetched_at < self._max_age
            if fresh and cached is not None and kid in cached.keys:
                return cached.keys[kid]
            may_fetch = cached is None or now - cached.fetched_at >= self._min_refresh
            if may_fetch:
                try:
                    cached = _CachedSet(self._fetch(url), now)
                    self._sets[url] = cached
                except AuthError as error:
                    if cached is None:
                        raise
                    # Keep serving the last good set if the key server is down for a while.
                    log.warning("JWKS refresh failed (%s); keeping the cached set", error)
            if cached is not None and kid in cached.keys:
                return cached.keys[kid]
        raise AuthError(f"kid {kid[:64]!r} is not in the JWKS at {url[:200]}")

    def _fetch(self, url: str) -> dict[str, dict]:
        try:
            response = self._session.get(
                url,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json"},
            )
        except (requests.RequestException, outbound.DestinationRefused) as error:
            raise AuthError(f"JWKS fetch from {url[:200]} failed: {type(error).__name__}") from None
        try:
            if response.status_code != 200:
                raise AuthError(f"JWKS fetch from {url[:200]} answered HTTP {response.status_code}")
            body = bytearray()
            deadline = self._clock() + self._timeout
            for chunk in response.iter_content(16 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES or self._clock() > deadline:
                    raise AuthError(f"JWKS at {url[:200]} is too large or too slow")
        except requests.RequestException as error:
            raise AuthError(
                f"JWKS fetch from {url[:200]} broke off: {type(error).__name__}"
            ) from None
        finally:
            response.close()
        try:
            document = json.loads(bytes(body))
        except ValueError:
            raise AuthError(f"JWKS at {url[:200]} is not JSON") from None
        keys, refused = _usable_keys(document)
        if refused:
            log.warning("JWKS at %s: keys left out: %s", url[:200], "; ".join(refused)[:500])
        log.info("JWKS fetched from %s: %d signing keys", url[:200], len(keys))
        return keys


# ---- the verifier -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claims:
    """What a verified token tells us (for logs and per-tenant behaviour)."""

    iss: str
    jti: str
    tenant: str | None
    kid: str


class Verifier:
    """Verifies CDS Client JWTs against configured issuers (see the module docstring)."""

    def __init__(
        self,
        issuers: Mapping[str, Issuer],
        replay: ReplayStore,
        jwks: JwksCache,
        *,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.issuers = dict(issuers)
        self.algorithms = algorithms
        self._replay = replay
        self._jwks = jwks
        self._leeway = leeway
        self._max_age = max_age
        self._clock = clock
        self._jws = PyJWS()

    def verify(self, authorization: str | None, audience: str) -> Claims:
        """The token's claims, or AuthError saying why it is refused."""
        token = _bearer(authorization)
        header = self._header(token)
        alg, kid = header["alg"], header["kid"]
        payload = _unverified_payload(token)
        iss = payload.get("iss")
        if not isinstance(iss, str) or iss not in self.issuers:
            raise AuthError(f"iss {_short(iss)} is not an allowlisted issuer")
        issuer = self.issuers[iss]
        key = self._key(issuer, header)
        try:
            jwk = jwt.PyJWK(key, algorithm=alg)
        except jwt.PyJWTError as error:
            raise AuthError(
                f"key {kid[:64]!r} does not fit alg {alg}: {type(error).__name__}"
            ) from None
        if key.get("alg") not in (None, alg):
            raise AuthError(f"key {kid[:64]!r} is for {key.get('alg')!r}, the token says {alg}")
        _check_key_strength(jwk, kid)
        try:
            verified = self._jws.decode_complete(token, jwk, algorithms=[alg])
        except jwt.PyJWTError as error:
            raise AuthError(f"signature check failed ({type(error).__name__})") from None
        claims = _json_object(verified["payload"])  # the signed bytes, not the unverified parse
        return self._check_claims(claims, issuer, audience, kid)

    def _header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthError(f"malformed token ({type(error).__name__})") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"alg {_short(alg)} is not accepted ({', '.join(self.algorithms)})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_CLAIM_CHARS:
            raise AuthError("the header has no usable kid")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthError(f"typ {_short(typ)} is not JWT")
        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or len(jku) > MAX_CLAIM_CHARS):
            raise AuthError("the jku header is not a URL")
        return header

    def _key(self, issuer: Issuer, header: Mapping[str, Any]) -> dict:
        kid, jku = header["kid"], header.get("jku")
        if jku is not None:
            # Never fetch a URL the token chose unless the issuer registered it.
            if jku not in issuer.jku:
                raise AuthError(f"jku {jku[:200]!r} is not on the allowlist of {issuer.iss[:200]}")
            return self._jwks.key(jku, kid)
        if kid in issuer.jwks:
            return issuer.jwks[kid]
        if issuer.jwks_url:
            return self._jwks.key(issuer.jwks_url, kid)
        if len(issuer.jku) == 1 and not issuer.jwks:
            # The issuer's one registered key set URL, used when a token omits its jku.
            return self._jwks.key(next(iter(issuer.jku)), kid)
        raise AuthError(f"kid {kid[:64]!r} is not a registered key of {issuer.iss[:200]}")

    def _check_claims(
        self, claims: dict[str, Any], issuer: Issuer, audience: str, kid: str
    ) -> Claims:
        now, leeway = self._clock(), self._leeway
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in [a for a in auds if isinstance(a, str)]:
            raise AuthError(f"aud {_short(aud)} is not the URL called ({audience[:200]})")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
        if not _is_time(exp) or not _is_time(iat) or not _is_time(nbf):
            raise AuthError("exp and iat must be NumericDate numbers (nbf too, if present)")
        if exp <= now - leeway:
            raise AuthError(f"expired {now - exp:.0f} s ago")
        if iat > now + leeway or nbf > now + leeway:
            raise AuthError("not yet valid (iat or nbf in the future)")
        if now - iat > self._max_age + leeway:
            raise AuthError(f"issued {now - iat:.0f} s ago, over the {self._max_age:.0f} s limit")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_CLAIM_CHARS:
            raise AuthError("no usable jti")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthError("tenant is not a string")
        if issuer.tenants is not None and tenant not in issuer.tenants:
            raise AuthError(f"tenant {_short(tenant)} is not allowlisted for {issuer.iss[:200]}")
        # Remember the jti as long as this token could still pass the checks above, no longer.
        until = min(float(exp), float(iat) + self._max_age) + leeway
        digest = hashlib.sha256(f"{issuer.iss}\x00{jti}".encode()).hexdigest()
        if not self._replay.remember(digest, datetime.fromtimestamp(until, UTC)):
            raise AuthError(f"jti replayed (issuer {issuer.iss[:200]})")
        return Claims(iss=issuer.iss, jti=jti, tenant=tenant, kid=kid)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("the Authorization header is not 'Bearer <JWT>'")
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise AuthError("the bearer token is not a compact JWS of sane size")
    return token


def _unverified_payload(token: str) -> dict[str, Any]:
    """The claims before the signature is checked: used only to pick the issuer's keys."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise AuthError(f"malformed token payload ({type(error).__name__})") from None


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError:
        raise AuthError("the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise AuthError("the payload is not a JSON object")
    return claims


def _is_time(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _check_key_strength(jwk: jwt.PyJWK, kid: str) -> None:
    size = getattr(jwk.key, "key_size", None)
    if jwk.key_type == "RSA" and size is not None and size < MIN_RSA_BITS:
        raise AuthError(f"key {kid[:64]!r} is an RSA key of {size} bits (< {MIN_RSA_BITS})")


def _short(value: Any) -> str:
    """A claim value for a log line: repr, cut short (claims come from an unverified token)."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# ---- wiring -----------------------------------------------------------------------------------


def build_verifier(
    settings: Settings,
    replay: ReplayStore | None = None,
    session: requests.Session | None = None,
) -> Verifier | None:
    """The app's verifier, or None when no issuer is configured (authentication off).

    `session` is the app's outbound session (cds_hooks.outbound: the same URL and destination
    policy as FHIR requests); a policy session with the defaults is made without one.
    """
    config = settings.auth
    issuers = load_issuers(config.auth_issuers)
    algorithms = accepted_algorithms(config.auth_algorithms)
    if not issuers:
        log.warning(
            "client authentication is OFF: no AUTH_ISSUERS configured "
            "(`cds-hooks serve` then binds only a loopback address)"
        )
        return None
    if session is None:
        session = outbound.session(outbound.Destinations())
    jwks = JwksCache(
        session,
        timeout=config.auth_jwks_timeout_seconds,
        max_age=config.auth_jwks_cache_seconds,
        min_refresh=config.auth_jwks_min_refresh_seconds,
    )
    if not settings.app.public_base_url:
        # Without it the expected aud would come from the Host header, which the caller chooses
        # (a token minted for another deployment would pass) and a TLS proxy rewrites.
        raise ValueError(
            "AUTH_ISSUERS needs PUBLIC_BASE_URL: the URL the EHR calls, e.g. "
            "https://cds.example.org (each token's aud is that URL plus the path called)"
        )
    log.info(
        "client authentication ON: %d issuer(s), algorithms %s",
        len(issuers),
        ", ".join(algorithms),
    )
    return Verifier(
        issuers,
        replay if replay is not None else MemoryReplayStore(),
        jwks,
        algorithms=algorithms,
        leeway=config.auth_clock_skew_seconds,
        max_age=config.auth_max_token_age_seconds,
    )


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
    name = _host_name(request.host)
    public = urlsplit(current_app.config["SETTINGS"].app.public_base_url).hostname
    if name in _LOOPBACK_NAMES or name == public or is_loopback_address(name):
        return
    raise BadRequest(
        f"this service answers only the Host names localhost, 127.0.0.1, [::1] and that of "
        f"PUBLIC_BASE_URL, not {request.host[:100]!r}"
    )


_LOOPBACK_NAMES = frozenset({"localhost"})


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
