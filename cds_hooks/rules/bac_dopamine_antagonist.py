"""BAC-DOPAMINE-ANTAGONIST: baclofen together with a dopamine antagonist.

When baclofen is ordered while a dopamine antagonist (typical or atypical antipsychotic,
metoclopramide, prochlorperazine, promethazine, droperidol...) is current therapy or another draft,
or a dopamine antagonist is ordered while baclofen is, then warn on the new order, naming the
other drug and its order. Source: [G] "Drug interactions": baclofen alters receptor sensitivity
and can cause paradoxical reactions with dopamine antagonists, and interacts with antipsychotics.
"""

from __future__ import annotations

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.rules.common import systemic
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-DOPAMINE-ANTAGONIST"
NEEDS = ("medications",)
BACLOFEN = "drug/baclofen"
TRIGGERS = (BACLOFEN, "dopamine_antagonists")


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    antagonists = ctx.settings.keys("dopamine_antagonists")
    for order in ctx.targets(BACLOFEN, *antagonists):
        if order.has(BACLOFEN):
            partner_keys = antagonists
        elif order.has(*antagonists):
            partner_keys = (BACLOFEN,)
        else:
            continue
        others = [
            o
            for o in ctx.current
            if o.ref != order.ref and o.has(*partner_keys) and systemic(o, ctx.knowledge)
        ]
        if not others:
            continue
        baclofen, antagonist = (order, others[0]) if order.has(BACLOFEN) else (others[0], order)
        facts = {
            "order": order.label(),
            "drug": order.name,
            "baclofen": baclofen.label(),
            "antagonist": antagonist.name,
            "antagonist_order": f"{antagonist.ref}, {antagonist.state()}",
        }
        evidence = (
            f"Order: {order.label()}",
            *(
                f"{'Baclofen' if o.has(BACLOFEN) else 'Dopamine antagonist'}: {o.label()}, "
                f"{o.state()}"
                for o in others
            ),
        )
        findings.append(
            Finding(
                RULE_ID, "interaction", order.ref, facts, evidence, (suggestions.cancel(order),)
            )
        )
    return findings
