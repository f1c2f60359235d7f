"""Kidney function from a patient's Observations and Conditions (pure, no I/O, no clock).

Used by BAC-RENAL and TIZ-RENAL (clinical-rules.md). Creatinine clearance is rarely stored as such
(terminology README caveat 6), so when no measured value is as recent it is estimated with
Cockcroft-Gault from a recent serum creatinine, body weight, age and sex:

    CrCl (mL/min) = (140 - age) x weight (kg) / (72 x serum creatinine (mg/dL))  [x 0.85 if female]

Priority, by calendar day (UTC) of the result:

1. the most recent usable measured value, creatinine clearance or eGFR, whichever is newer: an old
   clearance must not hide a recent eGFR (acute kidney injury). On the same day the creatinine
   clearance wins (it is what the label thresholds are written in);
2. a Cockcroft-Gault estimate, only when its serum creatinine is from a later day than every
   usable measured value (or there is none);
3. an active CKD stage 4-5 / ESRD / dialysis / kidney failure Condition (kind "condition");
4. an active acute kidney injury Condition (kind "acute-condition").

Steps 3 and 4 are clinical-rules.md Round 2, "Renal fallback": kidney failure and dialysis are
severe (the rules warn), an acute kidney injury says only that the current value is unknown (the
rules inform and suggest a serum creatinine). Kidney failure not stated as acute (ICD-10-CM N19,
SNOMED CT 42399005) is its own value set, condition/kidney-failure, apart from acute kidney
injury (condition/acute-kidney-injury-renal-failure).

The ``dialysis`` flag is set whenever an active dialysis Condition exists, whatever the source of
the value. Thresholds and look-backs are the caller's (rule settings and knowledge/common.json);
the defaults here are the same values. Which statuses count is `cds_hooks.fhir.status`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache
from typing import Any

from cds_hooks.clinical.labs import (
    ObservationIndex,
    aware,
    fmt,
    normalise_unit,
    unit_factor,
    unit_table,
    usable_time,
)
from cds_hooks.fhir import status
from cds_hooks.fhir.read import (
    as_dict,
    as_list,
    concept_text,
    effective_time,
    parse_date,
    quantity,
    ref_of,
)
from cds_hooks.terminology import Terminology, system_name

log = logging.getLogger(__name__)

MIN_COCKCROFT_GAULT_AGE = 18  # the equation was derived in adults

# Clearance units (keys normalised by labs.unit_table) -> factor to mL/min.
_CLEARANCE_UNITS = unit_table(
    {
        "ml/min": 1.0,
        "ml/min/1.73m2": 1.0,
        "ml/s": 60.0,
        "ml/s/1.73m2": 60.0,
    }
)
_CREATININE_UNITS = unit_table(
    {  # -> mg/dL
        "mg/dl": 1.0,
        "umol/l": 1 / 88.4,  # also the micro sign and Greek mu (normalise_unit)
        "mmol/l": 1000 / 88.4,
    }
)
_WEIGHT_UNITS = unit_table(
    {  # -> kg
        "kg": 1.0,
        "g": 0.001,
        "[lb_av]": 0.45359237,
        "lb": 0.45359237,
        "lbs": 0.45359237,
        "[lb_us]": 0.45359237,
    }
)
_VALUE_STRING_RE = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d+(?:\.\d+)?|\.\d+)\s*(.*?)\s*$")
_COMPARATOR_ORDER = {"<": 0, "<=": 1, None: 2, ">=": 3, ">": 4}


@dataclass(frozen=True)
class RenalValueSets:
    """The value-set keys (knowledge/valuesets) each kind of record is matched against."""

    crcl: str = "observation/creatinine-clearance"
    egfr: str = "observation/egfr"
    creatinine: str = "observation/serum-creatinine"
    weight: str = "observation/body-weight"  # LOINC 29463-7 body weight, 3141-9
    ckd_severe: str = "condition/ckd-severe"  # CKD stage 4/5, ESRD conditions
    dialysis: str = "condition/dialysis"  # dialysis dependence conditions
    kidney_failure: str = "condition/kidney-failure"  # kidney failure not stated as acute
    aki: str = "condition/acute-kidney-injury-renal-failure"  # acute kidney injury
    # An eGFR a card names by its equation (the value set's title); any other is just "eGFR".
    egfr_equations: tuple[str, ...] = (
        "observation/egfr-ckd-epi-2021",
        "observation/egfr-ckd-epi-2021-cystatin-c",
        "observation/egfr-mdrd",
        "observation/egfr-mdrd-race-based",
        "observation/egfr-ckd-epi-2009-race-based",
    )


@dataclass(frozen=True)
class _Codes:
    """The terminology and one value set: "is this concept in it, by which coding"."""

    terminology: Terminology
    key: str

    def match(self, concept: Any) -> tuple[str, str, str | None] | None:
        return self.terminology.matching_coding(as_dict(concept), self.key)


@dataclass(frozen=True)
class _RenalCodes:
    crcl: _Codes
    egfr: _Codes
    creatinine: _Codes
    weight: _Codes
    ckd_severe: _Codes
    dialysis: _Codes
    kidney_failure: _Codes
    aki: _Codes
    equations: tuple[_Codes, ...]

    @cached_property
    def kidney_conditions(self) -> frozenset[str]:
        """The condition value sets, to pass over every other Condition at once."""
        return frozenset(
            c.key for c in (self.dialysis, self.ckd_severe, self.kidney_failure, self.aki)
        )

    @classmethod
    @lru_cache(maxsize=16)  # per terminology and value sets: once per process, not per call
    def of(cls, terminology: Terminology, sets: RenalValueSets) -> _RenalCodes:
        def codes(key: str) -> _Codes:
            return _Codes(terminology, key)

        return cls(
            crcl=codes(sets.crcl),
            egfr=codes(sets.egfr),
            creatinine=codes(sets.creatinine),
            weight=codes(sets.weight),
            ckd_severe=codes(sets.ckd_severe),
            dialysis=codes(sets.dialysis),
            kidney_failure=codes(sets.kidney_failure),
            aki=codes(sets.aki),
            equations=tuple(codes(key) for key in sets.egfr_equations),
        )

    def egfr_name(self, system: str, code: str) -> str:
        """The eGFR's equation (its value set's title), else plain "eGFR"."""
        concept = {"coding": [{"system": system, "code": code}]}
        for equation in self.equations:
            if equation.match(concept) is not None:
                return equation.terminology.title(equation.key)
        return "eGFR"


@dataclass(frozen=True)
class RenalFunction:
    kind: str  # "crcl" | "crcl-cockcroft-gault" | "egfr" | "condition" | "acute-condition"
    value_ml_min: float | None  # None for kinds "condition" and "acute-condition"
    comparator: str | None  # e.g. ">" for "> 60"
    label: str  # e.g. "creatinine clearance (LOINC 2164-2)"
    when: datetime | None
    source: str | None  # "Observation/abc" or "Condition/xyz"
    dialysis: bool = False  # an active dialysis Condition exists (whatever the kind)
    severe_condition: bool = False  # kind "condition" from CKD 4/5, ESRD or kidney failure

    def describe(self) -> str:
        """One sentence for a card: what, value with unit, when."""
        day = self.when.astimezone(UTC).date().isoformat() if self.when else None
        value = _shown_value(self.value_ml_min) if self.value_ml_min is not None else "?"
        shown = f"{self.comparator} {value}" if self.comparator else value
        if self.kind in ("condition", "acute-condition"):
            sentence = f"active condition {_with_date(self.label, day)}"
        elif self.kind == "crcl-cockcroft-gault":
            sentence = f"estimated creatinine clearance {shown} mL/min ({self.label})"
        else:
            name, unit = (
                ("eGFR", "mL/min/1.73m2")
                if self.kind == "egfr"
                else ("creatinine clearance", "mL/min")
            )
            reference = _parenthetical(self.label)
            details = ", ".join(part for part in (reference, day) if part)
            sentence = f"{name} {shown} {unit}" + (f" ({details})" if details else "")
        if self.dialysis and self.kind != "condition":
            sentence += ", and the patient has an active dialysis condition"
        return sentence


def _shown_value(value: float) -> str:
    # One decimal, truncated rather than rounded, so a value shown never sits on the other side of
    # a "< 25" or "< 30" threshold than the value the rule compared (24.96 shows as 24.9, not 25).
    return fmt(math.floor(round(value * 10, 6)) / 10)


def _parenthetical(label: str) -> str | None:
    match = re.search(r"\(([^()]*)\)\s*$", label)
    return match.group(1) if match else None


def _with_date(label: str, day: str | None) -> str:
    if day is None:
        return label
    if _parenthetical(label) is not None:
        return f"{label.rstrip()[:-1]}, {day})"
    return f"{label} ({day})"


def _code_reference(system: str, code: str) -> str:
    return f"{system_name(system)} {code}"


def _clearance_from_quantity(qty: Any) -> tuple[float, str | None] | None:
    """(mL/min, comparator) from a Quantity; one without any unit is taken in the code's unit."""
    read = quantity(qty)
    if read is None:
        return None
    value, unit, comparator = read
    if unit is None:
        return value, comparator
    factor = unit_factor(as_dict(qty), _CLEARANCE_UNITS)
    if factor is None:
        log.debug("renal: clearance unit %r not understood", unit)
        return None
    return value * factor[0], comparator


