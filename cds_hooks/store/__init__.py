"""Durable storage behind the service: hook-call audit, feedback, repeat suppression, jti replay.

`open_store(settings)` builds the one Store of a process (docs/storage.md): one SQLAlchemy engine,
migrated at start, shared by every request thread.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from cds_hooks.config import boolean, integer, number, path, setting, text
from cds_hooks.record import MedOrder
from cds_hooks.store import feedback as feedback_store
from cds_hooks.store.audit import CallAudit, PatientIds, write_call
from cds_hooks.store.db import database_url, make_engine, migrate, writing
from cds_hooks.store.replay import ReplayStore
from cds_hooks.store.reports import Report, rule_report
from cds_hooks.store.suppression import Candidate, SuppressionSettings, decide, fingerprint

__all__ = ["CallAudit", "Candidate", "Store", "StoreSettings", "SuppressionSettings", "open_store"]


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


class Store:
    def __init__(
        self,
        engine: Engine,
        *,
        patients: PatientIds | None = None,
        suppression: SuppressionSettings | None = None,
        keep_comments: bool = True,
    ):
        migrate(engine)
        _fork_safe(engine)
        self.engine = engine
        self.patients = patients or PatientIds()
        self.suppression = suppression or SuppressionSettings()
        self.keep_comments = keep_comments
        self.replay = ReplayStore(engine)

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
        with writing(self.engine, durable=False) as conn:
            suppressed = (
                decide(conn, call.hook or "", candidates, self.suppression, call.called_at)
                if candidates and call.patient_id
                else {}
            )
            write_call(conn, call, self.patients, candidates, suppressed)
        return suppressed

    def save_feedback(
        self, service_id: str, entries: Sequence[Mapping[str, Any]], received_at: datetime
    ) -> feedback_store.Receipt:
        return feedback_store.save(
            self.engine, service_id, entries, received_at, keep_comments=self.keep_comments
        )

    def report(self, start: datetime, end: datetime) -> Report:
        return rule_report(self.engine, start, end)

    def close(self) -> None:
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


def open_store(settings: StoreSettings) -> Store:
    """The Store for an app's settings (documented in docs/storage.md)."""
    engine = make_engine(
        database_url(settings),
        synchronous=settings.sqlite_synchronous,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )
    return Store(
        engine,
        patients=PatientIds(settings.audit_patient_id, settings.audit_patient_key),
        suppression=SuppressionSettings(
            select_sign=settings.suppress_select_sign,
            select_sign_window=timedelta(minutes=settings.select_sign_window_minutes),
            overridden_window=timedelta(hours=settings.suppress_overridden_hours),
        ),
        keep_comments=settings.feedback_keep_comments,
    )
