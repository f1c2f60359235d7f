"""BAC-TAPER: stopping or sharply cutting baclofen needs a taper.

When this session's drafts, in any way an EHR writes a change (a revision of the same order id, a
new order naming the old one as `priorPrescription`, or a stop of one order beside a new one; an
ITB pump rate is read as a daily dose by `clinical.dose`),
  - stop, cancel or put on hold a current baclofen order, leaving less than half of the patient's
    total daily baclofen dose (or none), or
  - lower the total daily baclofen dose by more than 50% at once, or
  - start tizanidine while the last current baclofen order stops (a switch),
then warn, and offer to replace the changed order with a stepped taper; for intrathecal baclofen
(pump stopped, refill cancelled, intrathecal order discontinued) raise a critical alert instead:
abrupt ITB withdrawal is life-threatening [L]. Withdraw gradually over several weeks [G]; never stop
suddenly [P]. Oral and intrathecal doses are compared separately (ITB doses are about 1/100 of
oral ones). A partial stop that leaves at least half the daily dose is a small cut, not a stop.
When a dose needed for the comparison cannot be computed, a full stop still warns; a partial one
stays silent (never a guess).

The taper lowers each dose of the changed order by a fixed step (knowledge: `step_mg_per_dose`,
`step_days`) at its own frequency, starting below its current dose and never above it, and ends
with the prescriber's new dosage (a cut) or stops (a stop).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import Dose
from cds_hooks.fhir import status
from cds_hooks.record import MedOrder
from cds_hooks.rules.common import known_doses, order_dose
from cds_hooks.rules.context import RuleContext

RULE_ID = "BAC-TAPER"
NEEDS = ("medications",)
BACLOFEN = "drug/baclofen"
TRIGGERS = (BACLOFEN, "drug/tizanidine")


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    # What the patient takes now: active record orders (an order on hold is not being taken).
    before = {
        o.ref: o
        for o in ctx.record.orders_on_record
        if o.has(BACLOFEN) and status.order_taken(o.status)
    }
    if not before:
        return findings
    # A draft changes the record orders it replaces (same id, or its priorPrescription).
    stops = {o.ref: o for o in ctx.record.drafts if o.ref in before and _stops(o, before[o.ref])}
    after = [
        o for o in ctx.current if o.has(BACLOFEN) and o.ref not in stops and o.status != "on-hold"
    ]
    for intrathecal in (False, True):
        old = [o for o in before.values() if o.intrathecal == intrathecal]
        new = [o for o in after if o.intrathecal == intrathecal]
        if old:
            findings.extend(_changes(ctx, before, stops, old, new, intrathecal))
    if not after:
        findings.extend(_switch(ctx, before, stops))
    return findings


def _changes_order(draft: MedOrder, before: Mapping[str, MedOrder]) -> str | None:
    """The current baclofen order this draft changes (`MedOrder.replaces`), if any."""
    return next((ref for ref in draft.replaces if ref in before), None)


def _stops(draft: MedOrder, current: MedOrder) -> bool:
    """A draft stops the order: stopped/cancelled, or an active order put on hold."""
    return status.order_stopping(draft.status) or (
        draft.status == "on-hold" and status.order_taken(current.status)
    )


def _changes(
    ctx,
    before: Mapping[str, MedOrder],
    stops: Mapping[str, MedOrder],
    old: list[MedOrder],
    new: list[MedOrder],
    intrathecal: bool,
) -> Iterator[Finding]:
    """One card on the targeted draft that stops or cuts this route's total by too much."""
    changed = [
        o
        for o in ctx.record.targets
        if (old_ref := _changes_order(o, before)) is not None
        and before[old_ref].intrathecal == intrathecal
        and (o.ref in stops or o.status in ("active", "draft", None))
    ]
    if not changed:
        return
    known_old, unknown_old = known_doses(old)
    known_new, unknown_new = known_doses(new)
    total_old = sum(d.mg_per_day for _o, d in known_old)
    total_new = sum(d.mg_per_day for _o, d in known_new)
    max_cut = float(ctx.settings.value("max_cut_fraction"))
    if new and (unknown_old or unknown_new or total_old <= 0):
        return  # some baclofen continues and the cut cannot be measured: no guess
    if new and total_new >= total_old * (1 - max_cut):
        return  # at most half the daily dose is cut at once
    draft = next((o for o in changed if o.ref in stops), changed[0])
    current = before[_changes_order(draft, before) or draft.ref]
    evidence = (
        f"Order: {draft.label()}, status {draft.status}",
        *([f"Changes: {current.label()}"] if current.ref != draft.ref else []),
        *(f"Before: {o.label()}: {d.basis}" for o, d in known_old),
        *(f"Before: {o.label()}: dose could not be computed" for o in unknown_old),
        *(f"After: {o.label()}: {d.basis}" for o, d in known_new),
    )
    if intrathecal:
        yield _itb_finding(
            draft, current, evidence, stopped=draft.ref in stops, before=total_old, after=total_new
        )
        return
    card = "stop_oral" if draft.ref in stops else "cut_oral"
    yield _taper_finding(ctx, card, draft, current, evidence, total_old, total_new, max_cut)


def _itb_finding(
    draft: MedOrder,
    current: MedOrder,
    evidence: tuple[str, ...],
    *,
    stopped: bool,
    before: float,
    after: float,
) -> Finding:
    keep = suggestions.replace(
        draft,
        _as_order(current.resource, draft, current.status),
        f"Keep {draft.ref} as it was",
        "keep",
        recommended=True,
    )
    facts = {"order": draft.label(), "before": f"{before:g}", "after": f"{after:g}"}
    return Finding(
        RULE_ID, "stop_itb" if stopped else "cut_itb", draft.ref, facts, evidence, (keep,)
    )


