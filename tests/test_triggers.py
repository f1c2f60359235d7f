"""The rules' trigger sets and the fast exit derived from them (rules/context.py, pipeline.py).

The fast exit skips the record and the rules when no targeted draft order is in any rule's
trigger set. These tests make sure it can never hide a card: every value set a rule selects its
orders by is covered by its declared triggers, and on every fixture (and on each of them with an
unrelated order instead) a rule the gate skips finds nothing when run anyway.
"""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_hooks import protocol
from cds_hooks.engine import triggers
from cds_hooks.fhir.resolver import resolve
from cds_hooks.knowledge import KnowledgeError
from cds_hooks.record import build_record
from cds_hooks.rules import RULES, Rule
from cds_hooks.rules.context import RuleContext, Triggers
from cds_hooks.services import SERVICES, prefetch_templates
from tests.factories import LISINOPRIL_10_TAB, RXNORM, concept, hook_request, med_request

FIXTURES = Path(__file__).resolve().parents[1] / "fhir_fixtures"
SCENARIOS = sorted(p.parent for p in FIXTURES.glob("*/request.json"))
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def unrelated(request: dict) -> dict:
    """The same request with every draft a new lisinopril order (not a revision of one on record).

    A draft that keeps a record order's id revises that order, whatever drug it names; that case
    is the rules' (BAC-TAPER reads it), not an unrelated order.
    """
    request = copy.deepcopy(request)
    context = request["context"]
    bundle = context.get("draftOrders") or context.get("medications") or {}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "MedicationRequest":
            resource.pop("medicationReference", None)
            resource["medicationCodeableConcept"] = concept(RXNORM, *LISINOPRIL_10_TAB)
            resource["id"] += "-lisinopril"
            resource.pop("priorPrescription", None)
    if "selections" in context:
        context["selections"] = [f"{ref}-lisinopril" for ref in context["selections"]]
    return request


def requests() -> list[tuple[str, dict]]:
    found = []
    for scenario in SCENARIOS:
        request = json.loads((scenario / "request.json").read_text(encoding="utf-8"))
        found += [(scenario.name, request), (f"{scenario.name}+lisinopril", unrelated(request))]
    found.append(("lisinopril", hook_request([med_request("d1", LISINOPRIL_10_TAB)])))
    return found


REQUESTS = requests()


def record_of(request: dict, knowledge):
    service = next(s for s in SERVICES if s.hook == request["hook"])
    protocol.validate(request, service.hook, service.drafts_field)
    data = resolve(request, prefetch_templates(knowledge), None, time.monotonic() + 5)
    return build_record(
        service, request["context"], data.resources, data.medications, {}, knowledge
    )


class Recording(RuleContext):
    """A context that remembers every value set a rule picks its orders by."""

    asked: set[str]

    def targets(self, *keys: str):
        self.asked.update(keys)
        return super().targets(*keys)


def run_ungated(rule: Rule, record, knowledge) -> tuple[list, set[str]]:
    ctx = Recording(record, knowledge, knowledge.rule(rule.id), NOW)
    ctx.asked = set()
    return list(rule.evaluate(ctx)), ctx.asked


@pytest.mark.parametrize(("name", "request_body"), REQUESTS, ids=[n for n, _ in REQUESTS])
def test_the_gate_never_hides_a_finding(knowledge, name, request_body):
    record = record_of(request_body, knowledge)
    gate = triggers(knowledge)
    for rule in RULES:
        findings, asked = run_ungated(rule, record, knowledge)
        # Every value set a rule selects targeted orders by is inside its trigger keys.
        assert asked <= gate.by_rule[rule.id], (rule.id, asked - gate.by_rule[rule.id])
        if not gate.runs(rule, record.targets):
            assert findings == [], (rule.id, name)
    if not gate.relevant(record.targets):
        assert all(run_ungated(rule, record, knowledge)[0] == [] for rule in RULES)


def test_unrelated_orders_take_the_fast_exit(knowledge):
    relevant = {
        name: triggers(knowledge).relevant(record_of(body, knowledge).targets)
        for name, body in REQUESTS
    }
    assert not relevant["lisinopril"]
    assert not any(v for name, v in relevant.items() if name.endswith("+lisinopril"))
    for scenario in SCENARIOS:
        expected = json.loads((scenario / "expected.json").read_text(encoding="utf-8"))
        if expected["cards"]:
            assert relevant[scenario.name], scenario.name


def test_every_trigger_resolves_to_known_value_sets(knowledge):
    gate = triggers(knowledge)
    known = set(knowledge.terminology.keys())
    assert set(gate.by_rule) == {rule.id for rule in RULES}
    for rule in RULES:
        assert gate.by_rule[rule.id] and gate.by_rule[rule.id] <= known
    assert "drug/tizanidine" in gate.by_rule["TIZ-DOSE"]  # a knowledge value-set name, resolved
    assert "drug-group/dopamine-antagonists-all" in gate.keys


def test_a_trigger_naming_nothing_stops_the_start(knowledge):
    rule = Rule("BAC-DOSE", (), ("no_such_value_set",), lambda ctx: [])
    with pytest.raises(KnowledgeError, match="no_such_value_set"):
        Triggers.of([rule], knowledge)
    rule = Rule("BAC-DOSE", (), ("drug/no-such-drug",), lambda ctx: [])
    with pytest.raises(KnowledgeError, match="drug/no-such-drug"):
        Triggers.of([rule], knowledge)


def test_a_rule_about_the_record_turns_the_fast_exit_off(knowledge):
    """A future rule that speaks without a draft order says so (ALWAYS), and the exit learns it."""
    lisinopril = record_of(REQUESTS[-1][1], knowledge)
    assert not Triggers.of(RULES, knowledge).relevant(lisinopril.targets)
    always = Rule("BAC-DOSE", (), ("drug/baclofen",), lambda ctx: [], always=True)
    gate = Triggers.of([*RULES, always], knowledge)
    assert gate.relevant(lisinopril.targets)
    assert gate.runs(always, lisinopril.targets)


def test_the_fast_exit_skips_the_record_and_answers_like_the_rules(client, monkeypatch):
    from cds_hooks import pipeline

    built = []
    real = pipeline.build_record
    monkeypatch.setattr(pipeline, "build_record", lambda *a, **k: built.append(1) or real(*a, **k))
    body = hook_request([med_request("d1", LISINOPRIL_10_TAB)])
    response = client.post("/cds-services/antispasticity-order-select", json=body)
    assert response.status_code == 200
    assert response.get_json()["cards"] == [] and built == []
    # A baclofen order still builds the record.
    body = hook_request([med_request("d1")])
    assert client.post("/cds-services/antispasticity-order-select", json=body).status_code == 200
    assert built == [1]
