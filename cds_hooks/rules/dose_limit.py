"""The same order at the label maximum: what BAC-DOSE and TIZ-DOSE offer next to "Cancel".

The suggested order keeps the drug, route and number of doses a day of the prescriber's order and
lowers each dose so that the patient's total daily dose (this order plus every other current order
of the drug) comes to the label maximum at most, rounded DOWN to a dose step a tablet can give. It
never gives more doses a day than `max_doses` (tizanidine: three in 24 hours) nor more per dose
than `max_single_mg`. Built only when it can be built without a guess: one dosage line, a dose in
mg (UCUM mg), a frequency that can be read, not "as needed"; otherwise there is no such suggestion
and "Cancel" stands alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.clinical.dose import Dose
from cds_hooks.fhir.read import as_dict, as_list, text
from cds_hooks.record import MedOrder

TIMES = {1: "once a day", 2: "twice a day", 3: "three times a day", 4: "four times a day"}


@dataclass(frozen=True)
class AtMax:
    resource: dict[str, Any]
    dose_mg: float  # each dose
    times: int  # doses a day
    words: str  # "12 mg three times a day"


def at_maximum(
    order: MedOrder,
    dose: Dose,
    *,
    max_daily_mg: float,
    other_orders_mg: float,
    step_mg: float,
    max_single_mg: float | None = None,
    max_doses: int | None = None,
) -> AtMax | None:
    """The order rewritten at the maximum, or None when it cannot be built without a guess."""
    dosages = as_list(order.resource.get("dosageInstruction"))
    if len(dosages) != 1 or not isinstance(dosages[0], dict) or _as_needed(dosages[0]):
        return None
    dosage = dosages[0]
    holders = [h for h in as_list(dosage.get("doseAndRate")) if isinstance(h, dict)]
    quantities = [h for h in holders if isinstance(h.get("doseQuantity"), dict)]
    if len(quantities) != 1 or _unit(quantities[0]["doseQuantity"]) != "mg":
        return None
    if dose.max_single_mg <= 0:
        return None
    times = max(1, round(dose.mg_per_day / dose.max_single_mg))
    if max_doses is not None:
        times = min(times, max_doses)
    allowance = max_daily_mg - other_orders_mg
    per_dose = allowance / times
    if max_single_mg is not None:
        per_dose = min(per_dose, max_single_mg)
    per_dose = math.floor(per_dose / step_mg + 1e-9) * step_mg
    if per_dose <= 0 or per_dose * times >= dose.mg_per_day:
        return None  # nothing left to give, or no lower daily dose than the order's own
    words = f"{per_dose:g} mg {TIMES.get(times, f'{times} times a day')}"
    resource = copy.deepcopy(dict(order.resource))
    line = resource["dosageInstruction"][0]
    for holder in line["doseAndRate"]:
        if isinstance(holder.get("doseQuantity"), dict):
            holder["doseQuantity"] = {
                "value": per_dose,
                "unit": "mg",
                "system": "http://unitsofmeasure.org",
                "code": "mg",
            }
    line["timing"] = {"repeat": {"frequency": times, "period": 1, "periodUnit": "d"}}
    line["text"] = words
    resource["status"] = resource.get("status") or "draft"
    return AtMax(resource, per_dose, times, words)


def _as_needed(dosage: Mapping[str, Any]) -> bool:
    return dosage.get("asNeededBoolean") is True or isinstance(
        dosage.get("asNeededCodeableConcept"), dict
    )


def _unit(quantity: Mapping[str, Any]) -> str | None:
    unit = text(as_dict(quantity).get("code")) or text(as_dict(quantity).get("unit"))
    return unit.strip().lower() if unit else None
