"""BAC-INDICATION: baclofen ordered outside its labelled indications.

When oral baclofen is ordered and
  - the order's own reason is stroke, cerebral palsy, Parkinson's disease or a rheumatic or
    musculoskeletal spasm: warn, even when multiple sclerosis is on the problem list;
  - else the patient has such a condition and no multiple sclerosis or spinal cord injury or
    disease: warn. MS and spinal cord disease are chronic: in remission they are still present,
    and a problem-list entry known only by its text counts (clinical-rules.md Round 2);
  - else no relevant condition and no reason at all: one info card, "no documented indication".
Then suggest cancelling the order. The label indicates baclofen for spasticity from multiple
sclerosis and says it "may also be of some value" in spinal cord injuries and diseases ([G] makes
both first line): both count as the indication, worded as the label words them. Intrathecal
orders are out of scope (their label covers spasticity of cerebral origin). Sources: [L]
Indications and Usage; [G] "Conditions Where Baclofen is NOT Recommended".
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.fhir.read import as_list, concept_text, reference
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-INDICATION"
NEEDS = ("conditions",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    labelled = set(ctx.settings.keys("labelled"))
    not_established = set(ctx.settings.keys("not_established"))
    not_indicated = set(ctx.settings.keys("not_indicated"))
    off_label = not_established | not_indicated
    for order in ctx.targets("drug/baclofen"):
        if order.intrathecal:
            continue
        reasons = list(_reasons(order, ctx))
        facts = {"order": order.label(), "drug": order.name}
        cancel = (suggestions.cancel(order),)
        off_reason = next(((name, keys) for name, keys in reasons if keys & off_label), None)
        if off_reason:
            name, keys = off_reason
            kind = "not_indicated" if keys & not_indicated else "off_label"
            findings.append(
                Finding(
                    RULE_ID,
                    f"{kind}_reason",
                    order.ref,
                    {**facts, "condition": name},
                    (f"Order: {order.label()}", f"Order reason: {name}"),
                    cancel,
                )
            )
            continue
        if any(keys & labelled for _name, keys in reasons) or ctx.record.conditions_in(
            labelled, chronic=True
        ):
            continue
        # Efficacy-not-established conditions first: the stronger reason to reconsider.
        off_conditions = ctx.record.conditions_in(not_established) or ctx.record.conditions_in(
            not_indicated
        )
        if off_conditions:
            first = off_conditions[0]
            kind = "off_label" if first.keys & not_established else "not_indicated"
            evidence = (
                f"Order: {order.label()}",
                *(c.label() for c in ctx.record.conditions_in(off_label)),
            )
            findings.append(
                Finding(
                    RULE_ID,
                    f"{kind}_condition",
                    order.ref,
                    {**facts, "condition": first.name},
                    evidence,
                    cancel,
                )
            )
        elif not reasons:
            findings.append(
                Finding(RULE_ID, "no_indication", order.ref, facts, (f"Order: {order.label()}",))
            )
    return findings


def _reasons(order, ctx) -> Iterator[tuple[str, frozenset[str]]]:
    """(name, value-set keys) of each reason the order gives, coded or referenced."""
    terminology = ctx.knowledge.terminology
    for concept in as_list(order.resource.get("reasonCode")):
        yield concept_text(concept) or "coded reason", terminology.keys_for_concept(concept)
    for ref in as_list(order.resource.get("reasonReference")):
        cond = ctx.record.condition_index.get(reference(ref) or "")
        if cond is not None:
            yield cond.name, cond.keys
