"""Kidney function from Observations and Conditions (cds_hooks.clinical.renal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cds_hooks.clinical.renal import RenalFunction, age_years, renal_function
from cds_hooks.terminology import Terminology
from tests.factories import OBSERVATION_STATUSES, observation

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)

# The packaged value sets (observation/creatinine-clearance, observation/egfr and its equation
# subsets, observation/serum-creatinine, observation/body-weight, condition/ckd-severe,
# condition/dialysis), matched by the one terminology matcher.
TERMINOLOGY = Terminology.load()


def days_ago(days: int) -> str:
    return (NOW - timedelta(days=days)).date().isoformat()


def obs(code, value=None, unit="mL/min", *, days=5, status="final", id_=None, **extra):
    """The shared Observation factory, dated `days` before NOW."""
    when = days_ago(days)
    return observation(
        id_ or f"{code}-{days}", code, value, unit, when=when, status=status, **extra
    )


def condition(system, code, display="", *, id_="c1", clinical="active", **extra):
    resource = {
        "resourceType": "Condition",
        "id": id_,
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "recordedDate": "2024-03-01",
        **extra,
    }
    if clinical is not None:
        resource["clinicalStatus"] = {"coding": [{"code": clinical}]}
    return resource


MALE_72 = {"resourceType": "Patient", "birthDate": "1954-06-01", "gender": "male"}
FEMALE_72 = {**MALE_72, "gender": "female"}


def run(observations=(), conditions=(), patient=None, **kwargs) -> RenalFunction | None:
    return renal_function(observations, conditions, patient, TERMINOLOGY, NOW, **kwargs)


def test_measured_crcl():
    found = run([obs("2164-2", 22, days=4, id_="crcl")])
    assert found == RenalFunction(
        kind="crcl",
        value_ml_min=22.0,
        comparator=None,
        label="creatinine clearance (LOINC 2164-2)",
        when=datetime(2026, 10, 1, tzinfo=UTC),
        source="Observation/crcl",
    )
    assert found.describe() == "creatinine clearance 22 mL/min (LOINC 2164-2, 2026-10-01)"


@pytest.mark.parametrize(
    "system",
    ["urn:oid:2.16.840.1.113883.6.1", "http://loinc.org/", " HTTP://LOINC.ORG"],
)
def test_crcl_coded_with_a_loinc_alias(system):
    """Regression: the renal engine had its own matcher that skipped the system aliases."""
    observation = obs("2164-2", 20, days=4, id_="crcl")
    observation["code"]["coding"][0]["system"] = system
    found = run([observation])
    assert (found.kind, found.value_ml_min) == ("crcl", 20.0)
    assert found.label == "creatinine clearance (LOINC 2164-2)"


def test_egfr_with_equation_name():
    found = run([obs("98979-8", 45, "mL/min/{1.73_m2}", days=21)])
    assert (found.kind, found.value_ml_min) == ("egfr", 45.0)
    assert found.label == "eGFR CKD-EPI 2021 (LOINC 98979-8)"
    assert found.describe() == "eGFR 45 mL/min/1.73m2 (LOINC 98979-8, 2026-09-14)"


def test_newer_egfr_beats_an_older_clearance():
    """Acute kidney injury: CrCl 80 in January must not hide an eGFR of 20 this week."""
    january = obs("2164-2", 80, days=250, id_="crcl-jan")
    this_week = obs("98979-8", 20, "mL/min/{1.73_m2}", days=3, id_="egfr-now")
    for observations in ([january, this_week], [this_week, january]):
        found = run(observations)
        assert (found.kind, found.value_ml_min, found.source) == (
            "egfr",
            20.0,
            "Observation/egfr-now",
        )


def test_newer_clearance_beats_an_older_egfr():
    egfr = obs("98979-8", 20, "mL/min/{1.73_m2}", days=30)
    crcl = obs("2164-2", 45, days=2)
    found = run([egfr, crcl])
    assert (found.kind, found.value_ml_min) == ("crcl", 45.0)


def test_same_day_clearance_wins_over_egfr():
    # The eGFR is later in the day, and listed first: the day decides, then the clearance.
    crcl = obs("2164-2", 40, days=2, effectiveDateTime=f"{days_ago(2)}T08:00:00Z")
    egfr = obs("33914-3", 20, days=2, effectiveDateTime=f"{days_ago(2)}T17:00:00Z")
    for observations in ([egfr, crcl], [crcl, egfr]):
        found = run(observations)
        assert (found.kind, found.value_ml_min) == ("crcl", 40.0)


@pytest.mark.parametrize(
    ("scr_days", "kind"),
    [
        (1, "crcl-cockcroft-gault"),  # creatinine newer than every measured value
        (2, "egfr"),  # same day as the eGFR: the measured value
        (3, "egfr"),  # older than the eGFR
    ],
)
def test_cockcroft_gault_only_when_newer_than_measured_values(scr_days, kind):
    crcl = obs("2164-2", 40, days=200)
    egfr = obs("33914-3", 20, days=2)
    scr = obs("2160-0", 2.0, "mg/dL", days=scr_days)
    weight = obs("29463-7", 70, "kg", days=10)
    assert run([crcl, egfr, scr, weight], [], MALE_72).kind == kind


def test_priority_measured_then_cockcroft_gault_then_condition():
    scr = obs("2160-0", 2.0, "mg/dL", days=3)
    weight = obs("29463-7", 70, "kg", days=3)
    ckd = condition(ICD10CM, "N18.4", "Chronic kidney disease, stage 4 (severe)")
    assert run([obs("2164-2", 40, days=200), scr, weight], [ckd], MALE_72).kind == (
        "crcl-cockcroft-gault"
    )
    assert run([obs("2164-2", 40, days=3), scr, weight], [ckd], MALE_72).kind == "crcl"
    assert run([scr, weight], [ckd], MALE_72).kind == "crcl-cockcroft-gault"
    found = run([], [ckd], MALE_72)
    assert (found.kind, found.value_ml_min, found.severe_condition) == ("condition", None, True)
    assert run([], [], MALE_72) is None


def test_latest_wins():
    older, newer = obs("33914-3", 25, days=30), obs("33914-3", 55, days=3)
    assert run([newer, older]).value_ml_min == 55.0
    assert run([older, newer]).value_ml_min == 55.0


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.5, "mL/s", 30.0),
        (0.4, "mL/s/1.73m2", 24.0),
        (50, "mL/min/1.73 m2", 50.0),
        (50, "mL/min/1.73m2", 50.0),
        (50, "ML/MIN", 50.0),
        (50, None, 50.0),  # no unit at all: the LOINC code's unit
        (50, "mg/dL", None),  # unknown unit: not usable
    ],
)
def test_clearance_units(value, unit, expected):
    found = run([obs("33914-3", value, unit)])
    assert (found.value_ml_min if found else None) == expected


def test_r4_egfr_example_values_only_in_components():
    """The R4 spec's Observation f205: ">60" (48643-1) and "60" (48642-3), no top-level value."""
    component = [
        {
            "code": {"coding": [{"system": LOINC, "code": "48643-1"}]},
            "valueQuantity": {
                "value": 60,
                "comparator": ">",
                "unit": "mL/min/1.73m2",
                "code": "mL/min/{1.73_m2}",
            },
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "48642-3"}]},
            "valueQuantity": {"value": 60, "unit": "mL/min/1.73m2", "code": "mL/min/{1.73_m2}"},
        },
    ]
    f205 = obs("33914-3", days=21, id_="f205", component=component)
    del f205["effectiveDateTime"]
    f205["issued"] = "2026-09-14T14:34:00+01:00"
    found = run([f205])
    # The most conservative component is reported: "60" rather than "> 60".
    assert (found.value_ml_min, found.comparator) == (60.0, None)
    assert found.describe() == "eGFR 60 mL/min/1.73m2 (LOINC 33914-3, 2026-09-14)"
    only_greater = {**f205, "component": component[:1]}
    found = run([only_greater])
    assert (found.value_ml_min, found.comparator) == (60.0, ">")
    assert found.describe() == "eGFR > 60 mL/min/1.73m2 (LOINC 33914-3, 2026-09-14)"


