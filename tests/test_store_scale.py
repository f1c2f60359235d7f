"""A hook call costs the same on day 300 as on day 1: statements and rows read do not grow with
history (issue 16), and pruning removes exactly what is past retention.

"Rows read" is measured, not timed: on SQLite as the virtual-machine instructions the statements
of the call execute (SQLite's progress handler, every instruction: a scan of history would add
thousands); on PostgreSQL as the rows every plan node of each statement examined
(EXPLAIN ANALYZE of the same statement with the same parameters).
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select, text

from cds_hooks import create_app
from cds_hooks.store.db import cards, feedback, hook_calls, make_engine, replay, suppression_state
from tests.test_feedback import RULE, overridden, post, warning_request

T = datetime(2026, 11, 21, 12, tzinfo=UTC)
PG_URL = os.environ.get("TEST_DATABASE_URL", "")
CALLS, CARDS_PER_CALL = 100_000, 3


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request, tmp_path) -> Iterator:
    """A factory of empty databases of one kind; every store opened on them is closed after."""
    made: list[str] = []
    apps: list = []

    def new() -> str:
        if request.param == "sqlite":
            made.append(f"sqlite:///{tmp_path}/db{len(made)}.sqlite")
            return made[-1]
        schema = f"cds_scale_{uuid.uuid4().hex[:10]}"
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"

    if request.param == "postgresql" and not PG_URL.startswith("postgresql"):
        pytest.skip("PostgreSQL: set TEST_DATABASE_URL=postgresql+psycopg://user@host/db")
    admin = make_engine(PG_URL) if request.param == "postgresql" else None
    new.apps = apps  # type: ignore[attr-defined]
    try:
        yield new
    finally:
        for app in apps:
            app.extensions["cds_hooks"].store.close()
        if admin is not None:
            with admin.begin() as conn:
                for schema in made:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def app_at(knowledge, url: str, now: datetime, opened: list | None = None, **config):
    config = {"PRUNE_INTERVAL_SECONDS": 0, **config}
    app = create_app(
        {"NOW": now.isoformat(), "KNOWLEDGE": knowledge, "DATABASE_URL": url, **config}
    )
    if opened is not None:
        opened.append(app)
    return app


def hook(client, hook_name: str) -> list[dict]:
    response = client.post(
        f"/cds-services/antispasticity-{hook_name}", json=warning_request(hook_name)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["cards"]


# ---- seeding: bulk inserts of history shaped like what the service writes ----------------------


def seed(engine, fingerprints: list[str], *, calls: int = CALLS, per_call: int = CARDS_PER_CALL):
    """`calls` audited calls with `per_call` cards each, older than ten days, a tenth of the cards
    with feedback, the suppression state of every fingerprint and expired jti rows. One in
    thirty calls is the same order again (`fingerprints`): the repeated order-select of issue 16.

    Rows go straight to the driver (SQLAlchemy's per-row processing would take most of a
    minute), stored as the store's own types store them.
    """
    sqlite = engine.dialect.name == "sqlite"

    def stamp(at: datetime):  # UtcDateTime: naive UTC text on SQLite
        return at.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at

    rng = random.Random(16)
    service, summary = "antispasticity-order-select", "Baclofen with haloperidol: CNS depression"
    sources, drafts, fired = '{"patient": "prefetch"}', '["MedicationRequest/d1"]', f'["{RULE}"]'
    call_rows, card_rows, feedback_rows, state = [], [], [], {}
    for i in range(calls):
        at = T - timedelta(days=11, minutes=i * 5)  # 100,000 calls over a year
        when, later = stamp(at), stamp(at + timedelta(minutes=1))
        call_id = 10_000_000 + i  # above any id the database hands out
        call_rows.append(
            (
                call_id,
                f"{rng.getrandbits(128):032x}",
                service,
                "order-select",
                when,
                3.0,
                "ok",
                f"pat-{i % 5000}",
                sources,
                drafts,
                fired,
                "[]",
            )
        )
        for j in range(per_call):
            fp = fingerprints[j % len(fingerprints)] if i % 30 == 0 else f"{i % 20000:032x}{j:032x}"
            card = f"{rng.getrandbits(128):032x}"
            card_rows.append(
                (
                    card,
                    call_id,
                    service,
                    "order-select",
                    when,
                    RULE,
                    "warning",
                    summary,
                    "MedicationRequest/d1",
                    fp,
                    True,
                    None,
                    None,
                )
            )
            state.setdefault(fp, (fp, card, when, when))
            if rng.random() < 0.1:
                reason = rng.random() < 0.5
                feedback_rows.append(
                    (
                        f"{rng.getrandbits(128):032x}",
                        service,
                        card,
                        True,
                        "overridden" if reason else "accepted",
                        later,
                        later,
                        "[]",
                        "https://example.org/o" if reason else None,
                        "aware" if reason else None,
                        None,
                        None,
                        reason,
                    )
                )
    # The repeated order's own row is the real one, newer than all of this.
    state_rows = [row for fp, row in state.items() if fp not in fingerprints]
    expired = stamp(T - timedelta(hours=1))
    jti_rows = [(f"jti-{i}", expired) for i in range(calls)]
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA cache_size = -100000")  # 100 MB: the indexes stay in memory
            raw.execute("BEGIN")  # the store's connections are in autocommit mode
        for table, rows in (
            (hook_calls, call_rows),
            (cards, card_rows),
            (feedback, feedback_rows),
            (suppression_state, state_rows),
            (replay, jti_rows),
        ):
            _bulk_insert(raw, sqlite, table, rows)
        raw.commit()
    return {"calls": len(call_rows), "cards": len(card_rows), "feedback": len(feedback_rows)}


SEEDED = {  # the columns seed() fills, in its tuples' order
    "hook_calls": "id hook_instance service_id hook called_at duration_ms status patient sources "
    "drafts fired skipped",
    "cards": "uuid call_id service_id hook shown_at rule_id indicator summary order_ref "
    "fingerprint shown suppressed_by earlier_card",
    "feedback": "dedupe_key service_id card_uuid known_card outcome outcome_at received_at "
    "accepted_suggestions reason_system reason_code reason_display user_comment with_reason",
    "suppression_state": "fingerprint select_card select_at updated_at",
    "jwt_replay": "jti expires_at",
}


def _bulk_insert(raw, sqlite: bool, table, rows: list[tuple]) -> None:
    """executemany on SQLite, COPY on PostgreSQL."""
    names = SEEDED[table.name].split()
    if sqlite:
        marks = ", ".join("?" * len(names))
        raw.executemany(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", rows)
        return
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


# ---- measuring --------------------------------------------------------------------------------


@dataclass
class Cost:
    statements: list[str] = field(default_factory=list)
    rows_read: int = 0


@contextmanager
def measured(engine) -> Iterator[Cost]:
    """Statements sent while the block runs (the audit writer's included), and rows read."""
    cost = Cost()
    replays: list[tuple[str, object]] = []

    def steps() -> int:
        cost.rows_read += 1
        return 0  # 0: go on

    def before(conn, cursor, statement, parameters, context, executemany):
        if threading.current_thread().name == "cds-prune":
            return  # the background pruner (off in these apps anyway)
        cost.statements.append(statement.split()[0].upper())
        raw = conn.connection.dbapi_connection
        if engine.dialect.name == "sqlite":
            raw.set_progress_handler(steps, 1)
        elif statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            replays.append((statement, parameters))

    def after(conn, cursor, statement, parameters, context, executemany):
        if engine.dialect.name == "sqlite":
            conn.connection.dbapi_connection.set_progress_handler(None, 1)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield cost
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    for statement, parameters in replays:
        cost.rows_read += _pg_rows_examined(engine, statement, parameters)


def _pg_rows_examined(engine, statement: str, parameters) -> int:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
            (plan,) = cursor.fetchone()
        raw.rollback()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return _examined(plan[0]["Plan"])


def _examined(node: dict) -> int:
    """Rows each table-reading node produced or discarded (a Bitmap Index Scan only finds row
    addresses, dead versions included; its Bitmap Heap Scan parent counts the rows read)."""
    loops = node.get("Actual Loops", 1)
    own = 0
    if node["Node Type"].endswith("Scan") and node["Node Type"] != "Bitmap Index Scan":
        own = (
            node.get("Actual Rows", 0)
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        ) * loops
    return own + sum(_examined(child) for child in node.get("Plans", []))


def hook_path_cost(app) -> tuple[Cost, list[dict], list[dict]]:
    """An order-select (shown) then an order-sign (the repeat held back) for the same order."""
    store = app.extensions["cds_hooks"].store
    engine, client = store.engine, app.test_client()
    with measured(engine) as cost:
        selected = hook(client, "order-select")
        assert store.drain()  # its audit rows, written by the queue's thread, counted too
        signed = hook(client, "order-sign")
        assert store.drain()
        assert app.extensions["cds_hooks"].store.replay.remember(
            f"new-jti-{uuid.uuid4()}", T + timedelta(minutes=5)
        )
    return cost, selected, signed


def rules(cards_: list[dict]) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in cards_)


