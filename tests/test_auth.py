"""Client JWT authentication (CDS Hooks 2.0 §7): the attack matrix, valid tokens, keys, config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_hooks import cli, create_app
from cds_hooks.auth import AuthError, JwksCache, MemoryReplayStore, load_issuers
from cds_hooks.commands.keys import mint_token, public_jwk
from cds_hooks.commands.serve import BindRefused, check_bind_allowed
from cds_hooks.settings import load as load_settings
from tests.factories import STROKE, condition, hook_request, med_request

ISS = "https://ehr.example.org"
JKU_ISS = "https://keys.example.org"
JKU = "https://keys.example.org/.well-known/jwks.json"
BASE = "https://cds.example.org"
DISCOVERY = f"{BASE}/cds-services"
SELECT_PATH = "/cds-services/antispasticity-order-select"


@pytest.fixture(scope="module")
def es_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rs_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def issuers(es_key, rs_key, **extra: Any) -> dict[str, Any]:
    return {
        ISS: {"jwks": {"keys": [public_jwk(es_key), public_jwk(rs_key)]}, **extra},
        JKU_ISS: {"jku": [JKU]},
    }


@pytest.fixture
def make_app(knowledge, tmp_path, es_key, rs_key):
    def _make(**config: Any):
        settings = {
            "NOW": "2026-11-21T12:00:00Z",
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path),
            "AUTH_ISSUERS": issuers(es_key, rs_key),
            "PUBLIC_BASE_URL": BASE,
            "METRICS": False,
        }
        settings.update(config)
        return create_app(settings)

    return _make


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@pytest.fixture
def keyserver():
    """A fake https key server; any URL not registered fails like an unreachable host."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def claims(aud: str = DISCOVERY, **override: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {"iss": ISS, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    out.update(override)
    return {k: v for k, v in out.items() if v is not None}


def sign(key, payload: dict[str, Any], **header: Any) -> str:
    alg = "ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384"
    headers = {"kid": public_jwk(key)["kid"], "typ": "JWT", **header}
    return jwt.encode(payload, key, algorithm=headers.pop("alg", alg), headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], kid: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256_with_public_key(key, payload: dict[str, Any]) -> str:
    """The classic alg-confusion attack: HMAC keyed with the published public key."""
    header = {"alg": "HS256", "typ": "JWT", "kid": public_jwk(key)["kid"]}
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["tenant"] = "another-hospital"
    return f"{header}.{b64(json.dumps(data).encode())}.{signature}"


def get(client, token: str | None, path: str = "/cds-services"):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(path, headers=headers)


def post_hook(client, token: str):
    body = hook_request([med_request("d1")], conditions=[condition("c1", STROKE)])
    return client.post(SELECT_PATH, json=body, headers={"Authorization": f"Bearer {token}"})


# ---- valid tokens ------------------------------------------------------------------------------


def test_valid_es384_and_rs384_tokens_are_accepted_on_discovery(client, es_key, rs_key):
    assert get(client, sign(es_key, claims())).status_code == 200
    assert get(client, sign(rs_key, claims())).status_code == 200


def test_valid_token_on_a_hook_call_gets_the_cards(client, es_key):
    response = post_hook(client, sign(es_key, claims(f"{BASE}{SELECT_PATH}")))
    assert response.status_code == 200
    codes = [card["source"]["topic"]["code"] for card in response.get_json()["cards"]]
    assert "BAC-INDICATION" in codes


