"""TIZ-CYP1A2: tizanidine together with a CYP1A2 inhibitor.

When tizanidine is ordered while fluvoxamine or ciprofloxacin (strong CYP1A2 inhibitors) is
current therapy or another draft, or one of them is ordered while tizanidine is, then flag the
new order critical: the combination is contraindicated (fluvoxamine raises tizanidine exposure
about 33-fold, ciprofloxacin about 10-fold) and suggest cancelling the new order. With another
CYP1A2 inhibitor (zileuton, amiodarone, mexiletine, propafenone, verapamil, cimetidine,
famotidine, acyclovir, ticlopidine), warn: avoid, or start at 2 mg and titrate in 2-4 mg steps.
Source: [L] "Contraindications" and "Drug Interactions".

One card per order, the highest tier, naming every interacting order. Oral contraceptives are
CYP1A2 inhibitors too, but TIZ-CONTRACEPTIVE reports them (one card per problem), so they are left
out here. Eye, ear and skin preparations (common.systemic, e.g. ciprofloxacin ophthalmic
solution) have no relevant systemic exposure and do not count.
"""

from __future__ import annotations

from cds_hooks import suggestions
from cds_hooks.cards import Finding
from cds_hooks.rules.common import systemic
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-CYP1A2"
NEEDS = ("medications",)
TRIGGERS = ("tizanidine", "strong", "other")
TIERS = ("strong", "other")  # value-set names in the settings, and card names, highest first


def evaluate(ctx: RuleContext) -> list[Finding]:
    findings: list[Finding] = []
    settings = ctx.settings
    tizanidine = settings.keys("tizanidine")
    excluded = settings.keys("reported_by_tiz_contraceptive")

    def tier(order) -> str | None:
        # Eye, ear and skin preparations do not reach the circulation (common.systemic).
        if order.has(*excluded) or not systemic(order, ctx.knowledge):
            return None
        return next((t for t in TIERS if order.has(*settings.keys(t))), None)

    current = ctx.current
    current_refs = {o.ref for o in current}
    for order in ctx.targets(*tizanidine, *(k for t in TIERS for k in settings.keys(t))):
        if order.ref not in current_refs:  # a stop is not new therapy
            continue
        others = [o for o in current if o.ref != order.ref]
        if order.has(*tizanidine):
            partners = [(o, t) for o in others if (t := tier(o))]
        elif own := tier(order):
            partners = [(o, own) for o in others if o.has(*tizanidine)]
        else:
            continue
        if not partners:
            continue
        card = min((t for _o, t in partners), key=TIERS.index)
        first = next(o for o, t in partners if t == card)
        tiz, inhibitor = (order, first) if order.has(*tizanidine) else (first, order)
        facts = {
            "order": order.label(),
            "drug": order.name,
            "inhibitor": _ingredient(inhibitor, ctx.knowledge.terminology),
            "inhibitor_order": f"{inhibitor.label()}, {inhibitor.state()}",
            "tizanidine_order": f"{tiz.label()}, {tiz.state()}",
        }
        evidence = (
            f"Order: {order.label()}",
            *(f"{_what(t, order, tizanidine)}: {o.label()}, {o.state()}" for o, t in partners),
        )
        cancel = (suggestions.cancel(order),) if card == "strong" else ()
        findings.append(Finding(RULE_ID, card, order.ref, facts, evidence, cancel))
    return findings


def _ingredient(order, terminology) -> str:
    """The inhibitor's ingredient name (e.g. "ciprofloxacin") for the summary, else its name.

    The value sets hold only the drugs the rules need, so a `drug/*` key on an inhibitor order is
    the inhibitor; the shortest key is the ingredient (not a product subset like `drug/x-oral`).
    """
    names = sorted((k for k in order.drugs if k.startswith("drug/")), key=lambda k: (len(k), k))
    return terminology.title(names[0]).lower() if names else order.name


def _what(tier: str, order, tizanidine) -> str:
    if not order.has(*tizanidine):
        return "Tizanidine"
    return "Strong CYP1A2 inhibitor" if tier == "strong" else "CYP1A2 inhibitor"
