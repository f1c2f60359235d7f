"""BAC-RENAL: oral baclofen and reduced kidney function.

When oral baclofen is ordered and the most recent creatinine clearance or eGFR (else a
Cockcroft-Gault estimate, else a CKD stage 4-5, kidney failure or dialysis condition) is below
30 mL/min, or the patient is on dialysis, then warn. When it is 30-59 mL/min, then inform:
consider a reduced dose. Renal fallback (clinical-rules.md Round 2): with no usable recent value,
an active kidney failure (condition/kidney-failure: ICD-10-CM N19, SNOMED CT 42399005), CKD 4-5
or dialysis condition warns, and an active acute kidney injury alone informs and suggests a serum
creatinine; a usable recent value always decides over a condition (except dialysis). Baclofen is
excreted primarily unchanged by the kidney: give it with caution, a dose reduction may be
necessary [L]; kidney disease needs a careful benefit/risk discussion [P]. For
dialysis-dependent patients the card names the Canadian product monograph's particularly low
dose (about 5 mg/day) as that monograph's, not the US label's. Intrathecal doses are about 1/100
of oral ones, so ITB orders are left to ITB-PATHWAY. A value given only as "> N" is not a low
value.
"""

from __future__ import annotations

from typing import Any

from cds_hooks.cards import Finding
from cds_hooks.rules.common import creatinine_order, creatinine_test_name, kidney_function
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-RENAL"
NEEDS = ("conditions", "renal", "weight")
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    orders = [o for o in ctx.targets("drug/baclofen") if not o.intrathecal]
    if not orders:
        return findings
    renal = kidney_function(ctx)
    if renal is None:
        return findings
    card = _card(renal, ctx.settings)
    if card is None:
        return findings
    shown = renal.describe()
    value = f"{renal.value_ml_min:g} mL/min" if renal.value_ml_min is not None else "condition"
    facts: dict[str, Any] = {
        "renal": shown,
        "value": value,
        "dialysis_dose": ctx.settings.value("dialysis_mg_per_day"),
    }
    if card == "acute":
        facts["test"] = creatinine_test_name(ctx)
        facts["lookback_days"] = ctx.knowledge.data_setting("renal_lookback_days")
    for order in orders:
        order_test = creatinine_order(ctx, order) if card == "acute" else None
        findings.append(
            Finding(
                RULE_ID,
                card,
                order.ref,
                {**facts, "order": order.label()},
                (f"Order: {order.label()}", f"Kidney function: {shown}"),
                (order_test,) if order_test else (),
            )
        )
    return findings


def _card(renal, settings) -> str | None:
    if renal.dialysis:
        return "dialysis"
    if renal.kind == "acute-condition":
        return "acute"
    if renal.value_ml_min is None:
        return "severe" if renal.severe_condition else None
    if renal.comparator in (">", ">="):
        return None
    if renal.value_ml_min < float(settings.value("severe_below_ml_min")):
        return "severe"
    if renal.value_ml_min < float(settings.value("moderate_below_ml_min")):
        return "moderate"
    return None
