"""BAC-PREGNANCY: baclofen for a patient who appears to be pregnant.

When baclofen is ordered and the record shows an active pregnancy condition, or the latest
conclusive pregnancy observation says so, then warn: the label says use in pregnancy only if the
potential benefit justifies the potential risk to the fetus, and if oral baclofen is continued,
reduce the dose gradually and stop before delivery (neonatal withdrawal) [L]; [P] advises avoiding
it when pregnant or planning pregnancy. For a NEW baclofen order (no active baclofen on record)
the suggestion is to cancel it. For a patient ALREADY on oral baclofen, cancelling is an abrupt
stop (maternal withdrawal, and neonatal withdrawal near delivery), so the suggestion is a taper
built as BAC-TAPER builds it (`bac_taper.taper_steps` / `taper_request`, BAC-TAPER's step
settings), never a bare cancel; for current intrathecal baclofen there is no one-click change at
all (interrupting it is life-threatening; the implanting team plans any change).

Observations (pregnancy status and pregnancy tests, one timeline, usable status, at most
`observation_max_age_days` old): the LATEST conclusive one wins, so a positive test followed by a
negative one (or "Not pregnant") does not warn. Conclusive means:
  - positive: an answer, interpretation or text in `pregnant_answers` / `positive_answers`, or a
    quantitative hCG (valueQuantity in a unit of `hcg_units`, all equal to mIU/mL) above
    `hcg_positive_above` (">N" with N at or above the cut-off counts too);
  - negative: an answer in `negative_answers`, or a quantitative hCG below `hcg_negative_below`
    ("<N" with N at or below that counts too).
Anything else (unknown answer, an equivocal hCG between the two cut-offs, a unit in moles or mass
that is not converted) is skipped: it neither warns nor hides an earlier positive result. On a
tie in time a positive result wins. An active pregnancy condition warns whatever the tests say:
the problem list is the clinician's statement, and a stale one is for the override reason "record
out of date", not for this rule to guess.

Planning a pregnancy (clinical-rules.md Round 2; [P]: "if you are pregnant or wish to become
pregnant"): when baclofen is ordered and the record shows a recorded intention to become pregnant,
and no pregnancy, then inform (one card per order; pregnancy, when present, gives the warning
instead). A recorded intention is an active problem-list finding in `planning_condition`
(SNOMED CT 454411000124108 Wants to become pregnant), or the latest usable answer to the pregnancy
intention question (`intention_observation`, LOINC 86645-9 "Pregnancy intention in the next year")
from at most `planning_observation_max_age_days` ago being in `intention_yes` (LOINC LA26438-4,
SNOMED CT 454411000124108, the generic LOINC Yes LA33-6). Any other latest answer (no, unsure,
either way) is no intention and gives no card. The codes and what was left out unverified are in
the value sets' descriptions (tools/valueset_additions.json).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.dose import Dose
from cds_hooks.clinical.labs import normalise_unit
from cds_hooks.fhir import status
from cds_hooks.fhir.read import (
    as_dict,
    as_list,
    codings,
    concept_text,
    effective_time,
    quantity,
    ref_of,
    text,
)
from cds_hooks.fhir.read import reference as ref_of_reference
from cds_hooks.record import MedOrder
from cds_hooks.rules.bac_taper import taper_request, taper_steps
from cds_hooks.rules.common import order_dose
from cds_hooks.rules.context import RuleContext

log = logging.getLogger(__name__)

RULE_ID = "BAC-PREGNANCY"
NEEDS = ("conditions", "pregnancy")
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    evidence = [c.label() for c in ctx.record.conditions_in(ctx.settings.keys("condition"))]
    kind = "active pregnancy condition" if evidence else "pregnancy observation"
    if (line := _latest_positive(ctx)) is not None:
        evidence.append(line)
    if not evidence:
        return _planning(ctx)
    for order in ctx.targets("drug/baclofen"):
        if not order.current:
            continue  # a stop is not new therapy; BAC-TAPER judges how it stops
        facts = {"order": order.label(), "evidence_kind": kind}
        lines = (f"Order: {order.label()}", *evidence)
        current = _current_baclofen(ctx, order)
        if current is None:
            findings.append(
                Finding(RULE_ID, "pregnant", order.ref, facts, lines, (suggestions.cancel(order),))
            )
            continue
        lines = (*lines, f"Current baclofen: {current.label()}")
        if current.intrathecal or order.intrathecal:
            findings.append(Finding(RULE_ID, "pregnant_current_itb", order.ref, facts, lines))
            continue
        findings.append(_taper_finding(ctx, order, current, facts, lines))
    return findings


def _planning(ctx: RuleContext) -> list[Finding]:
    """Info cards when the record shows an intention to become pregnant (and no pregnancy)."""
    evidence = [
        c.label() for c in ctx.record.conditions_in(ctx.settings.keys("planning_condition"))
    ]
    if (line := _latest_intention(ctx)) is not None:
        evidence.append(line)
    if not evidence:
        return []
    return [
        Finding(
            RULE_ID,
            "planning",
            order.ref,
            {"order": order.label(), "evidence": "; ".join(evidence)},
            (f"Order: {order.label()}", *evidence),
        )
        for order in ctx.targets("drug/baclofen")
        if order.current  # a stop is not new therapy
    ]


def _latest_intention(ctx: RuleContext) -> str | None:
    """The evidence line of the latest usable pregnancy intention answer, when it is a yes."""
    terminology = ctx.knowledge.terminology
    question = ctx.settings.keys("intention_observation")
    yes = ctx.settings.keys("intention_yes")
    max_days = int(ctx.settings.value("planning_observation_max_age_days"))
    today = ctx.now.astimezone(UTC).date()
    latest: tuple[datetime, Mapping] | None = None
    for obs in ctx.record.observations_in(*question):
        when = effective_time(obs)
        if not status.observation_usable(obs) or when is None:
            continue
        if (today - when.astimezone(UTC).date()).days > max_days:  # calendar days
            continue
        if not terminology.in_valueset(obs.get("code"), *question):
            continue
        if latest is None or when > latest[0]:
            latest = (when, obs)
    if latest is None:
        return None
    when, obs = latest
    if not terminology.in_valueset(obs.get("valueCodeableConcept"), *yes):
        log.info("%s: latest pregnancy intention %s is not a yes", RULE_ID, ref_of(obs))
        return None
    return _line(obs, obs.get("code"), when)


def _current_baclofen(ctx, order: MedOrder) -> MedOrder | None:
    """The active baclofen order on record the patient takes now: the one this draft revises
    (same id, or its priorPrescription), else any active one; None for a new start."""
    active = [
        o
        for o in ctx.record.orders_on_record
        if o.has("drug/baclofen") and status.order_taken(o.status)
    ]
    prior = ref_of_reference(order.resource.get("priorPrescription"))
    for candidate in active:
        if candidate.ref in (order.ref, prior):
            return candidate
    return active[0] if active else None


def _taper_finding(
    ctx, order: MedOrder, current: MedOrder, facts: Mapping[str, str], lines: tuple[str, ...]
) -> Finding:
    """The card for a patient already on oral baclofen: a taper to stop, never a bare cancel."""
    taper_settings = ctx.knowledge.rule("BAC-TAPER")
    dose = order_dose(current)
    steps = taper_steps(dose, None, taper_settings) if isinstance(dose, Dose) else []
    if not steps:
        more = {"taper": "lower the dose step by step over several weeks; never stop abruptly."}
        return Finding(RULE_ID, "pregnant_current", order.ref, {**facts, **more}, lines)
    days = int(taper_settings.value("step_days"))
    taper = "; ".join(f"{mg:g} mg {times:g} times a day for {days} days" for mg, times in steps)
    more = {"taper": taper + "; then stop", "weeks": str(max(1, math.ceil(len(steps) * days / 7)))}
    resource = taper_request(current.resource, order, steps, None, days)
    if current.ref != order.ref:
        # The taper supersedes the therapy it tapers, so the EHR retires that order with it.
        resource["priorPrescription"] = {"reference": current.ref}
    suggestion = suggestions.replace(
        order, resource, f"Replace {order.ref} with a taper", "taper", recommended=False
    )
    return Finding(RULE_ID, "pregnant_current", order.ref, {**facts, **more}, lines, (suggestion,))


def _latest_positive(ctx) -> str | None:
    """The evidence line of the latest conclusive pregnancy observation when it is positive."""
    settings = ctx.settings
    (status_key,) = settings.keys("status_observation")
    (test_key,) = settings.keys("test_observation")
    terminology = ctx.knowledge.terminology
    oldest = ctx.now - timedelta(days=float(settings.value("observation_max_age_days")))
    pregnant = _lower(settings.value("pregnant_answers"))
    positive = _lower(settings.value("positive_answers"))
    negative = _lower(settings.value("negative_answers"))
    latest: tuple[tuple[datetime, bool], str] | None = None
    for obs in ctx.record.observations_in(status_key, test_key):
        when = effective_time(obs)
        if not status.observation_usable(obs) or when is None or when < oldest:
            continue
        code = obs.get("code")
        if terminology.in_valueset(code, status_key):
            answers = pregnant
        elif terminology.in_valueset(code, test_key):
            answers = positive
        else:
            continue
        found = _answers(obs)
        hcg = _hcg(obs, ctx)
        if found & answers or hcg is True:
            verdict = True
        elif found & negative or hcg is False:
            verdict = False
        else:
            log.info("%s: %s is not conclusive, skipped", RULE_ID, ref_of(obs))
            continue
        # Latest first; on the same moment a positive result wins (True > False).
        key = (when, verdict)
        if latest is None or key > latest[0]:
            latest = (key, _line(obs, code, when))
    if latest is None or not latest[0][1]:
        return None
    return latest[1]


def _hcg(obs: Mapping, ctx) -> bool | None:
    """True above the positive cut-off, False below the negative one, else None (no guess)."""
    qty = as_dict(obs.get("valueQuantity"))
    read = quantity(qty)
    if read is None:
        return None
    units = {normalise_unit(u) for u in ctx.settings.value("hcg_units")}
    if not any(normalise_unit(text(qty.get(f)) or "") in units for f in ("code", "unit")):
        log.info("%s: %s hCG unit %r is not in hcg_units", RULE_ID, ref_of(obs), read[1])
        return None
    value, _unit, comparator = read
    above = float(ctx.settings.value("hcg_positive_above"))
    below = float(ctx.settings.value("hcg_negative_below"))
    if comparator in (">", ">="):
        return True if value >= above else None  # ">5" may be anything above 5
    if comparator in ("<", "<="):
        return False if value <= below else None  # "<50" may be anything below 50
    if value > above:
        return True
    return False if value < below else None


def _line(obs: Mapping, code, when: datetime) -> str:
    value = concept_text(obs.get("valueCodeableConcept")) or text(obs.get("valueString"))
    if value is None and (read := quantity(obs.get("valueQuantity"))) is not None:
        unit = text(as_dict(obs.get("valueQuantity")).get("unit")) or read[1] or ""
        value = f"{read[2] or ''}{read[0]:g} {unit}".rstrip()
    return f"Observation: {concept_text(code)} = {value} ({ref_of(obs)}, {when.date()})"


def _answers(obs) -> set[str]:
    """Codes and words an observation answers with: value, interpretation, or text."""
    found = {c.lower() for _s, c, _d in codings(obs.get("valueCodeableConcept")) if c}
    for interpretation in as_list(obs.get("interpretation")):
        found |= {c.lower() for _s, c, _d in codings(interpretation) if c}
    if value := text(obs.get("valueString")):
        found.add(value.strip().lower())
    return found


def _lower(values) -> set[str]:
    return {v.strip().lower() for v in values}
