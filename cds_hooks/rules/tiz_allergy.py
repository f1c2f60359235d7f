"""TIZ-ALLERGY: tizanidine for a patient with a recorded tizanidine allergy.

When tizanidine is ordered and the record holds an AllergyIntolerance to tizanidine (coded, or
named in text) that is not resolved/inactive, refuted or entered in error, then raise a critical
alert for an allergy, or warn for an intolerance (type intolerance, or low criticality), and
suggest cancelling the order. Source: [L] tizanidine label, Contraindications (known
hypersensitivity to tizanidine or its ingredients) and Warnings and Precautions: Hypersensitivity
Reactions (anaphylaxis, angioedema).
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.rules.common import describe_allergy, is_intolerance, new_therapy, recorded_allergies
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-ALLERGY"
NEEDS = ("allergies",)
TRIGGERS = ("drug/tizanidine",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    return list(_findings(ctx))


def _findings(ctx: RuleContext) -> Iterator[Finding]:
    allergies = recorded_allergies(ctx, ctx.settings.keys("allergen"))
    if not allergies:
        return
    true_allergies = [a for a in allergies if not is_intolerance(a)]
    card = "allergy" if true_allergies else "intolerance"
    described = [describe_allergy(a, "tizanidine") for a in (true_allergies or allergies)]
    for order in new_therapy(ctx, *ctx.settings.keys("tizanidine")):
        yield Finding(
            RULE_ID,
            card,
            order.ref,
            {"order": order.label(), "allergy": described[0]},
            (f"Order: {order.label()}", *(f"AllergyIntolerance: {d}" for d in described)),
            (suggestions.cancel(order),),
        )
