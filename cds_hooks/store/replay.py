"""JWT replay protection: remember each `jti` until its token expires (CDS Hooks 2.0 security).

Shared by every worker through the database: the first INSERT of a jti wins, atomically, on the
table's primary key; a jti whose row has expired may be used again (its token is refused for
`exp` anyway). Expired rows are deleted off the request path by the store's pruner
(retention.py), in small batches, so the table stays small; `remember` touches one row by key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, update

from cds_hooks.store.db import insert_ignoring_duplicates, migrate, replay, writing


class ReplayStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None):
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        migrate(engine)

    def remember(self, jti: str, expires_at: datetime) -> bool:
        """True the first time `jti` is seen; False if it was seen and has not expired."""
        now = self.clock()
        # Not fsynced: a jti forgotten by a machine crash belongs to a token that expires in
        # minutes, and this runs on every authenticated call.
        with writing(self.engine, durable=False) as conn:
            inserted = conn.execute(
                insert_ignoring_duplicates(self.engine, replay).values(
                    jti=jti, expires_at=expires_at
                )
            ).first()
            if inserted is not None:
                return True
            # Seen before: reuse is allowed only once the old row has expired; the WHERE makes
            # the check-and-claim one atomic statement.
            claimed = conn.execute(
                update(replay)
                .where(replay.c.jti == jti, replay.c.expires_at <= now)
                .values(expires_at=expires_at)
            ).rowcount
            return claimed == 1

    def purge(self) -> int:
        """Delete expired rows; returns how many."""
        with writing(self.engine) as conn:
            return conn.execute(delete(replay).where(replay.c.expires_at <= self.clock())).rowcount
