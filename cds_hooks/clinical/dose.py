"""Daily dose in mg of a MedicationRequest, computed from its dosageInstruction (pure, no I/O).

How the figure is built (BAC-DOSE / TIZ-DOSE in clinical-rules.md):

* per dosage line: the single dose (``doseAndRate[].doseQuantity``, else ``doseRange.high``;
  STU3 ``Dosage.doseQuantity``/``doseRange`` and a ``doseAndRate`` object instead of an array
  are read too) in mg, times the administrations per day from ``timing.repeat`` (frequency per
  period in periodUnit; ``when``/``timeOfDay`` count as that many a day when there is no
  frequency) or from ``timing.code`` (BID, TID, QID, Q6H, ...). ``frequencyMax`` is used
  whenever present ("3 to 5 times a day" counts 5 times): the daily maximum is what a dose limit
  is checked against, and the basis text says the maximum was used. ``period`` (not
  ``periodMax``) is the period: "every 4 to 6 hours" is at most every 4 hours. A period longer
  than a day is averaged over the period, as the CDC opioid MME logic does
  (cqframework/opioid-cds-r4 ``OpioidCDSCommon.cql`` ``ToDaily``).
* "as needed" lines count at their maximum: ``maxDosePerPeriod`` in mg per day (capped by the
  scheduled frequency when both are given); without a maximum, at the scheduled frequency; with
  neither, the dose is unknown. ``maxDosePerAdministration`` does not change the daily figure.
* several lines: FHIR ``Dosage.sequence`` orders instructions, and lines sharing a sequence
  number are concurrent (http://hl7.org/fhir/R4/dosage.html). Lines with the same sequence (or
  none at all) are SUMMED; lines with different sequence numbers are sequential phases (e.g. a
  taper) and the daily dose is the MAX over the phases. A line without a sequence next to
  sequenced ones is taken as given throughout, so it is added to every phase.
* a line that cannot be computed makes the whole order ``DoseUnknown``: a partial sum is a guess.

* a line with no dose but a RATE (an ITB pump: ``doseAndRate[].rateQuantity`` such as 150 ug/d or
  6.25 ug/h, or ``rateRatio`` such as 150 mcg per 1 d) is read as that amount a day; per-hour
  rates are multiplied by 24 (the rate is continuous; the timing is not applied again). A rate
  range or an amount with no period is no daily dose. ``rates`` is the one rate reader: every
  rate of a line with its mass unit's scale (ITB-PATHWAY's mg-for-mcg check reads it too).

Units: mg, g, mcg/ug (UCUM ``mg``, ``g``, ``ug``). Tablets, capsules, pills, packets and mL need
the product strength (see ``strength_from_text``); anything else is ``DoseUnknown`` with the
reason. Figures are rounded to 4 decimals so 4 x 20 mg is 80.0 exactly at a threshold edge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.clinical.labs import fmt
from cds_hooks.fhir.read import as_dict, as_list, codings, quantity, text

GTS_ABBREVIATION = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"

Strength = float | tuple[float, str] | None


@dataclass(frozen=True)
class Dose:
    mg_per_day: float  # total daily amount in mg
    max_single_mg: float  # largest single administration in mg
    basis: str  # e.g. "10 mg three times a day (TID) = 30 mg/day"


@dataclass(frozen=True)
class DoseUnknown:
    reason: str  # why no dose could be computed (logged by the caller; never guessed)


# v3-GTSAbbreviation codes (and common local ones): administrations per day and wording.
_TIMING_CODES: dict[str, tuple[float, str]] = {
    "QD": (1, "once a day"),
    "QAM": (1, "every morning"),
    "AM": (1, "every morning"),
    "QPM": (1, "every evening"),
    "PM": (1, "every afternoon"),
    "QHS": (1, "at bedtime"),
    "BED": (1, "at bedtime"),
    "BID": (2, "twice a day"),
    "TID": (3, "three times a day"),
    "QID": (4, "four times a day"),
    "Q1H": (24, "every hour"),
    "Q2H": (12, "every 2 hours"),
    "Q3H": (8, "every 3 hours"),
    "Q4H": (6, "every 4 hours"),
    "Q6H": (4, "every 6 hours"),
    "Q8H": (3, "every 8 hours"),
    "Q12H": (2, "every 12 hours"),
}

# Length of one period unit in days (UCUM units of Timing.repeat.periodUnit, plus plain words
# seen in Ratio denominators of maxDosePerPeriod).
_PERIOD_DAYS: dict[str, float] = {
    "s": 1 / 86400,
    "sec": 1 / 86400,
    "second": 1 / 86400,
    "seconds": 1 / 86400,
    "min": 1 / 1440,
    "minute": 1 / 1440,
    "minutes": 1 / 1440,
    "h": 1 / 24,
    "hr": 1 / 24,
    "hrs": 1 / 24,
    "hour": 1 / 24,
    "hours": 1 / 24,
    "d": 1,
    "day": 1,
    "days": 1,
    "wk": 7,
    "week": 7,
    "weeks": 7,
    "mo": 30,
    "month": 30,
    "months": 30,
    "a": 365,
    "year": 365,
    "years": 365,
}

# Mass units in mg per unit (also used by ITB-PATHWAY to tell mg-scale doses).
MASS_MG: dict[str, float] = {
    "mg": 1.0,
    "milligram": 1.0,
    "milligrams": 1.0,
    "g": 1000.0,
    "gm": 1000.0,
    "gram": 1000.0,
    "grams": 1000.0,
    "mcg": 0.001,
    "ug": 0.001,
    "\u00b5g": 0.001,  # micro sign
    "\u03bcg": 0.001,  # Greek mu
    "microgram": 0.001,
    "micrograms": 0.001,
}

# Units of presentation that need a per-unit strength. SNOMED 732936001 Tablet, 732937005 Capsule
# (unit of presentation); TAB/CAP are v3-orderableDrugForm codes.
_PER_UNIT = frozenset(
    {
        "tablet",
        "tablets",
        "tab",
        "tabs",
        "tbl",
        "pill",
        "pills",
        "capsule",
        "capsules",
        "cap",
        "caps",
        "caplet",
        "caplets",
        "packet",
        "packets",
        "sachet",
        "sachets",
        "732936001",
        "732937005",
    }
)
_PER_ML = frozenset({"ml", "milliliter", "milliliters", "millilitre", "millilitres", "cc"})


def _round(value: float) -> float:
    return round(value, 4)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _unit_keys(qty: Mapping) -> list[str]:
    """The unit strings of a Quantity (code first, then unit), normalised for look-up."""
    keys = []
    for field in ("code", "unit"):
        if unit := text(qty.get(field)):
            key = unit.strip().lower()
            keys.append(key[1:-1] if key.startswith("{") and key.endswith("}") else key)
    return keys


def _unit_shown(qty: Mapping) -> str:
    return text(qty.get("unit")) or text(qty.get("code")) or "(no unit)"


def _to_mg(qty: Mapping, strength: Strength) -> tuple[float, str] | str:
    """(mg, how) for an amount Quantity, or the reason it cannot be converted."""
    read = quantity(qty)
    if read is None:
        return "the dose quantity has no numeric value"
    amount = read[0]
    if amount <= 0:
        return f"the dose quantity {fmt(amount)} is not positive"
    shown = _unit_shown(qty)
    keys = _unit_keys(qty)
    if not keys:
        return f"the dose quantity {fmt(amount)} has no unit"
    for key in keys:
        if key in MASS_MG:
            mg = amount * MASS_MG[key]
            how = f"{fmt(amount)} {shown}"
            return mg, how if key == "mg" else f"{how} ({fmt(mg)} mg)"
    for key in keys:
        per = "unit" if key in _PER_UNIT else "mL" if key in _PER_ML else None
        if per is None:
            continue
        value = strength[0] if isinstance(strength, tuple) else strength
        if value is None or value <= 0:
            what = "the product strength" if per == "unit" else "a per-mL concentration"
            return f"the dose is in {shown}, which needs {what} to convert to mg"
        if isinstance(strength, tuple) and strength[1] != per:
            return f"the dose is in {shown} but the known strength is per {strength[1]}"
        mg = amount * value
        label = "mg" if per == "unit" else "mg/mL"
        return mg, f"{fmt(amount)} {shown} x {fmt(value)} {label} ({fmt(mg)} mg)"
    return f"the dose unit {shown!r} cannot be converted to mg"


def _entry_is_ordered(entry: Mapping) -> bool:
    concept = as_dict(entry.get("type"))
    return (
        any(code == "ordered" for _s, code, _d in codings(concept))
        or (text(concept.get("text")) or "").lower() == "ordered"
    )


def _dose_candidates(dosage: Mapping) -> list[tuple[dict, str]]:
    """Dose Quantities of a Dosage, best first: "ordered" doseAndRate entries, others, STU3."""
    raw = dosage.get("doseAndRate")
    entries = [e for e in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(e, dict)]
    entries.sort(key=lambda entry: not _entry_is_ordered(entry))  # stable: ordered ones first
    out: list[tuple[dict, str]] = []
    for holder in [*entries, dosage]:
        if isinstance(holder.get("doseQuantity"), dict):
            out.append((holder["doseQuantity"], ""))
        elif isinstance(high := as_dict(holder.get("doseRange")).get("high"), dict):
            out.append((high, "up to "))
    return out


# A rate unit: an amount unit, "/", then an optional count and a time unit: ug/d, mcg/h, mg/(24.h).
_RATE_UNIT_RE = re.compile(r"^(.+?)/\(?(\d+(?:\.\d+)?)?\.?([a-z]+)\)?$")


@dataclass(frozen=True)
class Rate:
    """One rate of a Dosage line (an ITB pump), read: the amount in mg per period."""

    mg: float  # the amount, in mg
    days: float | None  # the period in days; None when the unit names none (a bare "2 mg")
    shown: str  # as written: "0.5 mg/h", "100 mcg per 1 d"
    words: str  # how the amount was read, for a dose basis: "rate 0.5 mg/h", with a strength
    mass_mg: float | None  # mg per unit of the mass unit written (1 mg, 1000 g, 0.001 mcg);
    # None when the amount is not a mass (mL with a concentration)
    range_high: bool = False  # the high end of a rateRange, not a rate as such

    @property
    def mg_per_day(self) -> float | None:
        """The amount a day (a per-hour rate is 24 times it); None with no period."""
        return None if self.days is None else _round(self.mg / self.days)


def _mass_mg(qty: Mapping) -> float | None:
    """mg per unit of the Quantity's mass unit (the UCUM code first), or None if not a mass."""
    return next((MASS_MG[key] for key in _unit_keys(qty) if key in MASS_MG), None)