def test_feedback_route_is_protected_too(client, es_key):
    path = f"{SELECT_PATH}/feedback"
    body = {
        "feedback": [
            {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T12:00:00Z"}
        ]
    }
    assert client.post(path, json=body).status_code == 401
    token = sign(es_key, claims(f"{BASE}{path}"))
    response = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_aud_may_be_an_array_holding_the_url(client, es_key):
    assert (
        get(client, sign(es_key, claims(aud=["https://x.example", DISCOVERY]))).status_code == 200
    )


def test_small_clock_skew_is_tolerated(client, es_key):
    now = int(time.time())
    token = sign(es_key, claims(iat=now + 10, exp=now - 10 + 300))
    assert get(client, token).status_code == 200


# ---- the attack matrix -------------------------------------------------------------------------


def _attacks(es_key, rs_key, other_key) -> dict[str, str]:
    now = int(time.time())
    kid = public_jwk(es_key)["kid"]
    return {
        "no token": "",
        "alg none": unsigned(claims(), kid),
        "HS256 with the public key": hs256_with_public_key(es_key, claims()),
        "expired": sign(es_key, claims(iat=now - 400, exp=now - 100)),
        "not yet valid (iat)": sign(es_key, claims(iat=now + 600, exp=now + 900)),
        "not yet valid (nbf)": sign(es_key, claims(nbf=now + 600)),
        "too old": sign(es_key, claims(iat=now - 3600, exp=now + 300)),
        "wrong aud": sign(es_key, claims(aud=f"{BASE}/cds-services/other")),
        "aud of another host": sign(es_key, claims(aud="https://evil.example/cds-services")),
        "unlisted iss": sign(es_key, claims(iss="https://evil.example")),
        "jku off the allowlist": sign(
            es_key, claims(), jku="https://evil.example/.well-known/jwks.json"
        ),
        "unknown kid": sign(other_key, claims()),
        "known kid, other key": sign(other_key, claims(), kid=kid),
        "tampered payload": tampered(sign(es_key, claims())),
        "ES384 header on the RSA key's kid": sign(es_key, claims(), kid=public_jwk(rs_key)["kid"]),
        "RS256 (not accepted)": sign(rs_key, claims(), alg="RS256"),
        "no kid": jwt.encode(claims(), es_key, algorithm="ES384"),
        "no jti": sign(es_key, claims(jti=None)),
        "no exp": sign(es_key, claims(exp=None)),
        "typ not JWT": sign(es_key, claims(), typ="at+jwt"),
        "not a JWT": "not.a.jwt",
    }


ATTACKS = [
    "no token",
    "alg none",
    "HS256 with the public key",
    "expired",
    "not yet valid (iat)",
    "not yet valid (nbf)",
    "too old",
    "wrong aud",
    "aud of another host",
    "unlisted iss",
    "jku off the allowlist",
    "unknown kid",
    "known kid, other key",
    "tampered payload",
    "ES384 header on the RSA key's kid",
    "RS256 (not accepted)",
    "no kid",
    "no jti",
    "no exp",
    "typ not JWT",
    "not a JWT",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_is_a_bare_401_and_the_reason_is_logged(
    attack, client, keyserver, es_key, rs_key, other_key, caplog
):
    caplog.set_level(logging.DEBUG)
    token = _attacks(es_key, rs_key, other_key)[attack]
    response = get(client, token or None)
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized"}  # nothing to tune an attack with
    assert response.headers["WWW-Authenticate"] == "Bearer"
    reasons = [r.getMessage() for r in caplog.records if r.name == "cds_hooks.auth"]
    assert any(m.startswith("401 for GET /cds-services") for m in reasons)
    if token:
        assert token not in caplog.text
        assert token.split(".")[-1] not in caplog.text or not token.split(".")[-1]
    assert not keyserver.calls  # no key server was contacted for any of these


def test_a_replayed_jti_is_refused(client, es_key):
    token = sign(es_key, claims())
    assert get(client, token).status_code == 200
    assert get(client, token).status_code == 401


def test_replay_store_is_shared_by_apps_on_one_database(make_app, es_key):
    """Two workers (two apps on the same DATA_DIR) see one jti store."""
    token = sign(es_key, claims())
    assert get(make_app().test_client(), token).status_code == 200
    assert get(make_app().test_client(), token).status_code == 401


def test_same_jti_from_two_issuers_is_not_a_replay(make_app, es_key, rs_key, other_key):
    app = make_app(
        AUTH_ISSUERS={
            **issuers(es_key, rs_key),
            "https://other.example.org": {"jwks": {"keys": [public_jwk(other_key)]}},
        }
    )
    client = app.test_client()
    jti = str(uuid.uuid4())
    assert get(client, sign(es_key, claims(jti=jti))).status_code == 200
    token = sign(other_key, claims(jti=jti, iss="https://other.example.org"))
    assert get(client, token).status_code == 200


def test_tenant_allowlist(make_app, es_key, rs_key):
    app = make_app(AUTH_ISSUERS=issuers(es_key, rs_key, tenants=["hospital-a"]))
    client = app.test_client()
    assert get(client, sign(es_key, claims(tenant="hospital-a"))).status_code == 200
    assert get(client, sign(es_key, claims(tenant="hospital-b"))).status_code == 401
    assert get(client, sign(es_key, claims())).status_code == 401


def test_issuers_without_public_base_url_refuse_to_start(make_app):
    # aud from the Host header would let the caller choose it; a proxy would rewrite it.
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        make_app(PUBLIC_BASE_URL="")


# ---- jku -------------------------------------------------------------------------------------


def test_jku_on_the_allowlist_is_fetched_cached_and_rotated(client, keyserver, es_key, other_key):
    def token(key) -> str:
        return sign(key, claims(iss=JKU_ISS), jku=JKU)

    keyserver.get(JKU, json={"keys": [public_jwk(es_key)]})
    assert get(client, token(es_key)).status_code == 200
    assert get(client, token(es_key)).status_code == 200
    assert len(keyserver.calls) == 1  # cached

    keyserver.replace(responses.GET, JKU, json={"keys": [public_jwk(other_key)]})
    # A key the cache has not seen: refetched at most once per AUTH_JWKS_MIN_REFRESH_SECONDS.
    assert get(client, token(other_key)).status_code == 401
    assert len(keyserver.calls) == 1


def test_unknown_kid_refetches_the_jku_set(make_app, keyserver, es_key, other_key):
    client = make_app(AUTH_JWKS_MIN_REFRESH_SECONDS=0).test_client()
    keyserver.get(JKU, json={"keys": [public_jwk(es_key)]})
    assert get(client, sign(es_key, claims(iss=JKU_ISS), jku=JKU)).status_code == 200
    keyserver.replace(responses.GET, JKU, json={"keys": [public_jwk(other_key)]})
    assert get(client, sign(other_key, claims(iss=JKU_ISS), jku=JKU)).status_code == 200
    assert len(keyserver.calls) == 2


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 500},
        {"body": "<html>nope</html>", "content_type": "text/html"},
        {"json": {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}},
        {"status": 302, "headers": {"Location": "https://evil.example/jwks.json"}},
        {"body": b"{" + b" " * (300 * 1024) + b"}"},
    ],
    ids=["500", "html", "symmetric key", "redirect", "too large"],
)
def test_a_bad_jku_answer_is_a_401(answer, client, keyserver, es_key):
    keyserver.get(JKU, **answer)
    assert get(client, sign(es_key, claims(iss=JKU_ISS), jku=JKU)).status_code == 401
    assert [c.request.url for c in keyserver.calls] == [JKU]  # the redirect was not followed


