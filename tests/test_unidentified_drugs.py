"""Never silent about a drug nothing identifies; read Medication/{id} when a fhirServer is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses

from tests.factories import (
    HALOPERIDOL_5_TAB,
    LISINOPRIL_10_TAB,
    MS,
    RXNORM,
    concept,
    condition,
    hook_request,
    med_request,
    rules_of,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fhir_fixtures"
BASE = "https://ehr.example.org/fhir"


def haloperidol_by_reference(ref: str = "Medication/halo") -> dict:
    """A current haloperidol order that names its drug only by a medicationReference."""
    order = med_request("mr-halo", None, status="active", dose_mg=2, per_day=2)
    order["medicationReference"] = {"reference": ref}
    return order


def body_with(current: dict, draft: dict | None = None) -> dict:
    draft = draft or med_request("d1", dose_mg=5, per_day=3)
    body = hook_request([draft], conditions=[condition("c-ms", MS)], medications=[current])
    return body


def degraded_detail(answer: dict) -> str:
    (card,) = [c for c in answer["cards"] if c["source"]["topic"]["code"] == "DATA-UNAVAILABLE"]
    return card["detail"]


def test_the_fixture_names_the_unidentified_current_medication(call):
    scenario = FIXTURE / "ehr-unidentified-current-medication-info" / "request.json"
    status, answer = call(json.loads(scenario.read_text(encoding="utf-8")))
    assert status == 200
    detail = degraded_detail(answer)
    assert "1 current medication could not be identified" in detail
    assert "MedicationRequest/mr-haloperidol" in detail
    assert "interaction checks may be incomplete" in detail


def test_the_medication_is_read_from_the_fhir_server_when_the_prefetch_lacks_it(call):
    body = body_with(haloperidol_by_reference())
    body["fhirServer"] = BASE
    medication = {
        "resourceType": "Medication",
        "id": "halo",
        "code": concept(RXNORM, *HALOPERIDOL_5_TAB),
    }
    with responses.RequestsMock() as mock:
        read = mock.get(f"{BASE}/Medication/halo", json=medication)
        status, answer = call(body)
    assert status == 200 and read.call_count == 1
    assert rules_of(answer) == [("BAC-DOPAMINE-ANTAGONIST", "warning")]


@pytest.mark.parametrize("failure", [404, 503, "timeout"])
def test_a_medication_that_cannot_be_read_is_named_not_dropped(call, failure):
    import requests

    body = body_with(haloperidol_by_reference())
    body["fhirServer"] = BASE
    with responses.RequestsMock() as mock:
        if failure == "timeout":
            mock.get(f"{BASE}/Medication/halo", body=requests.ConnectTimeout())
        else:
            mock.get(f"{BASE}/Medication/halo", status=failure, json={})
        status, answer = call(body)
    assert status == 200
    assert rules_of(answer) == [("DATA-UNAVAILABLE", "info")]
    detail = degraded_detail(answer)
    assert "1 current medication could not be identified" in detail
    assert "MedicationRequest/mr-halo" in detail and "Medication/halo" in detail


def test_without_a_fhir_server_the_unresolvable_reference_is_named(call):
    status, answer = call(body_with(haloperidol_by_reference()))
    assert status == 200
    assert "1 current medication could not be identified" in degraded_detail(answer)


def test_a_display_or_text_is_enough_to_identify(call):
    order = haloperidol_by_reference()
    order["medicationReference"]["display"] = "Haloperidol 2 mg tablet"
    status, answer = call(body_with(order))
    assert status == 200
    assert rules_of(answer) == [("BAC-DOPAMINE-ANTAGONIST", "warning")]


def test_two_unidentified_medications_are_counted(call):
    body = body_with(haloperidol_by_reference())
    other = haloperidol_by_reference("Medication/other")
    other["id"] = "mr-other"
    body["prefetch"]["medications"]["entry"].append({"resource": other})
    _status, answer = call(body)
    assert "2 current medications could not be identified" in degraded_detail(answer)


def test_an_unidentified_order_being_placed_is_named(call):
    draft = med_request("d-unknown", None, dose_mg=5)
    draft["medicationReference"] = {"reference": "Medication/unknown"}
    status, answer = call(hook_request([draft]))
    assert status == 200
    assert "1 order in this session could not be identified" in degraded_detail(answer)


def test_an_unrelated_order_does_not_raise_the_card(call):
    """No check runs for a lisinopril order, so nothing is incomplete: no card (alert fatigue)."""
    body = body_with(haloperidol_by_reference(), med_request("d1", LISINOPRIL_10_TAB))
    status, answer = call(body)
    assert (status, answer) == (200, {"cards": []})
