"""Fewer repeated alerts: which of this call's cards an earlier card already stands for.

Two rules, both keyed on an order fingerprint (patient, rule, medication coding, dosage and route;
see `fingerprint`), and neither ever hides a critical card:

* select -> sign (HL7 PDDI-CDS two-stage pattern): at order-sign, a card order-select already
  showed for the same unchanged order within SELECT_SIGN_WINDOW_MINUTES is not shown again.
* overridden: a card the clinician overrode with a reason (a reason Coding or a comment) is not
  shown again for the same order within SUPPRESS_OVERRIDDEN_HOURS, on any hook.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from cds_hooks.fhir.read import as_list, codings
from cds_hooks.record import MedOrder
from cds_hooks.store.db import cards, feedback

SELECT_SIGN = "select-sign"
OVERRIDDEN = "overridden"


@dataclass(frozen=True)
class SuppressionSettings:
    select_sign: bool = True
    select_sign_window: timedelta = timedelta(hours=4)
    overridden_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class Candidate:
    """A card this call would show, with what the audit and the suppression need to know."""

    card: Mapping[str, Any]
    rule_id: str
    order_ref: str | None
    fingerprint: str | None

    @property
    def uuid(self) -> str:
        return str(self.card["uuid"])

    @property
    def indicator(self) -> str:
        return str(self.card["indicator"])


def fingerprint(
    key: bytes, patient_id: str, rule_id: str, kind: str, order: MedOrder, about: str = ""
) -> str:
    """The same patient, rule, card kind and unchanged order give the same value; an edit a new one.

    `kind` is the rule's card name (Finding.card), so a different problem the same rule finds
    with the same order is a different card, and shows.

    The order part is its medication codings (or its name when it has none) and its whole
    dosageInstruction (dose, rate, timing, route, method) less element ids. Keyed with the
    site's audit key when it has one, so the value does not reveal the patient id. `about` is what
    the card says beyond its order (the finding's evidence: the interacting drug, the lab value),
    so the same order meeting a new interacting drug or a new lab value is a new card, and shows.
    """
    med = sorted({f"{s}|{c}" for s, c, _ in codings(order.concept) if s and c})
    dosage = [_without_ids(d) for d in as_list(order.resource.get("dosageInstruction"))]
    payload = json.dumps(
        [patient_id, rule_id, kind, med or ["text|" + order.name.strip().lower()], dosage, about],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


# Built once: compiling a statement per hook call would cost more than running it.
_OVERRIDDEN = (
    select(cards.c.fingerprint, cards.c.uuid)
    .join(feedback, feedback.c.card_uuid == cards.c.uuid)
    .where(
        cards.c.fingerprint.in_(bindparam("fps", expanding=True)),
        feedback.c.outcome == "overridden",
        feedback.c.with_reason.is_(True),
        feedback.c.received_at >= bindparam("since", type_=feedback.c.received_at.type),
    )
    .order_by(feedback.c.received_at.desc())
)
_SHOWN_AT_SELECT = (
    select(cards.c.fingerprint, cards.c.uuid)
    .where(
        cards.c.fingerprint.in_(bindparam("fps", expanding=True)),
        cards.c.hook == "order-select",
        cards.c.shown.is_(True),
        cards.c.shown_at >= bindparam("since", type_=cards.c.shown_at.type),
    )
    .order_by(cards.c.shown_at.desc())
)


def decide(
    conn: Connection,
    hook: str,
    candidates: Iterable[Candidate],
    settings: SuppressionSettings,
    now: datetime,
) -> dict[str, tuple[str, str]]:
    """Card uuid -> (why, the earlier card's uuid) for each candidate not to show."""
    wanted: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.fingerprint and c.indicator != "critical":
            wanted.setdefault(c.fingerprint, []).append(c)
    if not wanted:
        return {}
    earlier: dict[str, tuple[str, str]] = {}  # fingerprint -> (why, earlier uuid)
    if settings.overridden_window > timedelta(0):
        rows = conn.execute(
            _OVERRIDDEN, {"fps": list(wanted), "since": now - settings.overridden_window}
        )
        for fp, uuid in rows:
            earlier.setdefault(fp, (OVERRIDDEN, uuid))
    if hook == "order-sign" and settings.select_sign:
        rows = conn.execute(
            _SHOWN_AT_SELECT,
            {
                "fps": [fp for fp in wanted if fp not in earlier],
                "since": now - settings.select_sign_window,
            },
        )
        for fp, uuid in rows:
            earlier.setdefault(fp, (SELECT_SIGN, uuid))
    return {c.uuid: why for fp, why in earlier.items() for c in wanted[fp]}
