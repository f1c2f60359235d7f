"""Lab results as the rules read them: the latest usable value, units, and numbers for a card.

Pure helpers shared by the kidney-function engine (`clinical/renal.py`) and the rules that read
labs (ITB-CONTRAINDICATION: INR and platelets; BAC-PREGNANCY: hCG units): one meaning of "usable"
(`fhir/status.py` plus the look-back), one unit normaliser, one number formatter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_hooks.fhir import status
from cds_hooks.fhir.read import as_dict, effective_time, text
from cds_hooks.terminology import Terminology

log = logging.getLogger(__name__)

# A result dated a little in the future is clock skew or a time zone; more is a data error.
FUTURE_TOLERANCE = timedelta(days=1)


def fmt(value: float) -> str:
    """A number for a human: at most 4 decimals, no trailing zeros (12.5, 0.05, 3)."""
    return f"{round(value, 4):.4f}".rstrip("0").rstrip(".")


def normalise_unit(unit: str) -> str:
    """A unit as the unit tables key it: lower case, no spaces, braces or underscores, m^2 and
    m² as m2, the micro sign and Greek mu as u ("mL/min/{1.73_m2}" -> "ml/min/1.73m2")."""
    unit = unit.strip().lower()
    for old, new in (
        ("m^2", "m2"),
        ("m\u00b2", "m2"),
        ("\u00b5", "u"),  # micro sign
        ("\u03bc", "u"),  # Greek mu
        (" ", ""),
        ("{", ""),
        ("}", ""),
        ("_", ""),
    ):
        unit = unit.replace(old, new)
    return unit


def unit_table(table: Mapping[str, float]) -> dict[str, float]:
    """A unit table keyed by normalised units, so that lookups and keys agree by construction."""
    return {normalise_unit(unit): factor for unit, factor in table.items()}


def unit_factor(qty: Any, table: Mapping[str, float]) -> tuple[float, str] | None:
    """(factor, unit as shown) from a Quantity's UCUM code, else its unit, whichever the table
    (built with `unit_table`) knows."""
    qty = as_dict(qty)
    for field in ("code", "unit"):
        unit = text(qty.get(field))
        if unit and (factor := table.get(normalise_unit(unit))) is not None:
            return factor, text(qty.get("unit")) or unit
    return None


def aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def usable_time(obs: Mapping, now: datetime, max_age_days: int) -> datetime | None:
    """When a usable Observation applies: usable status (`fhir/status.py`), an effective time
    not in the future, at most `max_age_days` calendar days old; else None (logged)."""
    if obs.get("resourceType", "Observation") != "Observation":
        return None
    if not status.observation_usable(obs):
        log.debug("Observation/%s skipped, status %r", obs.get("id"), obs.get("status"))
        return None
    now = aware(now)
    moment = effective_time(obs)
    if moment is None or moment > now + FUTURE_TOLERANCE:
        log.debug("Observation/%s skipped, no usable effective time", obs.get("id"))
        return None
    # Whole calendar days, so a date-only result exactly `max_age_days` old still counts.
    age_days = (now.astimezone(UTC).date() - moment.astimezone(UTC).date()).days
    if age_days > max_age_days:
        # The id, not ref_of: this runs for every old result, and the message is rarely shown.
        log.debug(
            "Observation/%s skipped, %s days old (limit %s)", obs.get("id"), age_days, max_age_days
        )
        return None
    return moment


class ObservationIndex:
    """A call's Observations by the value sets their code, or a component's code, is in.

    Built once per call (`record.build_record`) with one lookup per distinct coding. Rules and
    engines select observations by value set only, so an observation coded in no value set is
    not kept, and a reader looking for a serum creatinine visits the few candidates instead of
    every lab an EHR sends (docs/performance.md). `coded_in` gives them in record order.
    """

    def __init__(self, observations: Iterable[Any], terminology: Terminology) -> None:
        self.terminology = terminology
        self.observations: list[Mapping] = []  # the coded ones, in record order
        self._positions: dict[str, list[int]] = {}
        self._code_keys: list[frozenset[str]] = []  # each one's own code's (not components')
        keys_for_concept = terminology.keys_for_concept
        for obs in observations:
            if type(obs) is not dict and not isinstance(obs, Mapping):  # the ABC test is slow
                continue
            keys = code_keys = keys_for_concept(obs.get("code"))
            components = obs.get("component")
            for component in components if isinstance(components, list) else ():
                if isinstance(component, dict):
                    keys = keys | keys_for_concept(component.get("code"))
            if not keys:
                continue
            position = len(self.observations)
            self.observations.append(obs)
            self._code_keys.append(code_keys)
            for key in keys:
                self._positions.setdefault(key, []).append(position)

    def coded_in(self, *keys: str, components: bool = True) -> list[Mapping]:
        """The observations with a code, or (`components`) a component's code, in one of the
        value sets `keys`, in record order (each once)."""
        self.terminology.known(keys)
        found = [self._positions.get(key, ()) for key in keys]
        positions = found[0] if len(found) == 1 else sorted(set().union(*found))
        if not components:
            own = self._code_keys
            return [self.observations[i] for i in positions if not own[i].isdisjoint(keys)]
        return [self.observations[i] for i in positions]


def latest_usable(
    observations: Iterable[Mapping],
    terminology: Terminology,
    keys: Iterable[str],
    now: datetime,
    max_age_days: int,
) -> Mapping | None:
    """The most recent usable Observation coded in one of the value sets `keys`, or None."""
    keys = tuple(keys)
    best: tuple[datetime, Mapping] | None = None
    for obs in observations:
        if not terminology.in_valueset(obs.get("code"), *keys):
            continue
        moment = usable_time(obs, now, max_age_days)
        if moment is not None and (best is None or moment > best[0]):
            best = (moment, obs)
    return best[1] if best else None
