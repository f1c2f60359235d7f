"""Findings from the rules, and the one card constructor that turns them into CDS Hooks 2.0 cards.

The constructor enforces the spec (HL7 CDS Hooks 2.0.1 "Card Attributes"): summary under 140
characters, indicator info/warning/critical, source.label with a topic coding the rule id, a uuid
on every card and suggestion, selectionBehavior whenever there are suggestions, overrideReasons on
every warning and critical card. Suggestions are validated here, at the edge: one that fails
fhir.resources is dropped (and logged), never the card.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from cds_hooks.knowledge import Knowledge, RuleSettings

log = logging.getLogger(__name__)

INDICATORS = ("info", "warning", "critical")
SUMMARY_MAX = 139


@dataclass(frozen=True)
class Suggestion:
    """A one-click change: `name` picks the label from the rule's card wording."""

    name: str
    actions: tuple[Mapping[str, Any], ...]
    recommended: bool = False


@dataclass(frozen=True)
class Finding:
    """One problem with one order, as a rule found it: no wording here, only facts.

    `template` names the card text in the rule's knowledge file (`rules/<family>.json`,
    `rules.<id>.cards.<template>`): its indicator, summary, detail and suggestion labels.
    """

    rule_id: str
    template: str
    order: str | None
    facts: Mapping[str, Any] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()


class _Facts(dict):
    # A template field a rule did not fill shows as itself instead of crashing a live request.
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, facts: Mapping[str, Any]) -> str:
    return template.format_map(_Facts(facts))


def shorten(summary: str) -> str:
    return summary if len(summary) <= SUMMARY_MAX else summary[: SUMMARY_MAX - 3].rstrip() + "..."


def make_card(
    *,
    summary: str,
    indicator: str,
    source: Mapping[str, Any],
    detail: str | None = None,
    suggestions: Sequence[Mapping[str, Any]] = (),
    override_reasons: Sequence[Mapping[str, str]] = (),
    selection_behavior: str = "at-most-one",
) -> dict[str, Any]:
    """Build a spec-conformant card; a violation is a programming error, so it raises."""
    if indicator not in INDICATORS:
        raise ValueError(f"indicator {indicator!r} is not one of {INDICATORS}")
    if not source.get("label"):
        raise ValueError("a card needs source.label")
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": shorten(summary.strip()),
        "indicator": indicator,
        "source": dict(source),
    }
    if detail:
        card["detail"] = detail
    if suggestions:
        # isRecommended always written: some client models (HealthChain) require it.
        card["suggestions"] = [
            {"uuid": str(uuid.uuid4()), "isRecommended": False, **s} for s in suggestions
        ]
        card["selectionBehavior"] = selection_behavior
    if indicator != "info":
        if not override_reasons:
            raise ValueError("warning and critical cards need overrideReasons")
        card["overrideReasons"] = [dict(r) for r in override_reasons]
    return card


def source_for(rule: RuleSettings, knowledge: Knowledge) -> dict[str, Any]:
    source: dict[str, Any] = {
        "label": knowledge.source_label(rule),
        "topic": {
            "system": knowledge.common["topic_system"],
            "code": rule.id,
            "display": rule.title,
        },
    }
    if rule.url:
        source["url"] = rule.url
    return source


def card_for(finding: Finding, knowledge: Knowledge) -> dict[str, Any]:
    """The card for a finding, worded from the rule's knowledge file."""
    rule = knowledge.rule(finding.rule_id)
    text = rule.cards[finding.template]
    detail = fill(text.detail, finding.facts)
    if finding.evidence:
        detail += "\n\n**Evidence**\n" + "\n".join(f"- {line}" for line in finding.evidence)
    detail += "\n\n**Source**: " + "; ".join(_citation(c) for c in rule.citations)
    suggestions = []
    for suggestion in finding.suggestions:
        actions = _valid_actions(finding, suggestion)
        if actions is None:
            continue
        suggestions.append(
            {
                "label": fill(
                    text.suggestions.get(suggestion.name, suggestion.name), finding.facts
                ),
                **({"isRecommended": True} if suggestion.recommended else {}),
                "actions": actions,
            }
        )
    return make_card(
        summary=fill(text.summary, finding.facts),
        indicator=text.indicator,
        source=source_for(rule, knowledge),
        detail=detail,
        suggestions=suggestions,
        override_reasons=knowledge.override_reasons,
    )


def validated(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The resource as JSON, after fhir.resources (R4B models) accepted it; raises if invalid."""
    model = get_fhir_model_class(resource["resourceType"]).model_validate(dict(resource))
    return model.model_dump(mode="json", exclude_none=True)


def _valid_actions(finding: Finding, suggestion: Suggestion) -> list[dict[str, Any]] | None:
    """The suggestion's actions with validated resources, or None (logged) if one is invalid.

    An EHR applies a suggestion to the chart, so an invalid resource never leaves; it is usually
    the EHR's own data copied into it (a bad date in the current order), so only the suggestion
    is dropped: the card, its indicator and the other suggestions stay.
    """
    actions = []
    for action in suggestion.actions:
        action = dict(action)
        if "resource" in action:
            try:
                action["resource"] = validated(action["resource"])
            except Exception as error:  # pydantic's ValidationError, unknown type, not a dict
                log.warning(
                    "%s: suggestion %r dropped from card %r, invalid resource: %s",
                    finding.rule_id,
                    suggestion.name,
                    finding.template,
                    str(error).splitlines()[0] if str(error) else type(error).__name__,
                )
                return None
        actions.append(action)
    return actions


def _citation(citation: Mapping[str, str]) -> str:
    if url := citation.get("url"):
        return f"[{citation['label']}]({url})"
    return citation["label"]
