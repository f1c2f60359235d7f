"""The verifier: every check a client JWT must pass (see the package docstring); replay store."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

import jwt
import requests
from jwt.api_jws import PyJWS

from cds_hooks import outbound
from cds_hooks.auth.issuers import (
    MAX_CLAIM_CHARS,
    MAX_TOKEN_BYTES,
    MIN_RSA_BITS,
    AuthError,
    Issuer,
    accepted_algorithms,
    load_issuers,
)
from cds_hooks.auth.jwks import JwksCache
from cds_hooks.auth.settings import DEFAULT_ALGORITHMS

if TYPE_CHECKING:
    from cds_hooks.settings import Settings

log = logging.getLogger("cds_hooks.auth")  # one logger for the package (docs/security.md)


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
        # Said once by the launcher that applies the bind policy (serve, gunicorn_conf), not
        # here: an app is built per test, per CLI call and per preview store.
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
