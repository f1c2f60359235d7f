"""cds-hooks keys: mint a test EHR key pair and a signed client JWT, to call a secured service.

The first run writes DIR/private.pem (mode 0600), DIR/jwks.json (the public JWK Set) and
DIR/issuers.json (an AUTH_ISSUERS file trusting that key); every run prints one fresh token on
stdout (a new `jti` each time: tokens are single-use), so it can be used as
`curl -H "Authorization: Bearer $(cds-hooks keys --aud URL)" URL`. For testing only: a real EHR
signs with its own key and publishes its JWKS itself.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from shlex import quote
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

HELP = "mint a test key pair and a signed client JWT (for curl against a secured service)"

DEFAULT_ISS = "https://ehr.example.org"
DEFAULT_AUD = "http://127.0.0.1:8080/cds-services"
ALGORITHMS = ("ES384", "RS384")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".cds-keys", help="where the key files are (.cds-keys)")
    parser.add_argument("--alg", choices=ALGORITHMS, help="for a new key: ES384 (default) or RS384")
    parser.add_argument("--new", action="store_true", help="replace the key pair with a new one")
    parser.add_argument(
        "--iss", help=f"token issuer (default: the one in issuers.json, else {DEFAULT_ISS})"
    )
    parser.add_argument(
        "--aud", default=DEFAULT_AUD, help=f"the exact URL you will call ({DEFAULT_AUD})"
    )
    parser.add_argument("--lifetime", type=int, default=300, help="seconds until exp (300)")
    parser.add_argument("--tenant", help="a tenant claim to include")
    parser.add_argument("--jku", help="a jku header to include (must be on the issuer's allowlist)")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    key_file = folder / "private.pem"
    issuers_file = folder / "issuers.json"
    if args.new or not key_file.exists():
        iss = args.iss or DEFAULT_ISS
        private = new_key(args.alg or "ES384")
        write_key_files(folder, private, iss)
        print(
            f"cds-hooks: wrote {key_file} (secret), {folder / 'jwks.json'}, {issuers_file}\n"
            f"  serve:  {serve_command(issuers_file, args.aud)}\n"
            f'  call:   curl -H "Authorization: Bearer $(cds-hooks keys --dir {quote(str(folder))} '
            f'--aud {quote(args.aud)})" {quote(args.aud)}\n'
            "  Each token is single-use (jti) and aud must be the exact URL called.",
            file=sys.stderr,
        )
    else:
        private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        iss = args.iss or _issuer_in(issuers_file) or DEFAULT_ISS
    alg = algorithm_of(private)
    if args.alg and args.alg != alg:
        print(f"cds-hooks: {key_file} is an {alg} key; use --new to replace it", file=sys.stderr)
        return 2
    print(
        mint_token(
            private,
            iss=iss,
            aud=args.aud,
            lifetime=args.lifetime,
            tenant=args.tenant,
            jku=args.jku,
        )
    )
    return 0


def serve_command(issuers_file: Path, aud: str) -> str:
    """The `cds-hooks serve` line that accepts tokens minted for `aud`, working as printed.

    PUBLIC_BASE_URL is `aud` up to its `/cds-services` path (every token's aud is that URL plus
    the path called); the port is the one `aud` names.
    """
    parts = urlsplit(aud)
    base, _, _ = aud.partition("/cds-services")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.hostname in ("127.0.0.1", "localhost"):
        host: list[str] = []  # serve's default, 127.0.0.1
    elif parts.hostname == "::1":
        host = ["--host", "::1"]
    else:  # with issuers configured any address may be served
        host = ["--host", "0.0.0.0"]  # noqa: S104
    words = [
        f"CDS_AUTH_ISSUERS={quote(str(issuers_file))}",
        f"CDS_PUBLIC_BASE_URL={quote(base.rstrip('/'))}",
        "cds-hooks",
        "serve",
        *host,
        "--port",
        str(port),
    ]
    return " ".join(words)


def new_key(alg: str) -> Any:
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def algorithm_of(private: Any) -> str:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return "ES384"
    if isinstance(private, rsa.RSAPrivateKey):
        return "RS384"
    raise ValueError("only EC P-384 and RSA keys are supported")


def public_jwk(private: Any) -> dict[str, Any]:
    """The public JWK with `kid` = its RFC 7638 thumbprint, `alg` and `use`."""
    public = private.public_key()
    if isinstance(private, ec.EllipticCurvePrivateKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        members: tuple[str, ...] = ("crv", "kty", "x", "y")
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        members = ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    jwk["kid"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    jwk["alg"] = algorithm_of(private)
    jwk["use"] = "sig"
    return jwk


def write_key_files(folder: Path, private: Any, iss: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file = folder / "private.pem"
    key_file.unlink(missing_ok=True)
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    jwks = {"keys": [public_jwk(private)]}
    (folder / "jwks.json").write_text(json.dumps(jwks, indent=2) + "\n", encoding="utf-8")
    issuers = {iss: {"jwks_file": "jwks.json"}}
    (folder / "issuers.json").write_text(json.dumps(issuers, indent=2) + "\n", encoding="utf-8")


def mint_token(
    private: Any,
    *,
    iss: str,
    aud: str,
    lifetime: int = 300,
    tenant: str | None = None,
    jku: str | None = None,
    now: float | None = None,
) -> str:
    """A CDS Hooks client JWT (CDS Hooks 2.0 "Trusting CDS Clients") signed with `private`."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "exp": issued + lifetime,
        "iat": issued,
        "jti": str(uuid.uuid4()),
    }
    if tenant:
        claims["tenant"] = tenant
    headers: dict[str, Any] = {"kid": public_jwk(private)["kid"], "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(claims, private, algorithm=algorithm_of(private), headers=headers)


def _issuer_in(issuers_file: Path) -> str | None:
    try:
        issuers = json.loads(issuers_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return next(iter(issuers), None) if isinstance(issuers, dict) and len(issuers) == 1 else None
