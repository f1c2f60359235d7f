"""Per-rule outcome counts over a date range, from the audit and the feedback.

A card counts once, by the latest feedback received for it: a clinician who overrode and then
accepted counts as accepted. Override rate = overridden / (accepted + overridden): cards with no
feedback (the spec sends none for ignored cards) are reported apart, as `no feedback`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from cds_hooks.store.db import cards, feedback


@dataclass
class RuleReport:
    rule_id: str
    shown: int = 0
    suppressed: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def no_feedback(self) -> int:
        return self.shown - self.accepted - self.overridden

    @property
    def override_rate(self) -> float | None:
        acted = self.accepted + self.overridden
        return self.overridden / acted if acted else None

    def to_dict(self) -> dict[str, Any]:
        rate = self.override_rate
        return {
            "rule": self.rule_id,
            "shown": self.shown,
            "suppressed": self.suppressed,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "noFeedback": self.no_feedback,
            "overrideRate": None if rate is None else round(rate, 4),
            "overrideReasons": dict(self.reasons.most_common()),
        }


@dataclass
class Report:
    start: datetime
    end: datetime
    rules: list[RuleReport]
    unknown_card_feedback: int
    other_caller_feedback: int = 0  # feedback on cards another client received: not counted
    retention_days: int | None = None  # AUDIT_RETENTION_DAYS of the store read
    kept_since: datetime | None = None  # the audit before this instant has been pruned

    @property
    def truncated(self) -> bool:
        """The range starts before what is kept: its first days are no longer in the audit."""
        return self.kept_since is not None and self.start < self.kept_since

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "retentionDays": self.retention_days,
            "keptSince": self.kept_since.isoformat() if self.kept_since else None,
            "rules": [r.to_dict() for r in self.rules],
            "unknownCardFeedback": self.unknown_card_feedback,
            "otherCallerFeedback": self.other_caller_feedback,
        }


NO_REASON = "(no reason)"


def rule_report(engine: Engine, start: datetime, end: datetime) -> Report:
    """Cards shown (or suppressed) in [start, end), per rule, with their latest outcome."""
    latest = (
        select(feedback.c.card_uuid, func.max(feedback.c.id).label("id"))
        .where(feedback.c.known_card.is_(True), _FROM_RECIPIENT)
        .group_by(feedback.c.card_uuid)
        .subquery()
    )
    query = (
        select(
            cards.c.rule_id,
            cards.c.shown,
            feedback.c.outcome,
            feedback.c.reason_code,
            feedback.c.reason_display,
            func.count().label("n"),
        )
        .select_from(
            cards.outerjoin(latest, latest.c.card_uuid == cards.c.uuid).outerjoin(
                feedback, feedback.c.id == latest.c.id
            )
        )
        .where(and_(cards.c.shown_at >= start, cards.c.shown_at < end))
        .group_by(
            cards.c.rule_id,
            cards.c.shown,
            feedback.c.outcome,
            feedback.c.reason_code,
            feedback.c.reason_display,
        )
    )
    by_rule: dict[str, RuleReport] = {}
    with engine.connect() as conn:
        for rule_id, shown, outcome, code, display, n in conn.execute(query):
            report = by_rule.setdefault(rule_id, RuleReport(rule_id))
            if not shown:
                report.suppressed += n
                continue
            report.shown += n
            if outcome == "accepted":
                report.accepted += n
            elif outcome == "overridden":
                report.overridden += n
                report.reasons[_reason(code, display)] += n
        unknown = conn.execute(
            select(func.count()).where(
                feedback.c.known_card.is_(False),
                feedback.c.received_at >= start,
                feedback.c.received_at < end,
            )
        ).scalar_one()
        other = conn.execute(
            select(func.count()).where(
                feedback.c.known_card.is_(True),
                feedback.c.from_recipient.is_(False),
                feedback.c.received_at >= start,
                feedback.c.received_at < end,
            )
        ).scalar_one()
    return Report(start, end, [by_rule[k] for k in sorted(by_rule)], int(unknown), int(other))


# NULL: stored before callers were told apart (schema version 3), counted as before.
_FROM_RECIPIENT = or_(feedback.c.from_recipient.is_(None), feedback.c.from_recipient.is_(True))


def _reason(code: str | None, display: str | None) -> str:
    if not code:
        return NO_REASON
    return f"{code} ({display})" if display else code


@dataclass
class OverriddenCard:
    rule_id: str
    summary: str
    overridden: int


def most_overridden(
    engine: Engine, start: datetime, end: datetime, limit: int = 10
) -> list[OverriddenCard]:
    """The card summaries overridden most often in [start, end), by their latest feedback."""
    latest = (
        select(feedback.c.card_uuid, func.max(feedback.c.id).label("id"))
        .where(feedback.c.known_card.is_(True), _FROM_RECIPIENT)
        .group_by(feedback.c.card_uuid)
        .subquery()
    )
    n = func.count().label("n")
    query = (
        select(cards.c.rule_id, cards.c.summary, n)
        .select_from(
            cards.join(latest, latest.c.card_uuid == cards.c.uuid).join(
                feedback, feedback.c.id == latest.c.id
            )
        )
        .where(
            cards.c.shown.is_(True),
            cards.c.shown_at >= start,
            cards.c.shown_at < end,
            feedback.c.outcome == "overridden",
        )
        .group_by(cards.c.rule_id, cards.c.summary)
        .order_by(n.desc(), cards.c.rule_id, cards.c.summary)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [OverriddenCard(r, s, int(c)) for r, s, c in conn.execute(query)]
