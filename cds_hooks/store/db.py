"""The database: one SQLAlchemy engine per process, the tables, and the versioned migrations.

SQLite (a file under DATA_DIR) by default, in WAL mode with a busy timeout so several gunicorn
workers can share it; PostgreSQL when DATABASE_URL is set. Migrations are a small ordered list of
DDL steps recorded in `schema_version`, applied at start under a lock (SQLite's write lock via
BEGIN IMMEDIATE, a transaction advisory lock on PostgreSQL), so workers starting together apply
each step once. Alembic would add a dependency, an env.py and a second config for a handful of
tables that only ever gain columns and indexes; the list below is the whole history.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

try:
    import fcntl
except ImportError:  # not on Windows: threads still queue, processes fall back to SQLite's wait
    fcntl = None  # type: ignore[assignment]
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from cds_hooks.store import StoreSettings


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC in Python on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store only timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(DateTime(timezone=dialect.name != "sqlite"))


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", UtcDateTime, nullable=False),
)

# One row per hook call (cds-hooks audit).
hook_calls = Table(
    "hook_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hook_instance", String(200)),
    Column("service_id", String(100), nullable=False),
    Column("hook", String(100)),
    Column("called_at", UtcDateTime, nullable=False, index=True),  # index: the pruner
    Column("duration_ms", Float, nullable=False),
    Column("status", String(40), nullable=False),  # "ok" or the error code answered
    Column("patient", String(200)),  # plain id or "hmac-sha256:<hex>" (AUDIT_PATIENT_ID)
    Column("sources", JSON, nullable=False),  # prefetch key -> prefetch / fetched / failed
    Column("drafts", JSON, nullable=False),  # draft order references
    Column("fired", JSON, nullable=False),  # rule ids that produced findings
    Column("skipped", JSON, nullable=False),  # rule ids that could not run
)

# One row per card a call produced, shown or suppressed.
cards = Table(
    "cards",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("call_id", Integer, nullable=False, index=True),
    Column("service_id", String(100), nullable=False),
    Column("hook", String(100)),
    Column("shown_at", UtcDateTime, nullable=False, index=True),
    Column("rule_id", String(100), nullable=False),
    Column("indicator", String(20), nullable=False),
    Column("summary", Text, nullable=False),
    Column("order_ref", String(300)),
    Column("fingerprint", String(64), index=True),
    Column("shown", Boolean, nullable=False),
    # Why it was not shown ("select-sign" / "overridden") and the earlier card that stands for it.
    Column("suppressed_by", String(40)),
    Column("earlier_card", String(64)),
    # Who received it: a digest of the client JWT's issuer and tenant (NULL with auth off). Only
    # feedback from the same client may suppress (suppression.Caller).
    Column("client", String(64)),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("service_id", String(100), nullable=False),
    Column("card_uuid", String(200), nullable=False, index=True),
    Column("known_card", Boolean, nullable=False),  # False: no audited card has this uuid
    Column("outcome", String(20), nullable=False),
    Column("outcome_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False, index=True),  # index: the pruner
    Column("accepted_suggestions", JSON, nullable=False),
    Column("reason_system", String(300)),
    Column("reason_code", String(200)),
    Column("reason_display", String(500)),
    Column("user_comment", Text),  # kept only when FEEDBACK_KEEP_COMMENTS
    Column("with_reason", Boolean, nullable=False),  # a reason Coding or a comment was given
    # False: sent by another client than the one that received the card; kept, never used to
    # suppress, counted apart in reports. NULL: stored before callers were told apart.
    Column("from_recipient", Boolean),
    # Who sent it: Caller.client (a digest of the JWT's issuer and tenant; NULL with auth off), so
    # feedback stored before its card was written (the card still in another process's audit
    # queue) is matched to the card's recipient when the writer writes it (feedback.reconcile).
    Column("sender", String(64)),
)

replay = Table(
    "jwt_replay",
    metadata,
    Column("jti", String(512), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# Repeat suppression reads only this: one row per order fingerprint (which includes the caller,
# the patient, the rule and the order), updated in place, so a lookup costs the same on day 300 as
# on day 1. `select_*`: the newest card shown at order-select; `override_*`: the newest card
# overridden with a reason, and when that feedback arrived. `updated_at` (the newer of the two)
# lets the pruner drop rows past every suppression window.
suppression_state = Table(
    "suppression_state",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("select_card", String(64)),
    Column("select_at", UtcDateTime),
    Column("override_card", String(64)),
    Column("override_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False, index=True),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[hook_calls, cards, feedback, replay])


def _v2(conn: Connection) -> None:
    """The in-place suppression table, filled from history; time indexes for the pruner."""
    suppression_state.create(conn)
    for table, column in ((hook_calls, "called_at"), (feedback, "received_at")):
        # checkfirst: a database created by this code's _v1 has them already.
        (index,) = [i for i in table.indexes if list(i.columns.keys()) == [column]]
        index.create(conn, checkfirst=True)
    from cds_hooks.store.suppression import rebuild_state  # the one place that knows the rules

    rebuild_state(conn)


def _v3(conn: Connection) -> None:
    """Callers told apart: who received each card, whether feedback came from them."""
    _add_columns(conn, cards.c.client, feedback.c.from_recipient)


def _v4(conn: Connection) -> None:
    """Cards written by the audit queue: the sender of feedback that arrived before its card."""
    _add_columns(conn, feedback.c.sender)


def _add_columns(conn: Connection, *columns: Column) -> None:
    for column in columns:
        table = column.table.name
        if column.name in {c["name"] for c in inspect(conn).get_columns(table)}:
            continue  # created by this code's _v1
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))


# Append only: (version, step). A step gets a Connection inside the migration transaction.
MIGRATIONS: list[tuple[int, Any]] = [(1, _v1), (2, _v2), (3, _v3), (4, _v4)]
LATEST = MIGRATIONS[-1][0]


def database_url(settings: StoreSettings) -> str:
    """DATABASE_URL if set, else a SQLite file under DATA_DIR."""
    if url := settings.database_url:
        return url
    data_dir = Path(settings.data_dir or "var")
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'cds-hooks.sqlite').resolve()}"


# SQLite's default: a commit that leaves more WAL pages than this checkpoints (and fsyncs) in the
# request that made it. With the audit queue on, its writer checkpoints in the background
# (writer.CHECKPOINT_SECONDS) and this larger value is only the backstop that bounds the WAL
# (~40 MB of 4 kB pages) should the writer not run.
AUTOCHECKPOINT_PAGES = 1000
BACKSTOP_CHECKPOINT_PAGES = 10_000


def make_engine(
    url: str,
    *,
    synchronous: str = "FULL",
    busy_timeout_ms: int = 5000,
    autocheckpoint: int = AUTOCHECKPOINT_PAGES,
) -> Engine:
    """An engine with the pragmas that make SQLite safe for several threads and processes."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, future=True)
    if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
        raise ValueError(f"SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA, not {synchronous!r}")
    memory = url in {"sqlite://", "sqlite:///:memory:"}
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        # An in-memory database lives in its one connection (for one-shot tools such as
        # `cds-hooks evaluate`, not for a server); files pool normally (QueuePool).
        **({"poolclass": StaticPool} if memory else {}),
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
        # FULL: a commit is fsynced before it returns, so an acknowledged write is on disk.
        cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()
        record.info["synchronous"] = record.info["current"] = synchronous.upper()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that reads then writes
        # can fail with SQLITE_BUSY at once instead of waiting out busy_timeout.
        # Straight on the DBAPI connection: exec_driver_sql's statement machinery cost ~25 us of
        # every hook call with cards (docs/performance.md, "Fixed cost, session 3").
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # a connection beginning a transaction has one
        dbapi.execute(f"BEGIN {mode}")

    return engine


