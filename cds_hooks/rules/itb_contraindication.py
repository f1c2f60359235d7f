"""ITB-CONTRAINDICATION: what precludes an intrathecal catheter for intrathecal baclofen.

When intrathecal baclofen is ordered (screening bolus, pump trial, implant) and
  - an anticoagulant (warfarin, heparins, fondaparinux, DOACs...) or a P2Y12 antiplatelet
    (clopidogrel, prasugrel, ticagrelor, ticlopidine; `include_p2y12_antiplatelets`, on by
    default: the guideline asks for them to be stopped before high bleeding-risk procedures such
    as intrathecal catheter and pump implantation) is current therapy or another draft: critical;
  - a coagulopathy / bleeding disorder is on the problem list, or the latest usable INR is above
    `inr_max` or the latest platelet count below `platelets_min` (LOCAL thresholds, defaults 1.5
    and 100 x10^9/L: no cited source gives one; labs within common.json `lab_lookback_days`;
    older or missing labs give no card, never a guess): critical;
  - an active systemic infection (sepsis, bacteremia, meningitis, epidural abscess) or a skin or
    soft-tissue infection of the back, where the catheter goes in: critical. An acute systemic
    infection recorded as active with an onset (else recorded date) more than
    `acute_infection_max_age_days` ago is probably documentation nobody closed: it still gives a
    card, but a warning, "recorded as active since <date>; confirm it has resolved". One that is
    recent or undated keeps the card critical (and the card lists the old ones too). Local
    infections are not aged: a chronic back wound infection can truly last that long;
  - an anatomical spinal abnormality: warning, because spinal imaging may show a safe level.
    Spina bifida, scoliosis / severe spinal deformity and spinal fusion are the abnormalities [G]
    and clinical-rules.md name. Spinal stenosis is not: it is common and degenerative at the age
    ITB is considered and does not by itself preclude an image-guided catheter, so it counts only
    with the `include_spinal_stenosis` setting (off by default).
Then one card per category of finding, each naming its evidence, with a cancel suggestion.
Not for an order being stopped (a stop is not an insertion), and, with the
`established_pump_is_not_insertion` setting, not while another ITB order is active or on-hold on
record (a pump is in place: the draft is a refill or dose change, not a catheter insertion).
Only a record order in a status that means it is running counts, and never one with the id
of a draft in this session: EHRs return the draft itself in their MedicationRequest search, and
that must not silence the checks on itself.
Sources: [G] "Contraindications for ITB": anticoagulant therapy, coagulopathy, local or systemic
infection, or anatomical spinal abnormalities preclude intrathecal catheter insertion; the
interventional pain guideline (Narouze 2018, doi 10.1097/AAP.0000000000000700) for the procedure's
bleeding risk and P2Y12 antiplatelets. Not the label: its only contraindications are
hypersensitivity and non-intrathecal routes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.clinical.labs import fmt, latest_usable, normalise_unit
from cds_hooks.fhir import status
from cds_hooks.fhir.read import (
    as_dict,
    codings,
    concept_text,
    effective_time,
    parse_datetime,
    quantity,
    ref_of,
    text,
)
from cds_hooks.rules.common import systemic
from cds_hooks.rules.context import RuleContext
from cds_hooks.terminology import system_name

log = logging.getLogger(__name__)

RULE_ID = "ITB-CONTRAINDICATION"
NEEDS = ("medications", "conditions", "coagulation")
BACLOFEN = "drug/baclofen"
TRIGGERS = (BACLOFEN,)

# Platelet count units (normalise_unit, and no "x"), as multiples of
# 10^9/L. 10*9/L = 10*3/uL = 10*3/mm3 = K/uL = G/L; a plain count per uL or mm3 is / 1000.
PLATELET_UNITS: Mapping[str, float] = {
    "10*9/l": 1.0,
    "10^9/l": 1.0,
    "10e9/l": 1.0,
    "g/l": 1.0,
    "10*3/ul": 1.0,
    "10^3/ul": 1.0,
    "10e3/ul": 1.0,
    "10*3/mm3": 1.0,
    "10^3/mm3": 1.0,
    "10e3/mm3": 1.0,
    "k/ul": 1.0,
    "k/mm3": 1.0,
    "thou/ul": 1.0,
    "thou/mm3": 1.0,
    "/ul": 0.001,
    "/mm3": 0.001,
    "cells/ul": 0.001,
    "cells/mm3": 0.001,
    "/l": 1e-9,
}
INR_UNITS = frozenset({"inr", "ratio", "1", ""})

# (card name, facts, evidence lines) of one category of finding, or None.
Found = tuple[str, dict[str, str], tuple[str, ...]] | None


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    orders = [o for o in ctx.targets(BACLOFEN) if o.intrathecal and _is_new_therapy(o, ctx)]
    if not orders or (ctx.settings.value("established_pump_is_not_insertion") and _pump(ctx)):
        return findings
    checks = (_anticoagulant, _bleeding_risk, _infection, _spinal_abnormality)
    for order in orders:
        cancel = (suggestions.cancel(order),)
        for check in checks:
            found = check(order, ctx)
            if found is not None:
                card, facts, evidence = found
                facts = {"order": order.label(), "drug": order.name, **facts}
                findings.append(
                    Finding(
                        RULE_ID,
                        card,
                        order.ref,
                        facts,
                        (f"Order: {order.label()}", *evidence),
                        cancel,
                    )
                )
    return findings


def _anticoagulant(order, ctx) -> Found:
    keys = list(ctx.settings.keys("anticoagulants"))
    if ctx.settings.value("include_p2y12_antiplatelets"):
        keys += ctx.settings.keys("antiplatelets")
    others = [
        o for o in ctx.current if o.ref != order.ref and o.has(*keys) and systemic(o, ctx.knowledge)
    ]
    if not others:
        return None
    anticoagulants = set(ctx.settings.keys("anticoagulants"))
    drug_class = (
        "anticoagulant" if any(o.drugs & anticoagulants for o in others) else "antiplatelet"
    )
    names = " and ".join(dict.fromkeys(o.name for o in others))
    evidence = tuple(_medication_line(o, ctx) for o in others)
    card = "anticoagulant" if drug_class == "anticoagulant" else "antiplatelet"
    return card, {"anticoagulant": names, "drug_class": drug_class}, evidence


def _bleeding_risk(order, ctx) -> Found:
    problems: list[str] = []
    evidence: list[str] = []
    for cond in ctx.record.conditions_in(ctx.settings.keys("coagulopathy")):
        problems.append(cond.name)
        evidence.append(cond.label())
    inr_max = float(ctx.settings.value("inr_max"))
    platelets_min = float(ctx.settings.value("platelets_min"))
    inr = _latest(ctx, "inr")
    if inr is not None:
        value = _inr_above(inr, inr_max)
        if value is not None:
            problems.append(f"INR {value} > {fmt(inr_max)}")
            evidence.append(_observation_line(inr))
    platelets = _latest(ctx, "platelets")
    if platelets is not None:
        count = _platelets_below(platelets, platelets_min)
        if count is not None:
            problems.append(f"platelets {count} x10^9/L < {fmt(platelets_min)}")
            evidence.append(_observation_line(platelets))
    if not problems:
        return None
    facts = {
        "bleeding": "; ".join(problems),
        "inr_max": fmt(inr_max),
        "platelets_min": fmt(platelets_min),
    }
    return "bleeding_risk", facts, tuple(evidence)


def _infection(order, ctx) -> Found:
    systemic = ctx.record.conditions_in(ctx.settings.keys("systemic_infection"))
    local = ctx.record.conditions_in(ctx.settings.keys("local_infection"))
    if not systemic and not local:
        return None
    max_age = int(ctx.settings.value("acute_infection_max_age_days"))
    old = {c.ref: since for c in systemic if (since := _active_since(c, ctx.now, max_age))}
    if not local and all(c.ref in old for c in systemic):
        # Every finding is an acute infection "active" for longer than such an infection lasts:
        # most likely never closed on the problem list, so ask rather than block.
        names = " and ".join(dict.fromkeys(c.name for c in systemic))
        since = min(old.values())
        evidence = tuple(f"{c.label()}; active since {old[c.ref]}" for c in systemic)
        facts = {"infection": names, "since": since, "max_age_days": str(max_age)}
        return "infection_old_record", facts, evidence
    where = " and ".join(
        w
        for w, found in (
            ("systemic infection", systemic),
            ("local infection at the access site", local),
        )
        if found
    )
    names = " and ".join(dict.fromkeys(c.name for c in [*systemic, *local]))
    evidence = tuple(c.label() for c in [*systemic, *local])
    return "infection", {"infection": names, "where": where}, evidence


def _active_since(cond, now: datetime, max_age_days: int) -> str | None:
    """The onset (else recorded) date when more than `max_age_days` calendar days ago, else None.

    No usable date: None, so an undated active infection stays critical (never a guess).
    """
    resource = cond.resource
    start = (
        parse_datetime(resource.get("onsetDateTime"))
        or parse_datetime(as_dict(resource.get("onsetPeriod")).get("start"))
        or parse_datetime(resource.get("recordedDate"))
    )
    if start is None:
        return None
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    day = start.astimezone(UTC).date()  # parse_datetime is always aware
    if (now.astimezone(UTC).date() - day).days <= max_age_days:
        return None
    return day.isoformat()


def _spinal_abnormality(order, ctx) -> Found:
    keys = list(ctx.settings.keys("spinal_abnormality"))
    if ctx.settings.value("include_spinal_stenosis"):
        keys += ctx.settings.keys("spinal_stenosis")
    found = ctx.record.conditions_in(keys)
    if not found:
        return None
    names = " and ".join(dict.fromkeys(c.name for c in found))
    return "spinal_abnormality", {"abnormality": names}, tuple(c.label() for c in found)


def _is_new_therapy(order, ctx) -> bool:
    """A draft that starts or continues ITB; a stop or cancel is not an insertion."""
    return order.current


def _pump(ctx) -> bool:
    """Another intrathecal baclofen order is running on record: a pump is already in place.

    Running = active or on-hold (`fhir.status.order_running`): a draft is not a pump in place,
    and EHRs echo the session's own drafts in their search results, so a record order with the id
    of any draft in this session does not count either.
    """
    drafts = {o.ref for o in ctx.record.drafts}
    return any(
        o.intrathecal and o.has(BACLOFEN) and status.order_running(o.status) and o.ref not in drafts
        for o in ctx.record.orders_on_record
    )


def _latest(ctx: RuleContext, name: str) -> Mapping | None:
    """The most recent usable Observation in the rule's value set `name`, within the look-back."""
    return latest_usable(
        ctx.record.observations_in(*ctx.settings.keys(name)),
        ctx.knowledge.terminology,
        ctx.settings.keys(name),
        ctx.now,
        int(ctx.knowledge.data_setting("lab_lookback_days")),
    )


