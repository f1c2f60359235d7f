"""The rules, in the order their cards appear within one indicator (critical, warning, info).

Each module restates its guideline and cites it, and declares itself for the typed rule API in
`cds_hooks/rules/context.py` (RULE_ID, NEEDS, TRIGGERS, `evaluate(ctx: RuleContext) ->
list[Finding]`). Rules never do I/O. A new rule: a module here and one line in RULES.
"""

from __future__ import annotations

from cds_hooks.rules import (
    antispastic_duplicate,
    bac_allergy,
    bac_dopamine_antagonist,
    bac_dose,
    bac_indication,
    bac_neuropsych,
    bac_pregnancy,
    bac_renal,
    bac_taper,
    itb_contraindication,
    itb_pathway,
    tiz_contraceptive,
    tiz_cyp1a2,
    tiz_dose,
    tiz_renal,
)
from cds_hooks.rules.context import Rule

__all__ = ["RULES", "Rule"]

RULES: tuple[Rule, ...] = tuple(
    Rule.of(m)
    for m in (
        bac_indication,
        bac_dopamine_antagonist,
        bac_neuropsych,
        bac_dose,
        bac_renal,
        bac_pregnancy,
        bac_allergy,
        bac_taper,
        itb_contraindication,
        itb_pathway,
        tiz_renal,
        tiz_contraceptive,
        tiz_dose,
        tiz_cyp1a2,
        antispastic_duplicate,
    )
)
