"""TIZ-HEPATIC: tizanidine and the liver.

When tizanidine is ordered for a patient with hepatic impairment (an active condition), or whose
latest ALT or AST from the last 90 days is above 3 times its upper limit of normal, then warn:
tizanidine is extensively metabolised by the liver, should ordinarily be avoided or used with
extreme caution in hepatic impairment, and can itself injure the liver [L]. When a patient
already on tizanidine stays on 12 mg/day or more and no ALT or AST is on record for the last 365
days, then inform and offer to order them: the label recommends aminotransferases at baseline and
1 month after the maximum dose is reached [L]. Source: [L] tizanidine label, Dosage and
Administration (monitoring of aminotransferases), Warnings and Precautions: Liver Injury, Use in
Specific Populations: Hepatic Impairment.
The upper limit of normal is the Observation's referenceRange.high when it has one in the same
unit, else the knowledge default. U/L and IU/L are the same unit; ukat/L is converted (1 ukat/L =
60 U/L); any other unit is not read (never a guess).
Tiers: impairment or an enzyme rise is a reason to avoid or stop (warning); missing monitoring is a
reminder (info). One card per order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from cds_hooks import suggestions
from cds_hooks.cards import Finding, Suggestion
from cds_hooks.fhir import status
from cds_hooks.fhir.read import (
    as_dict,
    as_list,
    concept_text,
    effective_time,
    quantity,
    ref_of,
    reference,
)
from cds_hooks.rules.common import known_doses, new_therapy
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-HEPATIC"
NEEDS = ("liver", "conditions", "medications")
TRIGGERS = ("drug/tizanidine",)

# Enzyme activity units read as U/L (UCUM codes and the way EHRs print them), and their factor.
_UNITS: dict[str, float] = {"u/l": 1.0, "[iu]/l": 1.0, "iu/l": 1.0, "ukat/l": 60.0, "µkat/l": 60.0}
_ENZYMES = ("alt", "ast")


def evaluate(ctx: RuleContext) -> list[Finding]:
    return list(_findings(ctx))


def _findings(ctx: RuleContext) -> Iterator[Finding]:
    tizanidine = ctx.settings.keys("tizanidine")
    orders = new_therapy(ctx, *tizanidine)
    if not orders:
        return
    impairment = ctx.record.conditions_in(ctx.settings.keys("hepatic_impairment"))
    high = [r for r in _latest(ctx, int(ctx.settings.value("enzyme_lookback_days"))) if r.high]
    if impairment or high:
        facts = {
            "finding": impairment[0].name if impairment else high[0].shown(),
            "multiple": f"{float(ctx.settings.value('uln_multiple')):g}",
        }
        evidence = (*(c.label() for c in impairment), *(f"Lab: {r.shown()}" for r in high))
        card = "impairment" if impairment else "enzymes"
        for order in orders:
            yield Finding(
                RULE_ID,
                card,
                order.ref,
                {**facts, "order": order.label()},
                (f"Order: {order.label()}", *evidence),
            )
        return
    yield from _monitoring(ctx, orders, tizanidine)


class _Reading:
    def __init__(self, name: str, obs: Mapping, when: datetime, value: float, uln: float, ratio):
        self.name, self.obs, self.when, self.value, self.uln = name, obs, when, value, uln
        self.high = value > uln * ratio

    def shown(self) -> str:
        return (
            f"{self.name} {self.value:g} U/L on {self.when.date().isoformat()} "
            f"(upper limit {self.uln:g} U/L; {ref_of(self.obs) or 'Observation'})"
        )


def _latest(ctx, lookback_days: int) -> list[_Reading]:
    """The latest usable ALT and the latest usable AST of the look-back, each with its ULN."""
    terminology = ctx.knowledge.terminology
    since = ctx.now - timedelta(days=lookback_days)
    ratio = float(ctx.settings.value("uln_multiple"))
    readings = []
    for enzyme in _ENZYMES:
        keys = ctx.settings.keys(enzyme)
        best: tuple[datetime, Mapping] | None = None
        for obs in ctx.record.observations_in(*keys):
            if not status.observation_usable(obs):
                continue
            if not any(terminology.in_valueset(obs.get("code"), k) for k in keys):
                continue
            when = effective_time(obs)
            if when is None or when < since or when > ctx.now + timedelta(days=1):
                continue
            if best is None or when > best[0]:
                best = (when, obs)
        if best is None:
            continue
        when, obs = best
        value = _units_per_litre(obs.get("valueQuantity"))
        if value is None:
            continue  # an unreadable latest value is not replaced by an older one: no guess
        uln = _uln(obs) or float(ctx.settings.value(f"{enzyme}_uln_default"))
        name = concept_text(obs.get("code")) or enzyme.upper()
        readings.append(_Reading(_short(enzyme, name), obs, when, value, uln, ratio))
    return readings


def _short(enzyme: str, name: str) -> str:
    return enzyme.upper() if len(name) > 40 else name


def _units_per_litre(value: Any) -> float | None:
    read = quantity(value)
    if read is None or read[2] in ("<", "<="):
        return None
    number, unit, _comparator = read
    factor = _UNITS.get((unit or "").strip().lower())
    return None if factor is None else number * factor


def _uln(obs: Mapping) -> float | None:
    for ref_range in as_list(obs.get("referenceRange")):
        high = _units_per_litre(as_dict(ref_range).get("high"))
        if high:
            return high
    return None


def _monitoring(ctx, orders, tizanidine) -> Iterator[Finding]:
    """Continuing tizanidine at >= the monitoring dose with no ALT/AST in the look-back: info."""
    prior = [
        o
        for o in ctx.record.orders_on_record
        if o.has(*tizanidine) and status.order_taken(o.status)
    ]
    if not prior:
        return  # a first order: the baseline check is the prescriber's start-up routine
    if _any_enzyme(ctx):
        return
    current = [o for o in ctx.current if o.has(*tizanidine) and o.status != "on-hold"]
    known, unknown = known_doses(current)
    total = sum(d.mg_per_day for _o, d in known)
    if unknown or total < float(ctx.settings.value("monitoring_min_mg_per_day")):
        return
    facts = {
        "total": f"{total:g}",
        "threshold": f"{float(ctx.settings.value('monitoring_min_mg_per_day')):g}",
        "lookback_days": int(ctx.settings.value("monitoring_lookback_days")),
    }
    for order in orders:
        yield Finding(
            RULE_ID,
            "no_liver_tests",
            order.ref,
            {**facts, "order": order.label()},
            (
                f"Order: {order.label()}",
                *(f"Current: {o.label()}: {d.basis}" for o, d in known),
                f"Liver tests: no ALT or AST in the last {facts['lookback_days']} days",
            ),
            tuple(s for s in (_lab_order(ctx, order),) if s),
        )


def _any_enzyme(ctx) -> bool:
    """A recent ALT/AST whose value could not be read still counts as monitored."""
    terminology = ctx.knowledge.terminology
    since = ctx.now - timedelta(days=int(ctx.settings.value("monitoring_lookback_days")))
    keys = [k for e in _ENZYMES for k in ctx.settings.keys(e)]
    for obs in ctx.record.observations_in(*keys):
        if any(terminology.in_valueset(obs.get("code"), k) for k in keys):
            when = effective_time(obs)
            if when is not None and when >= since:
                return True
    return False


def _lab_order(ctx, order) -> Suggestion | None:
    subject = reference(order.resource.get("subject")) or ref_of(ctx.record.patient or {})
    if not subject:
        return None
    codings = []
    for enzyme in _ENZYMES:
        code = str(ctx.settings.value(f"{enzyme}_order_code"))
        row = next(
            (
                r
                for k in ctx.settings.keys(enzyme)
                for r in ctx.knowledge.terminology.codes(k)
                if r[1] == code
            ),
            None,
        )
        if row is None:
            raise KeyError(f"{RULE_ID}: {enzyme}_order_code {code} is not in its value set")
        codings.append({"system": row[0], "code": row[1], "display": row[2]})
    resources = [
        {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "code": {"coding": [coding]},
            "subject": {"reference": subject},
        }
        for coding in codings
    ]
    first = suggestions.create(resources[0], f"Order: {codings[0]['display']}", "order_tests", True)
    second = suggestions.create(resources[1], f"Order: {codings[1]['display']}", "order_tests")
    # One suggestion that creates both tests.
    return Suggestion("order_tests", first.actions + second.actions, recommended=True)