def _inr_above(obs: Mapping, limit: float) -> str | None:
    """The INR as shown when it is above `limit`; None when it is not, or cannot be told."""
    read = quantity(obs.get("valueQuantity"))
    if read is None or normalise_unit(read[1] or "") not in INR_UNITS:
        return None
    value, _unit, comparator = read
    # "<2" or "<=2" could be anything below: never a guess. ">1.5" is above 1.5.
    if comparator in ("<", "<=") or not (value > limit or (comparator == ">" and value >= limit)):
        return None
    return (comparator or "") + fmt(value)


def _platelets_below(obs: Mapping, limit: float) -> str | None:
    """The count in 10^9/L when it is below `limit`; None when not, unknown unit, or unclear."""
    read = quantity(obs.get("valueQuantity"))
    if read is None:
        return None
    value, _unit, comparator = read
    factor = _platelet_factor(obs.get("valueQuantity"))
    if factor is None:
        log.info("%s: %s has a platelet unit we do not know", RULE_ID, ref_of(obs))
        return None
    count = value * factor
    # ">20" could be anything above: never a guess. "<50" is below 50.
    if comparator in (">", ">=") or not (count < limit or (comparator == "<" and count <= limit)):
        return None
    return (comparator or "") + fmt(count)


def _platelet_factor(qty) -> float | None:
    for field in ("code", "unit"):
        unit = text(as_dict(qty).get(field))
        # "x10*9/L": the multiplication sign is written as an x.
        if unit is not None and (factor := PLATELET_UNITS.get(_platelet_unit(unit))) is not None:
            return factor
    return None


