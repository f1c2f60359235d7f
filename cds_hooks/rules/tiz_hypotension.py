"""TIZ-HYPOTENSION: tizanidine with antihypertensives or another alpha-2 agonist.

When tizanidine is ordered while another alpha-2 adrenergic agonist (clonidine, guanfacine,
methyldopa) is current therapy or another draft, or such an agonist is ordered while tizanidine
is, then warn: the hypotensive effects add up and the label advises against the combination.
When tizanidine is ordered while an antihypertensive is current, then inform: monitor for
hypotension. Source: [L] tizanidine label, Warnings and Precautions: Hypotension; Drug
Interactions (alpha-2 adrenergic agonists).
Tiers: the alpha-2 combination is one the label advises against (warning); antihypertensives are
taken by many tizanidine patients and the label asks only for monitoring (info, and only on the
tizanidine order, never on every new blood-pressure prescription). One card per order: the
alpha-2 warning replaces the antihypertensive info, and an antihypertensive that TIZ-CYP1A2
reports (verapamil) is left to that card.
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks.cards import Finding
from cds_hooks.rules.common import interacting, new_therapy
from cds_hooks.rules.context import RuleContext

RULE_ID = "TIZ-HYPOTENSION"
NEEDS = ("medications",)
TRIGGERS = ("drug/tizanidine", "drug-group/alpha2-agonists")


def evaluate(ctx: RuleContext) -> list[Finding]:
    return list(_findings(ctx))


def _findings(ctx: RuleContext) -> Iterator[Finding]:
    tizanidine = ctx.settings.keys("tizanidine")
    alpha2 = ctx.settings.keys("alpha2_agonists")
    antihypertensives = ctx.settings.keys("antihypertensives")
    reported_elsewhere = ctx.settings.keys("reported_by_tiz_cyp1a2")
    for order in new_therapy(ctx, *tizanidine, *alpha2):
        if order.has(*tizanidine):
            partners = interacting(ctx, order, *alpha2)
            card = "alpha2"
            if not partners:
                # An antihypertensive that is also a CYP1A2 inhibitor (verapamil) is reported by
                # TIZ-CYP1A2, whose card already names the hypotension: one card per problem.
                partners = [
                    o
                    for o in interacting(ctx, order, *antihypertensives)
                    if not o.has(*reported_elsewhere)
                ]
                card = "antihypertensive"
        else:
            partners = interacting(ctx, order, *tizanidine)
            card = "alpha2_new"
        if not partners:
            continue
        first = partners[0]
        facts = {
            "order": order.label(),
            "drug": order.name,
            "other": first.name,
            "other_order": f"{first.label()}, {first.state()}",
            "more": f" and {len(partners) - 1} more" if len(partners) > 1 else "",
        }
        evidence = (
            f"Order: {order.label()}",
            *(f"Current: {o.label()}, {o.state()}" for o in partners),
        )
        yield Finding(RULE_ID, card, order.ref, facts, evidence)
