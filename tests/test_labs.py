"""Shared lab helpers (cds_hooks.clinical.labs): latest usable value, units, numbers for a card."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_hooks.clinical.labs import (
    fmt,
    latest_usable,
    normalise_unit,
    unit_factor,
    unit_table,
    usable_time,
)
from tests.factories import LOINC, observation

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
INR = ("6301-6", "INR in Platelet poor plasma by Coagulation assay")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3, "3"), (12.5, "12.5"), (0.05, "0.05"), (1 / 3, "0.3333"), (2.00004, "2"), (80.1, "80.1")],
)
def test_fmt(value, shown):
    assert fmt(value) == shown


@pytest.mark.parametrize(
    ("unit", "normal"),
    [
        ("mL/min/{1.73_m2}", "ml/min/1.73m2"),
        ("mL/min/1.73 m^2", "ml/min/1.73m2"),
        ("mL/min/1.73m\u00b2", "ml/min/1.73m2"),
        ("\u00b5mol/L", "umol/l"),
        ("\u03bcmol/L", "umol/l"),
        (" {INR} ", "inr"),
        ("[lb_av]", "[lbav]"),
    ],
)
def test_normalise_unit(unit, normal):
    assert normalise_unit(unit) == normal


def test_unit_tables_and_lookups_agree():
    table = unit_table({"[lb_av]": 0.45359237, "umol/l": 1 / 88.4})
    # The code decides first; the unit as shown is the human one.
    assert unit_factor({"unit": "lb", "code": "[lb_av]"}, table) == (0.45359237, "lb")
    assert unit_factor({"unit": "\u00b5mol/L"}, table) == (1 / 88.4, "\u00b5mol/L")
    assert unit_factor({"unit": "stone"}, table) is None
    assert unit_factor("garbage", table) is None


def lab(oid, *, when="2026-11-17T08:00:00Z", status="final", system=LOINC):
    """An INR result from the shared factory."""
    return observation(oid, INR, 1.1, None, when=when, status=status, system=system)


@pytest.mark.parametrize(
    ("fields", "usable"),
    [
        ({}, True),
        ({"status": "preliminary"}, True),
        ({"status": "registered"}, False),
        ({"when": "2026-10-22"}, True),  # 30 calendar days: still in
        ({"when": "2026-10-21"}, False),
        ({"when": "2026-11-22T11:00:00Z"}, True),  # clock skew
        ({"when": "2026-11-23T13:00:00Z"}, False),  # a data error
        ({"when": None}, False),
    ],
)
def test_usable_time(fields, usable):
    assert (usable_time(lab("o1", **fields), NOW, 30) is not None) is usable


def test_latest_usable_by_value_set(knowledge):
    older = lab("old", when="2026-11-10")
    newer = lab("new", when="2026-11-18", system="urn:oid:2.16.840.1.113883.6.1")
    amended_away = lab("gone", when="2026-11-19", status="entered-in-error")
    found = latest_usable(
        [older, newer, amended_away], knowledge.terminology, ["observation/inr"], NOW, 30
    )
    assert found is newer
    assert latest_usable([older], knowledge.terminology, ["observation/egfr"], NOW, 30) is None
