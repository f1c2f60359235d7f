"""ITB-CONTRAINDICATION at both sides of every threshold, unit and status."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks import create_app
from cds_hooks.knowledge import Knowledge
from cds_hooks.record import build_record
from cds_hooks.rules import itb_contraindication, itb_pathway
from cds_hooks.rules.context import RuleContext
from cds_hooks.services import BY_ID
from tests.conftest import NOW
from tests.factories import (
    BACLOFEN_10_TAB,
    BACLOFEN_IT,
    ICD10,
    MS,
    SNOMED,
    condition,
    hook_request,
    med_request,
    observation,
    rules_of,
)

RULE = "ITB-CONTRAINDICATION"
WARFARIN = ("855332", "warfarin sodium 5 MG Oral Tablet")
APIXABAN = ("1364445", "apixaban 5 MG Oral Tablet")
CLOPIDOGREL = ("309362", "clopidogrel 75 MG Oral Tablet")
SEPSIS = (SNOMED, "91302008", "Sepsis")
MENINGITIS = (ICD10, "G00.1", "Pneumococcal meningitis")
BACK_CELLULITIS = (ICD10, "L03.312", "Cellulitis of back [any part except buttock]")
SPINA_BIFIDA = (ICD10, "Q05.7", "Lumbar spina bifida without hydrocephalus")
SCOLIOSIS = (ICD10, "M41.26", "Other idiopathic scoliosis, lumbar region")
SPINAL_FUSION = (ICD10, "M43.26", "Fusion of spine, lumbar region")
SPINAL_STENOSIS = (ICD10, "M48.06", "Spinal stenosis, lumbar region")
VON_WILLEBRAND = (ICD10, "D68.0", "Von Willebrand disease")
INR = ("6301-6", "INR in Platelet poor plasma by Coagulation assay")
PLATELETS = ("777-3", "Platelets [#/volume] in Blood by Automated count")
PRIOR_ORAL = med_request("prior-oral", status="completed", authoredOn="2025-06-10")
RECENT_ONSET = "2026-11-15"  # six days before the test clock (tests/conftest.py NOW)


def infection(cid: str, code: tuple[str, str, str], **kwargs: Any) -> dict[str, Any]:
    """An infection Condition with a recent onset (the factory default, 2024, is an old one)."""
    return condition(cid, code, **{"onset": RECENT_ONSET, **kwargs})


def itb_order(rid: str = "itb", **extra: Any) -> dict[str, Any]:
    """A 50 mcg (0.05 mg) intrathecal screening bolus."""
    return med_request(rid, BACLOFEN_IT, dose_mg=0.05, per_day=1, route="intrathecal", **extra)


def normal_labs() -> list[dict[str, Any]]:
    return [observation("inr", INR, 1.0, "{INR}"), observation("plt", PLATELETS, 245, "10*3/uL")]


def body(
    order: dict | None = None,
    *,
    conditions: list | None = None,
    medications: list | None = None,
    observations: list | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    return hook_request(
        [order or itb_order()],
        conditions=[condition("c-ms", MS), *(conditions or [])],
        medications=[PRIOR_ORAL, *(medications or [])],
        observations=normal_labs() if observations is None else observations,
        **kwargs,
    )


def itb_cards(call, request) -> list[dict]:
    status, answer = call(request)
    assert status == 200
    return [c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE]


def indicators(call, request) -> list[str]:
    return [c["indicator"] for c in itb_cards(call, request)]


@pytest.fixture
def call_with(knowledge, tmp_path):
    """Call the service with some ITB-CONTRAINDICATION settings changed."""

    def _call(request, **values):
        rule = knowledge.rule(RULE)
        settings = {k: dict(v) for k, v in rule.settings.items()}
        for name, value in values.items():
            settings[name]["value"] = value
        rules = {**knowledge.rules, RULE: dataclasses.replace(rule, settings=settings)}
        changed = Knowledge(knowledge.common, rules, knowledge.terminology)
        app = create_app({"NOW": NOW, "KNOWLEDGE": changed, "DATA_DIR": str(tmp_path)})
        response = app.test_client().post(
            f"/cds-services/antispasticity-{request['hook']}", json=request
        )
        assert response.status_code == 200
        cards = response.get_json()["cards"]
        return [c for c in cards if c["source"]["topic"]["code"] == RULE]

    return _call


def test_clean_patient_gets_no_card(call):
    assert indicators(call, body()) == []


# --- labs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "comparator", "expected"),
    [
        (1.0, None, []),
        (1.5, None, []),
        (1.51, None, ["critical"]),
        (1.6, None, ["critical"]),
        (2.4, None, ["critical"]),
        (1.5, ">", ["critical"]),
        (1.5, ">=", []),
        (2.0, "<", []),
    ],
)
def test_inr_threshold(call, value, comparator, expected):
    labs = [
        observation("inr", INR, value, "{INR}", comparator=comparator),
        observation("plt", PLATELETS, 245, "10*3/uL"),
    ]
    assert indicators(call, body(observations=labs)) == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (100, "10*3/uL", []),  # the local default for a high-risk neuraxial procedure
        (99.9, "10*3/uL", ["critical"]),
        (100, "10*9/L", []),
        (99, "10*9/L", ["critical"]),
        (50, "10*9/L", ["critical"]),  # the old default 50 was lenient
        (99, "10^9/L", ["critical"]),
        (99, "K/uL", ["critical"]),
        (99, "x10E3/uL", ["critical"]),
        (100000, "/uL", []),
        (99900, "/uL", ["critical"]),
        (99000, "/mm3", ["critical"]),
        (12, "%", []),  # not a count: never a guess
        (12, None, []),  # no unit: never a guess
    ],
)
def test_platelet_threshold_and_units(call, value, unit, expected):
    labs = [observation("inr", INR, 1.0, "{INR}"), observation("plt", PLATELETS, value, unit)]
    assert indicators(call, body(observations=labs)) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-10-22T08:00:00Z", ["critical"]),  # 30 days before NOW: inside the look-back
        ("2026-10-21T08:00:00Z", []),  # 31 days: ignored
    ],
)
def test_lab_lookback_from_common_json(call, knowledge, when, expected):
    assert knowledge.data_setting("lab_lookback_days") == 30
    labs = [observation("inr", INR, 2.0, "{INR}", when=when)]
    assert indicators(call, body(observations=labs)) == expected


@pytest.mark.parametrize(("old", "new", "expected"), [(2.5, 1.1, []), (1.1, 2.5, ["critical"])])
def test_latest_inr_wins(call, old, new, expected):
    labs = [
        observation("inr-new", INR, new, "{INR}", when="2026-11-20T08:00:00Z"),
        observation("inr-old", INR, old, "{INR}", when="2026-11-10T08:00:00Z"),
    ]
    assert indicators(call, body(observations=labs)) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("final", ["critical"]),
        ("amended", ["critical"]),
        ("preliminary", ["critical"]),
        ("registered", []),
        ("cancelled", []),
        ("entered-in-error", []),
    ],
)
def test_observation_status_must_be_usable(call, status, expected):
    labs = [observation("inr", INR, 2.0, "{INR}", status=status)]
    assert indicators(call, body(observations=labs)) == expected


def test_missing_labs_give_no_card(call):
    assert indicators(call, body(observations=[])) == []


def test_coagulopathy_condition_and_labs_make_one_card_with_all_evidence(call):
    labs = [
        observation("inr", INR, 1.6, "{INR}"),
        observation("plt", PLATELETS, 40, "10*3/uL"),
    ]
    cards = itb_cards(
        call, body(conditions=[condition("c-vwd", VON_WILLEBRAND)], observations=labs)
    )
    assert [c["indicator"] for c in cards] == ["critical"]
    detail = cards[0]["detail"]
    assert "Condition: Von Willebrand disease (ICD-10-CM D68.0" in detail
    assert "INR 1.6 > 1.5" in detail
    assert "platelets 40 x10^9/L < 100" in detail
    assert (
        "Observation: INR in Platelet poor plasma by Coagulation assay (LOINC 6301-6) = 1.6 {INR}, "
        "2026-11-17, status final" in detail
    )
    assert "(LOINC 777-3) = 40 10*3/uL, 2026-11-17" in detail


# --- anticoagulants ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", ["critical"]),
        ("on-hold", ["critical"]),
        ("stopped", []),
        ("completed", []),
        ("cancelled", []),
        ("entered-in-error", []),
    ],
)
def test_current_anticoagulant_only(call, status, expected):
    warfarin = med_request("warf", WARFARIN, dose_mg=5, per_day=1, status=status)
    assert indicators(call, body(medications=[warfarin])) == expected


def test_apixaban_is_an_anticoagulant(call):
    apixaban = med_request("apix", APIXABAN, dose_mg=5, per_day=2, status="active")
    cards = itb_cards(call, body(medications=[apixaban]))
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "apixaban 5 MG Oral Tablet" in cards[0]["summary"]


def test_anticoagulant_in_another_draft_counts(call):
    request = hook_request(
        [itb_order(), med_request("apix", APIXABAN, dose_mg=5, per_day=2)],
        selections=["MedicationRequest/itb"],
        conditions=[condition("c-ms", MS)],
        medications=[PRIOR_ORAL],
        observations=normal_labs(),
    )
    cards = itb_cards(call, request)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "another draft order in this session" in cards[0]["detail"]


def test_warfarin_with_high_inr_gives_two_cards_naming_their_evidence(call):
    warfarin = med_request(
        "warf", WARFARIN, dose_mg=5, per_day=1, status="active", authoredOn="2026-08-12"
    )
    labs = [observation("inr", INR, 2.4, "{INR}"), observation("plt", PLATELETS, 245, "10*3/uL")]
    cards = itb_cards(call, body(medications=[warfarin], observations=labs))
    assert [c["indicator"] for c in cards] == ["critical", "critical"]
    anticoagulant, bleeding = cards
    assert anticoagulant["summary"].startswith("Intrathecal baclofen: anticoagulant warfarin")
    assert (
        "MedicationRequest: warfarin sodium 5 MG Oral Tablet (MedicationRequest/warf), "
        "RxNorm 855332, status active, authored 2026-08-12" in anticoagulant["detail"]
    )
    assert "INR 2.4" in bleeding["summary"]
    for card in cards:
        assert len(card["summary"]) < 140
        assert card["overrideReasons"]
        assert card["suggestions"][0]["actions"][0] == {
            "type": "delete",
            "description": "Remove the draft order MedicationRequest/itb",
            "resourceId": "MedicationRequest/itb",
        }
        assert "doi.org/10.1097/AAP.0000000000000700" in card["detail"]


@pytest.mark.parametrize(("include", "expected"), [(False, []), (True, ["critical"])])
def test_p2y12_antiplatelet_counts_unless_switched_off(call_with, include, expected):
    clopidogrel = med_request("clop", CLOPIDOGREL, dose_mg=75, per_day=1, status="active")
    cards = call_with(body(medications=[clopidogrel]), include_p2y12_antiplatelets=include)
    assert [c["indicator"] for c in cards] == expected
    if cards:
        assert "P2Y12 antiplatelet clopidogrel" in cards[0]["summary"]
        assert "stopped beforehand" in cards[0]["detail"]
        assert "Anticoagulant therapy precludes" not in cards[0]["detail"]


def test_p2y12_antiplatelet_counts_by_default(call):
    clopidogrel = med_request("clop", CLOPIDOGREL, dose_mg=75, per_day=1, status="active")
    cards = [
        c
        for c in call(body(medications=[clopidogrel]))[1]["cards"]
        if c["source"]["topic"]["code"] == RULE
    ]
    assert [c["indicator"] for c in cards] == ["critical"]


# --- infection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "clinical", "where", "expected"),
    [
        (SEPSIS, "active", "systemic infection", ["critical"]),
        (SEPSIS, "resolved", None, []),
        (SEPSIS, "remission", None, []),
        (SEPSIS, "recurrence", "systemic infection", ["critical"]),
        (MENINGITIS, "active", "systemic infection", ["critical"]),
        (BACK_CELLULITIS, "active", "local infection at the access site", ["critical"]),
        (BACK_CELLULITIS, "inactive", None, []),
    ],
)
def test_infection(call, code, clinical, where, expected):
    cards = itb_cards(call, body(conditions=[infection("c-inf", code, clinical=clinical)]))
    assert [c["indicator"] for c in cards] == expected
    if where:
        assert f"({where})" in cards[0]["detail"]
        assert f"Condition: {code[2]}" in cards[0]["detail"]


def test_refuted_sepsis_gives_no_card(call):
    request = body(conditions=[infection("c-inf", SEPSIS, verification="refuted")])
    assert indicators(call, request) == []


@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        ("2026-08-23", "critical"),  # 90 days before 2026-11-21: still recent
        ("2026-08-22", "warning"),  # 91 days
        ("2019-04-02", "warning"),
    ],
)
@pytest.mark.parametrize("code", [SEPSIS, MENINGITIS])
def test_acute_infection_active_for_long_is_a_warning_to_confirm(call, code, onset, expected):
    cards = itb_cards(call, body(conditions=[infection("c-inf", code, onset=onset)]))
    assert [c["indicator"] for c in cards] == [expected]
    if expected == "warning":
        assert cards[0]["summary"] == (
            f"Intrathecal baclofen: {code[2]} recorded as active since {onset}; "
            "confirm it has resolved"
        )
        assert "**Confirm it has resolved**" in cards[0]["detail"]
        assert cards[0]["overrideReasons"]
    else:
        assert "precludes catheter insertion" in cards[0]["summary"]


def _dated(onset_field: dict[str, Any]) -> dict[str, Any]:
    resource = infection("c-inf", SEPSIS)
    del resource["onsetDateTime"]
    return {**resource, **onset_field}


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ({"onsetPeriod": {"start": "2020-01-05", "end": "2026-11-20"}}, ["warning"]),
        ({"recordedDate": "2021-06-01"}, ["warning"]),  # no onset: the recorded date
        ({"recordedDate": "2026-11-19"}, ["critical"]),
        ({}, ["critical"]),  # undated: never a guess, the infection may be current
        ({"onsetString": "years ago"}, ["critical"]),
    ],
)
def test_infection_age_from_onset_else_recorded_date(call, dates, expected):
    assert indicators(call, body(conditions=[_dated(dates)])) == expected


def test_a_recent_infection_keeps_the_card_critical_next_to_an_old_one(call):
    request = body(
        conditions=[
            infection("c-old", SEPSIS, onset="2019-04-02"),
            infection("c-new", MENINGITIS),
        ]
    )
    cards = itb_cards(call, request)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "Sepsis" in cards[0]["detail"]
    assert "Pneumococcal meningitis" in cards[0]["detail"]


def test_a_local_infection_is_not_aged(call):
    request = body(conditions=[infection("c-inf", BACK_CELLULITIS, onset="2019-04-02")])
    assert indicators(call, request) == ["critical"]


@pytest.mark.parametrize(("days", "expected"), [(3650, ["critical"]), (30, ["warning"])])
def test_acute_infection_max_age_is_a_setting(call_with, days, expected):
    request = body(conditions=[infection("c-inf", SEPSIS, onset="2026-09-01")])
    cards = call_with(request, acute_infection_max_age_days=days)
    assert [c["indicator"] for c in cards] == expected


# --- spinal abnormality -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [SPINA_BIFIDA, SCOLIOSIS, SPINAL_FUSION])
def test_spinal_abnormality_warns(call, code):
    cards = itb_cards(call, body(conditions=[condition("c-spine", code)]))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert code[2] in cards[0]["summary"]
    assert cards[0]["overrideReasons"]


@pytest.mark.parametrize(("include", "expected"), [(False, []), (True, ["warning"])])
def test_spinal_stenosis_counts_only_with_the_setting(call_with, include, expected):
    request = body(conditions=[condition("c-spine", SPINAL_STENOSIS)])
    cards = call_with(request, include_spinal_stenosis=include)
    assert [c["indicator"] for c in cards] == expected


def test_every_category_at_once_gives_one_card_each_in_order(call):
    warfarin = med_request("warf", WARFARIN, dose_mg=5, per_day=1, status="active")
    request = body(
        medications=[warfarin],
        conditions=[infection("c-inf", SEPSIS), condition("c-spine", SPINA_BIFIDA)],
        observations=[observation("plt", PLATELETS, 30, "10*9/L")],
    )
    cards = itb_cards(call, request)
    assert [c["indicator"] for c in cards] == ["critical", "critical", "critical", "warning"]
    assert "anticoagulant" in cards[0]["summary"]
    assert "bleeding risk (platelets 30 x10^9/L < 100)" in cards[1]["summary"]
    assert "Sepsis" in cards[2]["summary"]
    assert "spina bifida" in cards[3]["summary"]


# --- which orders -----------------------------------------------------------------------------


def test_oral_baclofen_for_the_same_patient_gets_no_itb_card(call):
    warfarin = med_request("warf", WARFARIN, dose_mg=5, per_day=1, status="active")
    oral = med_request("oral", BACLOFEN_10_TAB, dose_mg=5, per_day=3, route="oral")
    request = body(
        oral,
        medications=[warfarin],
        conditions=[infection("c-inf", SEPSIS), condition("c-spine", SPINA_BIFIDA)],
    )
    status, answer = call(request)
    assert status == 200
    assert RULE not in {code for code, _ in rules_of(answer)}


def test_oral_product_given_intrathecally_counts_as_itb(call):
    order = med_request("itb", BACLOFEN_10_TAB, dose_mg=0.05, per_day=1, route="intrathecal")
    assert indicators(call, body(order, conditions=[infection("c-inf", SEPSIS)])) == ["critical"]


def test_text_only_lioresal_intrathecal_order_is_checked_and_says_so(call):
    order = med_request("itb", None, text="Lioresal Intrathecal", dose_mg=0.05, per_day=1)
    cards = itb_cards(call, body(order, conditions=[infection("c-inf", SEPSIS)]))
    assert [c["indicator"] for c in cards] == ["critical"]
    assert (
        "Lioresal Intrathecal (MedicationRequest/itb) (identified by name only)"
        in (cards[0]["detail"])
    )


def test_a_stopped_itb_order_is_not_an_insertion(call):
    order = itb_order(status="stopped")
    request = body(order, conditions=[infection("c-inf", SEPSIS)], hook="order-sign")
    assert indicators(call, request) == []


def test_established_pump_refill_is_not_an_insertion(call):
    pump = itb_order("pump", status="active", authoredOn="2025-01-10")
    warfarin = med_request("warf", WARFARIN, dose_mg=5, per_day=1, status="active")
    assert indicators(call, body(medications=[pump, warfarin])) == []


@pytest.mark.parametrize("status", ["draft", "active"])
def test_the_itb_draft_echoed_in_the_medications_search_is_not_a_pump(call, status):
    """EHRs return the draft itself in their MedicationRequest search: it must not silence
    the checks on itself."""
    apixaban = med_request("apix", APIXABAN, dose_mg=5, per_day=2, status="active")
    echoed = itb_order(status=status)  # same id as the draft, MedicationRequest/itb
    assert indicators(call, body(itb_order(), medications=[echoed, apixaban])) == ["critical"]


def test_another_sessions_itb_draft_on_record_is_not_a_pump(call):
    apixaban = med_request("apix", APIXABAN, dose_mg=5, per_day=2, status="active")
    other = itb_order("itb-other-session", status="draft", authoredOn="2026-11-20")
    assert indicators(call, body(medications=[other, apixaban])) == ["critical"]


def test_an_on_hold_pump_is_established(call):
    pump = itb_order("pump", status="on-hold", authoredOn="2025-01-10")
    apixaban = med_request("apix", APIXABAN, dose_mg=5, per_day=2, status="active")
    assert indicators(call, body(medications=[pump, apixaban])) == []


def test_completed_screening_bolus_does_not_make_a_pump(call):
    bolus = itb_order("bolus", status="completed", authoredOn="2026-10-01")
    warfarin = med_request("warf", WARFARIN, dose_mg=5, per_day=1, status="active")
    assert indicators(call, body(medications=[bolus, warfarin])) == ["critical"]


def test_established_pump_setting_off_checks_refills_too(call_with):
    pump = itb_order("pump", status="active", authoredOn="2025-01-10")
    warfarin = med_request("warf", WARFARIN, dose_mg=5, per_day=1, status="active")
    cards = call_with(body(medications=[pump, warfarin]), established_pump_is_not_insertion=False)
    assert [c["indicator"] for c in cards] == ["critical"]


# --- hostile data -----------------------------------------------------------------------------

_ITB_BODY = body(
    itb_order(),
    medications=[med_request("warf", WARFARIN, dose_mg=5, per_day=1, status="active")],
    conditions=[infection("c-inf", SEPSIS), condition("c-spine", SPINA_BIFIDA)],
    observations=[
        observation("inr", INR, 2.0, "{INR}"),
        observation("plt", PLATELETS, 30, "10*3/uL", comparator="<"),
    ],
)


def _leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out: list[tuple] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_leaf_paths(value, (*prefix, key)))
    return out


_PATHS = [
    p for p in _leaf_paths(_ITB_BODY) if p[0] == "prefetch" or p[:2] == ("context", "draftOrders")
]
_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _JUNK), min_size=1, max_size=4))
def test_itb_rules_raise_nothing_on_mutated_data(knowledge, changes):
    """Wrong types anywhere in the ITB order or the patient's data: no exception, ever."""
    request = copy.deepcopy(_ITB_BODY)
    for path, value in changes:
        node: Any = request
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    # A change may replace the whole prefetch with a non-object: then there is no data.
    prefetch = request["prefetch"] if isinstance(request["prefetch"], dict) else {}
    resources = {
        key: [e.get("resource") for e in value.get("entry", []) if isinstance(e, dict)]
        for key, value in prefetch.items()
        if isinstance(value, dict) and isinstance(value.get("entry"), list)
    }
    resources = {k: [r for r in v if isinstance(r, dict)] for k, v in resources.items()}
    try:
        record = build_record(
            BY_ID["antispasticity-order-select"], request["context"], resources, {}, {}, knowledge
        )
    except Exception:
        return  # record building is not this rule's code (tests/test_hostile_input.py covers it)
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    for module in (itb_contraindication, itb_pathway):
        ctx = RuleContext(record, knowledge, knowledge.rule(module.RULE_ID), now)
        list(module.evaluate(ctx))