def _rate_quantity(qty: Mapping, strength: Strength, range_high: bool = False) -> Rate | str:
    """A rateQuantity such as 150 ug/d, 6.25 mcg/h or mg/(24.h); a bare mass unit has no period."""
    amount = _number(qty.get("value"))
    if amount is None or amount <= 0:
        return "the rate has no positive value"
    shown = f"{fmt(amount)} {_unit_shown(qty)}"
    for key in _unit_keys(qty):
        if key in MASS_MG:  # "2 mg" as a rate: an amount with no period
            mg = amount * MASS_MG[key]
            return Rate(mg, None, shown, f"rate {shown}", MASS_MG[key], range_high)
        match = _RATE_UNIT_RE.match(key.replace(" ", ""))
        if match is None:
            continue
        unit, count, period_unit = match.groups()
        days = period_days(float(count) if count else 1.0, period_unit)
        if days is None:
            continue
        mass = _to_mg({"value": amount, "code": unit}, strength)
        if isinstance(mass, str):
            return f"rate {shown}: {mass}"
        words = f"rate {shown}"
        if " x " in mass[1]:  # converted with the strength: say how
            words += f" ({mass[1]} per {fmt(float(count) if count else 1.0)} {period_unit})"
        return Rate(mass[0], days, shown, words, MASS_MG.get(unit), range_high)
    return f"the rate unit {_unit_shown(qty)!r} is not an amount per time"


