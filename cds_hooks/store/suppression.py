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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from cds_hooks import outbound
from cds_hooks.fhir.read import as_list, codings
from cds_hooks.record import MedOrder
from cds_hooks.store.db import cards, feedback, suppression_state
from cds_hooks.store.prepared import Prepared

SELECT_SIGN = "select-sign"
OVERRIDDEN = "overridden"


@dataclass(frozen=True)
class SuppressionSettings:
    select_sign: bool = True
    select_sign_window: timedelta = timedelta(hours=4)
    overridden_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class Caller:
    """Who made a hook call, as far as the service can tell (issue 10, "isolation").

    Repeat and override suppression are scoped to it: the client JWT's issuer and tenant when
    authentication is on, and the origin of `fhirServer` in every case (the EHR whose data the
    call is about). Two callers naming the same patient id and order never share a fingerprint.
    Feedback carries no fhirServer: it is matched on `client` (issuer and tenant) alone.
    """

    issuer: str | None = None
    tenant: str | None = None
    fhir_origin: str | None = None

    @classmethod
    def of(cls, claims: Any, fhir_server: Any) -> Caller:
        """From the verified JWT's claims (None: auth off) and the request's fhirServer."""
        origin = None
        if isinstance(fhir_server, str) and fhir_server:
            parsed = outbound.origin(fhir_server)
            # A URL the FHIR client would refuse still tells callers apart, as written.
            origin = "{}://{}:{}".format(*parsed) if parsed else fhir_server.strip().lower()
        return cls(getattr(claims, "iss", None), getattr(claims, "tenant", None), origin)

    @property
    def client(self) -> str | None:
        """The part feedback can prove (issuer, tenant), as a digest; None with auth off."""
        if self.issuer is None:
            return None
        return hashlib.sha256(json.dumps([self.issuer, self.tenant]).encode()).hexdigest()

    @property
    def scope(self) -> str:
        """What enters the fingerprint; empty when nothing is known about the caller."""
        parts = [self.issuer, self.tenant, self.fhir_origin]
        return json.dumps(parts, separators=(",", ":")) if any(parts) else ""


@dataclass(frozen=True)
class Candidate:
    """A card this call would show, with what the audit and the suppression need to know."""

    card: Mapping[str, Any]
    rule_id: str
    order_ref: str | None
    fingerprint: str | None
    client: str | None = None  # Caller.client of the call that produced it

    @property
    def uuid(self) -> str:
        return str(self.card["uuid"])

    @property
    def indicator(self) -> str:
        return str(self.card["indicator"])