def test_component_with_ml_min_units_but_other_code():
    component = [
        {"code": {"text": "eGFR"}, "valueQuantity": {"value": 38, "unit": "mL/min/1.73m2"}},
        {"code": {"text": "note"}, "valueQuantity": {"value": 7, "unit": "mg/dL"}},
    ]
    found = run([obs("62238-1", component=component)])
    assert found.value_ml_min == 38.0


@pytest.mark.parametrize(
    ("text", "value", "comparator"),
    [("> 60", 60.0, ">"), (">60", 60.0, ">"), ("<15", 15.0, "<"), ("42 mL/min/1.73m2", 42.0, None)],
)
def test_value_string(text, value, comparator):
    found = run([obs("33914-3", valueString=text)])
    assert (found.value_ml_min, found.comparator) == (value, comparator)


def test_value_string_unusable():
    assert run([obs("33914-3", valueString="see comment")]) is None
    assert run([obs("33914-3", valueString="60 mg/dL")]) is None


@pytest.mark.parametrize(("days", "used"), [(365, True), (366, False), (0, True)])
def test_look_back_edge(days, used):
    found = run([obs("2164-2", 22, days=days)])
    assert (found is not None) is used


def test_look_back_is_configurable():
    assert run([obs("2164-2", 22, days=100)], lookback_days=90) is None


