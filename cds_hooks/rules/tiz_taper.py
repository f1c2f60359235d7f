"""TIZ-TAPER: stopping or sharply cutting tizanidine after long, high-dose use.

When this session's drafts stop, cancel or put on hold the patient's active tizanidine, or lower
the total daily tizanidine dose by more than 50% at once, in any way an EHR writes it (a revision
of the same order id, a new order naming the old one as `priorPrescription`, or a stop of one
order beside a lower new order), and the patient has been taking at least 20 mg/day for 9 weeks
or more, or an opioid is current, then warn: withdrawal reactions (rebound hypertension,
tachycardia, hypertonia) are reported, and the label asks to decrease the dose slowly, by 2-4 mg
per day [L]. Source: [L] tizanidine label, Warnings and Precautions: Withdrawal Adverse
Reactions.
How long: from the earliest authoredOn along the changed order's priorPrescription chain. When
the duration or a dose cannot be read, the high-dose, long-use condition is not met (never a
guess); an opioid still counts. A cut whose new dose cannot be computed stays silent.
Tier warning, as the table in clinical-rules.md sets it: the harm (rebound hypertension) is
avoidable by a taper the prescriber can write now. One card, on the targeted tizanidine draft.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime

from cds_hooks.cards import Finding
from cds_hooks.fhir import status
from cds_hooks.record import MedOrder
from cds_hooks.rules.common import known_doses
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-TAPER"
NEEDS = ("medications",)
TRIGGERS = ("drug/tizanidine",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    return list(_findings(ctx))


def _findings(ctx: RuleContext) -> Iterator[Finding]:
    tizanidine = ctx.settings.keys("tizanidine")
    before = {
        o.ref: o
        for o in ctx.record.orders_on_record
        if o.has(*tizanidine) and status.order_taken(o.status)
    }
    if not before:
        return
    touched = {ref: draft for draft in ctx.record.drafts for ref in draft.replaces if ref in before}
    if not touched:
        return
    targets = [o for o in ctx.record.targets if o.has(*tizanidine)]
    if not targets:
        return
    after = [
        o
        for o in ctx.current
        if o.has(*tizanidine) and not status.order_stopping(o.status) and o.status != "on-hold"
    ]
    known_old, unknown_old = known_doses(before.values())
    known_new, unknown_new = known_doses(after)
    total_old = sum(d.mg_per_day for _o, d in known_old)
    total_new = sum(d.mg_per_day for _o, d in known_new)
    max_cut = float(ctx.settings.value("max_cut_fraction"))
    if after and (unknown_new or unknown_old or total_old <= 0):
        return  # some tizanidine continues and the cut cannot be measured
    if after and total_new >= total_old * (1 - max_cut):
        return
    reasons = _risk(ctx, before, touched, total_old if not unknown_old else None)
    if not reasons:
        return
    draft = next((o for o in targets if o.ref in touched or set(o.replaces) & set(touched)), None)
    draft = draft or targets[0]
    step = float(ctx.settings.value("step_mg_per_day"))
    facts = {
        "order": draft.label(),
        "before": f"{total_old:g}" if not unknown_old else "an unknown",
        "after": f"{total_new:g}",
        "max_cut": f"{max_cut:.0%}",
        "reasons": "; ".join(reasons),
        "step": f"{step:g}",
        "days": math.ceil((total_old - total_new) / step) if not unknown_old else "several",
    }
    evidence = (
        *(
            f"Changed: {before[ref].label()} by {d.label()}, status {d.status}"
            for ref, d in touched.items()
        ),
        *(f"Before: {o.label()}: {d.basis}" for o, d in known_old),
        *(f"Before: {o.label()}: dose could not be computed" for o in unknown_old),
        *(f"After: {o.label()}: {d.basis}" for o, d in known_new),
        *(f"Why it matters: {r}" for r in reasons),
    )
    yield Finding(RULE_ID, "cut" if after else "stop", draft.ref, facts, evidence)


def _risk(ctx, before: Mapping[str, MedOrder], touched, total_old: float | None) -> list[str]:
    reasons = []
    high = float(ctx.settings.value("high_dose_mg_per_day"))
    weeks = int(ctx.settings.value("long_use_days"))
    start = _start(ctx, [before[ref] for ref in touched])
    if total_old is not None and total_old >= high and start is not None:
        days = (ctx.now - start).days
        if days >= weeks:
            reasons.append(
                f"{total_old:g} mg/day (at least {high:g}) since {start.date().isoformat()} "
                f"({days} days, at least {weeks})"
            )
    opioids = [o for o in ctx.current if o.has(*ctx.settings.keys("opioids"))]
    if opioids:
        reasons.append(f"concomitant opioid: {opioids[0].label()}")
    return reasons


def _start(ctx, orders: list[MedOrder]) -> datetime | None:
    """The earliest authoredOn along each order's priorPrescription chain (None if any unknown)."""
    by_ref = {o.ref: o for o in ctx.record.orders_on_record}
    starts = []
    for order in orders:
        seen: set[str] = set()
        current: MedOrder | None = order
        earliest = order.authored
        while current is not None and current.ref not in seen:
            seen.add(current.ref)
            if current.authored is not None and (earliest is None or current.authored < earliest):
                earliest = current.authored
            prior = current.replaces[1:]
            current = by_ref.get(prior[0]) if prior else None
        if earliest is None:
            return None
        starts.append(earliest)
    return min(starts) if starts else None
