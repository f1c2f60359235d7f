"""BAC-PREGNANCY: a new start may be cancelled; a patient already on baclofen gets a taper."""

from __future__ import annotations

from tests.factories import (
    BACLOFEN_IT,
    MS,
    SNOMED,
    condition,
    hook_request,
    med_request,
    rule_cards,
)

RULE = "BAC-PREGNANCY"
PREGNANT = condition("c-preg", (SNOMED, "77386006", "Pregnant"))


def pregnancy_cards(call, drafts, medications=(), hook="order-select"):
    body = hook_request(
        list(drafts),
        conditions=[condition("c-ms", MS), PREGNANT],
        medications=list(medications),
        hook=hook,
    )
    return rule_cards(call, body, RULE)


def test_new_start_keeps_cancel(call):
    (card,) = pregnancy_cards(call, [med_request("d1", dose_mg=5, per_day=3)])
    assert card["indicator"] == "warning"
    assert "only if the benefit justifies the risk" in card["summary"]
    assert "potential benefit justifies the potential risk to the fetus" in card["detail"]
    assert [s["label"] for s in card["suggestions"]] == ["Cancel this baclofen order"]
    assert card["suggestions"][0]["actions"][0]["type"] == "delete"


def test_current_patient_gets_a_taper_never_a_bare_cancel(call):
    current = med_request("cur", status="active", dose_mg=20, per_day=3, authoredOn="2026-06-01")
    renewal = med_request("cur", dose_mg=20, per_day=3)  # the EHR re-signs the same order
    (card,) = pregnancy_cards(call, [renewal], [current], hook="order-sign")
    assert card["indicator"] == "warning"
    assert card["summary"] == (
        "Baclofen: patient appears to be pregnant and takes baclofen; do not stop abruptly"
    )
    assert "stop it before delivery" in card["detail"]
    assert "17.5 mg 3 times a day for 7 days" in card["detail"]
    (suggestion,) = card["suggestions"]
    assert suggestion["label"].startswith("Replace with a ")
    assert "taper to stop" in suggestion["label"]
    (action,) = suggestion["actions"]
    assert action["type"] == "update"  # the draft becomes the taper; nothing is deleted
    resource = action["resource"]
    assert resource["id"] == "cur" and resource["status"] == "draft"
    doses = [d["doseAndRate"][0]["doseQuantity"]["value"] for d in resource["dosageInstruction"]]
    assert doses == sorted(doses, reverse=True) and doses[0] < 20
    assert all(s["actions"][0]["type"] != "delete" for s in card["suggestions"])


def test_new_order_while_another_baclofen_is_active_is_a_current_patient(call):
    current = med_request("cur", status="active", dose_mg=10, per_day=3, authoredOn="2026-06-01")
    (card,) = pregnancy_cards(call, [med_request("d1", dose_mg=5, per_day=3)], [current])
    assert "do not stop abruptly" in card["summary"]
    assert [s["actions"][0]["type"] for s in card["suggestions"]] == ["update"]
    resource = card["suggestions"][0]["actions"][0]["resource"]
    # The taper starts from the current 10 mg TID and supersedes that order.
    assert resource["priorPrescription"] == {"reference": "MedicationRequest/cur"}
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] < 10


def test_current_intrathecal_baclofen_gets_no_one_click_change(call):
    current = med_request(
        "itb-cur", BACLOFEN_IT, status="active", dose_mg=0.2, per_day=1, route="intrathecal"
    )
    refill = med_request("itb-new", BACLOFEN_IT, dose_mg=0.2, per_day=1, route="intrathecal")
    (card,) = pregnancy_cards(call, [refill], [current])
    assert "do not interrupt it" in card["summary"]
    assert "suggestions" not in card
    assert card["overrideReasons"]


def test_a_stop_is_not_judged_here(call):
    current = med_request("cur", status="active", dose_mg=10, per_day=3)
    stop = med_request("cur", status="stopped", dose_mg=10, per_day=3)
    assert pregnancy_cards(call, [stop], [current], hook="order-sign") == []
