"""Two `cds-hooks serve` hosts behind one public URL on one PostgreSQL: one service to the EHR.

Each host has its own port and data folder (as two machines behind a load balancer would); the
database is the only thing they share. A token's `jti` is accepted once across both, feedback
given to one host suppresses the card on the other, and one report covers the calls of both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cds_hooks.commands.keys import public_jwk
from tests.servers import request, serve
from tests.test_feedback import RULE, SERVICE, overridden, warning_request

ISSUER = "https://ehr.example.org"
PUBLIC = "https://cds.example.org"  # the load balancer's URL: the `aud` of every token
NOW = "2026-11-21T12:00:00Z"
HOOK = f"/cds-services/{SERVICE}"
FEEDBACK = f"{HOOK}/feedback"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def token(key, path: str, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": f"{PUBLIC}{path}",
        "iat": now,
        "exp": now + 300,
        "jti": jti or str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": public_jwk(key)["kid"]})


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def rule_cards(answer) -> list[dict]:
    return [c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE]


@pytest.fixture
def hosts(tmp_path, postgres_schema, key):
    env = {
        "CDS_DATABASE_URL": postgres_schema,
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_AUTH_ISSUERS": json.dumps({ISSUER: {"jwks": {"keys": [public_jwk(key)]}}}),
        "CDS_NOW": NOW,
        "CDS_LOG_FORMAT": "none",
    }
    with serve(tmp_path / "host-a", env) as a, serve(tmp_path / "host-b", env) as b:
        yield a, b


def test_two_hosts_share_replay_suppression_feedback_and_the_report(
    hosts, key, postgres_schema, tmp_path
):
    a, b = hosts
    body = warning_request()

    # One token, two hosts: the second sees the jti the first accepted.
    once = token(key, HOOK)
    status, answer = request(a, "POST", HOOK, body, bearer(once))
    assert status == 200
    (card,) = rule_cards(answer)
    assert request(b, "POST", HOOK, body, bearer(once))[0] == 401
    assert request(a, "POST", HOOK, body, bearer(once))[0] == 401

    # Feedback on host B for the card host A showed: B knows the card (one audit).
    feedback = {"feedback": [overridden(card["uuid"])]}
    assert request(b, "POST", FEEDBACK, feedback, bearer(token(key, FEEDBACK))) == (
        200,
        {"stored": 1, "duplicates": 0, "unknownCards": []},
    )
    # ...and the override quiets the same order on both hosts, for select and for sign.
    status, answer = request(b, "POST", HOOK, body, bearer(token(key, HOOK)))
    assert status == 200 and rule_cards(answer) == []
    sign_path = "/cds-services/antispasticity-order-sign"
    status, answer = request(
        a, "POST", sign_path, warning_request("order-sign"), bearer(token(key, sign_path))
    )
    assert status == 200 and rule_cards(answer) == []

    # One report from the database covers the calls of both hosts.
    command = [sys.executable, "-m", "cds_hooks.cli", "report", "--format", "json"]
    window = ["--from", "2026-11-01", "--to", "2026-12-31"]
    done = subprocess.run(
        [*command, *window, "--database-url", postgres_schema],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (rule,) = [r for r in json.loads(done.stdout)["rules"] if r["rule"] == RULE]
    # Shown by A, overridden through B, suppressed by B (select) and by A (sign).
    assert (rule["shown"], rule["overridden"], rule["suppressed"]) == (1, 1, 2)