def _clearance_from_string(value: Any) -> tuple[float, str | None] | None:
    """(mL/min, comparator) from a valueString such as "> 60", ">60" or "45 mL/min/1.73m2"."""
    if not isinstance(value, str):
        return None
    match = _VALUE_STRING_RE.match(value)
    if not match:
        return None
    comparator, number, unit = match.groups()
    factor = _CLEARANCE_UNITS.get(normalise_unit(unit)) if unit else 1.0
    if factor is None:
        log.debug("renal: clearance unit %r in valueString not understood", unit)
        return None
    return float(number) * factor, comparator


def _lowest(values: list[tuple[float, str | None]]) -> tuple[float, str | None] | None:
    """The most conservative of several values: the lowest, "< x" before "x" before "> x"."""
    if not values:
        return None
    return min(values, key=lambda v: (v[0], _COMPARATOR_ORDER.get(v[1], 2)))


@dataclass(frozen=True)
class _Reading:
    when: datetime
    value: float
    comparator: str | None
    system: str
    code: str
    source: str | None


def _clearance_readings(
    observations: list[Mapping],
    codes: _Codes,
    now: datetime,
    max_age_days: int,
) -> list[_Reading]:
    readings = []
    for obs in observations:
        top = codes.match(obs.get("code"))
        components = [c for c in as_list(obs.get("component")) if isinstance(c, dict)]
        component_hits = [(c, codes.match(c.get("code"))) for c in components]
        if top is None and not any(hit for _c, hit in component_hits):
            continue
        moment = usable_time(obs, now, max_age_days)
        if moment is None:
            continue
        value = None
        if top is not None:  # a panel's own value is not a clearance when only a component is
            value = _clearance_from_quantity(obs.get("valueQuantity")) or _clearance_from_string(
                obs.get("valueString")
            )
        matched = top
        if value is None:
            # The R4 eGFR example (Observation f205) carries its values only in components.
            found = []
            for component, hit in component_hits:
                qty = component.get("valueQuantity")
                in_ml_min = unit_factor(as_dict(qty), _CLEARANCE_UNITS) is not None
                if hit is not None or (top is not None and in_ml_min):
                    reading = _clearance_from_quantity(qty) or _clearance_from_string(
                        component.get("valueString")
                    )
                    if reading is not None:
                        found.append(reading)
                        matched = matched or hit
            value = _lowest(found)
        if value is None or matched is None:
            log.debug("renal: Observation/%s skipped, no usable value", obs.get("id"))
            continue
        readings.append(
            _Reading(moment, round(value[0], 4), value[1], matched[0], matched[1], ref_of(obs))
        )
    return readings


