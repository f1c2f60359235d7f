"""What several rules read the same way: an order's daily dose, kidney function, prior therapy.

Pure helpers over the record; the clinical engines are in `cds_hooks/clinical/`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from cds_hooks import suggestions
from cds_hooks.cards import Suggestion
from cds_hooks.clinical.dose import Dose, DoseUnknown
from cds_hooks.clinical.renal import RenalFunction, renal_function
from cds_hooks.fhir import status
from cds_hooks.fhir.read import codings, concept_text, parse_datetime, ref_of, reference
from cds_hooks.record import MedOrder
from cds_hooks.rules.context import RuleContext

log = logging.getLogger(__name__)


def order_dose(order: MedOrder) -> Dose | DoseUnknown:
    """The order's daily dose (`MedOrder.dose`: computed once per call)."""
    return order.dose


def known_doses(orders: Iterable[MedOrder]) -> tuple[list[tuple[MedOrder, Dose]], list[MedOrder]]:
    """(order, dose) pairs that could be computed, and the orders that could not."""
    known, unknown = [], []
    for order in orders:
        dose = order_dose(order)
        if isinstance(dose, Dose):
            known.append((order, dose))
        else:
            unknown.append(order)
    return known, unknown


def kidney_function(ctx: RuleContext) -> RenalFunction | None:
    """The patient's latest kidney function, by the look-backs in common.json (once per call)."""
    knowledge = ctx.knowledge
    return ctx.record.memo(
        "kidney_function",
        lambda: renal_function(
            ctx.record.observation_index or ctx.record.observations,
            [c.resource for c in ctx.record.conditions],
            ctx.record.patient,
            knowledge.terminology,
            ctx.now,
            lookback_days=int(knowledge.data_setting("renal_lookback_days")),
            cockcroft_gault_max_age_days=int(
                knowledge.data_setting("cockcroft_gault_max_age_days")
            ),
            cockcroft_gault_min_age_years=int(
                knowledge.data_setting("cockcroft_gault_min_age_years")
            ),
        ),
    )


def prior_orders(ctx, *keys: str) -> list[MedOrder]:
    """Orders for these drugs on record in any status (a past trial counts).

    A record order with a target's id is that order's earlier version (a re-sign), so it counts;
    only the target itself, when the EHR already stores it as a draft, does not.
    """
    targets = {o.ref for o in ctx.record.targets}
    return [
        o
        for o in ctx.record.orders_on_record
        if o.has(*keys)
        and status.order_on_record(o.status)
        and not (o.ref in targets and o.status == "draft")
    ]


def new_therapy(ctx, *keys: str) -> list[MedOrder]:
    """The targeted orders of these drugs that stay current: a stop or cancel is not new therapy."""
    current = {o.ref for o in ctx.current}
    return [o for o in ctx.targets(*keys) if o.ref in current]


def interacting(ctx, order: MedOrder, *keys: str) -> list[MedOrder]:
    """Other current orders of these drugs beside `order` (record or this session's drafts),
    counted only when they reach the circulation (`systemic`)."""
    return [
        o for o in ctx.current if o.ref != order.ref and o.has(*keys) and systemic(o, ctx.knowledge)
    ]


def recorded_allergies(ctx, allergen: Iterable[str]) -> list[Mapping[str, Any]]:
    """AllergyIntolerances to these drug keys (coded, or named in text) that still stand
    (fhir.status.allergy_present: not inactive/resolved, refuted or entered in error)."""
    wanted = set(allergen)
    terminology = ctx.knowledge.terminology
    found = []
    for allergy in ctx.record.allergies:
        if not status.allergy_present(allergy):
            continue
        code = allergy.get("code")
        keys = terminology.keys_for_concept(code) or terminology.keys_for_text(concept_text(code))
        if keys & wanted:
            found.append(allergy)
    return found


def is_intolerance(allergy: Mapping[str, Any]) -> bool:
    """An intolerance (type intolerance, or low criticality) rather than a true allergy."""
    return allergy.get("type") == "intolerance" or allergy.get("criticality") == "low"


def describe_allergy(allergy: Mapping[str, Any], default: str) -> str:
    name = concept_text(allergy.get("code")) or default
    when = parse_datetime(allergy.get("recordedDate") or allergy.get("onsetDateTime"))
    parts = [name, ref_of(allergy) or "", when.date().isoformat() if when else ""]
    criticality = allergy.get("criticality")
    if isinstance(criticality, str):
        parts.append(f"criticality {criticality}")
    return ", ".join(p for p in parts if p)


def systemic(order: MedOrder, knowledge) -> bool:
    """Whether the order reaches the circulation (clinical-rules.md, Round 2: systemic exposure).

    Interaction and contraindication rules about a drug's blood levels or effects count only
    oral, parenteral and systemic transdermal forms. An order is local, not systemic, when its
    product name, a coding display, or its dosageInstruction.route names a local form (topical
    skin, eye, ear, local vaginal preparations: the `local_form_words` of common.json). A
    transdermal system and a vaginal ring stay systemic.
    """
    words = [w.lower() for w in knowledge.data_setting("local_form_words")]
    names = [order.name, *(display for _s, _c, display in codings(order.concept) if display)]
    for dosage in order.resource.get("dosageInstruction") or ():
        route = dosage.get("route") if isinstance(dosage, Mapping) else None
        if isinstance(route, Mapping):
            names.append(concept_text(route) or "")
            names.extend(display for _s, _c, display in codings(route) if display)
    return not any(word in name.lower() for name in names for word in words)


def creatinine_test(ctx) -> tuple[str, str, str]:
    """(system, code, display) of the kidney test a rule suggests: its `crcl_order_code`
    setting, found in its `crcl_order` value sets (clinical-rules.md Round 2: lab suggestion)."""
    code = str(ctx.settings.value("crcl_order_code"))
    for key in ctx.settings.keys("crcl_order"):
        for row in ctx.knowledge.terminology.codes(key):
            if row[1] == code:
                return row
    raise KeyError(f"crcl_order_code {code} is not in the crcl_order value sets")


def creatinine_test_name(ctx) -> str:
    _system, code, display = creatinine_test(ctx)
    return f"{display}, LOINC {code}"


def creatinine_order(ctx, order: MedOrder) -> Suggestion | None:
    """A draft ServiceRequest for that test, for the order's patient."""
    subject = reference(order.resource.get("subject")) or ref_of(ctx.record.patient or {})
    if not subject:
        return None
    system, code, display = creatinine_test(ctx)
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": subject},
    }
    return suggestions.create(resource, f"Order: {display}", "order_crcl", recommended=True)
