"""CNS-DEPRESSANT: baclofen or tizanidine with other CNS depressants.

When oral baclofen or tizanidine is ordered while an opioid, a benzodiazepine, a Z-drug hypnotic,
a barbiturate or a gabapentinoid is current therapy or another draft, or the patient has an
active alcohol use disorder, then inform: the CNS-depressant effects add up (sedation,
dizziness, psychomotor impairment) [L][G]. When two or more of these kinds are present (e.g. an
opioid and a benzodiazepine), then warn: the sedation risk compounds. Source: [L] tizanidine
label, Warnings and Precautions: Sedation; Drug Interactions (alcohol, other CNS depressants);
baclofen tablets label (CNS depressants and alcohol are additive); [G] sedation.
Tiers: one depressant beside an antispastic is common and the label asks for caution (info);
two or more kinds at once is the combination where sedation compounds (warning). One card per
order. Intrathecal baclofen is left out: peri-procedural sedation around a screening bolus or
pump refill is planned and monitored, and the oral labels are the source.
"""

from __future__ import annotations

from collections.abc import Iterator

from cds_hooks.cards import Finding
from cds_hooks.rules.common import interacting, new_therapy
from cds_hooks.rules.context import RuleContext

RULE_ID = "CNS-DEPRESSANT"
NEEDS = ("medications", "conditions")
TRIGGERS = ("drug/baclofen", "drug/tizanidine")
# Value-set names in the settings (one per kind of depressant), in the order cards name them.
KINDS = ("opioids", "benzodiazepines", "z_drugs", "barbiturates", "gabapentinoids")


def evaluate(ctx: RuleContext) -> list[Finding]:
    return list(_findings(ctx))


def _findings(ctx: RuleContext) -> Iterator[Finding]:
    terminology = ctx.knowledge.terminology
    alcohol = ctx.record.conditions_in(ctx.settings.keys("alcohol_use_disorder"))
    for order in new_therapy(ctx, *ctx.settings.keys("antispastics")):
        if order.intrathecal:
            continue
        found: list[tuple[str, list[str]]] = []
        for kind in KINDS:
            keys = ctx.settings.keys(kind)
            others = interacting(ctx, order, *keys)
            if others:
                title = terminology.title(keys[0]).split(" (")[0].lower()
                found.append((title, [f"{title}: {o.label()}, {o.state()}" for o in others]))
        if alcohol:
            found.append(("alcohol use disorder", [c.label() for c in alcohol]))
        if not found:
            continue
        names = [name for name, _lines in found]
        facts = {
            "order": order.label(),
            "drug": "Tizanidine" if order.has("drug/tizanidine") else "Baclofen",
            "depressants": _join(names),
            "count": len(found),
        }
        evidence = (f"Order: {order.label()}", *(line for _n, lines in found for line in lines))
        yield Finding(RULE_ID, "several" if len(found) > 1 else "one", order.ref, facts, evidence)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
