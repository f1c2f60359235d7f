"""store.prepared: the SQLite fast path writes and reads exactly what Connection.execute would."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, select

from cds_hooks.store.db import cards, hook_calls, make_engine, migrate, suppression_state
from cds_hooks.store.prepared import Prepared
from cds_hooks.store.suppression import _upsert

AT = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)  # whole seconds: the microseconds are written
CALL = {
    "hook_instance": "h1",
    "service_id": "svc",
    "hook": "order-select",
    "called_at": AT,
    "duration_ms": 1.25,
    "status": "ok",
    "patient": None,
    "sources": {"patient": "prefetch", "n": [1, "ü"]},
    "drafts": ["MedicationRequest/d1"],
    "fired": [],
    "skipped": ["R"],
}


def card(uuid: str, call_id: int, shown: bool) -> dict:
    return {
        "uuid": uuid,
        "call_id": call_id,
        "service_id": "svc",
        "hook": "order-select",
        "shown_at": AT + timedelta(microseconds=7),
        "rule_id": "R",
        "indicator": "warning",
        "summary": "Baclofen: a summary",
        "order_ref": "MedicationRequest/d1",
        "fingerprint": "f" * 64,
        "shown": shown,
        "suppressed_by": None if shown else "overridden",
        "earlier_card": None,
        "client": None,
    }


def raw(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def database(tmp_path, name: str):
    path = tmp_path / f"{name}.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return engine, path


def test_the_fast_path_stores_the_bytes_core_stores(tmp_path):
    core, core_path = database(tmp_path, "core")
    fast, fast_path = database(tmp_path, "fast")
    with core.begin() as conn:
        call_id = conn.execute(hook_calls.insert(), CALL).inserted_primary_key[0]
        conn.execute(cards.insert(), [card("a", call_id, True), card("b", call_id, False)])
        conn.execute(
            _upsert(conn, "select").statement, [{"fingerprint": "f", "card": "a", "at": AT}]
        )
    with fast.begin() as conn:
        fast_id = Prepared(hook_calls.insert()).insert_one(conn, CALL)
        Prepared(cards.insert()).run(conn, [card("a", fast_id, True), card("b", fast_id, False)])
        _upsert(conn, "select").run(conn, [{"fingerprint": "f", "card": "a", "at": AT}])
    assert fast_id == call_id == 1
    for table in ("hook_calls", "cards", "suppression_state"):
        assert raw(fast_path, table) == raw(core_path, table), table


def test_the_fast_path_reads_what_core_reads(tmp_path):
    engine, _path = database(tmp_path, "read")
    later = AT + timedelta(hours=1, microseconds=3)
    with engine.begin() as conn:
        _upsert(conn, "select").run(conn, [{"fingerprint": "f", "card": "a", "at": AT}])
        _upsert(conn, "override").run(conn, [{"fingerprint": "f", "card": "b", "at": later}])
    query = select(suppression_state).where(suppression_state.c.fingerprint == bindparam("fp"))
    with engine.connect() as conn:
        fast = Prepared(query).rows(conn, {"fp": "f"})
        core = [tuple(row) for row in conn.execute(query, {"fp": "f"})]
        assert Prepared(query).rows(conn, {"fp": "missing"}) == []
    assert fast == core
    assert fast[0][2] == AT and fast[0][2].tzinfo is UTC  # timezone-aware, as UtcDateTime reads
    assert fast[0][4] == later


def test_the_cursor_path_runs_only_inside_a_transaction_core_began(tmp_path):
    """Outside `writing()` the cursor would commit at once (no autobegin): Core runs instead,
    so a rollback undoes the write."""
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine)
    with engine.connect() as conn:
        Prepared(hook_calls.insert()).insert_one(conn, CALL)
        conn.rollback()
        assert conn.execute(select(hook_calls.c.id)).all() == []


def test_a_value_written_in_the_statement_is_sent(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine)
    query = Prepared(
        select(hook_calls.c.hook_instance).where(
            hook_calls.c.service_id == "svc", hook_calls.c.hook == bindparam("hook")
        )
    )
    with engine.begin() as conn:
        conn.execute(hook_calls.insert(), [CALL])
        assert query.rows(conn, {"hook": "order-select"}) == [("h1",)]


def test_statements_core_renders_per_call_or_fills_in_are_refused(tmp_path):
    from sqlalchemy import Column, Integer, MetaData, String, Table

    with_default = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("v", String, default="x")
    )
    with pytest.raises(ValueError, match="default"):
        Prepared(with_default.insert())
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine)
    expanding = Prepared(
        select(hook_calls.c.id).where(hook_calls.c.hook.in_(bindparam("h", expanding=True)))
    )
    with engine.begin() as conn, pytest.raises(ValueError, match=r"Connection\.execute"):
        expanding.rows(conn, {"h": ["order-select"]})
