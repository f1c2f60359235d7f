"""What a FHIR status says: is this condition present, this observation usable, this order current.

Every reader of a status asks here (the record, the clinical engines, the rules), so two places
can never disagree about whether, say, a condition with no clinicalStatus counts.

Decision: the status lists are FHIR meaning, so they live in this module and not in the
knowledge files. Each list reads a code system the FHIR specification defines (condition-clinical,
condition-ver-status, allergyintolerance-clinical, observation-status, medicationrequest-status);
what "refuted", "entered-in-error", "on-hold" or "preliminary" means is fixed by those definitions,
it does not depend on a drug, a label or a guideline, and no clinical review of a rule would
change it. The one clinical choice among them (preliminary results count, because a low
preliminary kidney value is worth a warning) is the project's reading of the data, stated once
in clinical-rules.md "Patient data used" and tested, not a per-rule threshold; keeping it beside
the other statuses keeps "usable" one meaning. Thresholds, look-backs and wording stay knowledge.

Statuses are read tolerantly: a CodeableConcept (R4) or a plain code (STU3), compared exactly (FHIR
codes are case-sensitive); anything else reads as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_hooks.fhir.read import codings, text

# Condition.clinicalStatus (http://terminology.hl7.org/CodeSystem/condition-clinical): the codes
# that mean the condition is there now. inactive, remission and resolved do not.
CONDITION_PRESENT = frozenset({"active", "recurrence", "relapse"})
# A chronic disease in remission is still there (clinical-rules.md Round 2: "An indication is
# present while the disease is"): for such a condition remission counts too.
CHRONIC_CONDITION_PRESENT = CONDITION_PRESENT | {"remission"}
# verificationStatus (condition-ver-status, allergyintolerance-verification): the codes that say
# the record is wrong. unconfirmed, provisional, differential and confirmed still count.
VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})
# AllergyIntolerance.clinicalStatus (allergyintolerance-clinical): no longer a concern.
ALLERGY_NOT_PRESENT = frozenset({"inactive", "resolved"})
# Observation.status (observation-status): results a clinician may act on. registered has no
# result yet; cancelled, entered-in-error and unknown are not results.
OBSERVATION_USABLE = frozenset({"final", "amended", "corrected", "preliminary"})
# MedicationRequest.status (medicationrequest-status): current therapy, as amended by the session.
# on-hold is paused, not ended; a draft is therapy being ordered.
ORDER_CURRENT = frozenset({"active", "on-hold", "draft"})
# A draft in one of these statuses stops the record order it revises.
ORDER_STOPPING = frozenset({"stopped", "cancelled"})
# An order that is being taken right now (on hold is paused, a draft not yet started).
ORDER_TAKEN = "active"


def code(resource: Mapping[str, Any], field: str) -> str | None:
    """The status code of `field`: a CodeableConcept's first code, or a plain (STU3) code."""
    value = resource.get(field)
    if isinstance(value, str):
        return text(value)
    for _system, found, _display in codings(value):
        if found:
            return found
    return None


def condition_present(condition: Mapping[str, Any], *, chronic: bool = False) -> bool:
    """A Condition the patient has: clinicalStatus active/recurrence/relapse (and remission for
    a `chronic` disease), or none and not abated; never one whose verificationStatus is refuted
    or entered-in-error."""
    if code(condition, "verificationStatus") in VERIFICATION_EXCLUDED:
        return False
    clinical = code(condition, "clinicalStatus")
    if clinical is None:
        # No status but an abatement (a date, an age, "abatementBoolean": true): it has ended.
        return not any(
            key.startswith("abatement") and value not in (None, False, "")
            for key, value in condition.items()
        )
    return clinical in (CHRONIC_CONDITION_PRESENT if chronic else CONDITION_PRESENT)


def allergy_present(allergy: Mapping[str, Any]) -> bool:
    """An AllergyIntolerance still of concern: not inactive/resolved, not refuted/in error."""
    if code(allergy, "verificationStatus") in VERIFICATION_EXCLUDED:
        return False
    return code(allergy, "clinicalStatus") not in ALLERGY_NOT_PRESENT


def observation_usable(observation: Mapping[str, Any]) -> bool:
    """An Observation whose result may be acted on (final, amended, corrected, preliminary)."""
    return code(observation, "status") in OBSERVATION_USABLE


def order_current(status: str | None, *, draft: bool = False) -> bool:
    """A MedicationRequest status that is current therapy; a draft order may omit its status."""
    if status is None:
        return draft
    return status in ORDER_CURRENT


def order_stopping(status: str | None) -> bool:
    """A draft status that stops the order it revises (stopped, cancelled)."""
    return status in ORDER_STOPPING


def order_running(status: str | None) -> bool:
    """A record order that is in place (active or on-hold): current, and not a draft."""
    return status in ORDER_CURRENT and status != "draft"


def order_taken(status: str | None) -> bool:
    """A record order the patient takes now (active: on hold is paused)."""
    return status == ORDER_TAKEN


def order_on_record(status: str | None) -> bool:
    """An order that happened, in any status (a past trial counts), unless entered in error."""
    return status != "entered-in-error"