def test_a_hook_call_costs_the_same_with_a_year_of_history(knowledge, databases):
    """The store of a busy year answers like an empty one: same statements, same rows read."""

    def prepared(history: bool):
        url = databases()
        # Ten days ago this order was shown once (outside every window): both stores hold it.
        earlier = app_at(knowledge, url, T - timedelta(days=10), databases.apps)
        hook(earlier.test_client(), "order-select")
        earlier.extensions["cds_hooks"].store.drain()
        if history:
            engine = earlier.extensions["cds_hooks"].store.engine
            with engine.connect() as conn:
                fps = sorted(set(conn.execute(select(cards.c.fingerprint)).scalars()))
            counts = seed(engine, fps)
            assert counts["cards"] == CALLS * CARDS_PER_CALL
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(cards)).scalar() > 300_000
        return app_at(knowledge, url, T, databases.apps)

    empty_cost, empty_selected, empty_signed = hook_path_cost(prepared(history=False))
    full_cost, selected, signed = hook_path_cost(prepared(history=True))

    assert rules(selected) == rules(empty_selected) and RULE in rules(selected)
    assert rules(signed) == rules(empty_signed) and RULE not in rules(signed)  # held back
    assert full_cost.statements == empty_cost.statements
    assert full_cost.rows_read == empty_cost.rows_read
    assert 0 < empty_cost.rows_read < 5000


