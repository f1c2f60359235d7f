"""Storing CDS Hooks feedback: one transaction per POST, committed before the answer goes out.

Each entry gets a dedupe key (a hash of its normalised content and the service id), unique in the
table, so a client's retry of the same entry is stored once (INSERT ... ON CONFLICT DO NOTHING).
An entry for a card uuid the audit never saw is kept and flagged (`known_card` false), not lost.
When that card is still in another process's audit queue, that process's writer reconciles the
entry as it writes the card (`reconcile`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.engine import Connection

from cds_hooks.fhir.read import parse_datetime
from cds_hooks.store.db import cards, feedback, insert_ignoring_duplicates, lock_cards, writing
from cds_hooks.store.suppression import Candidate, record_override

log = logging.getLogger(__name__)


@dataclass
class Receipt:
    stored: int = 0
    duplicates: int = 0
    unknown_cards: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "unknownCards": self.unknown_cards,
        }


def save(
    engine: Engine,
    service_id: str,
    entries: Sequence[Mapping[str, Any]],
    received_at: datetime,
    *,
    keep_comments: bool = True,
    client: str | None = None,
) -> Receipt:
    """Store schema-valid feedback entries; durable when this returns.

    `client` is the sender (suppression.Caller.client). Feedback on a card another client
    received is stored with from_recipient false, and never suppresses anything.
    """
    rows = [_row(service_id, e, received_at, keep_comments) for e in entries]
    receipt = Receipt()
    statement = insert_ignoring_duplicates(engine, feedback)
    with writing(engine) as conn:
        uuids = sorted({r["card_uuid"] for r in rows})
        lock_cards(conn, uuids)  # before the lookup: see reconcile
        known = _known_cards(conn, uuids)
        for row in rows:
            fp, recipient = known.get(row["card_uuid"], (None, None))
            row["sender"] = client
            row["known_card"] = row["card_uuid"] in known
            row["from_recipient"] = row["known_card"] and recipient == client
            if row["known_card"] and not row["from_recipient"]:
                log.warning(
                    "feedback on card %s from another client than its recipient: kept, "
                    "not used to suppress",
                    row["card_uuid"][:64],
                )
            # One statement per entry: a returned row says this one was new.
            if conn.execute(statement.values(**row)).first() is not None:
                receipt.stored += 1
                if (
                    fp
                    and row["from_recipient"]
                    and row["outcome"] == "overridden"
                    and row["with_reason"]
                ):
                    record_override(conn, fp, row["card_uuid"], received_at)
            else:
                receipt.duplicates += 1
        receipt.unknown_cards = sorted(set(uuids) - known.keys())
    return receipt


def _known_cards(conn: Connection, uuids: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """Card uuid -> (fingerprint, recipient) of the audited cards among `uuids`."""
    query = select(cards.c.uuid, cards.c.fingerprint, cards.c.client).where(cards.c.uuid.in_(uuids))
    return {uuid: (fp, recipient) for uuid, fp, recipient in conn.execute(query)}


_UNRECONCILED = select(
    feedback.c.id,
    feedback.c.card_uuid,
    feedback.c.sender,
    feedback.c.outcome,
    feedback.c.with_reason,
    feedback.c.received_at,
).where(feedback.c.known_card.is_(False))
_RECONCILE = (
    update(feedback)
    .where(feedback.c.id == bindparam("row_id"))
    .values(known_card=True, from_recipient=bindparam("recipient"))
)


def reconcile(conn: Connection, written: Sequence[Candidate]) -> int:
    """Feedback that arrived before its card was written: now the card is known (the writer of
    the audit queue calls this in the transaction that inserts the cards).

    Such feedback was posted to another process or host while the card waited in this process's
    queue: it was stored with `known_card` false. Now it is matched as `save` would have: known,
    `from_recipient` when its sender is the card's recipient, and an override with a reason from
    the recipient silences the order (`record_override`, at the feedback's arrival). Returns how
    many entries were reconciled.

    Why no entry slips between the two (PostgreSQL runs READ COMMITTED: each statement sees what
    was committed when it began): `save` and the writer both take `lock_cards` on the card's uuid
    before anything else, `save` before it looks the card up, the writer before it inserts it.
    If `save` holds it first, the writer waits until that feedback is committed, and this lookup,
    a later statement, sees the entry. If the writer holds it first, `save` waits until the card
    is committed, and its lookup sees the card. Without the lock, `save` could read "no card",
    the writer insert it and find no feedback (not yet committed), and both commit: the entry
    would stay unknown for good. On SQLite, each write transaction holds the one write lock from
    BEGIN IMMEDIATE to its commit, so the two never overlap at all.
    """
    by_uuid = {c.uuid: c for c in written}
    if not by_uuid:
        return 0
    query = _UNRECONCILED.where(feedback.c.card_uuid.in_(sorted(by_uuid)))
    entries = conn.execute(query).all()
    for row_id, uuid, sender, outcome, with_reason, received_at in entries:
        card = by_uuid[uuid]
        recipient = card.client == sender
        conn.execute(_RECONCILE, {"row_id": row_id, "recipient": recipient})
        if card.fingerprint and recipient and outcome == "overridden" and with_reason:
            record_override(conn, card.fingerprint, uuid, received_at)
        if not recipient:
            log.warning(
                "feedback on card %s from another client than its recipient: kept, "
                "not used to suppress",
                uuid[:64],
            )
    return len(entries)


def _row(
    service_id: str, entry: Mapping[str, Any], received_at: datetime, keep_comments: bool
) -> dict[str, Any]:
    outcome_at = parse_datetime(entry["outcomeTimestamp"])
    if outcome_at is None:  # the schema's pattern admits a few impossible dates (2026-02-31)
        raise ValueError(f"unreadable outcomeTimestamp {entry['outcomeTimestamp']!r}")
    override = entry.get("overrideReason") or {}
    reason = override.get("reason") or {}
    comment = override.get("userComment") or None
    accepted = sorted(str(s["id"]) for s in entry.get("acceptedSuggestions") or [])
    normal = {
        "service": service_id,
        "card": entry["card"],
        "outcome": entry["outcome"],
        "at": outcome_at.astimezone(UTC).isoformat(),
        "accepted": accepted,
        "reason": [reason.get("system"), reason.get("code")],
        "comment": comment,
    }
    key = hashlib.sha256(json.dumps(normal, sort_keys=True).encode()).hexdigest()
    return {
        "dedupe_key": key,
        "service_id": service_id,
        "card_uuid": entry["card"],
        "outcome": entry["outcome"],
        "outcome_at": outcome_at,
        "received_at": received_at,
        "accepted_suggestions": accepted,
        "reason_system": reason.get("system"),
        "reason_code": reason.get("code"),
        "reason_display": reason.get("display"),
        "user_comment": comment if keep_comments else None,
        "with_reason": bool(reason.get("code") or (comment and comment.strip())),
    }
