"""Retention: the audit and feedback are kept AUDIT_RETENTION_DAYS, the rest as long as it matters.

What is dropped, and when (docs/storage.md, "Retention"):
* `hook_calls`, `cards`: called / shown more than AUDIT_RETENTION_DAYS ago;
* `feedback`: received more than AUDIT_RETENTION_DAYS ago (feedback comes after its card, so a
  card still kept keeps its feedback);
* `suppression_state`: rows whose newest event is older than every suppression window (they can
  no longer suppress anything);
* `jwt_replay`: rows whose token has expired (the token is refused for `exp` anyway).

Pruning runs in a background thread of each process, never on a request: every
PRUNE_INTERVAL_SECONDS it deletes in batches of PRUNE_BATCH_ROWS rows, one short write
transaction per batch through the time index, so a hook call waits at most one batch for the
write lock. Several processes pruning at once only race to delete the same rows.
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Engine, Table, delete, select

from cds_hooks.store.db import cards, feedback, hook_calls, replay, suppression_state, writing

log = logging.getLogger(__name__)

PRUNE_BATCH_ROWS = 500


@dataclass(frozen=True)
class Retention:
    audit: timedelta = timedelta(days=400)  # hook_calls, cards, feedback
    suppression: timedelta = timedelta(hours=24)  # the longest suppression window
    interval_seconds: float = 600.0  # between pruning rounds; 0: never prune in the background
    batch_rows: int = PRUNE_BATCH_ROWS

    def kept_since(self, now: datetime) -> datetime:
        """The oldest instant whose audit is still kept."""
        return now - self.audit


def _targets(retention: Retention, now: datetime) -> list[tuple[Table, Column, Any, datetime]]:
    """(table, key column, time column, delete rows with time < cutoff)."""
    audit_cutoff = retention.kept_since(now)
    return [
        (hook_calls, hook_calls.c.id, hook_calls.c.called_at, audit_cutoff),
        (cards, cards.c.uuid, cards.c.shown_at, audit_cutoff),
        (feedback, feedback.c.id, feedback.c.received_at, audit_cutoff),
        (
            suppression_state,
            suppression_state.c.fingerprint,
            suppression_state.c.updated_at,
            now - retention.suppression,
        ),
        # expires_at <= now: an expired jti may be used again (replay.py), so it is not needed.
        (replay, replay.c.jti, replay.c.expires_at, now + timedelta(microseconds=1)),
    ]


def prune(engine: Engine, retention: Retention, now: datetime) -> dict[str, int]:
    """Delete everything past retention, batch by batch; returns rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, key, when, cutoff in _targets(retention, now):
        total = 0
        while True:
            n = _prune_batch(engine, table, key, when, cutoff, retention.batch_rows)
            total += n
            if n < retention.batch_rows:
                break
        deleted[table.name] = total
    return deleted


def _prune_batch(
    engine: Engine, table: Table, key: Column, when: Any, cutoff: datetime, limit: int
) -> int:
    # The subquery reads at most `limit` keys through the time index; the DELETE finds them by key.
    # (PostgreSQL has no DELETE ... LIMIT.)
    victims = select(key).where(when < cutoff).limit(limit).scalar_subquery()
    with writing(engine, durable=False) as conn:
        return int(conn.execute(delete(table).where(key.in_(victims))).rowcount or 0)


class Pruner:
    """The background thread of one process that calls `prune` every interval.

    Started lazily by the first hook call of a process (a thread started in gunicorn's master
    would not survive the fork into a worker). A store that is dropped or closed ends its thread.
    """

    def __init__(self, engine: Engine, retention: Retention, clock: Callable):
        self.engine = engine
        self.retention = retention
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_started(self, pid: int) -> None:
        if self.retention.interval_seconds <= 0 or self._pid == pid or self._stop.is_set():
            return
        with self._lock:
            if self._pid == pid:
                return
            self._pid = pid
            self._thread = threading.Thread(
                target=_prune_loop,
                args=(weakref.ref(self), self._stop, self.retention.interval_seconds),
                name="cds-prune",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def round(self) -> None:
        try:
            deleted = prune(self.engine, self.retention, self.clock())
            if any(deleted.values()):
                log.info("pruned rows past retention: %s", deleted)
        except Exception:
            log.exception("pruning past-retention rows failed; will retry")


def _prune_loop(ref: weakref.ref[Pruner], stop: threading.Event, interval: float) -> None:
    """Holds the pruner weakly between rounds: a dropped store ends its thread, and its engine
    and open files are not kept alive by a sleeping thread."""
    # Spread the processes of one deployment: they start together.
    wait = random.uniform(0.1, 1.0) * min(interval, 60.0)  # noqa: S311 - not security
    while not stop.wait(wait):
        pruner = ref()
        if pruner is None:
            return
        pruner.round()
        del pruner
        wait = interval
