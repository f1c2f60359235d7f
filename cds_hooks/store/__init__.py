"""Durable storage behind the service: hook-call audit, feedback, repeat suppression, jti replay.

`open_store(config)` builds the one Store of a process (docs/storage.md): one SQLAlchemy engine,
migrated at start, shared by every request thread.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from cds_hooks.record import MedOrder
from cds_hooks.store import feedback as feedback_store
from cds_hooks.store.audit import CallAudit, PatientIds, write_call
from cds_hooks.store.db import database_url, make_engine, migrate, writing
from cds_hooks.store.replay import ReplayStore
from cds_hooks.store.reports import Report, rule_report
from cds_hooks.store.retention import Pruner, Retention, prune
from cds_hooks.store.suppression import (
    Candidate,
    SuppressionSettings,
    decide,
    fingerprint,
    record_shown,
)

__all__ = ["CallAudit", "Candidate", "Store", "SuppressionSettings", "open_store"]


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
        self._pruner = Pruner(self, engine, self.retention, self.clock)

    def fingerprint(
        self, patient_id: str, rule_id: str, kind: str, order: MedOrder, about: str = ""
    ) -> str:
        return fingerprint(self.patients.key, patient_id, rule_id, kind, order, about)

    def audit_call(
        self, call: CallAudit, candidates: Sequence[Candidate] = ()
    ) -> dict[str, tuple[str, str]]:
        """Decide what to suppress and write the audit, in one transaction (one fsync).

        Returns card uuid -> (why, earlier card uuid) for the cards not to show.
        """
        self._pruner.ensure_started(os.getpid())
        with writing(self.engine, durable=False) as conn:
            suppressed = (
                decide(conn, call.hook or "", candidates, self.suppression, call.called_at)
                if candidates and call.patient_id
                else {}
            )
            write_call(conn, call, self.patients, candidates, suppressed)
            record_shown(conn, call.hook or "", candidates, suppressed, call.called_at)
        return suppressed

    def save_feedback(
        self, service_id: str, entries: Sequence[Mapping[str, Any]], received_at: datetime
    ) -> feedback_store.Receipt:
        return feedback_store.save(
            self.engine, service_id, entries, received_at, keep_comments=self.keep_comments
        )

    def report(self, start: datetime, end: datetime) -> Report:
        """Per-rule outcomes; the report says from when on the audit is still kept."""
        report = rule_report(self.engine, start, end)
        report.retention_days = self.retention.audit.days
        report.kept_since = self.retention.kept_since(self.clock())
        return report

    def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is past retention now (the background thread does this every interval)."""
        return prune(self.engine, self.retention, now or self.clock())

    def close(self) -> None:
        self._pruner.stop()
        self.engine.dispose()


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


def open_store(config: Mapping[str, Any], clock: Callable[[], datetime] | None = None) -> Store:
    """The Store for an app's configuration (keys in app.DEFAULTS, documented in storage.md)."""
    engine = make_engine(
        database_url(config),
        synchronous=str(config.get("SQLITE_SYNCHRONOUS", "FULL")),
        busy_timeout_ms=int(config.get("SQLITE_BUSY_TIMEOUT_MS", 5000)),
    )
    suppression = SuppressionSettings(
        select_sign=_flag(config.get("SUPPRESS_SELECT_SIGN", True)),
        select_sign_window=timedelta(minutes=float(config.get("SELECT_SIGN_WINDOW_MINUTES", 240))),
        overridden_window=timedelta(hours=float(config.get("SUPPRESS_OVERRIDDEN_HOURS", 24))),
    )
    return Store(
        engine,
        patients=PatientIds(
            str(config.get("AUDIT_PATIENT_ID", "plain")), str(config.get("AUDIT_PATIENT_KEY", ""))
        ),
        suppression=suppression,
        keep_comments=_flag(config.get("FEEDBACK_KEEP_COMMENTS", True)),
        retention=_retention(config, suppression),
        clock=clock,
    )


def _retention(config: Mapping[str, Any], suppression: SuppressionSettings) -> Retention:
    # Read here alone so the switch to the typed settings object is one edit.
    days = int(config.get("AUDIT_RETENTION_DAYS", 400))
    interval = float(config.get("PRUNE_INTERVAL_SECONDS", 600))
    if days < 1:
        raise ValueError(f"CDS_AUDIT_RETENTION_DAYS: got {days}; expected an integer >= 1")
    if interval < 0:
        raise ValueError(f"CDS_PRUNE_INTERVAL_SECONDS: got {interval}; expected a number >= 0")
    return Retention(
        audit=timedelta(days=days),
        suppression=max(suppression.select_sign_window, suppression.overridden_window),
        interval_seconds=interval,
    )


def _flag(value: Any) -> bool:
    # From CDS_* variables a flag may arrive as the string "false" when not parsed as JSON.
    if isinstance(value, str):
        return value.strip().lower() not in {"", "0", "false", "no", "off"}
    return bool(value)