def _rate_ratio(ratio: Mapping, strength: Strength) -> Rate | str:
    """A rateRatio such as 150 mcg per 1 d or 6.25 ug per 1 h."""
    numerator = as_dict(ratio.get("numerator"))
    denominator = as_dict(ratio.get("denominator"))
    mass = _to_mg(numerator, strength)
    if isinstance(mass, str):
        return f"rate ratio: {mass}"
    value = denominator.get("value", 1)
    unit = text(denominator.get("code")) or text(denominator.get("unit"))
    days = period_days(value, unit)
    if days is None:
        return f"rate ratio: period {value!r} {unit!r} is not understood"
    amount = _number(numerator.get("value"))
    shown = f"{fmt(amount or 0)} {_unit_shown(numerator)} per {fmt(float(value))} {unit}"
    return Rate(
        mass[0], days, shown, f"rate {mass[1]} per {fmt(float(value))} {unit}", _mass_mg(numerator)
    )


def _read_rates(dosage: Mapping, strength: Strength) -> list[Rate | str]:
    """Each rate of a Dosage line, read (or why not): per doseAndRate entry ("ordered" first,
    then the STU3 Dosage-level fields) its rateQuantity, rateRange.high and rateRatio."""
    raw = dosage.get("doseAndRate")
    entries = [e for e in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(e, dict)]
    entries.sort(key=lambda entry: not _entry_is_ordered(entry))
    found: list[Rate | str] = []
    for holder in [*entries, dosage]:
        if isinstance(holder.get("rateQuantity"), dict):
            found.append(_rate_quantity(holder["rateQuantity"], strength))
        high = as_dict(holder.get("rateRange")).get("high")
        if isinstance(high, dict):
            found.append(_rate_quantity(high, strength, range_high=True))
        if isinstance(holder.get("rateRatio"), dict):
            found.append(_rate_ratio(holder["rateRatio"], strength))
    return found


