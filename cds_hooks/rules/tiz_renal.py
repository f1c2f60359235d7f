"""TIZ-RENAL: tizanidine and reduced creatinine clearance.

When tizanidine is ordered and the most recent creatinine clearance or eGFR (else a
Cockcroft-Gault estimate) is below 25 mL/min, then warn: tizanidine clearance falls by more than
50% there; use it with caution, especially in the elderly [G][L]. An eGFR stands in for a
clearance when it is newer, and the card says which value was used and when it was measured.
With no value at all, an active CKD stage 4-5, kidney failure or dialysis condition warns too, and
so does dialysis next to any value (clinical-rules.md Round 2, "Renal fallback").
With no value and only an active acute kidney injury, then inform, at any age, and offer a
serum creatinine order. Why TIZ-RENAL takes the acute-kidney-injury fallback too (the Round 2
text names BAC-RENAL): an acute kidney injury means the current clearance is unknown and may well
be below the label's 25 mL/min, whatever the patient's age, and the remedy (measure creatinine,
then the clearance is computed) is the same; the tier stays info, and for a patient aged 65 or
over this card replaces the "no recent creatinine clearance" one (one card per problem).
When no kidney function is on record for a patient aged 65 or over, then inform "no recent
creatinine clearance" and offer a one-click serum creatinine order (a draft ServiceRequest; with a
body weight the clearance is computed, no 24-hour urine collection).
A value given only as "> N" (or ">= N") is not a low value; "< N" is low when N <= 25.
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks.cards import Finding
from cds_hooks.clinical.renal import RenalFunction, age_years
from cds_hooks.rules.common import creatinine_order, creatinine_test_name, kidney_function
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-RENAL"
NEEDS = ("renal", "weight", "conditions", "patient")
TRIGGERS = ("tizanidine",)

# How the card names each kind of value RenalFunction can carry.
_MEASURES = {
    "crcl": "creatinine clearance",
    "crcl-cockcroft-gault": "estimated creatinine clearance",
    "egfr": "eGFR",
}


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    current = {o.ref for o in ctx.current}
    # A stop or cancel of a tizanidine order in this session is not new therapy.
    orders = [o for o in ctx.targets(*ctx.settings.keys("tizanidine")) if o.ref in current]
    if not orders:
        return findings
    threshold = float(ctx.settings.value("crcl_below"))
    renal = kidney_function(ctx)
    if renal is None:
        findings.extend(_no_renal_data(ctx, orders, threshold))
        return findings
    if renal.kind == "acute-condition":
        # An acute kidney injury alone is no value to compare: measure creatinine (info).
        findings.extend(_acute_kidney_injury(ctx, orders, renal, threshold))
        return findings
    card = _card(renal, threshold)
    if card is None:
        return findings
    shown = renal.describe()
    source = f" ({renal.source})" if renal.source else ""
    facts = {
        "renal": shown,
        "threshold": f"{threshold:g}",
        "measure": _MEASURES.get(renal.kind, renal.kind),
        "value": _value(renal),
    }
    for order in orders:
        findings.append(_finding(ctx, card, order, facts, f"Kidney function: {shown}{source}"))
    return findings


def _finding(ctx, card: str, order, facts: dict, *evidence: str, test: bool = False) -> Finding:
    """One card for one order: its facts and evidence lines, and a creatinine order if `test`."""
    suggested = creatinine_order(ctx, order) if test else None
    return Finding(
        RULE_ID,
        card,
        order.ref,
        {**facts, "order": order.label(), "drug": order.name},
        (f"Order: {order.label()}", *evidence),
        (suggested,) if suggested else (),
    )


def _card(renal: RenalFunction, threshold: float) -> str | None:
    if renal.value_ml_min is not None and _below(renal, threshold):
        return "low_egfr" if renal.kind == "egfr" else "low_crcl"
    if renal.kind == "condition" or renal.dialysis:
        # Dialysis dependence is severe impairment whatever an eGFR between sessions says.
        return "kidney_condition"
    return None


def _below(renal: RenalFunction, threshold: float) -> bool:
    """True only when the value is certainly below the threshold (strict, as written)."""
    value = renal.value_ml_min
    assert value is not None
    if renal.comparator in (">", ">="):
        return False
    if renal.comparator == "<":
        return value <= threshold
    return value < threshold


def _value(renal: RenalFunction) -> str:
    if renal.value_ml_min is None:
        return ""
    value = f"{renal.value_ml_min:g}"
    return f"{renal.comparator} {value}" if renal.comparator else value


def _acute_kidney_injury(ctx, orders, renal: RenalFunction, threshold: float) -> Iterator[Finding]:
    shown = renal.describe()
    source = f" ({renal.source})" if renal.source else ""
    facts = {
        "renal": shown,
        "threshold": f"{threshold:g}",
        "lookback_days": ctx.knowledge.data_setting("renal_lookback_days"),
        "test": creatinine_test_name(ctx),
    }
    for order in orders:
        yield _finding(ctx, "acute", order, facts, f"Kidney function: {shown}{source}", test=True)


def _no_renal_data(ctx, orders, threshold: float) -> Iterator[Finding]:
    age = age_years(ctx.record.patient, ctx.now)
    # Unknown age: the rule cannot decide, so it says nothing rather than guess.
    if age is None or age < int(ctx.settings.value("elderly_age_years")):
        return
    facts = {
        "age": age,
        "threshold": f"{threshold:g}",
        "lookback_days": ctx.knowledge.data_setting("renal_lookback_days"),
        "test": creatinine_test_name(ctx),
    }
    evidence = (
        f"Age: {age} years (Patient.birthDate)",
        f"Kidney function: no creatinine clearance or eGFR in the last {facts['lookback_days']} "
        "days, and no active CKD 4-5, kidney failure or dialysis condition",
    )
    for order in orders:
        yield _finding(ctx, "no_renal_data", order, facts, *evidence, test=True)
