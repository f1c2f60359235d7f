"""TIZ-CONTRACEPTIVE: both directions, current vs stopped, oral vs non-oral, text-only drugs."""

from __future__ import annotations

from typing import Any

import pytest

from cds_hooks.rules.tiz_contraceptive import setting_words
from tests.factories import (
    CURRENT_THERAPY_STATUSES,
    RXNORM,
    SNOMED,
    TIZANIDINE_4_TAB,
    concept,
    hook_request,
    med_request,
    rule_cards,
    rules_of,
)

RULE = "TIZ-CONTRACEPTIVE"
ATC = "http://www.whocc.no/atc"
COC_PACK = (
    "748878",
    "{21 (ethinyl estradiol 0.03 MG / levonorgestrel 0.15 MG Oral Tablet) / 7 (inert ingredients "
    "1 MG Oral Tablet) } Pack",
)
PATCH_PACK = (
    "2396253",
    "{3 (168 HR ethinyl estradiol 0.00125 MG/HR / levonorgestrel 0.005 MG/HR Transdermal System) "
    "} Pack",
)
MIRENA = ("807283", "levonorgestrel 0.000833 MG/HR Intrauterine System [Mirena]")
SUBDERMAL_ROUTE = concept(SNOMED, "263887005", "Subdermal route")
ORAL_ROUTE = concept(SNOMED, "26643006", "Oral route")


def contraceptive(
    rid: str = "oc1", drug: tuple[str, str] | None = COC_PACK, **kwargs: Any
) -> dict[str, Any]:
    kwargs.setdefault("status", "active")
    kwargs.setdefault("dose_mg", None)
    return med_request(rid, drug, **kwargs)


def tizanidine(rid: str = "d1", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("dose_mg", 2)
    return med_request(rid, TIZANIDINE_4_TAB, **kwargs)


def with_route(order: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    order["dosageInstruction"] = [{"text": "as directed", "route": route}]
    return order


def contraceptive_cards(call, body):
    return rule_cards(call, body, RULE)


@pytest.mark.parametrize(("status", "fires"), CURRENT_THERAPY_STATUSES)
def test_tizanidine_ordered_with_a_contraceptive_on_record(call, status, fires):
    body = hook_request([tizanidine()], medications=[contraceptive(status=status)])
    cards = contraceptive_cards(call, body)
    assert [c["indicator"] for c in cards] == (["warning"] if fires else [])
    if fires:
        assert cards[0]["summary"].startswith("Tizanidine with an oral contraceptive")
        assert "MedicationRequest/oc1" in cards[0]["detail"]
        assert cards[0]["overrideReasons"]


def test_contraceptive_ordered_while_tizanidine_is_current(call):
    current = tizanidine("t1", status="active")
    body = hook_request([contraceptive("d1", status="draft")], medications=[current])
    cards = contraceptive_cards(call, body)
    assert [c["indicator"] for c in cards] == ["warning"]
    assert cards[0]["summary"].startswith("Oral contraceptive with current tizanidine")
    assert "MedicationRequest/t1" in cards[0]["detail"]
    assert "MedicationRequest/d1" in cards[0]["detail"]


def test_contraceptive_ordered_after_tizanidine_was_stopped_is_quiet(call):
    stopped = tizanidine("t1", status="stopped")
    body = hook_request([contraceptive("d1", status="draft")], medications=[stopped])
    assert contraceptive_cards(call, body) == []


def test_contraceptive_in_another_draft_counts(call):
    body = hook_request([tizanidine("d1"), contraceptive("d2", status="draft")])
    assert [c["indicator"] for c in contraceptive_cards(call, body)] == ["warning"]


def test_oral_contraceptive_is_reported_once_not_again_by_cyp1a2(call):
    status, answer = call(hook_request([tizanidine()], medications=[contraceptive()]))
    assert status == 200
    assert rules_of(answer) == [(RULE, "warning")]


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(contraceptive(drug=MIRENA), id="levonorgestrel-IUS-coded"),
        pytest.param(contraceptive(drug=PATCH_PACK), id="transdermal-pack-in-the-group"),
        pytest.param(contraceptive(drug=None, text="Mirena"), id="IUS-brand-text-only"),
        pytest.param(contraceptive(drug=None, text="NuvaRing"), id="ring-brand-text-only"),
        pytest.param(
            contraceptive(drug=None, text="levonorgestrel intrauterine system"), id="IUS-text"
        ),
        pytest.param(
            with_route(
                contraceptive(
                    drug=None,
                    medicationCodeableConcept=concept(ATC, "G03AC08", "etonogestrel"),
                ),
                SUBDERMAL_ROUTE,
            ),
            id="implant-by-route",
        ),
    ],
)
def test_non_oral_contraceptives_are_quiet(call, other):
    assert contraceptive_cards(call, hook_request([tizanidine()], medications=[other])) == []


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(with_route(contraceptive(), ORAL_ROUTE), id="coded-oral-route"),
        pytest.param(
            with_route(contraceptive(), {"coding": [{"system": "urn:local", "code": "PO"}]}),
            id="local-route-code-is-not-read",
        ),
        pytest.param(
            contraceptive(
                drug=None,
                medicationCodeableConcept=concept(
                    ATC, "G03AA07", "levonorgestrel and ethinylestradiol"
                ),
            ),
            id="ATC-G03A",
        ),
        pytest.param(
            contraceptive(drug=None, text="levonorgestrel/ethinyl estradiol tablets"),
            id="text-only-pill",
        ),
    ],
)
def test_oral_contraceptives_warn(call, other):
    cards = contraceptive_cards(call, hook_request([tizanidine()], medications=[other]))
    assert [c["indicator"] for c in cards] == ["warning"]


