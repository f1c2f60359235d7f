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

from cds_hooks.auth.issuers import AuthError, Issuer, accepted_algorithms, load_issuers
from cds_hooks.auth.jwks import JwksCache
from cds_hooks.auth.settings import DEFAULT_ALGORITHMS, AuthSettings
from cds_hooks.auth.verify import Claims, MemoryReplayStore, ReplayStore, Verifier, build_verifier
from cds_hooks.auth.web import (
    audience_for,
    is_loopback_address,
    is_protected,
    require_client_jwt,
    require_known_host,
)

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AuthError",
    "AuthSettings",
    "Claims",
    "Issuer",
    "JwksCache",
    "MemoryReplayStore",
    "ReplayStore",
    "Verifier",
    "accepted_algorithms",
    "audience_for",
    "build_verifier",
    "is_loopback_address",
    "is_protected",
    "load_issuers",
    "require_client_jwt",
    "require_known_host",
]
