"""Storing CDS Hooks feedback: one transaction per POST, committed before the answer goes out.

Each entry gets a dedupe key (a hash of its normalised content and the service id), unique in the
table, so a client's retry of the same entry is stored once (INSERT ... ON CONFLICT DO NOTHING).
An entry for a card uuid the audit never saw is kept and flagged (`known_card` false), not lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from cds_hooks.fhir.read import parse_datetime
from cds_hooks.store.db import cards, feedback, insert_ignoring_duplicates, writing
from cds_hooks.store.suppression import record_override

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
        query = select(cards.c.uuid, cards.c.fingerprint, cards.c.client).where(
            cards.c.uuid.in_(uuids)
        )
        known = {uuid: (fp, recipient) for uuid, fp, recipient in conn.execute(query)}
        for row in rows:
            fp, recipient = known.get(row["card_uuid"], (None, None))
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
