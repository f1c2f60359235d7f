"""BAC-ALLERGY: baclofen for a patient with a recorded baclofen allergy.

When baclofen is ordered and the record holds an AllergyIntolerance to baclofen (coded, or named
in text) that is not resolved/inactive, refuted or entered in error, then raise a critical alert
and suggest cancelling the order. Source: [P] "You shouldn't take baclofen if you've had an
allergic reaction to baclofen in the past."
"""

from __future__ import annotations

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.fhir.read import concept_text, parse_datetime, ref_of
from cds_hooks.rules.common import recorded_allergies
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-ALLERGY"
NEEDS = ("allergies",)
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    allergies = recorded_allergies(ctx, ctx.settings.keys("allergen"))
    if not allergies:
        return findings
    # A true allergy outranks an intolerance (type intolerance, or low criticality) on record.
    true_allergies = [a for a in allergies if not _intolerance(a)]
    card = "allergy" if true_allergies else "intolerance"
    described = [_describe(a) for a in (true_allergies or allergies)]
    for order in ctx.targets("drug/baclofen"):
        findings.append(
            Finding(
                RULE_ID,
                card,
                order.ref,
                {"order": order.label(), "allergy": described[0]},
                (f"Order: {order.label()}", *(f"AllergyIntolerance: {d}" for d in described)),
                (suggestions.cancel(order),),
            )
        )
    return findings


def _intolerance(allergy) -> bool:
    return allergy.get("type") == "intolerance" or allergy.get("criticality") == "low"


def _describe(allergy) -> str:
    name = concept_text(allergy.get("code")) or "baclofen"
    when = parse_datetime(allergy.get("recordedDate") or allergy.get("onsetDateTime"))
    parts = [name, ref_of(allergy) or "", when.date().isoformat() if when else ""]
    criticality = allergy.get("criticality")
    if isinstance(criticality, str):
        parts.append(f"criticality {criticality}")
    return ", ".join(p for p in parts if p)