def rates(dosage: Mapping, strength: Strength = None) -> list[Rate]:
    """Every rate of a Dosage line that reads as an amount (per time, or a bare mass): the one
    rate reader, for the daily dose here and ITB-PATHWAY's unit check."""
    return [r for r in _read_rates(dosage, strength) if isinstance(r, Rate)]


def _rate_per_day(dosage: Mapping, strength: Strength) -> tuple[float, str] | str | None:
    """mg a day of a continuous rate (an ITB pump), or why not, or None when no rate is given.

    ``doseAndRate[].rateQuantity`` in amount per time (UCUM ug/d, ug/h, mg/(24.h); mcg too) or
    ``rateRatio`` (amount per period); "ordered" entries first, then the STU3 Dosage-level ones.
    A per-hour rate is 24 times that a day. ``rateRange`` is not a rate (no guess between
    bounds), and neither is an amount with no period.
    """
    reason: str | None = None
    for found in _read_rates(dosage, strength):
        if isinstance(found, str):
            reason = reason or found
        elif found.range_high:
            reason = reason or "only a rate range is given, not a rate"
        elif found.days is None:
            reason = reason or f"the rate {found.shown!r} is not an amount per time"
        else:
            return found.mg / found.days, found.words
    return reason


def _single_dose(dosage: Mapping, strength: Strength) -> tuple[float, str] | str:
    candidates = _dose_candidates(dosage)
    if not candidates:
        return "no dose quantity"
    first_reason = None
    for qty, prefix in candidates:
        converted = _to_mg(qty, strength)
        if isinstance(converted, tuple):
            return converted[0], prefix + converted[1]
        first_reason = first_reason or converted
    return str(first_reason)


def period_days(value: Any, unit: Any) -> float | None:
    """Days in `value` `unit` (UCUM time units or plain words: 8 h -> 1/3), or None if unknown."""
    number = _number(value)
    days = _PERIOD_DAYS.get(unit.strip().lower()) if isinstance(unit, str) else None
    if number is None or number <= 0 or days is None:
        return None
    return number * days


