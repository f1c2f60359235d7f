"""ITB-PATHWAY: intrathecal baclofen is second line, and its doses are micrograms.

When intrathecal baclofen is ordered and
  - no oral baclofen or tizanidine order is on record in any status (a completed or stopped trial
    counts; entered-in-error orders and intrathecal baclofen orders do not): info, ITB is reserved
    for spasticity uncontrolled by oral drugs or with intolerable oral side effects, after a
    screening test dose. With the `quiet_when_itb_on_record` setting, no card when an earlier
    intrathecal baclofen order is on record (the decision was taken then; refills repeat it);
  - a single intrathecal dose is stated in mg (or g) at oral magnitude, `unit_error_single_dose_mg`
    or more: critical, likely a unit error (mg written for mcg); suggest cancelling the order.
    A dose stated in mcg/ug never triggers it (100 mcg = 0.1 mg is an ordinary bolus, and pump
    daily doses of 1000 mcg exist); a dose given only in text or mL gives no card (never a guess);
  - else, a RATE stated in mg (or g) at oral magnitude: `doseAndRate[].rateQuantity` or
    `rateRange.high` with a unit such as mg/d, mg/h or mg/(24.h), or `rateRatio` with an mg
    numerator and a time denominator, whose mg per day-equivalent is `unit_error_rate_mg_per_day`
    or more: critical, the same unit error. Decision: the rate is compared per day, not per stated
    period, because "0.5 mg/h" is 12 mg/day, an oral amount, although its numerator is under
    1 mg; a rate over several days is averaged per day. A rate whose unit gives no period (a bare
    "mg") is compared as written. mcg/ug numerators never trigger, and neither do volume rates
    (mL/h: the concentration is not read here). One unit-error card per order: a flagged single
    dose makes the rate card redundant.
Not for an order being stopped. The dose check reads only the order, so it runs even when the
patient's medication history could not be read (the prior-trial check is then left out).
Source: [G] "Second-line: intrathecal baclofen" (ITB at less than 1/100 of oral doses; average
1-year dose in MS about 192 mcg/day); [P] test dose before the pump, about 100 times lower than
oral; [L] screening bolus 50-100 mcg.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import MASS_MG, period_days
from cds_hooks.fhir.read import as_dict, as_list, quantity, text
from cds_hooks.rules.common import prior_orders

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


def evaluate(ctx) -> Iterator[Finding]:
    for order in ctx.targets(BACLOFEN):
        if not order.intrathecal or not order.current:
            continue
        facts = {"order": order.label(), "drug": order.name}
        unit_error = _unit_error(order, ctx)
        rate_error = _rate_error(order, ctx) if unit_error is None else None
        if unit_error is not None:
            dose, mg, line = unit_error
            yield Finding(
                RULE_ID,
                "unit_error",
                order.ref,
                {
                    **facts,
                    "dose": dose,
                    "dose_mcg": _fmt(mg * 1000),
                    "threshold": _fmt(float(ctx.settings.value("unit_error_single_dose_mg"))),
                },
                (f"Order: {order.label()}", line),
                (suggestions.cancel(order),),
            )
        elif rate_error is not None:
            rate, mg_per_day, line = rate_error
            yield Finding(
                RULE_ID,
                "unit_error_rate",
                order.ref,
                {
                    **facts,
                    "rate": rate,
                    "mg_per_day": _fmt(mg_per_day),
                    "mcg_per_day": _fmt(mg_per_day * 1000),
                    "threshold": _fmt(float(ctx.settings.value("unit_error_rate_mg_per_day"))),
                },
                (f"Order: {order.label()}", line),
                (suggestions.cancel(order),),
            )
        if HISTORY_KEY in ctx.record.unavailable or _oral_trial_or_itb_on_record(ctx):
            continue
        yield Finding(RULE_ID, "no_oral_trial", order.ref, facts, (f"Order: {order.label()}",))


def _oral_trial_or_itb_on_record(ctx) -> bool:
    on_record = prior_orders(ctx, BACLOFEN, "drug/tizanidine")
    oral_keys = ctx.settings.keys("oral_antispastics")
    if any(o.has(*oral_keys) and not o.intrathecal for o in on_record):
        return True
    return bool(ctx.settings.value("quiet_when_itb_on_record")) and any(
        o.intrathecal and o.has(BACLOFEN) for o in on_record
    )


def _unit_error(order, ctx) -> tuple[str, float, str] | None:
    """(dose as written, mg, evidence line) of the largest mg-scale single dose at or over the
    threshold, else None."""
    threshold = float(ctx.settings.value("unit_error_single_dose_mg"))
    worst: tuple[str, float, str] | None = None
    for index, dosage in enumerate(_dosages(order.resource), start=1):
        for qty in _dose_quantities(dosage):
            read = quantity(qty)
            factor = _mg_factor(qty)
            if read is None or factor is None or read[0] <= 0:
                continue
            mg = read[0] * factor
            if mg >= threshold and (worst is None or mg > worst[1]):
                shown = f"{_fmt(read[0])} {text(qty.get('unit')) or text(qty.get('code'))}"
                said = text(dosage.get("text"))
                line = f"Dosage line {index}: dose {shown}" + (f' ("{said}")' if said else "")
                worst = (shown, mg, line)
    return worst


def _rate_error(order, ctx) -> tuple[str, float, str] | None:
    """(rate as written, mg per day, evidence line) of the largest mg-scale rate at or over the
    per-day threshold, else None."""
    threshold = float(ctx.settings.value("unit_error_rate_mg_per_day"))
    worst: tuple[str, float, str] | None = None
    for index, dosage in enumerate(_dosages(order.resource), start=1):
        for shown, mg_per_day in _rates(dosage):
            if mg_per_day >= threshold and (worst is None or mg_per_day > worst[1]):
                said = text(dosage.get("text"))
                line = f"Dosage line {index}: rate {shown} (= {_fmt(mg_per_day)} mg/day)" + (
                    f' ("{said}")' if said else ""
                )
                worst = (shown, mg_per_day, line)
    return worst


def _rates(dosage: Mapping) -> Iterator[tuple[str, float]]:
    """(rate as written, mg per day) of every mg-scale rate of a Dosage: doseAndRate
    rateQuantity / rateRange.high / rateRatio (an object or a list), and the STU3 Dosage-level
    ones. Rates that are not mg-scale mass over time (mcg, mL/h, unknown units) are skipped."""
    raw = dosage.get("doseAndRate")
    holders = [e for e in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(e, dict)]
    for holder in [*holders, dosage]:
        for qty in (holder.get("rateQuantity"), as_dict(holder.get("rateRange")).get("high")):
            if isinstance(qty, dict) and (found := _rate_quantity(qty)) is not None:
                yield found
        ratio = holder.get("rateRatio")
        if isinstance(ratio, dict) and (found := _rate_ratio(ratio)) is not None:
            yield found


# A rate unit: mass, "/", then an optional count and a time unit, e.g. mg/d, mg/(24.h), mg/24 h.
_RATE_UNIT_RE = re.compile(r"^([a-z]+)(?:/\(?(\d+(?:\.\d+)?)?\.?([a-z]+)\)?)?$")


def _rate_quantity(qty: Mapping) -> tuple[str, float] | None:
    read = quantity(qty)
    if read is None or read[0] <= 0:
        return None
    for field in ("code", "unit"):
        unit = text(qty.get(field))
        if unit is None:
            continue
        match = _RATE_UNIT_RE.match(unit.strip().lower().replace(" ", ""))
        if match is None:
            return None
        mass, count, period_unit = match.groups()
        factor = MG_SCALE_UNITS.get(mass)
        if factor is None:
            return None
        days = 1.0 if period_unit is None else period_days(float(count or 1), period_unit)
        if days is None:
            return None
        shown = f"{_fmt(read[0])} {text(qty.get('unit')) or unit}"
        return shown, read[0] * factor / days
    return None


def _rate_ratio(ratio: Mapping) -> tuple[str, float] | None:
    numerator = as_dict(ratio.get("numerator"))
    denominator = as_dict(ratio.get("denominator"))
    read = quantity(numerator)
    factor = _mg_factor(numerator)
    if read is None or factor is None or read[0] <= 0:
        return None
    period_value = denominator.get("value", 1)
    period_unit = text(denominator.get("code")) or text(denominator.get("unit"))
    days = period_days(period_value, period_unit)
    if days is None:
        return None
    unit = text(numerator.get("unit")) or text(numerator.get("code"))
    shown = f"{_fmt(read[0])} {unit} per {_fmt(float(period_value))} {period_unit}"
    return shown, read[0] * factor / days


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


def _fmt(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")
