"""Core statements run straight on SQLite's DBAPI cursor: the audit of a call with cards.

A call with cards reads the suppression state in the request and has its audit written by the
audit queue's writer, or in the request when the queue is off or full (docs/storage.md, "The
audit queue"): a few statements per call. Through `Connection.execute` each costs ~35 us of
SQLAlchemy's Python (compile-cache lookup, parameter and result processing, events), three
times what SQLite takes to run it (docs/performance.md, "Fixed cost, session 3"). The
statements stay Core (one definition of every table and query); on SQLite they are compiled
once and run on the DBAPI cursor with each column's own bind and result processors (the same
conversions `Connection.execute` applies). Other databases, and any engine whose statements are
listened to, go through `Connection.execute` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

_Processor = Callable[[Any], Any] | None
_Bind = tuple[str, _Processor, Any]  # name, bind processor, the value written in the statement


class Prepared:
    """One Core statement; `run` / `rows` use the SQLite fast path, anything else Core's."""

    def __init__(self, statement: Executable):
        _refuse_defaults(statement)
        self.statement = statement
        self._sqlite: tuple[str, list[_Bind], list[_Processor]] | None = None

    def run(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (one executemany)."""
        if not _direct(conn):
            conn.execute(self.statement, [dict(p) for p in params])
            return
        sql, binds, _results = self._compiled(conn)
        _cursor(conn).executemany(sql, [_row(p, binds) for p in params])

    def insert_one(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Insert one row; its autoincremented primary key."""
        if not _direct(conn):
            key = conn.execute(self.statement, dict(params)).inserted_primary_key
            assert key is not None  # an INSERT of one row
            return int(key[0])
        sql, binds, _results = self._compiled(conn)
        cursor = _cursor(conn)
        cursor.execute(sql, _row(params, binds))
        return int(cursor.lastrowid)

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a SELECT, each value converted as its column's type says."""
        if not _direct(conn):
            return [tuple(row) for row in conn.execute(self.statement, dict(params))]
        sql, binds, results = self._compiled(conn)
        cursor = _cursor(conn)
        cursor.execute(sql, _row(params, binds))
        return [
            tuple(proc(v) if proc else v for proc, v in zip(results, row, strict=True))
            for row in cursor.fetchall()
        ]

    def _compiled(self, conn: Connection) -> tuple[str, list[_Bind], list]:
        if self._sqlite is None:
            dialect = conn.dialect
            compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            binds = []
            for name in compiled.positiontup or ():
                param = compiled.binds[name]
                if param.expanding or param.literal_execute or param.callable is not None:
                    # Rendered per execution by Core; a string compiled once would be wrong.
                    raise ValueError(f"Prepared cannot run {name!r}: use Connection.execute")
                processor = param.type.dialect_impl(dialect).bind_processor(dialect)
                binds.append((name, processor, param.value))
            columns = getattr(self.statement, "selected_columns", ())
            results = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            ]
            self._sqlite = (compiled.string, binds, results)
        return self._sqlite


def _direct(conn: Connection) -> bool:
    """SQLite inside a transaction Core began (`db.writing`: the cursor path skips Core's
    autobegin, so outside one a write would commit at once and a rollback undo nothing), and
    nobody listening to the statements sent (tests that count them and the rows they read):
    then the DBAPI cursor; else Connection.execute, which tells the listeners."""
    dispatch = conn.dispatch
    return (
        conn.dialect.name == "sqlite"
        and conn.in_transaction()
        and not dispatch.before_cursor_execute
        and not dispatch.after_cursor_execute
    )


def _refuse_defaults(statement: Executable) -> None:
    """An INSERT into a table with column defaults: Core fills them in, the cursor path would
    write NULL, so SQLite and PostgreSQL would store different rows. Refused when built (at
    import), so a migration that adds a default fails every test until this learns defaults."""
    table = getattr(statement, "table", None)
    if getattr(statement, "is_insert", False) and table is not None:
        for column in table.columns:
            if column.default is not None or column.server_default is not None:
                raise ValueError(f"Prepared INSERT: {table.name}.{column.name} has a default")


def _row(params: Mapping[str, Any], binds: list[_Bind]) -> tuple[Any, ...]:
    # A name not given takes the value written in the statement; none (the autoincrement id)
    # is NULL, which SQLite numbers itself.
    return tuple(
        value if processor is None else processor(value)
        for value, processor in (
            (params.get(name, written), processor) for name, processor, written in binds
        )
    )


def _cursor(conn: Connection) -> Any:
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # a connection inside a transaction has one
    return dbapi.cursor()