def _latest_amount(
    observations: list[Mapping],
    units: Mapping[str, float],
    now: datetime,
    max_age_days: int,
) -> tuple[datetime, float, tuple[float, str], Mapping] | None:
    """(when, value in the table's base unit, value as shown, observation) of the latest usable
    of `observations` (those whose code is in the value set: `ObservationIndex.coded_in`)."""
    best = None
    for obs in observations:
        moment = usable_time(obs, now, max_age_days)
        if moment is None:
            continue
        qty = as_dict(obs.get("valueQuantity"))
        read = quantity(qty)
        factor = unit_factor(qty, units)
        if read is None or factor is None or read[0] <= 0:
            log.debug("renal: Observation/%s skipped, no value in a known unit", obs.get("id"))
            continue
        if best is None or moment > best[0]:
            best = (moment, read[0] * factor[0], (read[0], factor[1]), obs)
    return best


def age_years(patient: Mapping | None, now: datetime) -> int | None:
    """Completed years at `now` from Patient.birthDate (a partial date counts from its start)."""
    born = parse_date(as_dict(patient).get("birthDate"))
    if born is None:
        return None
    today = aware(now).astimezone(UTC).date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return years if years >= 0 else None


def _cockcroft_gault(
    observations: ObservationIndex,
    patient: Mapping | None,
    codes: _RenalCodes,
    now: datetime,
    max_age_days: int,
    min_age_years: int,
) -> RenalFunction | None:
    gender = as_dict(patient).get("gender")
    factor = {"male": 1.0, "female": 0.85}.get(gender) if isinstance(gender, str) else None
    age = age_years(patient, now)
    if factor is None or age is None or age < min_age_years:
        return None
    creatinine = _latest_amount(
        observations.coded_in(codes.creatinine.key, components=False),
        _CREATININE_UNITS,
        now,
        max_age_days,
    )
    weight = _latest_amount(
        observations.coded_in(codes.weight.key, components=False),
        _WEIGHT_UNITS,
        now,
        max_age_days,
    )
    if creatinine is None or weight is None:
        return None
    scr_when, scr_mg_dl, (scr_value, scr_unit), scr_obs = creatinine
    weight_when, weight_kg, (weight_value, weight_unit), _weight_obs = weight
    crcl = (140 - age) * weight_kg / (72 * scr_mg_dl) * factor
    if crcl <= 0:
        return None
    scr_shown = f"{fmt(round(scr_value, 2))} {scr_unit}"
    weight_shown = f"{fmt(round(weight_value, 1))} {weight_unit}"
    if normalise_unit(scr_unit) != "mg/dl":
        scr_shown += f" ({fmt(round(scr_mg_dl, 2))} mg/dL)"
    if normalise_unit(weight_unit) != "kg":
        weight_shown += f" ({fmt(round(weight_kg, 1))} kg)"
    label = (
        f"Cockcroft-Gault estimate from serum creatinine {scr_shown} on "
        f"{scr_when.astimezone(UTC).date().isoformat()}, weight {weight_shown} on "
        f"{weight_when.astimezone(UTC).date().isoformat()}, age {age}, {gender}"
    )
    return RenalFunction(
        kind="crcl-cockcroft-gault",
        value_ml_min=round(crcl, 1),
        comparator=None,
        label=label,
        when=scr_when,
        source=ref_of(scr_obs),
    )


