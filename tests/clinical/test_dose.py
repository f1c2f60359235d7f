"""Daily dose computation from MedicationRequest.dosageInstruction (cds_hooks.clinical.dose)."""

from __future__ import annotations

import pytest

from cds_hooks.clinical.dose import (
    GTS_ABBREVIATION,
    Dose,
    DoseUnknown,
    daily_dose,
    rates,
    strength_from_text,
    total_mg_per_day,
)

UCUM = "http://unitsofmeasure.org"


def qty(value, unit="mg", code=None):
    out = {"value": value, "unit": unit, "system": UCUM}
    if code is not None:
        out["code"] = code
    return out


def every(frequency=1, period=1, unit="d", **extra):
    return {"repeat": {"frequency": frequency, "period": period, "periodUnit": unit, **extra}}


def coded(code, system=GTS_ABBREVIATION, text=None):
    concept = {"coding": [{"system": system, "code": code}]} if code else {}
    if text:
        concept["text"] = text
    return {"code": concept}


def dosage(dose=None, timing=None, **extra):
    line = dict(extra)
    if dose is not None:
        line["doseAndRate"] = [{"doseQuantity": dose}]
    if timing is not None:
        line["timing"] = timing
    return line


def mr(*lines):
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "dosageInstruction": list(lines),
    }


def mg_per_day(request, strength=None):
    result = daily_dose(request, strength)
    assert isinstance(result, Dose), result
    return result.mg_per_day


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        (coded("TID"), 30.0),
        (coded("BID"), 20.0),
        (coded("QID"), 40.0),
        (coded("QD"), 10.0),
        (coded("QHS"), 10.0),
        (coded("Q4H"), 60.0),
        (coded("Q6H"), 40.0),
        (coded("Q8H"), 30.0),
        (coded("Q12H"), 20.0),
        (coded("TID", system="urn:local:freq"), 30.0),  # matched by code alone
        (coded(None, text="t.i.d."), 30.0),  # matched by timing.code.text
        (every(3, 1, "d"), 30.0),
        (every(1, 8, "h"), 30.0),
        (every(2, 1, "d"), 20.0),
        (every(1, 1440, "min"), 10.0),
        (every(14, 1, "wk"), 20.0),
        ({"repeat": {"frequencyMax": 4, "period": 1, "periodUnit": "d"}}, 40.0),
        # "2 to 4 times a day": the maximum counts for dose limits.
        ({"repeat": {"frequency": 2, "frequencyMax": 4, "period": 1, "periodUnit": "d"}}, 40.0),
        # frequencyMax below frequency is a data error: the larger figure, never the smaller.
        ({"repeat": {"frequency": 3, "frequencyMax": 2, "period": 1, "periodUnit": "d"}}, 30.0),
        ({"repeat": {"when": ["MORN", "NIGHT"]}}, 20.0),
        ({"repeat": {"timeOfDay": ["08:00:00", "14:00:00", "20:00:00"]}}, 30.0),
        ({"repeat": {"count": 1}}, 10.0),  # one-off bolus, no dosage text
        (every(3, 1, "d", count=2), 20.0),  # only two administrations in all
    ],
)
def test_frequency(timing, expected):
    result = daily_dose(mr(dosage(qty(10), timing)))
    assert isinstance(result, Dose), result
    assert result.mg_per_day == expected
    assert result.max_single_mg == 10.0


def test_frequency_max_counts_and_the_basis_says_so():
    """ "3 to 5 times a day" 20 mg is 100 mg/day for a dose limit, not 60."""
    timing = {"repeat": {"frequency": 3, "frequencyMax": 5, "period": 1, "periodUnit": "d"}}
    result = daily_dose(mr(dosage(qty(20), timing)))
    assert result == Dose(
        100.0,
        20.0,
        "20 mg 3 to 5 times a day, counted at the maximum (frequencyMax 5) = 100 mg/day",
    )
    only_max = {"repeat": {"frequencyMax": 2, "period": 12, "periodUnit": "h"}}
    result = daily_dose(mr(dosage(qty(10), only_max)))
    assert result.mg_per_day == 40.0
    assert result.basis == (
        "10 mg up to 2 times every 12 h, counted at the maximum (frequencyMax 2) = 40 mg/day"
    )
    same = {"repeat": {"frequency": 3, "frequencyMax": 3, "period": 1, "periodUnit": "d"}}
    assert daily_dose(mr(dosage(qty(10), same))).basis == "10 mg 3 times a day = 30 mg/day"


