"""BAC-DOSE: the total daily oral baclofen dose.

When the total daily oral baclofen dose, summed over every current baclofen order plus the new one,
is above 80 mg/day, then warn; at or above twice that, critical [P][L]. When it is above 60 mg/day,
then inform: adverse effects (sedation, weakness, dizziness, confusion) typically appear there [G].
When a first baclofen order (none on record in any status) starts above 15 mg/day, then advise
starting low and titrating [G][P]. One card per order, the highest tier only. A dose that cannot be
computed (unknown unit, no frequency) gives no card: never a guess (the reason is logged). The
warning and critical cards offer "Cancel" and, next to it, the same order at the label maximum
(`dose_limit.at_maximum`): the same number of doses a day, the total with the other current orders
at most 80 mg/day, in whole 5 mg steps (the label sets no single-dose limit for baclofen).
"""

from __future__ import annotations

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import Dose
from cds_hooks.rules.common import known_doses, order_dose, prior_orders
from cds_hooks.rules.context import RuleContext
from cds_hooks.rules.dose_limit import at_maximum

RULE_ID = "BAC-DOSE"
NEEDS = ("medications",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    settings = ctx.settings
    maximum = float(settings.value("max_mg_per_day"))
    critical = maximum * float(settings.value("critical_factor"))
    adverse = float(settings.value("adverse_effects_mg_per_day"))
    start = float(settings.value("start_max_mg_per_day"))
    oral = [o for o in ctx.current if o.has("drug/baclofen") and not o.intrathecal]
    for order in ctx.targets("drug/baclofen"):
        # A target that is not current therapy (a stop, an intrathecal order) has no oral dose.
        if order.ref not in {o.ref for o in oral} or not isinstance(order_dose(order), Dose):
            continue
        known, unknown = known_doses(oral)
        total = round(sum(dose.mg_per_day for _o, dose in known), 4)
        if total >= critical:
            card = "critical"
        elif total > maximum:
            card = "over_max"
        elif total > adverse:
            card = "adverse"
        elif total > start and not prior_orders(ctx, "drug/baclofen"):
            card = "start_low"
        else:
            continue
        evidence = [f"Order: {order.label()}"]
        evidence += [f"{o.label()}: {dose.basis}" for o, dose in known]
        evidence += [f"{o.label()}: dose could not be computed, not counted" for o in unknown]
        facts = {
            "order": order.label(),
            "total": f"{total:g}",
            "max": f"{maximum:g}",
            "critical": f"{critical:g}",
            "adverse": f"{adverse:g}",
            "start": f"{start:g}",
        }
        offered: tuple = ()
        if card in ("critical", "over_max"):
            offered = (suggestions.cancel(order),)
            this = next(d for o, d in known if o.ref == order.ref)
            found = at_maximum(
                order,
                this,
                max_daily_mg=maximum,
                other_orders_mg=total - this.mg_per_day,
                step_mg=float(settings.value("suggested_dose_step_mg")),
            )
            if found is not None:
                facts |= {"dose": f"{found.dose_mg:g}", "times": found.words.split(" mg ", 1)[1]}
                at_max = suggestions.replace(
                    order, found.resource, f"Change {order.ref} to {found.words}", "at_max"
                )
                offered = (*offered, at_max)
        findings.append(Finding(RULE_ID, card, order.ref, facts, tuple(evidence), offered))
    return findings