_Found = list[tuple[Mapping, tuple]]


def _from_condition(
    found: _Found, kind: str, *, dialysis: bool = False, severe_condition: bool = False
) -> RenalFunction:
    """The kidney function a Condition stands for (no value): the latest of `found`."""
    condition, (system, code, display) = _latest_condition(found)
    name = display or concept_text(condition.get("code")) or code
    return RenalFunction(
        kind=kind,
        value_ml_min=None,
        comparator=None,
        label=f"{name} ({_code_reference(system, code)})",
        when=effective_time(condition),
        source=ref_of(condition),
        dialysis=dialysis,
        severe_condition=severe_condition,
    )


def _kidney_conditions(
    conditions: list[Mapping], codes: _RenalCodes, terminology: Terminology
) -> tuple[_Found, _Found, _Found]:
    """(dialysis, CKD 4-5 / ESRD / kidney failure, acute kidney injury) present Conditions."""
    dialysis: _Found = []
    severe: _Found = []
    acute: _Found = []
    kidney = codes.kidney_conditions
    for condition in conditions:
        if condition.get("resourceType", "Condition") != "Condition":
            continue
        if terminology.keys_for_concept(as_dict(condition.get("code"))).isdisjoint(kidney):
            continue  # no kidney condition: its status need not be read
        if not status.condition_present(condition):
            continue
        # Checked independently: "ESRD on dialysis" codes may sit in both sets.
        if hit := codes.dialysis.match(condition.get("code")):
            dialysis.append((condition, hit))
        if hit := codes.ckd_severe.match(condition.get("code")) or codes.kidney_failure.match(
            condition.get("code")
        ):
            severe.append((condition, hit))
        if hit := codes.aki.match(condition.get("code")):
            acute.append((condition, hit))
    return dialysis, severe, acute