@pytest.mark.parametrize("field", ["frequency", "frequencyMax"])
def test_non_positive_frequency_or_maximum_is_unknown(field):
    repeat = {"frequency": 3, "frequencyMax": 5, "period": 1, "periodUnit": "d", field: 0}
    result = daily_dose(mr(dosage(qty(10), {"repeat": repeat})))
    assert isinstance(result, DoseUnknown)
    assert "not positive" in result.reason


def test_basis_explains_the_figure():
    result = daily_dose(mr(dosage(qty(10), coded("TID"))))
    assert result == Dose(30.0, 10.0, "10 mg three times a day (TID) = 30 mg/day")
    every_8h = daily_dose(mr(dosage(qty(4), every(1, 8, "h"))))
    assert every_8h.basis == "4 mg every 8 h = 12 mg/day"


@pytest.mark.parametrize(
    ("dose", "expected_day", "expected_single"),
    [
        (qty(0.01, "g", "g"), 30.0, 10.0),  # 0.01 g x 1000 is not exactly 10.0 in floats
        (qty(10, "milligram", "mg"), 30.0, 10.0),
        (qty(10, "MG"), 30.0, 10.0),
        (qty(500, "mcg"), 1.5, 0.5),
        (qty(500, "ug", "ug"), 1.5, 0.5),
        (qty(500, "\u00b5g"), 1.5, 0.5),
        (qty(1, "g", "g"), 3000.0, 1000.0),
    ],
)
def test_mass_units(dose, expected_day, expected_single):
    result = daily_dose(mr(dosage(dose, every(3))))
    assert (result.mg_per_day, result.max_single_mg) == (expected_day, expected_single)


def test_dose_range_high_is_used():
    line = {"doseAndRate": [{"doseRange": {"low": qty(5), "high": qty(10)}}], "timing": every(3)}
    result = daily_dose(mr(line))
    assert result.mg_per_day == 30.0
    assert result.basis.startswith("up to 10 mg")


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ("tablet", "{tbl}"),
        ("tablet", "{tablet}"),
        ("TAB", "TAB"),
        ("pill", "{pill}"),
        ("capsule", None),
        ("Tablet", "732936001"),
    ],
)
def test_tablets_need_and_use_the_strength(unit, code):
    request = mr(dosage(qty(2, unit, code), coded("TID")))
    assert mg_per_day(request, 10.0) == 60.0
    assert mg_per_day(request, (10.0, "unit")) == 60.0
    assert daily_dose(request, 10.0).max_single_mg == 20.0
    unknown = daily_dose(request)
    assert isinstance(unknown, DoseUnknown)
    assert "strength" in unknown.reason


def test_ml_with_a_per_ml_strength():
    request = mr(dosage(qty(5, "mL", "mL"), coded("TID")))
    assert mg_per_day(request, 1.0) == 15.0
    assert mg_per_day(request, strength_from_text("baclofen 1 MG/ML Oral Solution")) == 15.0
    assert isinstance(daily_dose(request), DoseUnknown)
    # A tablet strength is never applied to a dose in mL (and the other way round).
    assert isinstance(daily_dose(request, (10.0, "unit")), DoseUnknown)
    tablets = mr(dosage(qty(1, "tablet", "{tbl}"), coded("TID")))
    assert isinstance(daily_dose(tablets, (1.0, "mL")), DoseUnknown)


@pytest.mark.parametrize(
    "dose",
    [qty(10, "mmol", "mmol"), qty(2, "puff"), qty(1, "patch", "{patch}"), {"value": 10}],
)
def test_unknown_units(dose):
    result = daily_dose(mr(dosage(dose, every(3))), 10.0)
    assert isinstance(result, DoseUnknown)
    assert "unit" in result.reason


