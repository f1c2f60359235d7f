"""ITB-PATHWAY: intrathecal baclofen: second line for spinal-origin spasticity, doses in micrograms.

When intrathecal baclofen is ordered and
  - no oral baclofen or tizanidine order is on record in any status (a completed or stopped trial
    counts; entered-in-error orders and intrathecal baclofen orders do not): info, for spasticity
    of spinal cord origin the label reserves chronic ITB for patients unresponsive to oral baclofen
    or with intolerable CNS side effects, after a screening test dose. With the
    `quiet_when_itb_on_record` setting, no card when an earlier intrathecal baclofen order is on
    record (the decision was taken then; refills repeat it);
  - a single intrathecal BOLUS is stated in mg (or g) at oral magnitude, `unit_error_bolus_mg`
    (1 mg) or more: critical, likely a unit error (mg written for mcg); suggest cancelling. A
    bolus is a dosage line with no schedule (no timing, or `timing.repeat.count` 1): the
    screening doses are 50-100 mcg;
  - else, a DAILY amount stated in mg (or g): a scheduled dose (a dosage line with a frequency,
    converted to mg per day) or a RATE (`doseAndRate[].rateQuantity`, `rateRange.high`, or
    `rateRatio` with an mg numerator and a time denominator, read by `clinical.dose.rates`, the
    one rate reader; compared per day-equivalent: 0.5 mg/h is 12 mg/day). At
    `unit_error_daily_mg` (2 mg/day) or more: critical, an oral-size daily amount; from
    `confirm_unit_daily_mg` (1 mg/day) up to that: warning, confirm the unit, because
    labelled pump doses reach 1,199 mcg/day (children) and some adults need more than 1,000
    mcg/day, so a false critical card could push a clinician to cut a legitimate dose and cause
    withdrawal. A rate whose unit gives no period (a bare "mg") is compared as written.
    mcg/ug amounts never trigger (the expected notation), nor volume rates (mL/h: the
    concentration is not read here). One dose card per order, the most severe.
Not for an order being stopped. The dose check reads only the order, so it runs even when the
patient's medication history could not be read (the prior-trial check is then left out).
Sources: the intrathecal baclofen label (Indications; screening bolus 50-100 mcg; maintenance
doses), [G] "Second-line: intrathecal baclofen" (less than 1/100 of oral doses; average 1-year dose
in MS about 192 mcg/day), [P] test dose before the pump. Citations: `rules/intrathecal.json`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import MASS_MG, Dose, daily_dose, rates
from cds_hooks.clinical.labs import fmt
from cds_hooks.fhir.read import as_dict, as_list, quantity, text
from cds_hooks.rules.common import prior_orders
from cds_hooks.rules.context import RuleContext

RULE_ID = "ITB-PATHWAY"
# No NEEDS: the unit-error check must not be lost when the medication history is unavailable;
# the prior-trial check looks at `record.unavailable` itself.
NEEDS: tuple[str, ...] = ()
BACLOFEN = "drug/baclofen"
TRIGGERS = (BACLOFEN,)
HISTORY_KEY = "medications"

# Units that state a dose at milligram scale or above, in mg per unit. mcg/ug are left out on
# purpose: an intrathecal dose written in micrograms is the expected notation.
MG_SCALE_UNITS: Mapping[str, float] = {u: f for u, f in MASS_MG.items() if f >= 1}


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    for order in ctx.targets(BACLOFEN):
        if not order.intrathecal or not order.current:
            continue
        facts = {"order": order.label(), "drug": order.name}
        if (found := _dose_finding(order, ctx, facts)) is not None:
            findings.append(found)
        if HISTORY_KEY in ctx.record.unavailable or _oral_trial_or_itb_on_record(ctx):
            continue
        findings.append(
            Finding(RULE_ID, "no_oral_trial", order.ref, facts, (f"Order: {order.label()}",))
        )
    return findings


def _dose_finding(order, ctx, facts: Mapping[str, str]) -> Finding | None:
    """The most severe dose card of the order: a bolus in mg, else a daily amount in mg."""
    settings = ctx.settings
    bolus_mg = float(settings.value("unit_error_bolus_mg"))
    daily_mg = float(settings.value("unit_error_daily_mg"))
    confirm_mg = float(settings.value("confirm_unit_daily_mg"))
    cancel = (suggestions.cancel(order),)
    bolus = _bolus_error(order, bolus_mg)
    if bolus is not None:
        dose, mg, line = bolus
        more = {"dose": dose, "dose_mcg": fmt(mg * 1000), "threshold": fmt(bolus_mg)}
        return Finding(
            RULE_ID,
            "unit_error",
            order.ref,
            {**facts, **more},
            (f"Order: {order.label()}", line),
            cancel,
        )
    daily = _largest_daily(order, confirm_mg)
    if daily is None:
        return None
    rate, mg_per_day, line = daily
    card = "unit_error_rate" if mg_per_day >= daily_mg else "confirm_unit_rate"
    more = {
        "rate": rate,
        "mg_per_day": fmt(mg_per_day),
        "mcg_per_day": fmt(mg_per_day * 1000),
        "threshold": fmt(daily_mg),
        "confirm_threshold": fmt(confirm_mg),
    }
    return Finding(
        RULE_ID, card, order.ref, {**facts, **more}, (f"Order: {order.label()}", line), cancel
    )


def _oral_trial_or_itb_on_record(ctx) -> bool:
    on_record = prior_orders(ctx, BACLOFEN, "drug/tizanidine")
    oral_keys = ctx.settings.keys("oral_antispastics")
    if any(o.has(*oral_keys) and not o.intrathecal for o in on_record):
        return True
    return bool(ctx.settings.value("quiet_when_itb_on_record")) and any(
        o.intrathecal and o.has(BACLOFEN) for o in on_record
    )


def _scheduled(dosage: Mapping) -> bool:
    """A dosage line given on a schedule (a daily amount), not a single bolus.

    No timing, or `timing.repeat.count` 1, is one administration: an intrathecal bolus.
    """
    timing = as_dict(dosage.get("timing"))
    repeat = as_dict(timing.get("repeat"))
    if repeat.get("count") == 1:
        return False
    return bool(
        timing.get("code")
        or any(repeat.get(f) is not None for f in ("frequency", "frequencyMax"))
        or as_list(repeat.get("when"))
        or as_list(repeat.get("timeOfDay"))
    )


def _bolus_error(order, threshold: float) -> tuple[str, float, str] | None:
    """(dose as written, mg, evidence line) of the largest mg-scale bolus at or over the
    threshold, else None. Scheduled lines are daily amounts, judged by `_largest_daily`."""
    worst: tuple[str, float, str] | None = None
    for index, dosage in enumerate(_dosages(order.resource), start=1):
        if _scheduled(dosage):
            continue
        for qty in _dose_quantities(dosage):
            read = quantity(qty)
            factor = _mg_factor(qty)
            if read is None or factor is None or read[0] <= 0:
                continue
            mg = read[0] * factor
            if mg >= threshold and (worst is None or mg > worst[1]):
                shown = f"{fmt(read[0])} {text(qty.get('unit')) or text(qty.get('code'))}"
                said = text(dosage.get("text"))
                line = f"Dosage line {index}: bolus {shown}" + (f' ("{said}")' if said else "")
                worst = (shown, mg, line)
    return worst


def _largest_daily(order, threshold: float) -> tuple[str, float, str] | None:
    """(amount as written, mg per day, evidence line) of the largest mg-scale daily amount (a
    scheduled dose or a rate) at or over the threshold, else None."""
    worst: tuple[str, float, str] | None = None
    for index, dosage in enumerate(_dosages(order.resource), start=1):
        amounts = [(f"rate {shown}", mg) for shown, mg in _rates(dosage)]
        if _scheduled(dosage) and (found := _scheduled_daily(dosage)) is not None:
            amounts.append(found)
        for shown, mg_per_day in amounts:
            if mg_per_day >= threshold and (worst is None or mg_per_day > worst[1]):
                said = text(dosage.get("text"))
                line = f"Dosage line {index}: {shown} (= {fmt(mg_per_day)} mg/day)" + (
                    f' ("{said}")' if said else ""
                )
                worst = (shown, mg_per_day, line)
    return worst


def _scheduled_daily(dosage: Mapping) -> tuple[str, float] | None:
    """("dose ... a day", mg per day) of a scheduled line whose dose is stated in mg scale."""
    if not any(_mg_factor(q) is not None for q in _dose_quantities(dosage)):
        return None
    dose = daily_dose({"dosageInstruction": [dosage]})
    if not isinstance(dose, Dose) or dose.mg_per_day <= 0:
        return None  # no frequency that can be read: never a guess
    return f"dose {dose.basis.split(' = ')[0]}", dose.mg_per_day


def _rates(dosage: Mapping) -> Iterator[tuple[str, float]]:
    """(rate as written, mg per day) of every mg-scale rate of a Dosage, read by the one rate
    reader (`clinical.dose.rates`: rateQuantity, rateRange.high, rateRatio). Rates not written
    in mg scale (mcg, mL/h, unknown units) are skipped; one with no period counts as written."""
    for rate in rates(dosage):
        if rate.mass_mg is not None and rate.mass_mg >= 1:
            yield rate.shown, rate.mg if rate.mg_per_day is None else rate.mg_per_day


def _dosages(resource: Mapping) -> list[dict]:
    raw = resource.get("dosageInstruction")
    return [d for d in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(d, dict)]


def _dose_quantities(dosage: Mapping) -> Iterator[dict]:
    """Every single-dose Quantity of a Dosage: doseAndRate doseQuantity / doseRange.high (an
    object or a list), and the STU3 Dosage.doseQuantity / doseRange."""
    raw = dosage.get("doseAndRate")
    holders = [e for e in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(e, dict)]
    for holder in [*holders, dosage]:
        if isinstance(holder.get("doseQuantity"), dict):
            yield holder["doseQuantity"]
        high = as_dict(holder.get("doseRange")).get("high")
        if isinstance(high, dict):
            yield high


def _mg_factor(qty: Mapping) -> float | None:
    """mg per unit when the Quantity states mg scale or above; the UCUM code decides first."""
    for field in ("code", "unit"):
        unit = text(qty.get(field))
        if unit is not None:
            return MG_SCALE_UNITS.get(unit.strip().lower())
    return None