def _latest_condition(found: list[tuple[Mapping, tuple]]) -> tuple[Mapping, tuple]:
    floor = datetime.min.replace(tzinfo=UTC)
    return max(found, key=lambda pair: effective_time(pair[0]) or floor)


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _measured(
    observations: ObservationIndex,
    codes: _RenalCodes,
    now: datetime,
    lookback_days: int,
) -> tuple[str, _Reading] | None:
    """The latest measured reading as (kind, reading): the newest day wins, CrCl on a tie."""
    best: tuple[tuple, str, _Reading] | None = None
    # Rank: later day first; on the same day creatinine clearance before eGFR; then later time.
    for rank, (kind, code_set) in enumerate((("crcl", codes.crcl), ("egfr", codes.egfr))):
        readings = _clearance_readings(
            observations.coded_in(code_set.key), code_set, now, lookback_days
        )
        for reading in readings:
            key = (_day(reading.when), -rank, reading.when)
            if best is None or key > best[0]:
                best = (key, kind, reading)
    return (best[1], best[2]) if best else None


def renal_function(
    observations: Iterable[Mapping] | ObservationIndex,
    conditions: Iterable[Mapping],
    patient: Mapping | None,
    terminology: Terminology,
    now: datetime,
    lookback_days: int = 365,
    cockcroft_gault_max_age_days: int = 90,
    *,
    value_sets: RenalValueSets = RenalValueSets(),
    cockcroft_gault_min_age_years: int = MIN_COCKCROFT_GAULT_AGE,
) -> RenalFunction | None:
    """The patient's kidney function by the priority in the module docstring, or None if unknown.

    Observations count when `fhir.status` finds them usable and they are at most
    `lookback_days` calendar days old (creatinine and weight for Cockcroft-Gault: at most
    `cockcroft_gault_max_age_days`, and the patient must be `cockcroft_gault_min_age_years` or
    older with gender male or female). Codes are matched against the value sets named in
    `value_sets`, by the one matcher (`Terminology`). Conditions count when `fhir.status` finds
    them present. `observations` may be the record's `ObservationIndex` (built once per call);
    a plain list is indexed here.
    """
    now = aware(now)
    codes = _RenalCodes.of(terminology, value_sets)
    if not isinstance(observations, ObservationIndex):
        observations = ObservationIndex(observations, terminology)
    conditions = [c for c in conditions if isinstance(c, Mapping)]
    dialysis, severe, acute = _kidney_conditions(conditions, codes, terminology)
    on_dialysis = bool(dialysis)

    measured = _measured(observations, codes, now, lookback_days)
    max_age = min(lookback_days, cockcroft_gault_max_age_days)
    estimate = _cockcroft_gault(
        observations, patient, codes, now, max_age, cockcroft_gault_min_age_years
    )
    # The estimate only when its creatinine is from a later day than the measured value: a
    # measured value of the same day is the better figure.
    if estimate is not None and estimate.when is not None:
        if measured is None or _day(estimate.when) > _day(measured[1].when):
            return replace(estimate, dialysis=on_dialysis)

    if measured is not None:
        kind, latest = measured
        name = (
            "creatinine clearance"
            if kind == "crcl"
            else codes.egfr_name(latest.system, latest.code)
        )
        return RenalFunction(
            kind=kind,
            value_ml_min=latest.value,
            comparator=latest.comparator,
            label=f"{name} ({_code_reference(latest.system, latest.code)})",
            when=latest.when,
            source=latest.source,
            dialysis=on_dialysis,
        )

    if dialysis or severe:
        return _from_condition(
            dialysis or severe, "condition", dialysis=on_dialysis, severe_condition=bool(severe)
        )
    if acute:
        return _from_condition(acute, "acute-condition")
    return None
