"""FHIR statuses (cds_hooks.fhir.status): one meaning for the record, the renal engine and rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_hooks.clinical.renal import renal_function
from cds_hooks.fhir import status
from cds_hooks.record import build_record
from cds_hooks.services import BY_ID
from tests.factories import (
    CURRENT_THERAPY_STATUSES,
    ICD10,
    OBSERVATION_STATUSES,
    condition,
    med_request,
)

CKD5 = (ICD10, "N18.5", "Chronic kidney disease, stage 5")


def coded(code: str) -> dict:
    return {"coding": [{"code": code}]}


CONDITIONS = [
    ({"clinicalStatus": coded("active")}, True),
    ({"clinicalStatus": coded("recurrence")}, True),
    ({"clinicalStatus": coded("relapse")}, True),
    ({"clinicalStatus": coded("inactive")}, False),
    ({"clinicalStatus": coded("remission")}, False),
    ({"clinicalStatus": coded("resolved")}, False),
    ({"clinicalStatus": "active"}, True),  # STU3: a plain code
    ({"clinicalStatus": "resolved"}, False),
    ({}, True),  # no status: counts as active (clinical-rules.md)
    ({"abatementDateTime": "2025-01-01"}, False),
    ({"abatementBoolean": True}, False),
    ({"abatementBoolean": False}, True),  # "not abated" is no abatement
    ({"abatementString": ""}, True),
    ({"clinicalStatus": coded("active"), "verificationStatus": coded("refuted")}, False),
    ({"verificationStatus": coded("entered-in-error")}, False),
    ({"verificationStatus": "refuted"}, False),
    ({"verificationStatus": coded("provisional")}, True),
    ({"verificationStatus": coded("unconfirmed")}, True),
]


@pytest.mark.parametrize(("fields", "present"), CONDITIONS)
def test_condition_present(fields, present):
    resource = {**condition("c1", CKD5, clinical=None), **fields}
    assert status.condition_present(resource) is present


@pytest.mark.parametrize(("fields", "present"), CONDITIONS)
def test_record_and_renal_engine_agree_on_conditions(knowledge, fields, present):
    """The two checks that disagreed (record.py, clinical/renal.py) are now one."""
    resource = {**condition("c1", CKD5, clinical=None), **fields}
    record = build_record(
        BY_ID["antispasticity-order-sign"],
        {"draftOrders": {"resourceType": "Bundle", "entry": []}},
        {"conditions": [resource]},
        {},
        {},
        knowledge,
    )
    assert bool(record.conditions) is present
    now = datetime(2026, 11, 21, tzinfo=UTC)
    found = renal_function([], [resource], None, knowledge.terminology, now)
    assert (found is not None) is present


@pytest.mark.parametrize(("code", "usable"), OBSERVATION_STATUSES)
def test_observation_usable(code, usable):
    assert status.observation_usable({"resourceType": "Observation", "status": code}) is usable


@pytest.mark.parametrize(
    ("fields", "present"),
    [
        ({}, True),
        ({"clinicalStatus": coded("active")}, True),
        ({"clinicalStatus": coded("inactive")}, False),
        ({"clinicalStatus": coded("resolved")}, False),
        ({"verificationStatus": coded("refuted")}, False),
        ({"verificationStatus": coded("entered-in-error")}, False),
        ({"verificationStatus": coded("unconfirmed")}, True),
    ],
)
def test_allergy_present(fields, present):
    assert status.allergy_present({"resourceType": "AllergyIntolerance", **fields}) is present


@pytest.mark.parametrize(("code", "current"), CURRENT_THERAPY_STATUSES)
def test_order_current(code, current):
    assert status.order_current(code) is current
    assert status.order_current(code, draft=True) is current
    order = med_request("m1", status=code)
    assert status.order_current(order["status"]) is current


def test_a_draft_order_may_omit_its_status():
    assert status.order_current(None, draft=True)
    assert not status.order_current(None)


@pytest.mark.parametrize(
    ("code", "stopping", "running", "taken", "on_record"),
    [
        ("active", False, True, True, True),
        ("on-hold", False, True, False, True),
        ("draft", False, False, False, True),
        ("stopped", True, False, False, True),
        ("cancelled", True, False, False, True),
        ("completed", False, False, False, True),
        ("entered-in-error", False, False, False, False),
    ],
)
def test_order_states(code, stopping, running, taken, on_record):
    assert status.order_stopping(code) is stopping
    assert status.order_running(code) is running
    assert status.order_taken(code) is taken
    assert status.order_on_record(code) is on_record


def test_remission_counts_only_for_a_chronic_condition():
    remission = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"code": "remission"}]},
    }
    assert not status.condition_present(remission)
    assert status.condition_present(remission, chronic=True)
    in_error = {**remission, "verificationStatus": {"coding": [{"code": "entered-in-error"}]}}
    assert not status.condition_present(in_error, chronic=True)
    resolved = {"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": "resolved"}]}}
    assert not status.condition_present(resolved, chronic=True)