def per(value, unit, code=None):
    return {"value": value, "unit": unit, **({"code": code} if code else {})}


@pytest.mark.parametrize(
    ("line", "strength", "expected"),
    [
        # 1 tablet as needed, at most 4 tablets per 24 h: counted at 4 x 10 mg.
        (
            {
                "doseAndRate": [{"doseQuantity": qty(1, "tablet", "{tbl}")}],
                "asNeededBoolean": True,
                "maxDosePerPeriod": {
                    "numerator": qty(4, "tablet", "{tbl}"),
                    "denominator": per(24, "h", "h"),
                },
            },
            10.0,
            40.0,
        ),
        (
            {
                "doseAndRate": [{"doseQuantity": qty(10)}],
                "asNeededCodeableConcept": {"text": "spasms"},
                "maxDosePerPeriod": {"numerator": qty(30), "denominator": per(1, "d", "d")},
            },
            None,
            30.0,
        ),
        # as needed every 8 h with a looser maximum: the schedule caps it at 3 x 10 mg.
        (
            {
                "doseAndRate": [{"doseQuantity": qty(10)}],
                "timing": every(1, 8, "h"),
                "asNeededBoolean": True,
                "maxDosePerPeriod": {"numerator": qty(60), "denominator": per(24, "hour")},
            },
            None,
            30.0,
        ),
        # as needed without a maximum: the scheduled frequency.
        (
            {
                "doseAndRate": [{"doseQuantity": qty(5)}],
                "timing": coded("QID"),
                "asNeededBoolean": True,
            },
            None,
            20.0,
        ),
        # maxDosePerAdministration does not change the daily figure.
        (
            {
                "doseAndRate": [{"doseQuantity": qty(10)}],
                "timing": coded("TID"),
                "maxDosePerAdministration": qty(20),
            },
            None,
            30.0,
        ),
    ],
)
def test_as_needed(line, strength, expected):
    assert mg_per_day(mr(line), strength) == expected


def test_as_needed_without_maximum_or_frequency_is_unknown():
    line = {"doseAndRate": [{"doseQuantity": qty(10)}], "asNeededBoolean": True}
    result = daily_dose(mr(line))
    assert isinstance(result, DoseUnknown)
    assert "as needed" in result.reason


def test_sequential_phases_take_the_highest():
    request = mr(
        dosage(qty(5), coded("TID"), sequence=1),
        dosage(qty(10), coded("TID"), sequence=2),
        dosage(qty(20), coded("TID"), sequence=3),
    )
    result = daily_dose(request)
    assert result.mg_per_day == 60.0
    assert result.max_single_mg == 20.0
    assert "highest phase = 60 mg/day" in result.basis


@pytest.mark.parametrize("sequence", [None, 1])
def test_concurrent_lines_are_summed(sequence):
    extra = {} if sequence is None else {"sequence": sequence}
    request = mr(dosage(qty(10), coded("QAM"), **extra), dosage(qty(20), coded("QHS"), **extra))
    result = daily_dose(request)
    assert result.mg_per_day == 30.0
    assert result.max_single_mg == 20.0
    assert "summed" in result.basis


def test_unsequenced_line_is_added_to_every_phase():
    request = mr(
        dosage(qty(5), coded("QD"), sequence=1),
        dosage(qty(10), coded("QD"), sequence=2),
        dosage(qty(20), coded("QHS")),
    )
    assert mg_per_day(request) == 30.0


def test_hl7_taper_example_in_tablets():
    """The R4 spec example medrx0303: 4, then 2, then 1 tablet(s) daily in phases (unit "TAB")."""
    lines = [
        {
            "sequence": seq,
            "text": f"Take {n} tablets daily",
            "timing": every(1, 1, "d"),
            "doseAndRate": [
                {
                    "type": {"coding": [{"code": "ordered"}]},
                    "doseQuantity": {"value": n, "unit": "TAB", "code": "TAB"},
                }
            ],
        }
        for seq, n in ((1, 4), (2, 2), (3, 1))
    ]
    assert mg_per_day(mr(*lines), 10.0) == 40.0
    unknown = daily_dose(mr(*lines))
    assert isinstance(unknown, DoseUnknown)
    assert unknown.reason.startswith("dosage line 1:")