def _taper_finding(
    ctx,
    card: str,
    draft: MedOrder,
    current: MedOrder,
    evidence: tuple[str, ...],
    total_old: float,
    total_new: float,
    max_cut: float,
) -> Finding:
    facts: dict[str, Any] = {
        "order": draft.label(),
        "before": f"{total_old:g}",
        "after": f"{total_new:g}",
        "max_cut": f"{max_cut:.0%}",
    }
    dose = order_dose(current)
    if not isinstance(dose, Dose):
        facts["taper"] = "lower the dose step by step over several weeks."
        return Finding(RULE_ID, card, draft.ref, facts, evidence)
    end = None if card == "stop_oral" else draft.resource.get("dosageInstruction")
    target = order_dose(draft) if end else None
    if end and not isinstance(target, Dose):
        facts["taper"] = "lower the dose step by step over several weeks to the new dose."
        return Finding(RULE_ID, card, draft.ref, facts, evidence)
    steps = taper_steps(dose, target if isinstance(target, Dose) else None, ctx.settings)
    days = int(ctx.settings.value("step_days"))
    facts["weeks"] = max(1, math.ceil(len(steps) * days / 7))
    facts["taper"] = "; ".join(
        f"{per_dose:g} mg {times:g} times a day for {days} days" for per_dose, times in steps
    ) + ("; then the new dose" if end else "; then stop")
    resource = taper_request(current.resource, draft, steps, end, days)
    suggestion = suggestions.replace(
        draft, resource, f"Replace {draft.ref} with a taper", "taper", recommended=True
    )
    return Finding(RULE_ID, card, draft.ref, facts, evidence, (suggestion,))


def _switch(
    ctx, before: Mapping[str, MedOrder], stops: Mapping[str, MedOrder]
) -> Iterator[Finding]:
    """Tizanidine ordered while the last baclofen stops, when the stop itself is not targeted."""
    if any(ref in stops for ref in (o.ref for o in ctx.record.targets)):
        return  # the stop card on that draft says it all
    stopped = ", ".join(o.label() for o in before.values())
    card = "switch_itb" if any(o.intrathecal for o in before.values()) else "switch"
    for order in ctx.targets("drug/tizanidine"):
        yield Finding(
            RULE_ID,
            card,
            order.ref,
            {"order": order.label(), "stopped": stopped},
            (f"Order: {order.label()}", f"Baclofen stopping: {stopped}"),
        )


def taper_steps(current: Dose, target: Dose | None, settings) -> list[tuple[float, float]]:
    """(mg per dose, doses a day) of each step, strictly below the current single dose.

    Steps go down by `step_mg_per_dose` at the order's own frequency, to just above the target's
    single dose (or zero). A dose already at one step or less gets one step at half of it, so a
    taper always has at least one step.
    """
    step = float(settings.value("step_mg_per_dose"))
    per_dose = current.max_single_mg
    times = max(1.0, round(current.mg_per_day / per_dose)) if per_dose > 0 else 1.0
    floor = target.max_single_mg if target is not None else 0.0
    level = math.ceil(per_dose / step - 1e-9) * step - step
    steps = []
    while level > floor + 1e-9:
        steps.append((round(level, 4), times))
        level -= step
    if not steps and per_dose / 2 > floor:
        steps.append((round(per_dose / 2, 4), times))
    return steps


def taper_request(
    template: Mapping[str, Any],
    draft: MedOrder,
    steps: list[tuple[float, float]],
    end: Any,
    days: int,
) -> dict[str, Any]:
    """The order as a draft whose dosage lines step the dose down in sequence.

    `end` is the prescriber's new dosageInstruction (a cut), kept as the last phase; None: stop.
    """
    lines = [_line(i + 1, mg, times, days) for i, (mg, times) in enumerate(steps)]
    for offset, dosage in enumerate(end if isinstance(end, list) else []):
        if isinstance(dosage, dict):
            lines.append({**dosage, "sequence": len(steps) + 1 + offset})
    resource = _as_order(template, draft, "draft")
    resource["dosageInstruction"] = lines
    resource["note"] = [{"text": "Baclofen taper suggested by the antispasticity CDS service."}]
    return resource


def _line(sequence: int, per_dose: float, times: float, days: int) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "text": f"Step {sequence}: {per_dose:g} mg {times:g} times a day for {days} days",
        "timing": {
            "repeat": {
                "frequency": int(times),
                "period": 1,
                "periodUnit": "d",
                "boundsDuration": {
                    "value": days,
                    "unit": "days",
                    "system": "http://unitsofmeasure.org",
                    "code": "d",
                },
            }
        },
        "doseAndRate": [
            {
                "doseQuantity": {
                    "value": per_dose,
                    "unit": "mg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mg",
                }
            }
        ],
    }


def _as_order(
    template: Mapping[str, Any], draft: MedOrder, order_status: str | None
) -> dict[str, Any]:
    """A copy of the order under the draft's id, in the given status."""
    resource = {k: v for k, v in template.items() if k not in ("meta", "text", "statusReason")}
    resource["id"] = draft.resource.get("id", resource.get("id"))
    resource["status"] = order_status or "draft"
    if "priorPrescription" in draft.resource:  # a new order keeps naming the order it changes
        resource["priorPrescription"] = draft.resource["priorPrescription"]
    return resource