def test_jwks_fetch_is_bounded_by_its_timeout():
    class SlowSession:
        def get(self, url, **kwargs):
            assert kwargs["timeout"] == 0.5
            assert kwargs["allow_redirects"] is False
            raise __import__("requests").Timeout()

    cache = JwksCache(SlowSession(), timeout=0.5)  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="Timeout"):
        cache.key(JKU, "k1")


# ---- other routes stay open; preflight -------------------------------------------------------


def test_healthz_and_openapi_stay_open(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_cors_preflight_needs_no_token(client):
    response = client.options(
        SELECT_PATH,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert response.status_code == 200


def test_auth_is_off_without_issuers(knowledge, tmp_path):
    app = create_app({"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), "METRICS": False})
    assert app.test_client().get("/cds-services").status_code == 200


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"AUTH_ALGORITHMS": "ES384,HS256"}, "asymmetric"),
        ({"AUTH_ALGORITHMS": ["none"]}, "asymmetric"),
        ({"AUTH_ISSUERS": {ISS: {}}}, "needs keys"),
        ({"AUTH_ISSUERS": {ISS: {"jku": ["http://ehr.example.org/jwks"]}}}, "https"),
        ({"AUTH_ISSUERS": {ISS: {"jku": [JKU], "tenant": ["a"]}}}, "unknown field"),
        ({"AUTH_ISSUERS": {ISS: {"jwks": {"keys": [{"kty": "oct", "kid": "a"}]}}}}, "asymmetric"),
        ({"AUTH_ISSUERS": "/nonexistent/issuers.json"}, "cannot read"),
        ({"AUTH_ISSUERS": "{not json"}, "not valid JSON"),
    ],
)
def test_bad_auth_config_fails_at_start(make_app, config, message):
    with pytest.raises(ValueError, match=message):
        make_app(**config)


