"""BAC-PREGNANCY: baclofen for a patient who appears to be pregnant.

When baclofen is ordered and the record shows an active pregnancy condition, or a recent
observation saying so (pregnancy status "pregnant", or a positive pregnancy test), then warn:
avoid baclofen when pregnant or planning pregnancy, it may harm an unborn baby [P].
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.fhir.read import codings, concept_text, effective_time, ref_of, text

RULE_ID = "BAC-PREGNANCY"
NEEDS = ("conditions", "observations")
TRIGGERS = ("drug/baclofen",)


def evaluate(ctx) -> Iterator[Finding]:
    evidence = [c.label() for c in ctx.record.conditions_in(ctx.settings.keys("condition"))]
    kind = "active pregnancy condition" if evidence else "pregnancy observation"
    evidence += list(_observations(ctx))
    if not evidence:
        return
    for order in ctx.targets("drug/baclofen"):
        yield Finding(
            RULE_ID,
            "pregnant",
            order.ref,
            {"order": order.label(), "evidence_kind": kind},
            (f"Order: {order.label()}", *evidence),
            (suggestions.cancel(order),),
        )


def _observations(ctx) -> Iterator[str]:
    settings = ctx.settings
    (status_key,) = settings.keys("status_observation")
    (test_key,) = settings.keys("test_observation")
    terminology = ctx.knowledge.terminology
    usable = ctx.knowledge.data_setting("usable_observation_statuses")
    oldest = ctx.now - timedelta(days=float(settings.value("observation_max_age_days")))
    pregnant = {a.lower() for a in settings.value("pregnant_answers")}
    positive = {a.lower() for a in settings.value("positive_answers")}
    for obs in ctx.record.observations:
        when = effective_time(obs)
        if obs.get("status") not in usable or when is None or when < oldest:
            continue
        code = obs.get("code")
        if terminology.in_valueset(code, status_key):
            answers = pregnant
        elif terminology.in_valueset(code, test_key):
            answers = positive
        else:
            continue
        if _answers(obs) & answers:
            value = concept_text(obs.get("valueCodeableConcept")) or text(obs.get("valueString"))
            yield f"Observation: {concept_text(code)} = {value} ({ref_of(obs)}, {when.date()})"


def _answers(obs) -> set[str]:
    """Codes and words an observation answers with: value, interpretation, or text."""
    found = {c.lower() for _s, c, _d in codings(obs.get("valueCodeableConcept")) if c}
    for interpretation in obs.get("interpretation") or []:
        found |= {c.lower() for _s, c, _d in codings(interpretation) if c}
    if value := text(obs.get("valueString")):
        found.add(value.strip().lower())
    return found