def fingerprint(
    key: bytes,
    patient_id: str,
    rule_id: str,
    kind: str,
    order: MedOrder,
    about: str = "",
    scope: str = "",
) -> str:
    """The same caller, patient, rule, card kind and unchanged order give the same value; an edit,
    or another caller (`Caller.scope`), a new one.

    `kind` is the card template (Finding.template), so a different problem the same rule finds
    with the same order is a different card, and shows.

    The order part is its medication codings (or its name when it has none) and its whole
    dosageInstruction (dose, rate, timing, route, method) less element ids. Keyed with the
    site's audit key when it has one, so the value does not reveal the patient id. `about` is what
    the card says beyond its order (the finding's evidence: the interacting drug, the lab value),
    so the same order meeting a new interacting drug or a new lab value is a new card, and shows.
    """
    med = sorted({f"{s}|{c}" for s, c, _ in codings(order.concept) if s and c})
    dosage = [_without_ids(d) for d in as_list(order.resource.get("dosageInstruction"))]
    parts = [
        patient_id,
        rule_id,
        kind,
        med or ["text|" + order.name.strip().lower()],
        dosage,
        about,
    ]
    payload = json.dumps(
        [scope, *parts] if scope else parts,  # no caller known: the value of earlier versions
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


# Built once: compiling a statement per hook call would cost more than running it. A primary-key
# lookup: at most one row per fingerprint, however long the history. One fingerprint per
# statement (a call has one to three): an expanding IN is re-rendered on every execution.
_STATE = Prepared(
    select(
        suppression_state.c.fingerprint,
        suppression_state.c.select_card,
        suppression_state.c.select_at,
        suppression_state.c.override_card,
        suppression_state.c.override_at,
    ).where(suppression_state.c.fingerprint == bindparam("fp"))
)


def decide(
    conn: Connection | None,
    hook: str,
    candidates: Iterable[Candidate],
    settings: SuppressionSettings,
    now: datetime,
    pending: Callable[[str], tuple[str, datetime] | None] | None = None,
) -> dict[str, tuple[str, str]]:
    """Card uuid -> (why, the earlier card's uuid) for each candidate not to show.

    `conn` None: connected only when a lookup is needed (`lookup_needed`). `pending`: the
    order-select card this process showed for a fingerprint that its audit writer has not
    written yet (writer.Pending), counted as if written.
    """
    wanted = _wanted(hook, candidates, settings)
    if not wanted:
        return {}
    if conn is None:
        raise ValueError("decide needs a connection: lookup_needed said so")
    check_override = settings.overridden_window > timedelta(0)
    check_select = hook == "order-sign" and settings.select_sign
    state = {row[0]: row[1:] for fp in sorted(wanted) for row in _STATE.rows(conn, {"fp": fp})}
    earlier: dict[str, tuple[str, str]] = {}  # fingerprint -> (why, earlier uuid)
    for fp in sorted(wanted):
        select_card, select_at, override_card, override_at = state.get(fp, (None,) * 4)
        shown = pending(fp) if pending is not None and check_select else None
        if shown is not None and (select_at is None or shown[1] > select_at):
            select_card, select_at = shown
        if check_override and override_at and override_at >= now - settings.overridden_window:
            earlier[fp] = (OVERRIDDEN, override_card)
        elif check_select and select_at and select_at >= now - settings.select_sign_window:
            earlier[fp] = (SELECT_SIGN, select_card)
    return {c.uuid: why for fp, why in earlier.items() for c in wanted[fp]}


def lookup_needed(
    hook: str, candidates: Iterable[Candidate], settings: SuppressionSettings
) -> bool:
    """Whether `decide` would read the state at all (no card it could hold back: no connection)."""
    return bool(_wanted(hook, candidates, settings))


def _wanted(
    hook: str, candidates: Iterable[Candidate], settings: SuppressionSettings
) -> dict[str, list[Candidate]]:
    """Fingerprint -> the cards a rule could hold back (never a critical one); {} if none."""
    check_override = settings.overridden_window > timedelta(0)
    check_select = hook == "order-sign" and settings.select_sign
    if not (check_override or check_select):
        return {}
    wanted: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.fingerprint and c.indicator != "critical":
            wanted.setdefault(c.fingerprint, []).append(c)
    return wanted


def shown_at_select(
    hook: str, candidates: Iterable[Candidate], suppressed: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(fingerprint, card uuid) of the order-select cards this call showed, one per fingerprint
    (the last): what `record_shown` remembers for order-sign to come."""
    if hook != "order-select":
        return []
    latest: dict[str, str] = {}
    for c in candidates:
        if c.fingerprint and c.uuid not in suppressed:
            latest[c.fingerprint] = c.uuid
    return sorted(latest.items())


def record_shown(
    conn: Connection, hook: str, candidates: Iterable[Candidate], suppressed: Mapping[str, Any], at
) -> None:
    """Remember, in place, the order-select cards this call showed (for order-sign to come)."""
    if latest := shown_at_select(hook, candidates, suppressed):
        rows = [{"fingerprint": fp, "card": uuid, "at": at} for fp, uuid in latest]
        _upsert(conn, "select").run(conn, rows)


def record_override(conn: Connection, fingerprint: str, card_uuid: str, at: datetime) -> None:
    """Remember, in place, that a card with this fingerprint was overridden with a reason."""
    _upsert(conn, "override").run(conn, [{"fingerprint": fingerprint, "card": card_uuid, "at": at}])


_UPSERTS: dict[tuple[str, str], Prepared] = {}


def _upsert(conn: Connection, kind: str) -> Prepared:
    """INSERT ... ON CONFLICT (fingerprint) DO UPDATE, keeping the newer of the two events."""
    key = (conn.dialect.name, kind)
    if key not in _UPSERTS:
        dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
        if dialect is None:
            raise ValueError(
                f"unsupported database {conn.dialect.name!r}: use SQLite or PostgreSQL"
            )
        t = suppression_state
        card, at = t.c[f"{kind}_card"], t.c[f"{kind}_at"]
        statement = dialect.insert(t).values(
            {
                t.c.fingerprint: bindparam("fingerprint"),
                card: bindparam("card"),
                at: bindparam("at", type_=at.type),
                t.c.updated_at: bindparam("at", type_=at.type),
            }
        )
        new = statement.excluded
        _UPSERTS[key] = Prepared(
            statement.on_conflict_do_update(
                index_elements=[t.c.fingerprint],
                set_={
                    card.name: new[card.name],
                    at.name: new[at.name],
                    "updated_at": case(
                        (t.c.updated_at > new.updated_at, t.c.updated_at), else_=new.updated_at
                    ),
                },
                # Two workers racing: the older event never replaces the newer.
                where=or_(at.is_(None), at <= new[at.name]),
            )
        )
    return _UPSERTS[key]


def rebuild_state(conn: Connection) -> None:
    """Fill suppression_state from the audit and the feedback (the migration that added it).

    One pass over history, once; afterwards the state is kept up to date in place.
    """
    shown = (
        select(cards.c.fingerprint, cards.c.uuid, cards.c.shown_at)
        .where(
            cards.c.fingerprint.is_not(None),
            cards.c.hook == "order-select",
            cards.c.shown.is_(True),
        )
        .order_by(cards.c.fingerprint, cards.c.shown_at)
    )
    overridden = (
        select(cards.c.fingerprint, cards.c.uuid, feedback.c.received_at)
        .join(feedback, feedback.c.card_uuid == cards.c.uuid)
        .where(
            cards.c.fingerprint.is_not(None),
            feedback.c.outcome == "overridden",
            feedback.c.with_reason.is_(True),
        )
        .order_by(cards.c.fingerprint, feedback.c.received_at)
    )
    for kind, query in (("select", shown), ("override", overridden)):
        newest: dict[str, dict[str, Any]] = {}
        for fp, uuid, at in conn.execute(query):
            newest[fp] = {"fingerprint": fp, "card": uuid, "at": at}
        rows = list(newest.values())
        for i in range(0, len(rows), 500):
            _upsert(conn, kind).run(conn, rows[i : i + 500])