def test_future_results_are_ignored():
    assert run([obs("2164-2", 22, days=-3)]) is None


@pytest.mark.parametrize(("status", "used"), OBSERVATION_STATUSES)
def test_observation_status(status, used):
    found = run([obs("2164-2", 22, status=status)])
    assert (found is not None) is used


def test_cancelled_newer_result_does_not_hide_an_older_final_one():
    found = run([obs("2164-2", 22, days=10), obs("2164-2", 90, days=1, status="entered-in-error")])
    assert found.value_ml_min == 22.0


# Cockcroft-Gault: (140 - 72) x 70 / (72 x 2.0) = 33.06 mL/min; female x 0.85 = 28.10.
@pytest.mark.parametrize(
    ("patient", "expected"),
    [
        (MALE_72, 33.1),
        (FEMALE_72, 28.1),
        ({**MALE_72, "gender": "other"}, None),
        ({**MALE_72, "gender": "unknown"}, None),
        ({"resourceType": "Patient", "birthDate": "1954-06-01"}, None),
        ({"resourceType": "Patient", "gender": "male"}, None),
        ({**MALE_72, "birthDate": "2012-01-01"}, None),  # a child: the equation is for adults
        (None, None),
    ],
)
def test_cockcroft_gault(patient, expected):
    observations = [
        obs("2160-0", 2.0, "mg/dL", days=4, id_="scr"),
        obs("29463-7", 70, "kg", days=10, id_="wt"),
    ]
    found = run(observations, [], patient)
    if expected is None:
        assert found is None
        return
    assert (found.kind, found.value_ml_min, found.source) == (
        "crcl-cockcroft-gault",
        expected,
        "Observation/scr",
    )
    assert found.when == datetime(2026, 10, 1, tzinfo=UTC)
    assert found.label == (
        "Cockcroft-Gault estimate from serum creatinine 2 mg/dL on 2026-10-01, "
        f"weight 70 kg on 2026-09-25, age 72, {patient['gender']}"
    )


def test_cockcroft_gault_units_umol_and_pounds():
    observations = [
        obs("14682-9", 176.8, "umol/L", days=4),  # = 2.0 mg/dL
        obs("29463-7", 154.32, "lbs", days=4)
        | {"valueQuantity": {"value": 154.32, "unit": "lbs", "code": "[lb_av]"}},
    ]
    found = run(observations, [], MALE_72)
    assert found.value_ml_min == 33.1  # 154.32 lb = 70.0 kg
    assert "176.8 umol/L (2 mg/dL)" in found.label
    assert "154.3 lbs (70 kg)" in found.label
    assert found.describe().startswith(
        "estimated creatinine clearance 33.1 mL/min (Cockcroft-Gault"
    )


def test_cockcroft_gault_uses_latest_and_recent_values_only():
    old_scr = obs("2160-0", 1.0, "mg/dL", days=120)
    new_scr = obs("2160-0", 2.0, "mg/dL", days=20)
    weight = obs("29463-7", 70, "kg", days=20)
    assert run([old_scr, new_scr, weight], [], MALE_72).value_ml_min == 33.1
    assert run([old_scr, weight], [], MALE_72) is None  # creatinine older than 90 days
    assert run([old_scr, weight], [], MALE_72, cockcroft_gault_max_age_days=180) is not None
    unknown_unit = obs("2160-0", 2.0, "g/L", days=2)
    assert run([unknown_unit, weight], [], MALE_72) is None


@pytest.mark.parametrize(
    ("system", "code", "dialysis", "severe"),
    [
        (ICD10CM, "N18.4", False, True),
        (ICD10CM, "N18.5", False, True),
        (ICD10CM, "N18.6", False, True),
        (ICD10CM, "N184", False, True),  # undotted ICD-10-CM as some EHRs send it
        (SNOMED, "431857002", False, True),
        (ICD10CM, "Z99.2", True, False),
        (SNOMED, "236435004", True, True),
    ],
)
def test_condition_source(system, code, dialysis, severe):
    found = run([], [condition(system, code, "kidney", id_="ckd")])
    assert (found.kind, found.dialysis, found.severe_condition) == ("condition", dialysis, severe)
    assert found.source == "Condition/ckd"
    assert found.when == datetime(2024, 3, 1, tzinfo=UTC)


def test_condition_describe():
    found = run([], [condition(ICD10CM, "Z99.2", "Dependence on renal dialysis")])
    assert found.label == "Dependence on renal dialysis (ICD-10-CM Z99.2)"
    assert found.describe() == (
        "active condition Dependence on renal dialysis (ICD-10-CM Z99.2, 2024-03-01)"
    )