def test_one_unknown_line_makes_the_order_unknown():
    request = mr(dosage(qty(10), coded("TID")), dosage(qty(1, "puff"), coded("QD")))
    assert isinstance(daily_dose(request), DoseUnknown)


def test_dose_and_rate_as_object_and_stu3_dose_quantity():
    as_object = {"doseAndRate": {"doseQuantity": qty(10)}, "timing": coded("TID")}
    stu3 = {"doseQuantity": qty(10), "timing": coded("TID")}
    assert mg_per_day(mr(as_object)) == 30.0
    assert mg_per_day(mr(stu3)) == 30.0
    single_dosage_object = {"dosageInstruction": stu3}
    assert mg_per_day(single_dosage_object) == 30.0


def test_ordered_dose_and_rate_entry_wins():
    line = {
        "timing": coded("BID"),
        "doseAndRate": [
            {"type": {"coding": [{"code": "calculated"}]}, "doseQuantity": qty(99)},
            {"type": {"coding": [{"code": "ordered"}]}, "doseQuantity": qty(10)},
        ],
    }
    assert mg_per_day(mr(line)) == 20.0


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({"resourceType": "MedicationRequest"}, "no dosageInstruction"),
        (mr({"timing": coded("TID")}), "no dose quantity"),
        (mr(dosage(qty(10))), "no frequency"),
        (mr(dosage(qty(10), coded("Q36H"))), "not understood"),
        (mr(dosage(qty(10), {"repeat": {"count": 1}}, text="then as directed")), "no frequency"),
        (mr(dosage(qty(10), every(1, 1, "fortnight"))), "not understood"),
        (mr(dosage(qty(0), coded("TID"))), "not positive"),
        (
            mr({"doseAndRate": [{"rateRange": {"high": qty(200, "ug/d")}}], "timing": every()}),
            "rate range",
        ),
        (mr({"doseAndRate": [{"rateQuantity": qty(2, "mL/h")}]}), "per-mL concentration"),
        (
            mr(
                {
                    "doseAndRate": [
                        {
                            "rateRatio": {
                                "numerator": qty(5, "ug"),
                                "denominator": qty(1, "fortnight"),
                            }
                        }
                    ]
                }
            ),
            "not understood",
        ),
        ("not a resource", "not a FHIR resource"),
    ],
)
def test_unknown(request_, reason):
    result = daily_dose(request_)
    assert isinstance(result, DoseUnknown)
    assert reason in result.reason


@pytest.mark.parametrize(
    ("value", "times", "expected"),
    [(20, 4, 80.0), (40.05, 2, 80.1), (26.7, 3, 80.1), (0.1, 3, 0.3)],
)
def test_threshold_edge_precision(value, times, expected):
    result = daily_dose(mr(dosage(qty(value), every(times))))
    assert result.mg_per_day == expected
    assert (result.mg_per_day > 80.0) is (expected > 80.0)


