"""The label rules beyond the seeds (issue 13): the edges the fixtures do not reach.

Units and reference ranges of liver tests, both directions of the alpha-2 pair, one card per
problem across rules, intrathecal baclofen and remission for CNS depressants, the opioid and
chain paths of TIZ-TAPER, a text-only tizanidine allergy.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import (
    BACLOFEN_IT,
    LOINC,
    SNOMED,
    TIZANIDINE_4_TAB,
    condition,
    hook_request,
    med_request,
    rule_cards,
)

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
OXYCODONE_5 = ("1049621", "oxycodone hydrochloride 5 MG Oral Tablet")
CLONIDINE_01 = ("884173", "clonidine hydrochloride 0.1 MG Oral Tablet")
VERAPAMIL_80 = ("897683", "verapamil hydrochloride 80 MG Oral Tablet")


def tizanidine(rid: str = "d1", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("dose_mg", 2)
    return med_request(rid, TIZANIDINE_4_TAB, **kwargs)


def active(rid: str, product: tuple[str, str], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("status", "active")
    kwargs.setdefault("dose_mg", None)
    return med_request(rid, product, **kwargs)


def enzyme(code: str, value: float, unit: str, high: float | None = None) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{code}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": "2026-11-01",
        "valueQuantity": {"value": value, "unit": unit, "code": unit},
    }
    if high is not None:
        obs["referenceRange"] = [{"high": {"value": high, "unit": unit, "code": unit}}]
    return obs


@pytest.mark.parametrize(
    ("obs", "fires"),
    [
        (enzyme("1742-6", 2.1, "ukat/L", high=0.6), True),  # 126 U/L > 3 x 36
        (enzyme("1742-6", 1.8, "ukat/L", high=0.6), False),  # exactly 3x
        (enzyme("1920-8", 121, "U/L"), True),  # no range: default upper limit 40
        (enzyme("1920-8", 120, "U/L"), False),
        (enzyme("1920-8", 121, "[IU]/L", high=50), False),  # the lab's own range wins
        (enzyme("1920-8", 500, "mg/dL"), False),  # not an enzyme unit: never a guess
    ],
)
def test_liver_enzymes_units_and_ranges(call, obs, fires):
    cards = rule_cards(call, hook_request([tizanidine()], observations=[obs]), "TIZ-HEPATIC")
    assert [c["indicator"] for c in cards] == (["warning"] if fires else [])


def test_alpha2_agonist_ordered_while_tizanidine_is_current_warns_on_it(call):
    body = hook_request(
        [active("d1", CLONIDINE_01, status="draft")],
        medications=[tizanidine("tiz", status="active")],
    )
    cards = rule_cards(call, body, "TIZ-HYPOTENSION")
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "MedicationRequest/d1" in cards[0]["detail"]


def test_verapamil_is_one_card_from_tiz_cyp1a2_not_also_hypotension(call):
    body = hook_request([tizanidine()], medications=[active("v", VERAPAMIL_80)])
    assert rule_cards(call, body, "TIZ-HYPOTENSION") == []
    assert len(rule_cards(call, body, "TIZ-CYP1A2")) == 1


def test_antihypertensive_ordered_while_tizanidine_is_current_is_silent(call):
    body = hook_request(
        [active("d1", ("314076", "lisinopril 10 MG Oral Tablet"), status="draft")],
        medications=[tizanidine("tiz", status="active")],
    )
    assert rule_cards(call, body, "TIZ-HYPOTENSION") == []


def test_intrathecal_baclofen_is_out_of_cns_depressant_scope(call):
    itb = med_request("d1", BACLOFEN_IT, dose_mg=0.05, per_day=1, route="intrathecal")
    body = hook_request([itb], medications=[active("o", OXYCODONE_5)])
    assert rule_cards(call, body, "CNS-DEPRESSANT") == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ((ICD10, "F10.20", "Alcohol dependence, uncomplicated"), ["info"]),
        ((ICD10, "F10.21", "Alcohol dependence, in remission"), []),
        ((SNOMED, "15167005", "Alcohol abuse"), ["info"]),
    ],
)
def test_alcohol_use_disorder_counts_unless_in_remission(call, code, expected):
    body = hook_request([med_request("d1", dose_mg=5)], conditions=[condition("c", code)])
    assert [c["indicator"] for c in rule_cards(call, body, "CNS-DEPRESSANT")] == expected


def test_alcohol_use_disorder_and_an_opioid_are_two_kinds(call):
    body = hook_request(
        [med_request("d1", dose_mg=5)],
        medications=[active("o", OXYCODONE_5)],
        conditions=[condition("c", (SNOMED, "66590003", "Alcohol dependence"))],
    )
    assert [c["indicator"] for c in rule_cards(call, body, "CNS-DEPRESSANT")] == ["warning"]


def stop(rid: str, **kwargs: Any) -> dict[str, Any]:
    return tizanidine(rid, status="stopped", **kwargs)


def test_taper_low_dose_with_an_opioid_warns(call):
    old = tizanidine("tiz", status="active", authoredOn="2026-11-01")  # 6 mg/day, 3 weeks
    body = hook_request(
        [stop("tiz", authoredOn="2026-11-01")],
        hook="order-sign",
        medications=[old, active("o", OXYCODONE_5)],
    )
    cards = rule_cards(call, body, "TIZ-TAPER")
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "opioid" in cards[0]["detail"]


def test_taper_without_authored_date_cannot_tell_long_use(call):
    old = tizanidine("tiz", status="active", dose_mg=8)
    old.pop("authoredOn")
    body = hook_request([stop("tiz", dose_mg=8)], hook="order-sign", medications=[old])
    assert rule_cards(call, body, "TIZ-TAPER") == []


def test_taper_duration_follows_the_prior_prescription_chain(call):
    first = tizanidine("tiz-1", status="completed", dose_mg=8, authoredOn="2026-03-01")
    renewal = tizanidine(
        "tiz-2",
        status="active",
        dose_mg=8,
        authoredOn="2026-11-01",
        priorPrescription={"reference": "MedicationRequest/tiz-1"},
    )
    body = hook_request([stop("tiz-2", dose_mg=8)], hook="order-sign", medications=[first, renewal])
    cards = rule_cards(call, body, "TIZ-TAPER")
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "2026-03-01" in cards[0]["detail"]


def test_text_only_tizanidine_allergy_by_brand(call):
    allergy = {
        "resourceType": "AllergyIntolerance",
        "id": "a1",
        "patient": {"reference": "Patient/pat-1"},
        "code": {"text": "Zanaflex"},
        "criticality": "high",
    }
    body = hook_request([tizanidine()], allergies=[allergy])
    assert [c["indicator"] for c in rule_cards(call, body, "TIZ-ALLERGY")] == ["critical"]


@pytest.mark.parametrize(
    ("name", "route", "expected"),
    [
        ("fentanyl 0.025 MG/HR Transdermal System", None, True),
        ("etonogestrel 0.12 MG/DAY / ethinyl estradiol 0.015 MG/DAY Vaginal Ring", None, True),
        ("acyclovir 50 MG/ML Topical Cream", None, False),
        ("moxifloxacin 5 MG/ML Ophthalmic Solution", None, False),
        ("clindamycin 20 MG/ML Vaginal Cream", None, False),
        ("acyclovir", ("6064005", "Topical route"), False),
        ("acyclovir", ("26643006", "Oral route"), True),
    ],
)
def test_systemic_exposure_reads_form_and_route(knowledge, name, route, expected):
    from cds_hooks.record import MedOrder
    from cds_hooks.rules.common import systemic

    resource: dict[str, Any] = {"resourceType": "MedicationRequest", "status": "active"}
    if route:
        resource["dosageInstruction"] = [
            {"route": {"coding": [{"system": SNOMED, "code": route[0], "display": route[1]}]}}
        ]
    order = MedOrder(
        ref="MedicationRequest/x",
        resource=resource,
        status="active",
        drugs=frozenset(),
        name=name,
        by_text=True,
        intrathecal=False,
        draft=False,
        selected=False,
        concept={"text": name},
        authored=None,
        requester=None,
    )
    assert systemic(order, knowledge) is expected
