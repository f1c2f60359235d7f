"""BAC-NEUROPSYCH: baclofen for a patient with a neuropsychiatric condition.

When baclofen is ordered for a patient with bipolar disorder, schizophrenia or another psychotic
disorder, or active major depression, then warn: use with extreme caution, it can worsen
depression and interacts with antipsychotics, and an abrupt stop is riskier [G]; schizophrenia and
other mental-health conditions need a careful benefit/risk discussion [P]. When the only such
condition is depression in remission, then inform (monitor mood).
"""

from __future__ import annotations

from cds_hooks.cards import Finding
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-NEUROPSYCH"
NEEDS = ("conditions",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    remission = set(ctx.settings.keys("remission"))
    downgradable = set(ctx.settings.keys("downgraded_by_remission"))
    serious_keys = set(ctx.settings.keys("serious"))
    in_remission = ctx.record.conditions_in(remission)
    # Remission downgrades depression only: bipolar disorder or psychosis stays a warning.
    serious = [
        c
        for c in ctx.record.conditions_in(serious_keys)
        if not (c.keys & remission and c.keys & serious_keys <= downgradable)
    ]
    found, card = (serious, "serious") if serious else (in_remission, "remission")
    if not found:
        return findings
    for order in ctx.targets("drug/baclofen"):
        findings.append(
            Finding(
                RULE_ID,
                card,
                order.ref,
                {"order": order.label(), "condition": found[0].name},
                (f"Order: {order.label()}", *(c.label() for c in found)),
            )
        )
    return findings