def _repeat_per_day(repeat: Mapping) -> tuple[float, str] | str | None:
    """Administrations a day from Timing.repeat; None when it says nothing about frequency."""
    low = _number(repeat.get("frequency"))
    high = _number(repeat.get("frequencyMax"))
    # The maximum counts for dose limits; a frequencyMax below frequency is a data error, and
    # the larger of the two is the safe reading.
    given = [f for f in (low, high) if f is not None]
    if given:
        if min(given) <= 0:
            return f"timing frequency {fmt(min(given))} is not positive"
        frequency = max(given)
        period_value = repeat.get("period", 1)
        unit = repeat.get("periodUnit")
        days = period_days(period_value, unit)
        if days is None:
            return f"timing period {period_value!r} {unit!r} is not understood"
        period = fmt(float(period_value))
        every_period = "a day" if days == 1 else f"every {period} {unit}"
        if high is not None and frequency == high and low != high:
            said = f"{fmt(low)} to {fmt(high)}" if low is not None else f"up to {fmt(high)}"
            words = (
                f"{said} times {every_period}, counted at the maximum (frequencyMax {fmt(high)})"
            )
        elif days == 1:
            words = "once a day" if frequency == 1 else f"{fmt(frequency)} times a day"
        elif frequency == 1:
            words = f"every {period} {unit}"
        else:
            words = f"{fmt(frequency)} times every {period} {unit}"
        return frequency / days, words
    for field in ("when", "timeOfDay"):
        moments = [m for m in as_list(repeat.get(field)) if isinstance(m, str) and m]
        if moments:
            count = len(moments)
            return float(count), f"{count} times a day ({', '.join(moments)})"
    return None


def _code_per_day(concept: Any) -> tuple[float, str] | str | None:
    concept = as_dict(concept)
    found = [(s, c) for s, c, _d in codings(concept) if c]
    # Prefer the GTS coding; any system's code is matched by its value alone.
    found.sort(key=lambda pair: pair[0] != GTS_ABBREVIATION)
    candidates = [c for _s, c in found]
    if name := text(concept.get("text")):
        candidates.append(name)
    for candidate in candidates:
        key = re.sub(r"[\s.]", "", candidate).upper()
        if key in _TIMING_CODES:
            per_day, words = _TIMING_CODES[key]
            return per_day, f"{words} ({key})"
    if candidates:
        return f"timing code {candidates[0]!r} is not understood"
    return None


def _per_day(dosage: Mapping) -> tuple[float, str] | str | None:
    """Administrations a day from Dosage.timing, why it is not understood, or None if absent."""
    timing = as_dict(dosage.get("timing"))
    repeat = as_dict(timing.get("repeat"))
    from_repeat = _repeat_per_day(repeat)
    if isinstance(from_repeat, tuple):
        per_day, words = from_repeat
        # Timing.repeat.count is the total number of administrations: it caps the daily count.
        count = _number(repeat.get("countMax")) or _number(repeat.get("count"))
        if count is not None and 0 < count < per_day:
            return count, f"{words}, {fmt(count)} times in total"
        return from_repeat
    from_code = _code_per_day(timing.get("code"))
    if from_code is not None:
        return from_code
    if from_repeat is not None:
        return from_repeat
    if repeat.get("count") == 1 and text(dosage.get("text")) is None:
        return 1.0, "once (single administration)"
    return None


def _is_as_needed(dosage: Mapping) -> bool:
    return (
        dosage.get("asNeededBoolean") is True
        or dosage.get("asNeeded") is True  # R5
        or isinstance(dosage.get("asNeededCodeableConcept"), dict)
        or bool(as_list(dosage.get("asNeededFor")))  # R5
    )


