"""The patient record as the rules see it: resources indexed once per request, orders normalised.

Built from the hook's draft orders and the resolved prefetch/fetched data. FHIR stays plain
dicts (docs/conventions.md); each MedicationRequest is read once into a `MedOrder` that knows
its drug keys, route and name, so rules never re-parse codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from cds_hooks.clinical.dose import Dose, DoseUnknown, daily_dose, strength_from_text
from cds_hooks.clinical.labs import ObservationIndex
from cds_hooks.fhir import status
from cds_hooks.fhir.read import (
    as_dict,
    as_list,
    bundle_resources,
    codings,
    concept_text,
    effective_time,
    parse_datetime,
    ref_of,
    reference,
    text,
)
from cds_hooks.knowledge import Knowledge
from cds_hooks.services import Service
from cds_hooks.terminology import system_name

log = logging.getLogger(__name__)

T = TypeVar("T")

INTRATHECAL_KEY = "drug/baclofen-intrathecal"


@dataclass(frozen=True)
class MedOrder:
    """A MedicationRequest, read once."""

    ref: str
    resource: Mapping[str, Any]
    status: str | None
    drugs: frozenset[str]
    name: str
    by_text: bool
    intrathecal: bool
    draft: bool
    selected: bool
    concept: Mapping[str, Any]
    authored: datetime | None
    requester: str | None
    # False when nothing names the drug: no code, no text, and a medicationReference that could
    # not be resolved and has no display. Such an order is named on the degraded card.
    identified: bool = True

    def has(self, *keys: str) -> bool:
        return any(k in self.drugs for k in keys)

    @cached_property
    def dose(self) -> Dose | DoseUnknown:
        """The daily dose, worked out once per call however many rules ask; tablets and mL are
        converted with the strength in the drug's name or a coding's display."""
        names = [self.name, *(display for _s, _c, display in codings(self.concept) if display)]
        strength = next((s for s in map(strength_from_text, names) if s), None)
        dose = daily_dose(self.resource, strength)
        if isinstance(dose, DoseUnknown):
            log.info("no daily dose for %s: %s", self.ref, dose.reason)
        return dose

    @cached_property
    def replaces(self) -> tuple[str, ...]:
        """The record orders this draft changes, in every way an EHR writes a change: its own id
        (a revision or a stop) and the order it names as `priorPrescription` (a new order for a
        changed dose). A stop of one order beside a new order is two drafts, each seen here."""
        refs = [self.ref]
        if prior := reference(self.resource.get("priorPrescription")):
            refs.append("/".join(prior.rstrip("/").split("/")[-2:]))
        return tuple(refs)

    @property
    def current(self) -> bool:
        """Current therapy by its status (a draft may omit the status): `fhir.status`."""
        return status.order_current(self.status, draft=self.draft)

    def state(self) -> str:
        """Where this order stands, for a card's evidence."""
        if self.draft:
            return "this order" if self.selected else "another draft order in this session"
        authored = f", authored {self.authored.date().isoformat()}" if self.authored else ""
        return f"status {self.status}{authored}"

    def label(self) -> str:
        """How a card names this order: what and which."""
        how = " (identified by name only)" if self.by_text else ""
        return f"{self.name} ({self.ref}){how}"


@dataclass(frozen=True)
class Condition:
    """A Condition, read once: its value-set keys, name and date."""

    ref: str
    resource: Mapping[str, Any]
    keys: frozenset[str]
    name: str
    when: datetime | None
    # Known only by its text: no coding in any value set, keys read from the name.
    by_text: bool = False

    def label(self) -> str:
        code = next(
            (f"{system_name(s)} {c}" for s, c, _ in codings(self.resource.get("code")) if s and c),
            None,
        )
        when = f", recorded {self.when.date().isoformat()}" if self.when else ""
        how = " (read from its text)" if self.by_text else ""
        return f"Condition: {self.name}{how}" + (f" ({code}{when})" if code else when)


