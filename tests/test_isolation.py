"""No caller silences another (issue 10): repeat and override suppression, and feedback, are
scoped to who called: the client JWT's issuer and tenant, and the fhirServer origin."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from cds_hooks import create_app
from cds_hooks.commands.keys import public_jwk
from cds_hooks.store.db import feedback as feedback_table
from tests.test_feedback import RULE, overridden, warning_request

NOW = "2026-11-21T12:00:00Z"
BASE = "https://cds.example.org"
ISS_A, ISS_B = "https://ehr-a.example.org", "https://ehr-b.example.org"
FHIR_A, FHIR_B = "https://fhir-a.example.org/r4", "https://fhir-b.example.org/r4"


@pytest.fixture(scope="module")
def keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {iss: ec.generate_private_key(ec.SECP384R1()) for iss in (ISS_A, ISS_B)}


class Caller:
    """One EHR: its issuer and tenant (None: authentication off) and its FHIR server."""

    def __init__(self, client, keys, fhir_server: str, iss: str | None = None, tenant=None):
        self.client, self.keys, self.fhir_server = client, keys, fhir_server
        self.iss, self.tenant = iss, tenant

    def headers(self, path: str) -> dict[str, str]:
        if self.iss is None:
            return {}
        now = int(time.time())
        claims = {"iss": self.iss, "aud": BASE + path, "exp": now + 300, "iat": now}
        claims |= {"jti": str(uuid.uuid4())} | ({"tenant": self.tenant} if self.tenant else {})
        key = self.keys[self.iss]
        token = jwt.encode(claims, key, "ES384", headers={"kid": public_jwk(key)["kid"]})
        return {"Authorization": f"Bearer {token}"}

    def cards(self, hook: str) -> list[dict]:
        """This caller's BAC-DOPAMINE-ANTAGONIST cards for the same patient id and order."""
        body = warning_request(hook)
        body["fhirServer"] = self.fhir_server  # the prefetch is complete: nothing is fetched
        path = f"/cds-services/antispasticity-{hook}"
        response = self.client.post(path, json=body, headers=self.headers(path))
        assert response.status_code == 200, response.get_data(as_text=True)
        return [c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == RULE]

    def override(self, card: dict) -> dict:
        path = "/cds-services/antispasticity-order-select/feedback"
        response = self.client.post(
            path, json={"feedback": [overridden(card["uuid"])]}, headers=self.headers(path)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()


def make_app(knowledge, tmp_path, keys, *, auth: bool, tenants=None):
    config = {"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)}
    if auth:
        config["AUTH_ISSUERS"] = {
            iss: {"jwks": {"keys": [public_jwk(key)]}, **({"tenants": tenants} if tenants else {})}
            for iss, key in keys.items()
        }
        config["PUBLIC_BASE_URL"] = BASE
    return create_app(config)


def callers(knowledge, tmp_path, keys, kind: str) -> tuple[Caller, Caller]:
    """Two callers that differ only in `kind`, sending the same patient id and order."""
    if kind == "fhirServer origin":
        client = make_app(knowledge, tmp_path, keys, auth=False).test_client()
        return Caller(client, keys, FHIR_A), Caller(client, keys, FHIR_B)
    if kind == "issuer":
        client = make_app(knowledge, tmp_path, keys, auth=True).test_client()
        return Caller(client, keys, FHIR_A, ISS_A), Caller(client, keys, FHIR_A, ISS_B)
    client = make_app(knowledge, tmp_path, keys, auth=True, tenants=["t1", "t2"]).test_client()
    return Caller(client, keys, FHIR_A, ISS_A, "t1"), Caller(client, keys, FHIR_A, ISS_A, "t2")


KINDS = ["fhirServer origin", "issuer", "tenant"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_callers_order_select_does_not_hide_anothers_order_sign(
    knowledge, tmp_path, keys, kind
):
    a, b = callers(knowledge, tmp_path, keys, kind)
    assert len(a.cards("order-select")) == 1
    assert len(b.cards("order-sign")) == 1  # B never saw it: B's sign shows it
    assert a.cards("order-sign") == []  # A's own repeat is still held back


@pytest.mark.parametrize("kind", KINDS)
def test_one_callers_override_does_not_hide_anothers_card(knowledge, tmp_path, keys, kind):
    a, b = callers(knowledge, tmp_path, keys, kind)
    (a_card,) = a.cards("order-select")
    (b_card,) = b.cards("order-select")
    b.override(b_card)
    assert len(a.cards("order-select")) == 1  # B's override is B's business
    assert b.cards("order-select") == []  # and it does hold B's repeat back
    a.override(a_card)
    assert a.cards("order-select") == []


@pytest.mark.parametrize("kind", ["issuer", "tenant"])
def test_feedback_on_anothers_card_is_kept_flagged_and_never_suppresses(
    knowledge, tmp_path, keys, kind
):
    a, b = callers(knowledge, tmp_path, keys, kind)
    (a_card,) = a.cards("order-select")
    assert b.override(a_card)["stored"] == 1  # B learnt A's card uuid somehow
    assert len(a.cards("order-select")) == 1
    app = a.client.application
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        (row,) = conn.execute(select(feedback_table)).all()
    assert (row.card_uuid, row.known_card, row.from_recipient) == (a_card["uuid"], True, False)
    store = app.extensions["cds_hooks"].store
    from cds_hooks.commands.report import parse_day

    report = store.report(parse_day("2026-11-01"), parse_day("2026-12-01"))
    (rule,) = [r for r in report.rules if r.rule_id == RULE]
    assert (rule.shown, rule.overridden, report.other_caller_feedback) == (2, 0, 1)
