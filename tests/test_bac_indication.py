"""BAC-INDICATION at both sides of each condition."""

from __future__ import annotations

import pytest

from tests.factories import (
    BACLOFEN_10_TAB,
    BACLOFEN_IT,
    CEREBRAL_PALSY,
    MS,
    MS_ICD,
    PARKINSONS,
    SNOMED,
    SPINAL_CORD_INJURY,
    STROKE,
    condition,
    hook_request,
    med_request,
    rules_of,
)

RA = (SNOMED, "69896004", "Rheumatoid arthritis")


def indication_cards(call, body):
    status, answer = call(body)
    assert status == 200
    return [c for c in answer["cards"] if c["source"]["topic"]["code"] == "BAC-INDICATION"]


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([condition("c1", STROKE)], ["warning"]),
        ([condition("c1", CEREBRAL_PALSY)], ["warning"]),
        ([condition("c1", PARKINSONS)], ["warning"]),
        ([condition("c1", RA)], ["warning"]),
        ([condition("c1", MS)], []),
        ([condition("c1", MS_ICD)], []),
        ([condition("c1", SPINAL_CORD_INJURY)], []),
        ([condition("c1", MS), condition("c2", STROKE)], []),
        ([condition("c1", STROKE, clinical="resolved")], ["info"]),
        ([condition("c1", STROKE, verification="refuted")], ["info"]),
        ([condition("c1", STROKE, verification="entered-in-error")], ["info"]),
        ([condition("c1", STROKE, clinical=None)], ["warning"]),
        ([condition("c1", STROKE, clinical="recurrence")], ["warning"]),
        ([condition("c1", MS, clinical="inactive"), condition("c2", STROKE)], ["warning"]),
        ([], ["info"]),
    ],
)
def test_condition_on_record(call, conditions, expected):
    cards = indication_cards(call, hook_request([med_request("d1")], conditions=conditions))
    assert [c["indicator"] for c in cards] == expected


def test_off_label_reason_on_the_order_warns_even_with_ms_on_record(call):
    order = med_request("d1", reason=STROKE)
    cards = indication_cards(call, hook_request([order], conditions=[condition("c1", MS)]))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "Order reason: Cerebrovascular accident" in cards[0]["detail"]


def test_labelled_reason_on_the_order_is_quiet_despite_stroke_on_record(call):
    order = med_request("d1", reason=MS)
    assert indication_cards(call, hook_request([order], conditions=[condition("c1", STROKE)])) == []


def test_reason_reference_is_followed(call):
    order = med_request("d1", reasonReference=[{"reference": "Condition/c1"}])
    body = hook_request([order], conditions=[condition("c1", PARKINSONS), condition("c2", MS)])
    cards = indication_cards(call, body)
    assert [c["indicator"] for c in cards] == ["warning"]


def test_no_info_card_when_the_order_gives_an_unrelated_reason(call):
    order = med_request("d1", reason=(SNOMED, "22253000", "Pain"))
    assert indication_cards(call, hook_request([order])) == []


@pytest.mark.parametrize(
    "drug",
    [BACLOFEN_IT, BACLOFEN_10_TAB],
    ids=["intrathecal-product", "oral-product-intrathecal-route"],
)
def test_intrathecal_order_for_cerebral_palsy_gets_no_indication_card(call, drug):
    """ITB's label covers spasticity of cerebral origin; the route makes an order ITB too."""
    order = med_request("d1", drug, dose_mg=0.1, per_day=1, route="intrathecal")
    body = hook_request([order], conditions=[condition("c1", CEREBRAL_PALSY)])
    assert indication_cards(call, body) == []


def test_text_only_medication_is_matched_and_says_so(call):
    order = med_request("d1", None, text="Baclofen 10 mg tablet")
    cards = indication_cards(call, hook_request([order], conditions=[condition("c1", STROKE)]))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "identified by name only" in cards[0]["detail"]


def test_medication_reference_resolved_from_prefetch_include(call):
    medication = {
        "resourceType": "Medication",
        "id": "med-bac",
        "code": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "197391",
                    "display": "baclofen 10 MG Oral Tablet",
                }
            ]
        },
    }
    order = med_request("d1", None, medicationReference={"reference": "Medication/med-bac"})
    body = hook_request([order], conditions=[condition("c1", RA)])
    body["prefetch"]["medications"]["entry"].append(
        {"resource": medication, "search": {"mode": "include"}}
    )
    assert [c["indicator"] for c in indication_cards(call, body)] == ["warning"]


def test_contained_medication_is_resolved(call):
    medication = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197391"}]
        },
    }
    order = med_request(
        "d1", None, contained=[medication], medicationReference={"reference": "#m1"}
    )
    body = hook_request([order], conditions=[condition("c1", STROKE)])
    assert [c["indicator"] for c in indication_cards(call, body)] == ["warning"]


def test_order_select_targets_only_the_selections(call):
    first, second = med_request("d1"), med_request("d2")
    body = hook_request(
        [first, second], selections=["MedicationRequest/d2"], conditions=[condition("c1", STROKE)]
    )
    cards = indication_cards(call, body)
    assert len(cards) == 1
    assert cards[0]["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/d2"


@pytest.mark.parametrize("hook", ["order-sign", "medication-prescribe"])
def test_other_hooks_target_every_draft(call, hook):
    prior = med_request("old", status="completed", dose_mg=5, per_day=3)
    drafts = [med_request("d1", dose_mg=5), med_request("d2", dose_mg=5)]
    body = hook_request(
        drafts, hook=hook, conditions=[condition("c1", STROKE)], medications=[prior]
    )
    status, answer = call(body)
    assert status == 200
    assert rules_of(answer) == [("BAC-INDICATION", "warning")] * 2


def test_warning_card_carries_suggestion_override_reasons_and_citation(call):
    cards = indication_cards(
        call, hook_request([med_request("d1")], conditions=[condition("c1", STROKE)])
    )
    card = cards[0]
    assert card["summary"].startswith("Baclofen:")
    assert card["selectionBehavior"] == "at-most-one"
    assert card["suggestions"][0]["actions"] == [
        {
            "type": "delete",
            "description": "Remove the draft order MedicationRequest/d1",
            "resourceId": "MedicationRequest/d1",
        }
    ]
    assert {r["code"] for r in card["overrideReasons"]} >= {"benefit-outweighs-risk"}
    assert "dailymed.nlm.nih.gov" in card["source"]["url"]
    assert "Condition: Cerebrovascular accident (SNOMED CT 230690007" in card["detail"]


def test_rheumatic_spasm_is_not_indicated_and_stroke_is_not_established(call):
    ra = indication_cards(call, hook_request([med_request("d1")], conditions=[condition("c1", RA)]))
    assert ra[0]["summary"] == "Baclofen: not indicated for muscle spasm from Rheumatoid arthritis"
    stroke = indication_cards(
        call, hook_request([med_request("d1")], conditions=[condition("c1", STROKE)])
    )
    assert stroke[0]["summary"] == (
        "Baclofen: efficacy not established for Cerebrovascular accident"
    )
