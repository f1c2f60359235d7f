"""TIZ-DOSE: tizanidine above its labelled daily or single dose.

When the daily tizanidine dose, summed over every current tizanidine order plus the new one, is
above 36 mg/day, or the new order gives a single dose above 16 mg, then warn: the label titrates
up to 36 mg/day given at most three times in 24 hours, and single doses greater than 16 mg have
not been studied [L][G]. The advice never asks for more doses a day (the three-dose maximum) and,
for creatinine clearance below 25 mL/min, says to raise the individual dose before the frequency
(the label's renal advice). One card per order (daily, single, or both in one card), with
"Cancel". The daily dose is computed as for BAC-DOSE (`clinical/dose.py`); an order whose dose
cannot be computed gives no card, and a current order whose dose cannot be computed is named but
not counted (never a guess; logged). Next to "Cancel" (first), the same order at the label maximum
(`dose_limit.at_maximum`): the same number of doses a day (at most three), each at most 16 mg,
the total with the other current orders at most 36 mg/day, in whole 2 mg steps.
"""

from __future__ import annotations

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import Dose, total_mg_per_day
from cds_hooks.rules.common import known_doses, order_dose
from cds_hooks.rules.context import RuleContext
from cds_hooks.rules.dose_limit import at_maximum

RULE_ID = "TIZ-DOSE"
NEEDS = ("medications",)
TRIGGERS = ("tizanidine",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    tizanidine = ctx.settings.keys("tizanidine")
    max_daily = float(ctx.settings.value("max_daily_mg"))
    max_single = float(ctx.settings.value("max_single_mg"))
    current = [o for o in ctx.current if o.has(*tizanidine)]
    current_refs = {o.ref for o in current}
    for order in ctx.targets(*tizanidine):
        if order.ref not in current_refs:  # a stop is not new therapy
            continue
        dose = order_dose(order)
        if not isinstance(dose, Dose):
            continue
        known, unknown = known_doses(o for o in current if o.ref != order.ref)
        total = total_mg_per_day([dose, *(d for _o, d in known)])
        over_daily = total > max_daily
        over_single = dose.max_single_mg > max_single
        if over_daily and over_single:
            card = "daily_and_single_max"
        elif over_daily:
            card = "daily_max"
        elif over_single:
            card = "single_max"
        else:
            continue
        facts = {
            "order": order.label(),
            "drug": order.name,
            "total": f"{total:g}",
            "single": f"{dose.max_single_mg:g}",
            "max_daily": f"{max_daily:g}",
            "max_single": f"{max_single:g}",
            "max_doses": f"{float(ctx.settings.value('max_doses_per_day')):g}",
        }
        evidence = (
            f"Order: {order.label()}: {dose.basis}",
            *(f"Current tizanidine: {o.label()}: {d.basis}" for o, d in known),
            *(
                f"Current tizanidine: {o.label()}: dose could not be computed, not counted"
                for o in unknown
            ),
        )
        offered: tuple = (suggestions.cancel(order),)
        found = at_maximum(
            order,
            dose,
            max_daily_mg=max_daily,
            other_orders_mg=total - dose.mg_per_day,
            step_mg=float(ctx.settings.value("suggested_dose_step_mg")),
            max_single_mg=max_single,
            max_doses=int(ctx.settings.value("max_doses_per_day")),
        )
        if found is not None:
            facts |= {"dose": f"{found.dose_mg:g}", "times": found.words.split(" mg ", 1)[1]}
            at_max = suggestions.replace(
                order, found.resource, f"Change {order.ref} to {found.words}", "at_max"
            )
            offered = (*offered, at_max)
        findings.append(Finding(RULE_ID, card, order.ref, facts, evidence, offered))
    return findings