@contextmanager
def writing(engine: Engine, *, durable: bool = True) -> Iterator[Connection]:
    """A write transaction, committed when the block exits.

    durable (feedback): on SQLite the commit is fsynced as SQLITE_SYNCHRONOUS says (FULL: on
    disk before this returns). Not durable (the hook-call audit, jti replay): synchronous=NORMAL
    for this commit, which survives a crash of the process (the WAL is in the OS cache) but not
    of the machine, and costs no fsync; the next durable commit fsyncs the WAL, these included.
    """
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn, conn.begin():
            yield conn
        return
    # Writers queue on our lock, not in SQLite's polling busy handler (see _WriteLock).
    with _write_lock(engine), engine.connect() as conn:
        info = conn.connection.info  # lives as long as the DBAPI connection
        level = info.get("synchronous", "FULL") if durable else "NORMAL"
        if info.get("current") != level:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None  # a checked-out connection has one
            dbapi.execute(f"PRAGMA synchronous = {level}")
            info["current"] = level
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def checkpoint(engine: Engine) -> None:
    """A PASSIVE WAL checkpoint (SQLite files; nothing elsewhere): copies what it can of the WAL
    into the database without waiting for, or blocking, any reader or writer."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # a checked-out connection has one
        dbapi.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


# pg_advisory_xact_lock(CARD_LOCKS, key): the lock space of card uuids (two int4 keys: apart
# from the migration's one-bigint lock by PostgreSQL's definition).
CARD_LOCKS = 7320191


def lock_cards(conn: Connection, uuids: Iterable[str]) -> None:
    """PostgreSQL: hold, until this transaction ends, a lock per card uuid (feedback.reconcile
    explains why). Taken in one order (sorted keys) and before any row lock of the transaction,
    so two transactions never wait on each other in a cycle. SQLite: nothing (one writer at a
    time already: BEGIN IMMEDIATE under _WriteLock)."""
    if conn.dialect.name != "postgresql":
        return
    keys = sorted({_lock_key(u) for u in uuids})
    if keys:
        # unnest yields the array in order, and each row's lock is taken as the row is produced.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:space, k) FROM unnest(CAST(:keys AS integer[])) k"),
            {"space": CARD_LOCKS, "keys": keys},
        ).fetchall()


def _lock_key(uuid: str) -> int:
    return int.from_bytes(hashlib.sha256(uuid.encode()).digest()[:4], "big", signed=True)


def insert_ignoring_duplicates(engine: Engine, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING <key>: atomic dedupe on the unique key.

    A row comes back only when this statement inserted one (rowcount is not reliable: with
    RETURNING, psycopg reports -1).
    """
    key = next(iter(table.primary_key.columns))
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing().returning(key)
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing().returning(key)
    raise ValueError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")


