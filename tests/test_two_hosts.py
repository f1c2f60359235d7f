"""Two `cds-hooks serve` hosts behind one public URL on one PostgreSQL: one service to the EHR.

Each host has its own port and data folder (as two machines behind a load balancer would); the
database is the only thing they share. A token's `jti` is accepted once across both, feedback
given to one host suppresses the card on the other, and one report covers the calls of both.
A host writes its audit, cards included, from its queue (AUDIT_FLUSH_SECONDS): the other host
sees a card once it is written, and feedback that arrives before is reconciled then.
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
from sqlalchemy import create_engine, func, select

from cds_hooks.commands.keys import public_jwk
from cds_hooks.store.db import cards, hook_calls
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


def host_env(database_url: str, key, **extra: str) -> dict[str, str]:
    """The environment of each host: one database, one public URL, one issuer."""
    return {
        "CDS_DATABASE_URL": database_url,
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_AUTH_ISSUERS": json.dumps({ISSUER: {"jwks": {"keys": [public_jwk(key)]}}}),
        "CDS_NOW": NOW,
        "CDS_LOG_FORMAT": "none",
        **extra,
    }


@pytest.fixture
def hosts(tmp_path, postgres_schema, key):
    env = host_env(postgres_schema, key)
    with serve(tmp_path / "host-a", env) as a, serve(tmp_path / "host-b", env) as b:
        yield a, b


def written(database_url: str, uuid: str | None = None, calls: int = 0) -> None:
    """Wait (10 s at most) until the hosts' audit writers have written the card / the calls."""
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                known = (
                    uuid is None
                    or conn.execute(select(cards.c.uuid).where(cards.c.uuid == uuid)).first()
                )
                made = conn.execute(select(func.count()).select_from(hook_calls)).scalar()
            if known and made >= calls:
                return
            time.sleep(0.05)
        pytest.fail(f"the audit was not written within 10 s ({uuid}, {calls} calls)")
    finally:
        engine.dispose()


def report(database_url: str, cwd) -> dict:
    command = [sys.executable, "-m", "cds_hooks.cli", "report", "--format", "json"]
    window = ["--from", "2026-11-01", "--to", "2026-12-31"]
    done = subprocess.run(
        [*command, *window, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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

    # Feedback on host B for the card host A showed, once A's writer has written it (within
    # AUDIT_FLUSH_SECONDS): B knows the card (one audit).
    written(postgres_schema, card["uuid"])
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

    # One report from the database covers the calls of both hosts (once their writers flushed).
    written(postgres_schema, calls=3)  # select on A; select on B and sign on A, held back
    (rule,) = [r for r in report(postgres_schema, tmp_path)["rules"] if r["rule"] == RULE]
    # Shown by A, overridden through B, suppressed by B (select) and by A (sign).
    assert (rule["shown"], rule["overridden"], rule["suppressed"]) == (1, 1, 2)


def test_feedback_on_one_host_for_a_card_the_other_has_not_written_yet(
    tmp_path, postgres_schema, key
):
    """Host A still holds the card in its audit queue (a minute's flush) when host B gets the
    override: B stores it (the EHR's 200 means it is kept) and, not knowing the card, shows the
    order's card again (a card shown, never one hidden). When A writes the card (here: its clean
    stop), A reconciles the feedback: the override holds on B, and the report counts it."""
    env = host_env(postgres_schema, key, CDS_AUDIT_FLUSH_SECONDS="60")
    body = warning_request()
    with serve(tmp_path / "host-b", env) as b:
        with serve(tmp_path / "host-a", env) as a:
            status, answer = request(a, "POST", HOOK, body, bearer(token(key, HOOK)))
            assert status == 200
            (card,) = rule_cards(answer)
            feedback = {"feedback": [overridden(card["uuid"])]}
            assert request(b, "POST", FEEDBACK, feedback, bearer(token(key, FEEDBACK))) == (
                200,
                {"stored": 1, "duplicates": 0, "unknownCards": [card["uuid"]]},
            )
            status, answer = request(b, "POST", HOOK, body, bearer(token(key, HOOK)))
            assert status == 200 and len(rule_cards(answer)) == 1
        # A stopped cleanly: its writer wrote the card and reconciled B's feedback.
        status, answer = request(b, "POST", HOOK, body, bearer(token(key, HOOK)))
        assert status == 200 and rule_cards(answer) == []
    result = report(postgres_schema, tmp_path)  # B stopped too: everything written
    (rule,) = [r for r in result["rules"] if r["rule"] == RULE]
    assert (rule["shown"], rule["overridden"], rule["suppressed"]) == (2, 1, 1)
    assert (result["unknownCardFeedback"], result["otherCallerFeedback"]) == (0, 0)
