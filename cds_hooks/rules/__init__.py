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
    bac_epilepsy,
    bac_indication,
    bac_neuropsych,
    bac_pregnancy,
    bac_renal,
    bac_taper,
    cns_depressant,
    itb_contraindication,
    itb_pathway,
    tiz_allergy,
    tiz_contraceptive,
    tiz_cyp1a2,
    tiz_dose,
    tiz_hepatic,
    tiz_hypotension,
    tiz_renal,
    tiz_taper,
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
        # Label rules beyond the seeds (issue 13).
        tiz_taper,
        tiz_hypotension,
        tiz_hepatic,
        cns_depressant,
        bac_epilepsy,
        tiz_allergy,
    )
)
