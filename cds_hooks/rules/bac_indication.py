"""BAC-INDICATION: baclofen ordered outside its labelled indications.

When oral baclofen is ordered and
  - the order's own reason is stroke, cerebral palsy, Parkinson's disease or a rheumatic or
    musculoskeletal spasm: warn, even when multiple sclerosis is on the problem list;
  - else the patient has such a condition and no multiple sclerosis or spinal cord injury or
    disease: warn;
  - else no relevant condition and no reason at all: one info card, "no documented indication".
Then suggest cancelling the order. Intrathecal orders are out of scope (their label covers
spasticity of cerebral origin). Source: [G] "Conditions where baclofen is NOT recommended"; [L].
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.fhir.read import as_list, concept_text, reference

RULE_ID = "BAC-INDICATION"
NEEDS = ("conditions",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx) -> Iterator[Finding]:
    labelled = set(ctx.settings.keys("labelled"))
    off_label = set(ctx.settings.keys("off_label"))
    terminology = ctx.knowledge.terminology
    for order in ctx.targets("drug/baclofen"):
        if order.intrathecal:
            continue
        reasons = list(_reasons(order, ctx))
        facts = {"order": order.label(), "drug": order.name}
        cancel = (suggestions.cancel(order),)
        off_reason = next(((name, keys) for name, keys in reasons if keys & off_label), None)
        if off_reason:
            name, keys = off_reason
            yield Finding(
                RULE_ID,
                "off_label_reason",
                order.ref,
                {**facts, "condition": _category(keys & off_label, terminology, name)},
                (f"Order: {order.label()}", f"Order reason: {name}"),
                cancel,
            )
            continue
        if any(keys & labelled for _name, keys in reasons) or ctx.record.conditions_in(labelled):
            continue
        off_conditions = ctx.record.conditions_in(off_label)
        if off_conditions:
            first = off_conditions[0]
            yield Finding(
                RULE_ID,
                "off_label_condition",
                order.ref,
                {**facts, "condition": _category(first.keys & off_label, terminology, first.name)},
                (f"Order: {order.label()}", *(c.label() for c in off_conditions)),
                cancel,
            )
        elif not reasons:
            yield Finding(RULE_ID, "no_indication", order.ref, facts, (f"Order: {order.label()}",))


def _reasons(order, ctx) -> Iterator[tuple[str, frozenset[str]]]:
    """(name, value-set keys) of each reason the order gives, coded or referenced."""
    terminology = ctx.knowledge.terminology
    for concept in as_list(order.resource.get("reasonCode")):
        yield concept_text(concept) or "coded reason", terminology.keys_for_concept(concept)
    for ref in as_list(order.resource.get("reasonReference")):
        cond = ctx.record.condition_index.get(reference(ref) or "")
        if cond is not None:
            yield cond.name, cond.keys


def _category(keys: set[str] | frozenset[str], terminology, fallback: str) -> str:
    """A stable, readable name for the summary: the value set's title, else the record's name."""
    return terminology.title(sorted(keys)[0]).lower() if keys else fallback