# ---- retention --------------------------------------------------------------------------------


def test_pruning_removes_exactly_what_is_past_retention(knowledge, tmp_path):
    url = f"sqlite:///{tmp_path}/prune.sqlite"
    retention = {"AUDIT_RETENTION_DAYS": 30, "PRUNE_INTERVAL_SECONDS": 0}
    # Day -40: a call, its card overridden (past retention, both go).
    old = app_at(knowledge, url, T - timedelta(days=40), **retention)
    old_cards = hook(old.test_client(), "order-select")
    (old_card,) = [c for c in old_cards if RULE in str(c)]
    assert post(old.test_client(), [overridden(old_card["uuid"])])[0] == 200
    # Day -29: a call whose card is still reported (within 30 days).
    kept = app_at(knowledge, url, T - timedelta(days=29), **retention)
    (kept_card,) = [c for c in hook(kept.test_client(), "order-select") if RULE in str(c)]
    assert post(kept.test_client(), [overridden(kept_card["uuid"])])[0] == 200
    # One hour ago: overridden with a reason, so the next call must still hold it back.
    recent = app_at(knowledge, url, T - timedelta(hours=1), **retention)
    (recent_card,) = [c for c in hook(recent.test_client(), "order-select") if RULE in str(c)]
    assert post(recent.test_client(), [overridden(recent_card["uuid"])])[0] == 200
    store = app_at(knowledge, url, T, **retention).extensions["cds_hooks"].store
    store.replay.remember("expired", T - timedelta(seconds=1))
    store.replay.remember("live", T + timedelta(minutes=5))

    def snapshot():
        with store.engine.connect() as conn:
            return {
                "calls": sorted(conn.execute(select(hook_calls.c.called_at)).scalars()),
                "cards": set(conn.execute(select(cards.c.uuid)).scalars()),
                "feedback": set(conn.execute(select(feedback.c.card_uuid)).scalars()),
                "state": len(conn.execute(select(suppression_state)).all()),
                "jti": set(conn.execute(select(replay.c.jti)).scalars()),
            }

    before = snapshot()
    report_before = store.report(T - timedelta(days=29, hours=1), T + timedelta(days=1))
    store.retention = type(store.retention)(
        audit=store.retention.audit, suppression=store.retention.suppression, batch_rows=2
    )
    deleted = store.prune(T)
    after = snapshot()

    assert before["calls"][0] == T - timedelta(days=40) and len(before["calls"]) == 3
    assert after["calls"] == before["calls"][1:]
    assert after["cards"] == before["cards"] - {c["uuid"] for c in old_cards}
    assert len(before["cards"]) == 3 * len(old_cards)
    assert after["feedback"] == {kept_card["uuid"], recent_card["uuid"]}
    assert after["jti"] == {"live"}
    # The state row of the order is kept: the one-hour-old override still holds the card back.
    assert after["state"] == before["state"] == 2  # this order's two cards
    assert deleted["hook_calls"] == 1 and deleted["jwt_replay"] == 1
    report_after = store.report(T - timedelta(days=29, hours=1), T + timedelta(days=1))
    assert [r.to_dict() for r in report_after.rules] == [r.to_dict() for r in report_before.rules]
    now = app_at(knowledge, url, T, **retention)
    assert RULE not in rules(hook(now.test_client(), "order-select"))
    now.extensions["cds_hooks"].store.drain()  # its other card's select, written at T
    # A day later the suppression window is over: the state row goes too, and the card shows.
    assert store.prune(T + timedelta(hours=24))["suppression_state"] == 1
    later = app_at(knowledge, url, T + timedelta(hours=24), **retention).test_client()
    assert RULE in rules(hook(later, "order-select"))