def _max_per_day(dosage: Mapping, strength: Strength) -> tuple[float, str] | str | None:
    """mg a day allowed by maxDosePerPeriod (R4: one Ratio; R5: a list, the tightest wins)."""
    raw = dosage.get("maxDosePerPeriod")
    ratios = [r for r in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(r, dict)]
    if not ratios:
        return None
    best: tuple[float, str] | None = None
    reason = None
    for ratio in ratios:
        numerator = _to_mg(as_dict(ratio.get("numerator")), strength)
        denominator = as_dict(ratio.get("denominator"))
        unit = text(denominator.get("code")) or text(denominator.get("unit"))
        value = denominator.get("value", 1)
        days = period_days(value, unit)
        if isinstance(numerator, str):
            reason = f"maxDosePerPeriod: {numerator}"
            continue
        if days is None:
            reason = f"maxDosePerPeriod: period {value!r} {unit!r} is not understood"
            continue
        mg_per_day = numerator[0] / days
        words = f"at most {numerator[1]} per {fmt(float(value))} {unit}"
        if best is None or mg_per_day < best[0]:
            best = (mg_per_day, words)
    return best if best is not None else str(reason)


@dataclass(frozen=True)
class _Line:
    mg_per_day: float
    single_mg: float
    basis: str


def _line(dosage: Mapping, strength: Strength) -> _Line | str:
    if not _dose_candidates(dosage):
        rate = _rate_per_day(dosage, strength)
        if isinstance(rate, tuple):
            # A continuous infusion has no separate administrations: its day is its single dose.
            mg_per_day, words = rate
            return _Line(mg_per_day, mg_per_day, f"{words} = {fmt(_round(mg_per_day))} mg/day")
        if isinstance(rate, str):
            return rate
    single = _single_dose(dosage, strength)
    if isinstance(single, str):
        return single
    single_mg, dose_words = single
    per_day = _per_day(dosage)
    if isinstance(per_day, str):
        return per_day
    if _is_as_needed(dosage):
        maximum = _max_per_day(dosage, strength)
        if isinstance(maximum, tuple):
            mg_per_day, words = maximum
            if isinstance(per_day, tuple) and single_mg * per_day[0] < mg_per_day:
                mg_per_day = single_mg * per_day[0]
                words = f"{dose_words} {per_day[1]} ({words})"
            return _Line(mg_per_day, single_mg, f"as needed, {words} = {fmt(mg_per_day)} mg/day")
        if per_day is None:
            why = f" ({maximum})" if isinstance(maximum, str) else ""
            return f"as needed with neither a maximum per period nor a frequency{why}"
        mg_per_day = single_mg * per_day[0]
        return _Line(
            mg_per_day,
            single_mg,
            f"{dose_words} {per_day[1]} as needed = {fmt(mg_per_day)} mg/day",
        )
    if per_day is None:
        return "no frequency (timing) is given"
    mg_per_day = single_mg * per_day[0]
    return _Line(mg_per_day, single_mg, f"{dose_words} {per_day[1]} = {fmt(mg_per_day)} mg/day")