@dataclass
class PatientRecord:
    hook: str
    patient: Mapping[str, Any] | None
    conditions: list[Condition]
    drafts: list[MedOrder]
    orders_on_record: list[MedOrder]  # in any status, current and past (not the drafts)
    observations: list[Mapping[str, Any]]  # only those coded in a value set (ObservationIndex)
    allergies: list[Mapping[str, Any]]
    unavailable: dict[str, str] = field(default_factory=dict)
    condition_index: dict[str, Condition] = field(default_factory=dict)
    # The same observations by value set (build_record builds both from one pass).
    observation_index: ObservationIndex | None = None
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def targets(self) -> list[MedOrder]:
        return [o for o in self.drafts if o.selected]

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` once per record, so once per call, however many rules ask (the record
        and the time of a call do not change while its rules run)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def current(self) -> list[MedOrder]:
        """Current therapy: record orders in a current status, as amended by this call's drafts.

        A draft replaces the record order with its id (a revision or a stop) and the one it names
        as `priorPrescription` (a new order for a changed dose), so neither is counted twice.
        Computed once per record; each caller gets its own list.
        """
        return list(self.memo("current", self._current))

    def _current(self) -> list[MedOrder]:
        replaced = {ref for draft in self.drafts for ref in draft.replaces}
        kept = [o for o in self.orders_on_record if o.ref not in replaced and o.current]
        return kept + [o for o in self.drafts if o.current]

    def unidentified(self) -> list[MedOrder]:
        """Current therapy and this call's drafts whose drug nothing identifies."""
        found = {o.ref: o for o in [*self.current(), *self.drafts] if not o.identified}
        return list(found.values())

    def observations_in(self, *keys: str) -> list[Mapping[str, Any]]:
        """The observations whose code or a component's code is in one of the value sets `keys`,
        in record order: the candidates a reader still matches (`ObservationIndex.coded_in`)."""
        if self.observation_index is None:
            return list(self.observations)  # a record built by hand: every one is a candidate
        return self.observation_index.coded_in(*keys)

    def conditions_in(self, keys: Iterable[str], *, chronic: bool = False) -> list[Condition]:
        """Present conditions in these value sets; `chronic`: a disease in remission counts."""
        wanted = set(keys)
        if not chronic:
            return [c for c in self.conditions if c.keys & wanted]
        return [
            c
            for c in self.condition_index.values()
            if c.keys & wanted and status.condition_present(c.resource, chronic=True)
        ]


def build_drafts(
    service: Service,
    context: Mapping[str, Any],
    resources: Mapping[str, list],
    medications: Mapping[str, Mapping],
    knowledge: Knowledge,
) -> list[MedOrder]:
    """The hook's draft orders, read once (the pipeline's fast exit needs only these)."""
    draft_resources = bundle_resources(context.get(service.drafts_field))
    # Only a medicationReference is looked up; the scan of the whole record is skipped without.
    referenced = any(r.get("medicationReference") is not None for r in draft_resources)
    meds = _medications(draft_resources, _on_record(resources), medications) if referenced else {}
    selections = set(as_list(context.get("selections")))
    return [
        _med_order(
            r,
            meds,
            knowledge,
            draft=True,
            selected=not service.targets_selections or ref_of(r) in selections,
            user=text(context.get("userId")),
        )
        for r in draft_resources
        if r.get("resourceType") == "MedicationRequest"
    ]


def build_record(
    service: Service,
    context: Mapping[str, Any],
    resources: Mapping[str, list],
    medications: Mapping[str, Mapping],
    unavailable: Mapping[str, str],
    knowledge: Knowledge,
    drafts: list[MedOrder] | None = None,
) -> PatientRecord:
    """Index the request's drafts (unless given, from `build_drafts`) and the patient's data."""
    if drafts is None:
        drafts = build_drafts(service, context, resources, medications, knowledge)
    by_type = _by_type(resources)
    meds = _medications(
        bundle_resources(context.get(service.drafts_field)),
        {ref_of(m) or str(id(m)): m for m in by_type.get("Medication", {}).values()},
        medications,
    )
    on_record = [
        _med_order(r, meds, knowledge, draft=False, selected=False)
        for r in by_type.get("MedicationRequest", {}).values()
    ]
    all_conditions = [_cond(r, knowledge) for r in by_type.get("Condition", {}).values()]
    patients = list(by_type.get("Patient", {}).values())
    observations = ObservationIndex(by_type.get("Observation", {}).values(), knowledge.terminology)
    return PatientRecord(
        hook=service.hook,
        patient=patients[0] if patients else None,
        conditions=[c for c in all_conditions if status.condition_present(c.resource)],
        drafts=drafts,
        orders_on_record=on_record,
        observations=observations.observations,
        allergies=list(by_type.get("AllergyIntolerance", {}).values()),
        unavailable=dict(unavailable),
        condition_index={c.ref: c for c in all_conditions},
        observation_index=observations,
    )


def _by_type(resources: Mapping[str, list]) -> dict[Any, dict[Any, Mapping]]:
    """The record's resources by resourceType as sent, then id: the last one of an id (as
    `ref_of` reads it), each one without an id by itself. This visits every resource of the
    record, so it builds no string per resource."""
    by_type: dict[Any, dict[Any, Mapping]] = {}
    for key_resources in resources.values():
        for res in key_resources:
            if isinstance(res, dict):
                rtype, rid = res.get("resourceType"), res.get("id")
                group = by_type.get(rtype)
                if group is None:
                    group = by_type[rtype] = {}
                identified = type(rid) is str and rid and type(rtype) is str
                group[rid if identified else id(res)] = res
    return by_type


def _on_record(resources: Mapping[str, list]) -> dict[str, Mapping]:
    """The record's Medications as `_by_type` keeps them, without indexing the rest."""
    return {
        ref_of(res) or str(id(res)): res
        for key_resources in resources.values()
        for res in key_resources
        if isinstance(res, dict) and res.get("resourceType") == "Medication"
    }


def _medications(
    draft_resources: Iterable[Mapping],
    on_record: Mapping[str, Mapping],
    medications: Mapping[str, Mapping],
) -> dict[str, Mapping]:
    """Medication resources by reference: the resolver's, then the drafts' bundle's, then the
    record's (`on_record`: the first source that has a reference wins)."""
    meds = dict(medications)
    for res in draft_resources:
        ref = ref_of(res)
        if res.get("resourceType") == "Medication" and ref:
            meds.setdefault(ref, res)
    for ref, med in on_record.items():
        meds.setdefault(ref, med)
    return meds


def _med_order(
    resource: Mapping,
    meds: Mapping[str, Mapping],
    knowledge: Knowledge,
    *,
    draft: bool,
    selected: bool,
    user: str | None = None,
) -> MedOrder:
    terminology = knowledge.terminology
    concept, ref_display = _medication_concept(resource, meds)
    drugs = terminology.keys_for_concept(concept)
    for ingredient in _ingredients(resource, meds):
        drugs |= terminology.keys_for_concept(ingredient)
    named = concept_text(concept)
    identified = bool(drugs or named or ref_display or _coded(concept))
    name = named or ref_display or _unidentified_name(resource)
    by_text = False
    # Name matching only for an order with no recognised coding (Round 2): a code found in a
    # drug group alone (an eCQM antihypertensive) is recognised, and so is a product the clinical
    # review took out of a value set (a heparin flush): curation wins over the name.
    if not drugs and not terminology.curated_out(concept):
        drugs = terminology.keys_for_text(name)
        by_text = bool(drugs)
    return MedOrder(
        ref=ref_of(resource) or f"MedicationRequest/{id(resource)}",
        resource=resource,
        status=text(resource.get("status")),
        drugs=drugs,
        name=name,
        by_text=by_text,
        intrathecal=_intrathecal(resource, drugs, name, knowledge),
        draft=draft,
        selected=selected,
        concept=concept,
        authored=parse_datetime(resource.get("authoredOn")),
        # A draft without requester is being ordered by the hook's user (context.userId).
        requester=reference(resource.get("requester")) or user,
        identified=identified,
    )


def _coded(concept: Mapping) -> bool:
    return any(code for _system, code, _display in codings(concept))


def _unidentified_name(resource: Mapping) -> str:
    """How a card names a drug nothing identifies: by the reference it could not follow."""
    ref = reference(resource.get("medicationReference"))
    return f"unidentified medication ({ref})" if ref else "unidentified medication"


def _medication_concept(resource: Mapping, meds: Mapping[str, Mapping]) -> tuple[dict, str | None]:
    """The medication's CodeableConcept, following medicationReference when it must."""
    if concept := as_dict(resource.get("medicationCodeableConcept")):
        return concept, None
    med_ref = as_dict(resource.get("medicationReference"))
    medication = _referenced_medication(resource, reference(med_ref), meds)
    return as_dict(medication.get("code")), text(med_ref.get("display"))


def _referenced_medication(resource: Mapping, ref: str | None, meds: Mapping) -> Mapping:
    if not ref:
        return {}
    if ref.startswith("#"):
        return next(
            (
                c
                for c in as_list(resource.get("contained"))
                if isinstance(c, dict) and c.get("id") == ref[1:]
            ),
            {},
        )
    # Absolute references on the EHR's server end in the same `Medication/<id>`.
    tail = "/".join(ref.rstrip("/").split("/")[-2:])
    return as_dict(meds.get(ref) or meds.get(tail))


def _ingredients(resource: Mapping, meds: Mapping) -> Iterable[Mapping]:
    medication = _referenced_medication(
        resource, reference(resource.get("medicationReference")), meds
    )
    for item in as_list(medication.get("ingredient")):
        if concept := as_dict(as_dict(item).get("itemCodeableConcept")):
            yield concept


def _intrathecal(resource: Mapping, drugs: frozenset[str], name: str, knowledge: Knowledge) -> bool:
    """Intrathecal by product (an injection: RxNorm has no intrathecal dose form) or by route."""
    if INTRATHECAL_KEY in drugs:
        return True
    for dosage in as_list(resource.get("dosageInstruction")):
        route = as_dict(dosage).get("route") if isinstance(dosage, dict) else None
        if knowledge.terminology.in_valueset(route, "route/intrathecal"):
            return True
        if "intrathecal" in (concept_text(route) or "").lower():
            return True
    return "intrathecal" in name.lower()


def _cond(resource: Mapping, knowledge: Knowledge) -> Condition:
    """A Condition by its codes; one with no coding in any value set by its text (names kept
    with the value sets: `Terminology.keys_for_condition_text`)."""
    terminology = knowledge.terminology
    code = resource.get("code")
    keys = terminology.keys_for_concept(code)
    by_text = False
    if not keys:
        keys = terminology.keys_for_condition_text(concept_text(code))
        by_text = bool(keys)
    return Condition(
        ref=ref_of(resource) or f"Condition/{id(resource)}",
        resource=resource,
        keys=keys,
        name=concept_text(code) or "unnamed condition",
        when=effective_time(resource),
        by_text=by_text,
    )
