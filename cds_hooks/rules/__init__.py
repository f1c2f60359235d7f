"""The rules, in the order their cards appear. Each module restates its guideline and cites it.

A rule module defines RULE_ID, NEEDS (prefetch keys whose data it reads), TRIGGERS (drug keys of a
targeted order that make it relevant) and `evaluate(ctx) -> Iterable[Finding]`. Rules never do I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from cds_hooks.cards import Finding


@dataclass(frozen=True)
class Rule:
    id: str
    needs: tuple[str, ...]
    triggers: tuple[str, ...]
    evaluate: Callable[[Any], Iterable[Finding]]

    @classmethod
    def of(cls, module: ModuleType) -> Rule:
        return cls(module.RULE_ID, tuple(module.NEEDS), tuple(module.TRIGGERS), module.evaluate)


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