def test_private_key_in_a_registered_jwks_is_refused(es_key):
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(es_key))
    private["kid"] = "k"
    with pytest.raises(ValueError, match="private key"):
        load_issuers({ISS: {"jwks": {"keys": [private]}}})


def test_memory_replay_store_forgets_after_expiry():
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = MemoryReplayStore(clock=lambda: now[0])
    until = now[0] + timedelta(minutes=5)
    assert store.remember("a", until) is True
    assert store.remember("a", until) is False
    assert store.remember("b", until) is True
    now[0] += timedelta(minutes=6)
    assert store.remember("a", now[0] + timedelta(minutes=5)) is True


# ---- the secure default for serving ------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_without_issuers_loopback_is_allowed_and_says_auth_is_off(host):
    assert "authentication OFF" in check_bind_allowed(host, load_settings({}, {}))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "cds.example.org"])
def test_without_issuers_other_addresses_need_the_flag(host):
    with pytest.raises(BindRefused, match="--allow-unauthenticated"):
        check_bind_allowed(host, load_settings({}, {}))
    assert "WARNING" in check_bind_allowed(host, load_settings({}, {}), allow_unauthenticated=True)
    assert "WARNING" in check_bind_allowed(
        host, load_settings({"ALLOW_UNAUTHENTICATED": "true"}, {})
    )


def test_with_issuers_any_address_is_allowed(es_key, rs_key):
    config = load_settings({"AUTH_ISSUERS": issuers(es_key, rs_key)}, {})
    assert "authentication ON" in check_bind_allowed("0.0.0.0", config)


def test_serve_refuses_a_public_bind_without_issuers(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CDS_METRICS", "false")
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve 0.0.0.0" in capsys.readouterr().err


# ---- the keys helper ---------------------------------------------------------------------------


def test_keys_command_mints_a_key_pair_and_a_token_the_service_accepts(tmp_path, knowledge, capsys):
    folder = tmp_path / "keys"
    aud = "http://127.0.0.1:8080/cds-services"
    assert cli.main(["keys", "--dir", str(folder), "--aud", aud]) == 0
    first = capsys.readouterr()
    assert "CDS_AUTH_ISSUERS=" in first.err
    assert stat.S_IMODE((folder / "private.pem").stat().st_mode) == 0o600
    assert cli.main(["keys", "--dir", str(folder), "--aud", aud]) == 0  # reuses the key
    second = capsys.readouterr().out.strip()

    app = create_app(
        {
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path),
            "METRICS": False,
            "AUTH_ISSUERS": str(folder / "issuers.json"),
            "PUBLIC_BASE_URL": "http://127.0.0.1:8080",
        }
    )
    client = app.test_client()
    for token in (first.out.strip(), second):
        assert jwt.get_unverified_header(token)["alg"] == "ES384"
        assert get(client, token).status_code == 200


def test_keys_command_rs384(tmp_path, capsys):
    folder = tmp_path / "rsa"
    assert cli.main(["keys", "--dir", str(folder), "--alg", "RS384", "--tenant", "t1"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["alg"] == "RS384"
    assert jwt.decode(token, options={"verify_signature": False})["tenant"] == "t1"
    jwks = json.loads((folder / "jwks.json").read_text())
    assert [k["kty"] for k in jwks["keys"]] == ["RSA"]
    assert "d" not in jwks["keys"][0]  # only the public part is published


def test_mint_token_claims(es_key):
    token = mint_token(es_key, iss=ISS, aud=DISCOVERY, lifetime=60, now=1_000_000)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 60
    assert {"iss", "aud", "exp", "iat", "jti"} <= set(payload)
