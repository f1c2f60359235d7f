"""TIZ-CONTRACEPTIVE: tizanidine together with an oral contraceptive.

When tizanidine is ordered while an oral contraceptive (ATC G03A, combined or progestin-only) is
current therapy or another draft, or an oral contraceptive is ordered while tizanidine is, then
warn on the new order: women on oral contraceptives clear tizanidine about 50% more slowly; the
label says concomitant use is not recommended, and if it is clinically necessary, start with a
single 2 mg dose and increase in 2-4 mg steps [L][G]. The card does not suggest a patch or ring
instead (they also give systemic hormone exposure). Source: [L] "Drug Interactions: Oral
Contraceptives".

Only oral products count. The contraceptive value set is ingredient-based (terminology README
caveat 7) and a name in free text cannot tell a pill from a ring, so a product is not oral when
its name or a coding display holds one of the rule's non-oral dose-form words (intrauterine,
ring, implant, transdermal, injection...) or non-oral brand names (Mirena, NuvaRing...), or its
dosageInstruction carries a SNOMED CT or EDQM route that is not an oral route (local route codes
are not read). An order with no route and no such word is taken as oral (the pill is by far the
most common form, and the card names the product for the clinician to judge).
"""

from __future__ import annotations

from cds_hooks.cards import Finding
from cds_hooks.fhir.read import as_dict, as_list, codings, concept_text
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-CONTRACEPTIVE"
NEEDS = ("medications",)
TRIGGERS = ("tizanidine", "oral_contraceptives")


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    settings = ctx.settings
    tizanidine = settings.keys("tizanidine")
    contraceptives = settings.keys("oral_contraceptives")
    words = setting_words(settings.value("non_oral_forms")) + setting_words(
        settings.value("non_oral_brands")
    )
    oral_routes = settings.keys("oral_route")
    terminology = ctx.knowledge.terminology

    def oral_contraceptive(order) -> bool:
        return order.has(*contraceptives) and _oral(order, words, oral_routes, terminology)

    current = ctx.current
    current_refs = {o.ref for o in current}
    for order in ctx.targets(*tizanidine, *contraceptives):
        if order.ref not in current_refs:  # a stop is not new therapy
            continue
        if order.has(*tizanidine):
            card = "on_contraceptive"
            partners = [o for o in current if o.ref != order.ref and oral_contraceptive(o)]
        elif oral_contraceptive(order):
            card = "new_contraceptive"
            partners = [o for o in current if o.ref != order.ref and o.has(*tizanidine)]
        else:
            continue
        if not partners:
            continue
        tiz, pill = (order, partners[0]) if card == "on_contraceptive" else (partners[0], order)
        facts = {
            "order": order.label(),
            "drug": order.name,
            "contraceptive": pill.name,
            "contraceptive_order": f"{pill.ref}, {pill.state()}",
            "tizanidine_order": f"{tiz.ref}, {tiz.state()}",
        }
        what = "Oral contraceptive" if card == "on_contraceptive" else "Tizanidine"
        evidence = (
            f"Order: {order.label()}",
            *(f"{what}: {o.label()}, {o.state()}" for o in partners),
        )
        findings.append(Finding(RULE_ID, card, order.ref, facts, evidence))
    return findings


def setting_words(value) -> tuple[str, ...]:
    """The lower-cased words of a comma-separated setting (the schema has no list values)."""
    return tuple(w.strip().lower() for w in str(value).split(",") if w.strip())


def _oral(order, words: tuple[str, ...], oral_routes: tuple[str, ...], terminology) -> bool:
    """Whether a contraceptive order is an oral product (see the module docstring)."""
    names = [order.name, *(display for _s, _c, display in codings(order.concept) if display)]
    if any(word in name.lower() for name in names for word in words):
        return False
    for dosage in as_list(order.resource.get("dosageInstruction")):
        route = as_dict(as_dict(dosage).get("route"))
        # Coded in a system the oral value sets use (SNOMED CT, EDQM) and not oral: not a pill.
        # A local route code says nothing here.
        known = terminology.coded_in_systems_of(route, *oral_routes)
        if known and not terminology.in_valueset(route, *oral_routes):
            return False
        if any(word in (concept_text(route) or "").lower() for word in words):
            return False
    return True
