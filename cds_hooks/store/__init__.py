"""Durable storage behind the service: hook-call audit, feedback, repeat suppression, jti replay.

`open_store(settings)` builds the one Store of a process (docs/storage.md): one SQLAlchemy engine,
migrated at start, shared by every request thread.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from cds_hooks.config import boolean, integer, number, path, setting, text
from cds_hooks.record import MedOrder
from cds_hooks.store import feedback as feedback_store
from cds_hooks.store.audit import CallAudit, CardedCall, PatientIds, write_call, write_calls
from cds_hooks.store.db import (
    AUTOCHECKPOINT_PAGES,
    BACKSTOP_CHECKPOINT_PAGES,
    database_url,
    lock_cards,
    make_engine,
    migrate,
    writing,
)
from cds_hooks.store.replay import ReplayStore
from cds_hooks.store.reports import Report, rule_report
from cds_hooks.store.retention import Pruner, Retention, prune
from cds_hooks.store.suppression import (
    Caller,
    Candidate,
    SuppressionSettings,
    decide,
    fingerprint,
    lookup_needed,
    record_shown,
    shown_at_select,
)
from cds_hooks.store.writer import AuditQueue, Pending

__all__ = [
    "CallAudit",
    "Caller",
    "Candidate",
    "Store",
    "StoreSettings",
    "SuppressionSettings",
    "open_store",
]


@dataclass(frozen=True)
class StoreSettings:
    data_dir: str = setting(
        "var", path(), "Folder for the SQLite database (and nothing else) when no DATABASE_URL."
    )
    database_url: str = setting(
        "",
        text(),
        "SQLAlchemy URL of a shared database (`postgresql+psycopg://...`); empty: SQLite.",
        secret=True,
    )
    sqlite_synchronous: str = setting(
        "FULL",
        text(("FULL", "NORMAL", "EXTRA"), upper=True),
        "SQLite durability: FULL fsyncs every commit before the answer goes out.",
    )
    sqlite_busy_timeout_ms: int = setting(
        5000, integer(min=0, max=600_000), "How long a SQLite writer waits for the lock."
    )
    audit_patient_id: str = setting(
        "plain",
        text(("plain", "hash")),
        "Patient id in the audit: `plain`, or `hash` (HMAC-SHA256 under AUDIT_PATIENT_KEY).",
    )
    audit_patient_key: str = setting(
        "", text(), "Secret key for `AUDIT_PATIENT_ID=hash`.", secret=True
    )
    feedback_keep_comments: bool = setting(
        True,
        boolean(),
        "Keep feedback userComment text (clinician free text); false stores only that one was "
        "given.",
    )
    suppress_select_sign: bool = setting(
        True,
        boolean(),
        "order-sign does not repeat a non-critical card that order-select showed for the same "
        "unchanged order within SELECT_SIGN_WINDOW_MINUTES.",
    )
    select_sign_window_minutes: float = setting(
        240, number(min=0), "Window of the order-select -> order-sign repeat suppression."
    )
    suppress_overridden_hours: float = setting(
        24,
        number(min=0),
        "A card overridden with a reason stays quiet this long for the same order (0: off).",
    )
    audit_retention_days: int = setting(
        400,
        integer(min=1),
        "Days the audit (hook calls, cards) and the feedback are kept; older rows are pruned.",
    )
    audit_queue_size: int = setting(
        1000,
        integer(min=0, max=1_000_000),
        "Hook calls whose audit (with their cards) may wait for the writer thread (0: all written "
        "in the request). At most this many calls' audit is lost if the process is killed; "
        "never feedback.",
    )
    audit_flush_seconds: float = setting(
        0.2,
        number(min=0, max=60),
        "How long the audit writer gathers calls into one transaction; other processes and "
        "hosts see a call's cards (select -> sign, feedback) this much later.",
    )
    prune_interval_seconds: float = setting(
        600,
        number(min=0),
        "Seconds between background pruning rounds of each process (0: never prune).",
    )


class Store:
    def __init__(
        self,
        engine: Engine,
        *,
        patients: PatientIds | None = None,
        suppression: SuppressionSettings | None = None,
        keep_comments: bool = True,
        retention: Retention | None = None,
        clock: Callable[[], datetime] | None = None,
        queue_size: int = 1000,
        flush_seconds: float = 0.2,
    ):
        migrate(engine)
        _fork_safe(engine)
        self.engine = engine
        self.patients = patients or PatientIds()
        self.suppression = suppression or SuppressionSettings()
        self.keep_comments = keep_comments
        self.clock = clock or (lambda: datetime.now(UTC))
        self.retention = retention or Retention(
            suppression=max(self.suppression.select_sign_window, self.suppression.overridden_window)
        )
        self.replay = ReplayStore(engine)
        self._pruner = Pruner(engine, self.retention, self.clock)
        self.pending = Pending()  # queued cards, seen by this process as if written
        self.queue = AuditQueue(
            engine,
            self._write_audit,
            size=queue_size,
            flush_seconds=flush_seconds,
            describe=_describe,
            written=self._written,
        )

    def fingerprint(
        self,
        patient_id: str,
        rule_id: str,
        kind: str,
        order: MedOrder,
        about: str = "",
        caller: Caller | None = None,
    ) -> str:
        scope = caller.scope if caller is not None else ""
        return fingerprint(self.patients.key, patient_id, rule_id, kind, order, about, scope)

    def audit_call(
        self, call: CallAudit, candidates: Sequence[Candidate] = ()
    ) -> dict[str, tuple[str, str]]:
        """Decide what to suppress (in the request) and have the audit written.

        Returns card uuid -> (why, earlier card uuid) for the cards not to show. The audit waits
        in the queue (writer.py says what that means); AUDIT_QUEUE_SIZE=0: decided and written
        in one transaction here.
        """
        self._pruner.ensure_started(os.getpid())
        if not candidates:
            # No card: nothing to decide, and nothing feedback could name.
            if not self.queue.put(call):  # full or off: this request writes its own audit
                with writing(self.engine, durable=False) as conn:
                    self._write_audit(conn, [call])
            return {}
        # The windows are measured on the store's clock, the one feedback is received on: a
        # call's own `now` (a preview's scenario date) is the rules' clinical time, not when the
        # card was shown, so a scenario dated later than the feedback still keeps an override.
        at = self.clock()
        if self.queue.size <= 0:  # the queue off: decided, audited, remembered in one commit
            with writing(self.engine, durable=False) as conn:
                suppressed = self._held_back(conn, call, candidates, at)
                write_call(conn, call, self.patients, candidates, suppressed)
                record_shown(conn, call.hook or "", candidates, suppressed, at)
            return suppressed
        # The decision is a read (suppression_state by key, plus what this process's queue
        # holds); the writes wait for the writer.
        suppressed = self._read_held_back(call, candidates, at)
        item = CardedCall(call, tuple(candidates), suppressed, at)
        self.pending.add((c.uuid for c in candidates), _selects(item), at)
        if not self.queue.put(item):  # full: this request writes its own
            try:
                with writing(self.engine, durable=False) as conn:
                    self._write_audit(conn, [item])
            finally:
                self._written([item])
        return suppressed

    def held_back(
        self, call: CallAudit, candidates: Sequence[Candidate]
    ) -> dict[str, tuple[str, str]]:
        """What `audit_call` would hold back of these cards now, and why; reads, writes nothing.

        Card uuid -> (why, earlier card uuid), decided as `audit_call` decides (the preview's
        "what the next call would not show").
        """
        return self._read_held_back(call, candidates, self.clock())

    def _read_held_back(
        self, call: CallAudit, candidates: Sequence[Candidate], at: datetime
    ) -> dict[str, tuple[str, str]]:
        if not call.patient_id or not lookup_needed(call.hook or "", candidates, self.suppression):
            return {}  # nothing could be held back: no connection at all
        with self.engine.connect() as conn, conn.begin():
            return self._held_back(conn, call, candidates, at)

    def _held_back(
        self, conn: Connection, call: CallAudit, candidates: Sequence[Candidate], at: datetime
    ) -> dict[str, tuple[str, str]]:
        if not candidates or not call.patient_id:
            return {}
        pending = self.pending.shown_at_select
        return decide(conn, call.hook or "", candidates, self.suppression, at, pending)

    def _write_audit(self, conn: Connection, batch: Sequence[CallAudit | CardedCall]) -> None:
        """One transaction of the queue's writer (or of a request when the queue is full)."""
        carded = [item for item in batch if isinstance(item, CardedCall)]
        # First, before any row is written: feedback.reconcile says why.
        lock_cards(conn, (c.uuid for item in carded for c in item.candidates))
        write_calls(conn, [item for item in batch if isinstance(item, CallAudit)], self.patients)
        for item in carded:
            hook = item.call.hook or ""
            write_call(conn, item.call, self.patients, item.candidates, item.suppressed)
            record_shown(conn, hook, item.candidates, item.suppressed, item.at)
        if carded:
            feedback_store.reconcile(conn, [c for item in carded for c in item.candidates])

    def _written(self, batch: Sequence[CallAudit | CardedCall]) -> None:
        """The batch is committed (or given up on): the database answers for it from now on."""
        for item in batch:
            if isinstance(item, CardedCall):
                self.pending.discard((c.uuid for c in item.candidates), _selects(item))

    def drain(self, timeout: float | None = 30.0) -> bool:
        """Write the queued audit of this process now (tests, reports, feedback lookups)."""
        return self.queue.drain(timeout)

    def save_feedback(
        self,
        service_id: str,
        entries: Sequence[Mapping[str, Any]],
        received_at: datetime,
        caller: Caller | None = None,
    ) -> feedback_store.Receipt:
        """Store feedback durably; only a card's own recipient (`caller`) can silence it.

        A card still in this process's audit queue is written first (the queue drained), so the
        entry finds it; a card queued in another process is reconciled by that process's writer.
        """
        if self.pending.holds(str(entry.get("card")) for entry in entries):
            self.drain()
        return feedback_store.save(
            self.engine,
            service_id,
            entries,
            received_at,
            keep_comments=self.keep_comments,
            client=caller.client if caller is not None else None,
        )

    def report(self, start: datetime, end: datetime) -> Report:
        """Per-rule outcomes; the report says from when on the audit is still kept."""
        self.drain()
        report = rule_report(self.engine, start, end)
        report.retention_days = self.retention.audit.days
        report.kept_since = self.retention.kept_since(self.clock())
        return report

    def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is past retention now (the background thread does this every interval)."""
        return prune(self.engine, self.retention, now or self.clock())

    def close(self) -> None:
        self.queue.close()  # written, not lost
        self._pruner.stop()
        self.engine.dispose()


def _describe(item: CallAudit | CardedCall) -> str:
    call = item.call if isinstance(item, CardedCall) else item
    return str(call.hook_instance)


def _selects(item: CardedCall) -> list[tuple[str, str]]:
    return shown_at_select(item.call.hook or "", item.candidates, item.suppressed)


def _fork_safe(engine: Engine) -> None:
    """No database connection may cross a fork (gunicorn preloads the app in its master).

    The master's pooled connections are closed now; a child forked later drops any it inherited
    without closing them (closing would disturb the parent's), and opens its own.
    """
    if isinstance(engine.pool, StaticPool):
        return  # an in-memory database is its one connection: never used across a fork
    engine.dispose()
    ref = weakref.ref(engine)

    def in_child() -> None:
        if (alive := ref()) is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=in_child)


def open_store(settings: StoreSettings, clock: Callable[[], datetime] | None = None) -> Store:
    """The Store for an app's settings (documented in docs/storage.md)."""
    engine = make_engine(
        database_url(settings),
        synchronous=settings.sqlite_synchronous,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        # The queue's writer checkpoints the WAL off the request path; without it, as before.
        autocheckpoint=(
            BACKSTOP_CHECKPOINT_PAGES if settings.audit_queue_size > 0 else AUTOCHECKPOINT_PAGES
        ),
    )
    suppression = SuppressionSettings(
        select_sign=settings.suppress_select_sign,
        select_sign_window=timedelta(minutes=settings.select_sign_window_minutes),
        overridden_window=timedelta(hours=settings.suppress_overridden_hours),
    )
    return Store(
        engine,
        patients=PatientIds(settings.audit_patient_id, settings.audit_patient_key),
        suppression=suppression,
        keep_comments=settings.feedback_keep_comments,
        retention=Retention(
            audit=timedelta(days=settings.audit_retention_days),
            suppression=max(suppression.select_sign_window, suppression.overridden_window),
            interval_seconds=settings.prune_interval_seconds,
        ),
        clock=clock,
        # An in-memory database is one connection (one-shot commands): a writer thread would
        # share its transaction with the request's reads, for nothing (it never fsyncs).
        queue_size=0 if isinstance(engine.pool, StaticPool) else settings.audit_queue_size,
        flush_seconds=settings.audit_flush_seconds,
    )