def test_text_only_tizanidine_is_matched_and_says_so(call):
    order = med_request("d1", None, text="Zanaflex 4 mg", dose_mg=4)
    cards = contraceptive_cards(call, hook_request([order], medications=[contraceptive()]))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "identified by name only" in cards[0]["detail"]


def test_the_ring_itself_ordered_with_tizanidine_current_is_quiet(call):
    ring = contraceptive("d1", drug=None, text="NuvaRing vaginal ring", status="draft")
    body = hook_request([ring], medications=[tizanidine("t1", status="active")])
    assert contraceptive_cards(call, body) == []


def test_only_the_transdermal_pack_in_the_oral_group_carries_a_non_oral_word(knowledge):
    words = setting_words(knowledge.rule(RULE).value("non_oral_forms"))
    hits = [
        code
        for system, code, display in knowledge.terminology.codes("drug-group/oral-contraceptives")
        if system == RXNORM and any(w in display.lower() for w in words)
    ]
    assert hits == [PATCH_PACK[0]]


def test_every_all_non_oral_contraceptive_brand_is_listed(knowledge):
    """Recompute the brands (TTY BN) whose every product is non-oral: the setting must hold them."""
    settings = knowledge.rule(RULE)
    words = setting_words(settings.value("non_oral_forms"))
    brands = set(setting_words(settings.value("non_oral_brands")))
    terminology = knowledge.terminology
    members = [
        ext["valueString"]
        for ext in terminology.valueset("drug-group/oral-contraceptives")["extension"]
        if ext["url"].endswith("/group-members")
    ]
    needed = set()
    for key in members:
        rows = terminology.valueset(key)["expansion"]["contains"]
        for row in rows:
            tty = {e.get("valueCode") or e.get("valueString") for e in row.get("extension", ())}
            if "BN" not in tty:
                continue
            products = [r["display"] for r in rows if r["display"].endswith(f"[{row['display']}]")]
            if products and all(any(w in p.lower() for w in words) for p in products):
                needed.add(row["display"].lower())
    assert needed
    assert needed <= brands
