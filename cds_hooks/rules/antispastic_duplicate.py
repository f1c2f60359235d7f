"""ANTISPASTIC-DUPLICATE: two antispastic agents, or the same one from two prescribers.

When baclofen is ordered while tizanidine is current therapy or another draft (or the other way
round), or a second current order of the same drug (baclofen or tizanidine) comes from a different
prescriber, then inform on the new order: additive CNS depression and sedation [L]. Not when one
of them is being stopped in this session: a draft with status stopped/cancelled replaces the
record order, so the stopped one is no longer current. Two orders of the same drug from the same
prescriber (e.g. a morning and a bedtime order) are left alone; so is a pair where either order
names no requester (a draft's requester defaults to the hook's userId), since the rule cannot
tell whether the prescribers differ.
"""

from __future__ import annotations

from cds_hooks.cards import Finding
from cds_hooks.fhir.read import as_dict, reference, text
from cds_hooks.rules.context import RuleContext

RULE_ID = "ANTISPASTIC-DUPLICATE"
NEEDS = ("medications",)
TRIGGERS = ("antispastics",)  # its value set in knowledge/rules/tizanidine.json


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    agents = ctx.settings.keys("antispastics")
    terminology = ctx.knowledge.terminology
    current = ctx.current
    current_refs = {o.ref for o in current}
    for order in ctx.targets(*agents):
        if order.ref not in current_refs:  # a stop is not new therapy
            continue
        own = [k for k in agents if order.has(k)]
        others = [o for o in current if o.ref != order.ref]
        partners = [o for o in others if o.has(*agents) and not o.has(*own)]
        card = "combination"
        if not partners:
            card = "same_drug"
            partners = [o for o in others if o.has(*own) and _prescribers_differ(order, o)]
        if not partners:
            continue
        other = partners[0]
        other_keys = [k for k in agents if other.has(k)]
        facts = {
            "order": order.label(),
            "drug": terminology.title(own[0]),
            "ingredient": terminology.title(own[0]).lower(),
            "other": terminology.title(other_keys[0]).lower() if card == "combination" else "",
            "other_order": f"{other.label()}, {other.state()}",
            "prescriber": _prescriber(order) or "an unnamed prescriber",
            "other_prescriber": _prescriber(other) or "an unnamed prescriber",
        }
        evidence = (
            f"Order: {order.label()}" + _by(order),
            *(f"Current: {o.label()}, {o.state()}" + _by(o) for o in partners),
        )
        findings.append(Finding(RULE_ID, card, order.ref, facts, evidence))
    return findings


def _prescribers_differ(first, second) -> bool:
    return bool(first.requester and second.requester and first.requester != second.requester)


def _prescriber(order) -> str | None:
    requester = as_dict(order.resource.get("requester"))
    return text(requester.get("display")) or reference(requester)


def _by(order) -> str:
    who = _prescriber(order)
    return f", requested by {who}" if who else ""
