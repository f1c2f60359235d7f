"""BAC-ALLERGY: baclofen for a patient with a recorded baclofen allergy.

When baclofen is ordered and the record holds an AllergyIntolerance to baclofen (coded, or named
in text) that is not resolved/inactive, refuted or entered in error, then raise a critical alert
and suggest cancelling the order. Source: [P] "You shouldn't take baclofen if you've had an
allergic reaction to baclofen in the past."
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.rules.common import describe_allergy, is_intolerance, recorded_allergies

RULE_ID = "BAC-ALLERGY"
NEEDS = ("allergies",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx) -> Iterator[Finding]:
    allergies = recorded_allergies(ctx, ctx.settings.keys("allergen"))
    if not allergies:
        return
    # A true allergy outranks an intolerance (type intolerance, or low criticality) on record.
    true_allergies = [a for a in allergies if not is_intolerance(a)]
    card = "allergy" if true_allergies else "intolerance"
    described = [describe_allergy(a, "baclofen") for a in (true_allergies or allergies)]
    for order in ctx.targets("drug/baclofen"):
        yield Finding(
            RULE_ID,
            card,
            order.ref,
            {"order": order.label(), "allergy": described[0]},
            (f"Order: {order.label()}", *(f"AllergyIntolerance: {d}" for d in described)),
            (suggestions.cancel(order),),
        )