class _WriteLock:
    """One writer at a time per SQLite file: a thread lock, then an flock on a side file.

    SQLite's own busy handler polls with sleeps growing to 100 ms, which put seconds on the p99
    of hook calls under load with two gunicorn workers (docs/performance.md). Threads queue on the
    thread lock; processes on the kernel's flock, which wakes the next waiter at once.
    """

    def __init__(self, database: str | None):
        self._thread = threading.Lock()
        use_file = database and database != ":memory:" and fcntl is not None
        self._path = f"{database}.lock" if use_file else None
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> None:
        self._thread.acquire()
        try:
            if self._path is not None:
                fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def __del__(self) -> None:
        # The side file's descriptor dies with the lock (one per engine): without this every
        # app built and dropped (a test suite builds thousands) kept one open, until select()
        # calls elsewhere in the process broke past FD_SETSIZE.
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _descriptor(self) -> int:
        # flock belongs to an open file description, which a fork shares: each process opens
        # its own, or two gunicorn workers would hold "the same" lock at once.
        assert self._path is not None  # only called when there is a lock file
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd


_write_locks: weakref.WeakKeyDictionary[Engine, _WriteLock] = weakref.WeakKeyDictionary()
_write_locks_guard = threading.Lock()


def _write_lock(engine: Engine) -> _WriteLock:
    with _write_locks_guard:
        if engine not in _write_locks:
            _write_locks[engine] = _WriteLock(engine.url.database)
        return _write_locks[engine]


# Engines already migrated by this process (weak: an id() could be reused by a later engine).
_migrated: weakref.WeakSet[Engine] = weakref.WeakSet()
_migrate_lock = threading.Lock()


def migrate(engine: Engine) -> int:
    """Bring the schema to LATEST; safe to call from many processes and threads at once."""
    with _migrate_lock:
        if engine in _migrated:
            return LATEST
        with writing(engine) as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7320190)"))
            metadata.create_all(conn, tables=[schema_version])
            current = conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar() or 0
            if current > LATEST:
                raise RuntimeError(
                    f"the database schema is version {current}, newer than this code ({LATEST})"
                )
            for version, step in MIGRATIONS:
                if version > current:
                    step(conn)
                    conn.execute(
                        schema_version.insert().values(version=version, applied_at=utcnow())
                    )
        _migrated.add(engine)
        return LATEST


def utcnow() -> datetime:
    return datetime.now(UTC)