def test_total_over_orders():
    doses = [Dose(30.0, 10.0, "a"), Dose(50.1, 25.05, "b"), Dose(0.1, 0.1, "c")]
    assert total_mg_per_day(doses) == 80.2
    assert total_mg_per_day([]) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("baclofen 10 MG Oral Tablet", (10.0, "unit")),
        ("baclofen 5 MG Oral Tablet [Lioresal]", (5.0, "unit")),
        ("Baclofen 10mg tablets", (10.0, "unit")),
        ("tizanidine 4 MG Oral Capsule", (4.0, "unit")),
        ("baclofen 0.5 MG/ML Injectable Solution", (0.5, "mL")),
        ("20 ML baclofen 0.5 MG/ML Injection", (0.5, "mL")),
        ("1 ML baclofen 0.05 MG/ML Prefilled Syringe", (0.05, "mL")),
        ("2000 MCG/ML", (2.0, "mL")),
        ("Lioresal Intrathecal 500 mcg/mL", (0.5, "mL")),
        ("baclofen 5 mg/5 mL oral solution", (1.0, "mL")),
        ("{30 (baclofen 10 MG Oral Tablet) } Pack", (10.0, "unit")),
        ("acetaminophen 325 MG / hydrocodone bitartrate 5 MG Oral Tablet", None),
        ("Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension", None),
        ("72 HR Fentanyl 0.075 MG/HR Transdermal System", None),
        ("Nitroglycerin 0.4 MG/ACTUAT Mucosal Spray", None),
        ("baclofen", None),
        ("baclofen 0 MG/0 ML", None),
        ("", None),
        (None, None),
    ],
)
def test_strength_from_text(text, expected):
    assert strength_from_text(text) == expected


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ({"rateQuantity": qty(200, "ug/d")}, 0.2),
        ({"rateQuantity": qty(6.25, "ug/h")}, 0.15),  # per hour x 24
        ({"rateQuantity": qty(2, "mg/(24.h)")}, 2.0),
        ({"rateRatio": {"numerator": qty(150, "ug"), "denominator": qty(1, "d")}}, 0.15),
        ({"rateRatio": {"numerator": qty(10, "ug"), "denominator": qty(1, "h")}}, 0.24),
    ],
)
def test_pump_rate_is_a_daily_dose(rate, expected):
    dose = daily_dose(mr({"doseAndRate": [rate]}))
    assert isinstance(dose, Dose)
    assert dose.mg_per_day == expected
    assert "rate" in dose.basis


def test_volume_rate_uses_the_per_ml_strength():
    dose = daily_dose(mr({"doseAndRate": [{"rateQuantity": qty(2, "mL/h")}]}), (0.5, "mL"))
    assert isinstance(dose, Dose)
    assert dose.mg_per_day == 24.0
    assert "0.5 mg/mL" in dose.basis


# -- the one rate reader (daily_dose here, ITB-PATHWAY's unit check) -------------------------


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        # (shown, mg, mg per day, mg per unit of the mass unit written, from a range)
        ({"rateQuantity": qty(0.5, "mg/h")}, ("0.5 mg/h", 0.5, 12.0, 1.0, False)),
        ({"rateQuantity": qty(200, "ug/d")}, ("200 ug/d", 0.2, 0.2, 0.001, False)),
        ({"rateQuantity": qty(0.002, "g/d")}, ("0.002 g/d", 2.0, 2.0, 1000.0, False)),
        ({"rateQuantity": qty(2, "mg/(24.h)")}, ("2 mg/(24.h)", 2.0, 2.0, 1.0, False)),
        ({"rateQuantity": qty(5, "mg")}, ("5 mg", 5.0, None, 1.0, False)),  # no period
        ({"rateRange": {"high": qty(2, "mg/d")}}, ("2 mg/d", 2.0, 2.0, 1.0, True)),
        (
            {"rateRatio": {"numerator": qty(150, "ug"), "denominator": qty(1, "d")}},
            ("150 ug per 1 d", 0.15, 0.15, 0.001, False),
        ),
    ],
)
def test_rates_reads_each_rate_with_its_unit_scale(holder, expected):
    (rate,) = rates({"doseAndRate": [holder]})
    assert (rate.shown, rate.mg, rate.mg_per_day, rate.mass_mg, rate.range_high) == expected


@pytest.mark.parametrize(
    "holder",
    [
        {"rateQuantity": qty(10, "mL/h")},  # a volume: needs a concentration
        {"rateQuantity": qty(1, "mg/kg/h")},  # not an amount per time
        {"rateRatio": {"numerator": qty(5, "mg"), "denominator": qty(1, "fortnight")}},
    ],
)
def test_rates_leaves_out_what_is_not_an_amount_per_time(holder):
    assert rates({"doseAndRate": [holder]}) == []


def test_a_rate_with_no_period_or_only_a_range_is_no_daily_dose():
    for holder in ({"rateQuantity": qty(5, "mg")}, {"rateRange": {"high": qty(2, "mg/d")}}):
        dose = daily_dose(mr({"doseAndRate": [holder]}))
        assert isinstance(dose, DoseUnknown), holder