def daily_dose(
    medication_request: Mapping, strength_mg_per_unit: Strength = None
) -> Dose | DoseUnknown:
    """The daily dose of a MedicationRequest dict in mg, or why it cannot be computed.

    ``strength_mg_per_unit``: mg per tablet/capsule, or mg per mL when the dose is in mL. The tuple
    returned by ``strength_from_text`` may be passed as is: its "unit"/"mL" is then checked against
    the dose unit, so a tablet strength is never applied to a dose in mL.

    Same sequence number (or none) = concurrent lines, summed; different sequence numbers =
    sequential phases, the highest phase counts (see the module docstring).
    """
    if not isinstance(medication_request, Mapping):
        return DoseUnknown("the order is not a FHIR resource")
    raw = medication_request.get("dosageInstruction")
    dosages = [d for d in ([raw] if isinstance(raw, dict) else as_list(raw)) if isinstance(d, dict)]
    if not dosages:
        return DoseUnknown("no dosageInstruction")
    phases: dict[float, list[_Line]] = {}
    unsequenced: list[_Line] = []
    for index, dosage in enumerate(dosages, start=1):
        line = _line(dosage, strength_mg_per_unit)
        if isinstance(line, str):
            where = f"dosage line {index}: " if len(dosages) > 1 else ""
            return DoseUnknown(where + line)
        sequence = _number(dosage.get("sequence"))
        if sequence is None:
            unsequenced.append(line)
        else:
            phases.setdefault(sequence, []).append(line)
    every_line = unsequenced + [line for lines in phases.values() for line in lines]
    max_single = _round(max(line.single_mg for line in every_line))
    if len(every_line) == 1:
        line = every_line[0]
        return Dose(_round(line.mg_per_day), max_single, line.basis)
    if not phases:
        total = _round(sum(line.mg_per_day for line in unsequenced))
        basis = " + ".join(line.basis for line in unsequenced)
        return Dose(total, max_single, f"{basis}; concurrent lines summed = {fmt(total)} mg/day")
    sums = {
        seq: _round(sum(line.mg_per_day for line in lines + unsequenced))
        for seq, lines in sorted(phases.items())
    }
    described = []
    for seq, lines in sorted(phases.items()):
        joined = " + ".join(line.basis for line in lines + unsequenced)
        described.append(f"phase {fmt(seq)}: {joined}")
    total = max(sums.values())
    if len(phases) == 1:
        basis = "; ".join(described) + f"; concurrent lines summed = {fmt(total)} mg/day"
    else:
        basis = "; ".join(described) + f"; highest phase = {fmt(total)} mg/day"
    return Dose(total, max_single, basis)


def total_mg_per_day(doses: Iterable[Dose]) -> float:
    """The summed daily mg of several orders (e.g. every current baclofen order plus the draft)."""
    return _round(sum(dose.mg_per_day for dose in doses))


_STRENGTH_RE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)\s*(mcg|mg|\u00b5g|\u03bcg|ug|g)(?![\w])"
    r"(?:\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+))?",
    re.IGNORECASE,
)
_TEXTMASS_MG = {
    "mg": 1.0,
    "g": 1000.0,
    "mcg": 0.001,
    "ug": 0.001,
    "\u00b5g": 0.001,
    "\u03bcg": 0.001,
}
# Denominators that make a strength unusable for a mg-per-dose figure (patches, inhalers...).
_OTHER_DENOMINATORS = frozenset(
    {
        "hr",
        "h",
        "hour",
        "actuat",
        "actuation",
        "spray",
        "puff",
        "inhal",
        "dose",
        "day",
        "d",
        "g",
        "gm",
        "l",
        "mg",
        "kg",
        "cm2",
        "sqcm",
        "unt",
        "meq",
    }
)


def strength_from_text(text_value: str | None) -> tuple[float, str] | None:
    """The strength of a single-ingredient product named in text, as (mg, "unit") or (mg, "mL").

    "baclofen 10 MG Oral Tablet" -> (10.0, "unit"); "baclofen 0.5 MG/ML Injectable Solution" ->
    (0.5, "mL"); "2000 MCG/ML" -> (2.0, "mL"); "20 ML baclofen 0.5 MG/ML Injection" -> (0.5, "mL")
    (the leading volume is the container, not the strength). Multi-ingredient names (two different
    strengths), strengths per hour/actuation/etc. and names without a strength -> None.
    """
    if not isinstance(text_value, str):
        return None
    found: set[tuple[float, str]] = set()
    for match in _STRENGTH_RE.finditer(text_value):
        number, unit, per_number, per_unit = match.groups()
        mg = float(number) * _TEXTMASS_MG[unit.lower()]
        per = "unit"
        if per_unit is not None:
            denominator = per_unit.lower()
            if denominator == "ml":
                volume = float(per_number) if per_number else 1.0
                if volume <= 0:
                    return None
                mg /= volume
                per = "mL"
            elif denominator in _OTHER_DENOMINATORS or per_number:
                return None
            # else: "325 MG / hydrocodone ..." separates ingredients; the next match is counted
        found.add((round(mg, 6), per))
    if len(found) != 1:
        return None
    mg, per = found.pop()
    return (mg, per) if mg > 0 else None
