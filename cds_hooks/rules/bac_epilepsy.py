"""BAC-EPILEPSY: baclofen for a patient with epilepsy.

When baclofen is ordered for a patient with an active epilepsy or seizure-disorder condition,
then inform: deterioration in seizure control and in the EEG has been reported in patients with
epilepsy taking baclofen, and seizures occur in baclofen overdose and on abrupt withdrawal, so the
clinical state and EEG are to be monitored at regular intervals. Source: [L] baclofen label,
Warnings and Precautions (epilepsy; abrupt discontinuation) and Overdosage.
Tier info: the label asks for monitoring, not avoidance, and epilepsy is common among people
with spasticity of cerebral origin; one card per order.
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks.cards import Finding
from cds_hooks.rules.common import new_therapy
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-EPILEPSY"
NEEDS = ("conditions",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    return list(_findings(ctx))


def _findings(ctx: RuleContext) -> Iterator[Finding]:
    found = ctx.record.conditions_in(ctx.settings.keys("epilepsy"))
    if not found:
        return
    for order in new_therapy(ctx, *ctx.settings.keys("baclofen")):
        route = "intrathecal" if order.intrathecal else "oral"
        yield Finding(
            RULE_ID,
            "epilepsy",
            order.ref,
            {"order": order.label(), "condition": found[0].name, "route": route},
            (f"Order: {order.label()}", *(c.label() for c in found)),
        )