def test_mild_ckd_is_not_a_source():
    assert run([], [condition(ICD10CM, "N18.2")]) is None


@pytest.mark.parametrize(
    ("extra", "active"),
    [
        ({"clinical": "active"}, True),
        ({"clinical": "recurrence"}, True),
        ({"clinical": "relapse"}, True),
        ({"clinical": None}, True),
        ({"clinical": "resolved"}, False),
        ({"clinical": "inactive"}, False),
        ({"clinical": None, "abatementDateTime": "2025-01-01"}, False),
        ({"verificationStatus": {"coding": [{"code": "refuted"}]}}, False),
        ({"verificationStatus": {"coding": [{"code": "entered-in-error"}]}}, False),
        ({"verificationStatus": {"coding": [{"code": "provisional"}]}}, True),
        ({"clinical": None, "clinicalStatus": "active"}, True),  # STU3 plain code
    ],
)
def test_condition_status(extra, active):
    found = run([], [condition(ICD10CM, "N18.5", **extra)])
    assert (found is not None) is active


def test_dialysis_flag_alongside_a_numeric_value():
    dialysis = condition(ICD10CM, "Z99.2", "Dependence on renal dialysis")
    found = run([obs("2164-2", 12, days=4)], [dialysis])
    assert (found.kind, found.value_ml_min, found.dialysis) == ("crcl", 12.0, True)
    assert found.severe_condition is False  # only set on kind "condition"
    assert found.describe() == (
        "creatinine clearance 12 mL/min (LOINC 2164-2, 2026-10-01), "
        "and the patient has an active dialysis condition"
    )
    estimated = run([obs("2160-0", 6.0, "mg/dL"), obs("29463-7", 70, "kg")], [dialysis], MALE_72)
    assert (estimated.kind, estimated.dialysis) == ("crcl-cockcroft-gault", True)
    resolved = {**dialysis, "clinicalStatus": {"coding": [{"code": "resolved"}]}}
    assert run([obs("2164-2", 12)], [resolved]).dialysis is False


def test_describe_truncates_to_one_decimal():
    found = run([obs("2164-2", 24.96)])
    assert found.value_ml_min == 24.96
    assert found.describe().startswith("creatinine clearance 24.9 mL/min")


def test_ignores_other_resources_and_garbage():
    other = {**obs("2164-2", 10), "resourceType": "Condition"}
    assert run([other, "junk", None], [{"resourceType": "Observation"}, 3]) is None


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("1954-06-01", 72),
        ("1954-10-05", 72),  # birthday today
        ("1954-10-06", 71),
        ("1954", 72),
        ("2030-01-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_age_years(birth, expected):
    assert age_years({"birthDate": birth} if birth else {}, NOW) == expected
    assert age_years(None, NOW) is None


def test_cockcroft_gault_minimum_age_is_a_parameter():
    observations = [obs("2160-0", 2.0, "mg/dL"), obs("29463-7", 70, "kg")]
    aged_17 = {**MALE_72, "birthDate": "2009-01-01"}
    assert run(observations, [], aged_17) is None
    assert run(observations, [], aged_17, cockcroft_gault_min_age_years=16) is not None


def test_acute_kidney_injury_is_the_last_fallback():
    # Round 2 renal fallback: AKI counts only with no usable value and no CKD 4-5/dialysis.
    aki = condition(ICD10CM, "N17.9", "Acute kidney failure, unspecified", id_="aki")
    found = run([], [aki])
    assert (found.kind, found.value_ml_min, found.source) == (
        "acute-condition",
        None,
        "Condition/aki",
    )
    assert found.describe().startswith("active condition Acute kidney failure, unspecified")
    ckd = condition(ICD10CM, "N18.5", "kidney", id_="ckd")
    assert run([], [aki, ckd]).kind == "condition"
    egfr = obs("98979-8", 90, "mL/min/1.73m2", days=5)
    assert run([egfr], [aki]).kind == "egfr"


@pytest.mark.parametrize(("system", "code"), [(ICD10CM, "N19"), (SNOMED, "42399005")])
def test_kidney_failure_is_a_severe_condition_not_an_acute_one(system, code):
    # Round 2 renal fallback: kidney failure (not stated as acute) warns like CKD 4-5.
    failure = condition(system, code, "Kidney failure", id_="kf")
    found = run([], [failure])
    assert (found.kind, found.severe_condition, found.dialysis) == ("condition", True, False)
    assert found.source == "Condition/kf"
    aki = condition(ICD10CM, "N17.9", "Acute kidney failure, unspecified", id_="aki")
    assert run([], [aki, failure]).kind == "condition"
    # A usable recent value still decides.
    egfr = obs("98979-8", 75, "mL/min/1.73m2", days=5)
    assert run([egfr], [failure]).kind == "egfr"
