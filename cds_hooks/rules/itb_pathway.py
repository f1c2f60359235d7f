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
    daily doses of 1000 mcg exist); a dose given only in text or mL gives no card (never a guess).
Not for an order being stopped. The dose check reads only the order, so it runs even when the
patient's medication history could not be read (the prior-trial check is then left out).
Source: [G] "Second-line: intrathecal baclofen" (ITB at less than 1/100 of oral doses; average
1-year dose in MS about 192 mcg/day); [P] test dose before the pump, about 100 times lower than
oral; [L] screening bolus 50-100 mcg.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.fhir.read import as_dict, as_list, quantity, text
from cds_hooks.rules.common import prior_orders

RULE_ID = "ITB-PATHWAY"
# No NEEDS: the unit-error check must not be lost when the medication history is unavailable;
# the prior-trial check looks at `record.unavailable` itself.
NEEDS: tuple[str, ...] = ()
BACLOFEN = "drug/baclofen"
TRIGGERS = (BACLOFEN,)
HISTORY_KEY = "medications"
# A FHIR status, not a clinical threshold: such an order never happened.

# Units that state a dose at milligram scale or above, in mg per unit. mcg/ug are left out on
# purpose: an intrathecal dose written in micrograms is the expected notation.
MG_SCALE_UNITS: Mapping[str, float] = {
    "mg": 1.0,
    "milligram": 1.0,
    "milligrams": 1.0,
    "g": 1000.0,
    "gm": 1000.0,
    "gram": 1000.0,
    "grams": 1000.0,
}


def evaluate(ctx) -> Iterator[Finding]:
    statuses = set(ctx.knowledge.data_setting("current_medication_statuses"))
    for order in ctx.targets(BACLOFEN):
        if not order.intrathecal or (order.status is not None and order.status not in statuses):
            continue
        facts = {"order": order.label(), "drug": order.name}
        unit_error = _unit_error(order, ctx)
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