def test_the_report_states_the_window_it_can_see(knowledge, tmp_path, capsys, monkeypatch):
    from cds_hooks.cli import main

    app_at(knowledge, f"sqlite:///{tmp_path}/r.sqlite", T)
    args = ["report", "--database-url", f"sqlite:///{tmp_path}/r.sqlite"]
    monkeypatch.setenv("CDS_AUDIT_RETENTION_DAYS", "30")
    assert main([*args, "--from", "2020-01-01", "--to", "2020-01-31"]) == 0
    out = capsys.readouterr().out
    assert "the audit keeps 30 days" in out.lower() and "past retention" in out
    assert main([*args, "--from", "2020-01-01", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["retentionDays"] == 30
    assert "past retention" in captured.err
    today = datetime.now(UTC).date().isoformat()
    assert main([*args, "--from", today]) == 0
    assert "past retention" not in capsys.readouterr().out


def test_upgrading_fills_the_suppression_state_from_history(knowledge, tmp_path):
    """A database from before the in-place table keeps suppressing what its history says."""
    from cds_hooks.store.db import MIGRATIONS, schema_version

    url = f"sqlite:///{tmp_path}/old.sqlite"
    app = app_at(knowledge, url, T - timedelta(minutes=5), SUPPRESS_SELECT_SIGN=True)
    (card,) = [c for c in hook(app.test_client(), "order-select") if RULE in str(c)]
    app.extensions["cds_hooks"].store.drain()
    engine = app.extensions["cds_hooks"].store.engine
    with engine.begin() as conn:  # back to version 1: no state table, the history alone
        conn.execute(suppression_state.delete())
        conn.execute(schema_version.delete().where(schema_version.c.version > 1))
    app.extensions["cds_hooks"].store.close()
    assert MIGRATIONS[1][0] == 2
    with make_engine(url).begin() as conn:  # and without what versions 2 and 3 added
        conn.execute(text("DROP TABLE suppression_state"))
        conn.execute(text("ALTER TABLE cards DROP COLUMN client"))
        conn.execute(text("ALTER TABLE feedback DROP COLUMN from_recipient"))
    later = app_at(knowledge, url, T).test_client()
    assert RULE not in rules(hook(later, "order-sign"))  # order-select's card stands for it
    with make_engine(url).connect() as conn:
        (row,) = [
            r for r in conn.execute(select(suppression_state)) if r.select_card == card["uuid"]
        ]
    assert row.select_at == T - timedelta(minutes=5)
