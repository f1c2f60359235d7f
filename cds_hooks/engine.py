"""Run the rules over a patient record: pure, no I/O, no clock (the caller passes `now`).

A rule runs only when a targeted order is in one of its trigger value sets (`rules.context`:
the same resolved keys as the pipeline's fast exit). Cards come out critical, then warning, then
info, each group in rule order. A rule whose data is
unavailable (a FHIR search failed) is skipped, and one info card says which checks did not run.
A rule that raises is logged and named on its own info card, "this check failed; please report":
one bad resource must not cost the clinician the other checks, nor the EHR a 500, and a bug must
not pass for missing data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from cds_hooks.cards import INDICATORS, Finding, card_for, make_card
from cds_hooks.fhir.read import reference
from cds_hooks.knowledge import Knowledge
from cds_hooks.record import MedOrder, PatientRecord
from cds_hooks.rules import RULES, Rule
from cds_hooks.rules.context import RuleContext, Triggers

log = logging.getLogger(__name__)

# Most severe first (CDS Hooks leaves the order to the service; EHRs show cards as sent).
_SEVERITY = {indicator: rank for rank, indicator in enumerate(reversed(INDICATORS))}


@lru_cache(maxsize=16)
def triggers(knowledge: Knowledge, rules: tuple[Rule, ...] = RULES) -> Triggers:
    """The rules' trigger keys resolved against the knowledge, once (checked at app start)."""
    return Triggers.of(rules, knowledge)


@dataclass
class Evaluation:
    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # rule id -> reasons
    failed: list[str] = field(default_factory=list)  # rule ids that raised (logged)
    fired: list[str] = field(default_factory=list)
    unidentified: list[str] = field(default_factory=list)  # lines: drugs nothing identifies

    def cards(self, knowledge: Knowledge) -> list[dict[str, Any]]:
        return [card for _finding, card in self.carded(knowledge)]

    def carded(self, knowledge: Knowledge) -> list[tuple[Finding | None, dict[str, Any]]]:
        """Each card with the finding it came from (None for the degraded-checks card)."""
        pairs: list[tuple[Finding | None, dict[str, Any]]] = [
            (f, card_for(f, knowledge)) for f in self.findings
        ]
        if self.skipped or self.unidentified:
            pairs.append((None, degraded_card(self.skipped, knowledge, self.unidentified)))
        if self.failed:
            pairs.append((None, failed_card(self.failed, knowledge)))
        return sorted(pairs, key=lambda pair: _SEVERITY[pair[1]["indicator"]])  # stable


def evaluate(
    record: PatientRecord, knowledge: Knowledge, now: datetime, rules: Sequence[Rule] = RULES
) -> Evaluation:
    result = Evaluation()
    gate = triggers(knowledge, tuple(rules))
    relevant: list[Rule] = []
    for rule in rules:
        if not gate.runs(rule, record.targets):
            continue
        relevant.append(rule)
        missing = [record.unavailable[k] for k in rule.needs if k in record.unavailable]
        if missing:
            result.skipped[rule.id] = sorted(set(missing))
            continue
        ctx = RuleContext(record, knowledge, knowledge.rule(rule.id), now)
        try:
            found = list(rule.evaluate(ctx))
        except Exception:
            log.exception("rule %s failed; reported on the failed-checks card", rule.id)
            result.failed.append(rule.id)
            continue
        result.findings.extend(found)
        if found:
            result.fired.append(rule.id)
    result.unidentified = _unidentified(record, relevant, knowledge)
    return result


def _unidentified(
    record: PatientRecord, relevant: Sequence[Rule], knowledge: Knowledge
) -> list[str]:
    """Lines for the degraded card about drugs nothing identifies, never silently dropped.

    A targeted order that cannot be identified could be anything a rule is about. A current
    medication (or another draft) that cannot be identified matters when a check that reads
    the medication list is relevant to this call: an interaction or duplicate may be missed.
    """
    text = knowledge.common["degraded"]
    unknown = record.unidentified()
    lines: list[str] = []
    targets = [o for o in unknown if o.selected]
    if targets:
        lines.append(_counted(text["unidentified_order"], targets))
    others = [o for o in unknown if not o.selected]
    if others and any("medications" in r.needs for r in relevant):
        lines.append(_counted(text["unidentified_current"], others))
    for line in lines:
        log.info("degraded: %s", line)
    return lines


def _counted(template: str, orders: Sequence[MedOrder]) -> str:
    many = len(orders) != 1
    return template.format(
        count=len(orders),
        s="s" if many else "",
        orders="; ".join(map(_why_unidentified, orders)),
    )


def _why_unidentified(order: MedOrder) -> str:
    ref = reference(order.resource.get("medicationReference"))
    if ref:
        return f"{order.ref}, whose medication {ref} could not be read"
    return f"{order.ref}, with no code, name or medication reference"


def degraded_card(
    skipped: Mapping[str, list[str]], knowledge: Knowledge, notes: Sequence[str] = ()
) -> dict[str, Any]:
    """The info card naming the checks whose patient data could not be read, and why, and
    (`notes`) the medications nothing identifies."""
    lines = {rule_id: "; ".join(reasons) for rule_id, reasons in skipped.items()}
    return _checks_card(knowledge.common["degraded"], lines, knowledge, notes)


def failed_card(failed: Sequence[str], knowledge: Knowledge) -> dict[str, Any]:
    """The info card naming the checks that raised: a bug to report, not missing data."""
    text = knowledge.common["failed"]
    return _checks_card(text, {rule_id: text["line"] for rule_id in failed}, knowledge)


def _checks_card(
    text: Mapping[str, str],
    lines: Mapping[str, str],
    knowledge: Knowledge,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    checks = "\n".join(
        [
            *(
                f"- **{knowledge.rule(rule_id).title}** ({rule_id}): {line}"
                for rule_id, line in lines.items()
            ),
            *(f"- {note}" for note in notes),
        ]
    )
    return make_card(
        summary=text["summary"],
        indicator="info",
        detail=text["detail"].format(checks=checks),
        source={
            "label": knowledge.common["source_label"].format(version=knowledge.version[:3]),
            "topic": {
                "system": knowledge.common["topic_system"],
                "code": text["topic"],
                "display": text["topic_display"],
            },
        },
    )
