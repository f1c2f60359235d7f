"""BAC-TAPER: stopping or sharply cutting baclofen needs a taper.

When a draft order
  - stops or cancels a current baclofen order (status stopped/cancelled on an order that is
    current on record), or
  - lowers the total daily baclofen dose by more than 50% at once, or
  - starts tizanidine while the last current baclofen order stops (a switch),
then warn, and offer to replace the stop with a stepped taper; for intrathecal baclofen (pump
stopped, refill cancelled) raise a critical alert: abrupt ITB withdrawal is life-threatening [L].
Withdraw gradually over several weeks [G]; never stop suddenly [P]. Oral and intrathecal doses are
compared separately (ITB doses are about 1/100 of oral ones).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import Dose
from cds_hooks.record import MedOrder
from cds_hooks.rules.common import known_doses, order_dose

RULE_ID = "BAC-TAPER"
NEEDS = ("medications",)
BACLOFEN = "drug/baclofen"
TRIGGERS = (BACLOFEN, "drug/tizanidine")


def evaluate(ctx) -> Iterator[Finding]:
    current_statuses = set(ctx.knowledge.data_setting("current_medication_statuses")) - {"draft"}
    stopping = set(ctx.knowledge.data_setting("stopping_statuses"))
    before = {
        o.ref: o for o in ctx.record.history if o.has(BACLOFEN) and o.status in current_statuses
    }
    if not before:
        return
    after = [o for o in ctx.current if o.has(BACLOFEN)]
    stopped_targets = []
    for order in ctx.targets(BACLOFEN):
        if order.status in stopping and order.ref in before:
            stopped_targets.append(order)
            yield _stop(ctx, order, before[order.ref])
    for intrathecal in (False, True):
        yield from _cut(
            ctx,
            [o for o in before.values() if o.intrathecal == intrathecal],
            [o for o in after if o.intrathecal == intrathecal],
            stopped_targets,
        )
    if not after and not stopped_targets:
        for order in ctx.targets("drug/tizanidine"):
            stopped = ", ".join(o.label() for o in before.values())
            yield Finding(
                RULE_ID,
                "switch",
                order.ref,
                {"order": order.label(), "stopped": stopped},
                (f"Order: {order.label()}", f"Baclofen stopping: {stopped}"),
            )


def _stop(ctx, draft: MedOrder, current: MedOrder) -> Finding:
    evidence = (
        f"Order: {draft.label()}, status {draft.status}",
        f"Current order: {current.label()}, status {current.status}",
    )
    if current.intrathecal or draft.intrathecal:
        keep = suggestions.replace(
            draft,
            _restored(current.resource, draft, current.status),
            f"Keep {draft.ref} active",
            "keep",
            recommended=True,
        )
        return Finding(RULE_ID, "stop_itb", draft.ref, {"order": draft.label()}, evidence, (keep,))
    dose = order_dose(current)
    if not isinstance(dose, Dose):
        return Finding(
            RULE_ID,
            "stop_oral",
            draft.ref,
            {
                "order": draft.label(),
                "before": "an unknown dose of",
                "taper": "lower the dose step by step over several weeks.",
            },
            evidence,
        )
    return _taper_finding(ctx, "stop_oral", draft, current.resource, dose.mg_per_day, 0.0, evidence)


def _cut(
    ctx, before: list[MedOrder], after: list[MedOrder], stopped: list[MedOrder]
) -> Iterator[Finding]:
    """A cut of the total daily dose by more than the configured share, on the cutting draft."""
    changed = [o for o in after if o.draft and o.selected]
    if not before or not after or not changed:
        return
    known_before, unknown_before = known_doses(before)
    known_after, unknown_after = known_doses(after)
    if unknown_before or unknown_after:
        return
    total_before = sum(d.mg_per_day for _o, d in known_before)
    total_after = sum(d.mg_per_day for _o, d in known_after)
    max_cut = float(ctx.settings.value("max_cut_fraction"))
    if total_before <= 0 or total_after >= total_before * (1 - max_cut):
        return
    draft = changed[0]
    evidence = (
        f"Order: {draft.label()}",
        *(f"Before: {o.label()}: {d.basis}" for o, d in known_before),
        *(f"After: {o.label()}: {d.basis}" for o, d in known_after),
    )
    if draft.intrathecal:
        yield Finding(
            RULE_ID,
            "cut_itb",
            draft.ref,
            {"order": draft.label(), "before": f"{total_before:g}", "after": f"{total_after:g}"},
            evidence,
        )
    else:
        yield _taper_finding(
            ctx, "cut_oral", draft, draft.resource, total_before, total_after, evidence
        )


def _taper_finding(
    ctx,
    card: str,
    draft: MedOrder,
    template: Mapping[str, Any],
    start: float,
    end: float,
    evidence: tuple[str, ...],
) -> Finding:
    steps = taper_steps(start, end, ctx.settings)
    days = int(ctx.settings.value("step_days"))
    weeks = max(1, math.ceil(len(steps) * days / 7))
    plan = "; ".join(f"{mg:g} mg/day for {days} days" for mg in steps) + (
        f"; then {end:g} mg/day" if end else "; then stop"
    )
    facts = {
        "order": draft.label(),
        "before": f"{start:g}",
        "after": f"{end:g}",
        "taper": plan,
        "weeks": weeks,
        "max_cut": f"{float(ctx.settings.value('max_cut_fraction')):.0%}",
    }
    resource = taper_request(template, draft, steps, end, ctx.settings)
    suggestion = suggestions.replace(
        draft, resource, f"Replace {draft.ref} with a taper", "taper", recommended=True
    )
    return Finding(RULE_ID, card, draft.ref, facts, evidence, (suggestion,))


def taper_steps(start: float, end: float, settings) -> list[float]:
    """Daily doses of each step, from just below `start` down to just above `end`."""
    per_dose = float(settings.value("step_mg_per_dose"))
    doses = int(settings.value("doses_per_day"))
    step = per_dose * doses
    # First step: the current dose rounded down to whole steps, then lower by one step each time.
    level = math.floor(start / step) * step
    if level >= start:
        level -= step
    steps = []
    while level > end + 1e-9:
        steps.append(round(level, 4))
        level -= step
    return steps


def taper_request(
    template: Mapping[str, Any], draft: MedOrder, steps: list[float], end: float, settings
) -> dict[str, Any]:
    """The draft as a MedicationRequest whose dosage lines step the daily dose down in sequence."""
    doses = int(settings.value("doses_per_day"))
    days = int(settings.value("step_days"))
    lines = [_line(i + 1, mg, doses, days) for i, mg in enumerate(steps)]
    if end > 0:
        lines.append(_line(len(steps) + 1, end, doses, None))
    resource = _restored(template, draft)
    resource["dosageInstruction"] = lines
    resource["note"] = [{"text": "Baclofen taper suggested by the antispasticity CDS service."}]
    return resource


def _line(sequence: int, mg_per_day: float, doses: int, days: int | None) -> dict[str, Any]:
    per_dose = round(mg_per_day / doses, 4)
    repeat: dict[str, Any] = {"frequency": doses, "period": 1, "periodUnit": "d"}
    if days:
        repeat["boundsDuration"] = {
            "value": days,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    until = f" for {days} days" if days else ", then continue"
    return {
        "sequence": sequence,
        "text": f"Step {sequence}: {per_dose:g} mg {doses} times a day ({mg_per_day:g} mg/day)"
        f"{until}",
        "timing": {"repeat": repeat},
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


def _restored(
    template: Mapping[str, Any], draft: MedOrder, status: str | None = None
) -> dict[str, Any]:
    """A copy of the order under the draft's id: a signable draft, or kept in its old status."""
    resource = {k: v for k, v in template.items() if k not in ("meta", "text")}
    resource["id"] = draft.resource.get("id", resource.get("id"))
    resource["status"] = status or "draft"
    resource.pop("statusReason", None)
    return resource