def _platelet_unit(unit: str) -> str:
    return normalise_unit(unit).replace("x", "")


def _observation_line(obs: Mapping) -> str:
    """Observation: what (code), value unit, when, status."""
    name = concept_text(obs.get("code")) or "Observation"
    code = next((f"{system_name(s)} {c}" for s, c, _d in codings(obs.get("code")) if s and c), None)
    read = quantity(obs.get("valueQuantity"))
    qty = as_dict(obs.get("valueQuantity"))
    shown = ""
    if read is not None:
        unit = text(qty.get("unit")) or text(qty.get("code")) or ""
        shown = f" = {read[2] or ''}{fmt(read[0])} {unit}".rstrip()
    moment = effective_time(obs)
    when = f", {moment.date().isoformat()}" if moment else ""
    coded = f" ({code})" if code else ""
    return f"Observation: {name}{coded}{shown}{when}, status {obs.get('status')}"


def _medication_line(order, ctx) -> str:
    code = next((f"{system_name(s)} {c}" for s, c, _d in codings(order.concept) if s and c), None)
    coded = f", {code}" if code else ""
    if order.draft:
        state = "another draft order in this session"
    else:
        authored = f", authored {order.authored.date().isoformat()}" if order.authored else ""
        state = f"status {order.status}{authored}"
    return f"MedicationRequest: {order.label()}{coded}, {state}"
