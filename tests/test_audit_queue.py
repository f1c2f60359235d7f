"""The audit queue (issue 15): the audit of every call, cards included, is written off the
request's path without losing it.

A clean shutdown loses nothing (gunicorn workers, interpreter exit, Store.close); a full queue
makes the request write its own audit. The suppression decision stays in the request: this
process's next order-sign counts a queued order-select card, and feedback here for a queued card
waits for the queue. Feedback sent to another process or host before the card is written is
stored, and reconciled by the writer when it writes the card (on PostgreSQL under a lock that
closes the race between the two).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import func, select

from cds_hooks import create_app
from cds_hooks.commands.report import parse_day
from cds_hooks.store import StoreSettings, open_store, writer
from cds_hooks.store import feedback as feedback_store
from cds_hooks.store.db import cards, feedback, hook_calls, suppression_state
from tests.factories import LISINOPRIL_10_TAB, MS, condition, hook_request, med_request
from tests.servers import free_port
from tests.test_crash import CLI, start_server
from tests.test_feedback import RULE, SERVICE, overridden, post, warning_request

NOW = "2026-11-21T12:00:00Z"
SLOW = {"AUDIT_FLUSH_SECONDS": 60}  # nothing is written unless drained, full or closed


def count(store, table=hook_calls) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def make_app(knowledge, tmp_path, **config):
    return create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), **config})


@pytest.fixture(params=["sqlite", "postgresql"])
def processes(request, knowledge, tmp_path) -> Iterator:
    """A factory of apps on one shared database (a SQLite file, or a fresh PostgreSQL schema),
    each with its own Store, engine and queue: a worker process or host of its own. Their
    stores are closed (queues written) before the database goes."""
    database = {"DATA_DIR": str(tmp_path)}
    if request.param == "postgresql":
        database["DATABASE_URL"] = request.getfixturevalue("postgres_schema")
    apps: list = []

    def new(**config):
        apps.append(create_app({"NOW": NOW, "KNOWLEDGE": knowledge, **database, **config}))
        return apps[-1]

    yield new
    for app in apps:
        store_of(app).close()


def store_of(app):
    return app.extensions["cds_hooks"].store


def feedback_rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(feedback))]


def unrelated() -> dict:
    """An order no rule is about (most hook traffic): no card, so its audit may wait."""
    return hook_request([med_request("d1", LISINOPRIL_10_TAB)], conditions=[condition("c1", MS)])


def call_unrelated(client) -> None:
    response = client.post("/cds-services/antispasticity-order-select", json=unrelated())
    assert response.status_code == 200 and response.get_json()["cards"] == []


def rule_cards(client, hook: str) -> list[dict]:
    response = client.post(f"/cds-services/antispasticity-{hook}", json=warning_request(hook))
    assert response.status_code == 200
    return [c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == RULE]


def test_the_audit_waits_in_the_queue_and_close_writes_it(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, **SLOW)
    client = app.test_client()
    for _ in range(5):
        call_unrelated(client)
    store = app.extensions["cds_hooks"].store
    assert count(store) == 0 and len(store.queue) == 5  # off the request's path
    store.close()
    reopened = open_store(StoreSettings(data_dir=str(tmp_path)))
    assert count(reopened) == 5
    reopened.close()


def test_a_full_queue_makes_the_request_write_its_own_audit(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, AUDIT_QUEUE_SIZE=3, **SLOW)
    client = app.test_client()
    for _ in range(7):
        call_unrelated(client)
    store = app.extensions["cds_hooks"].store
    assert count(store) == 4 and len(store.queue) == 3  # the overflow was written, not dropped
    assert store.drain()
    assert count(store) == 7


def test_queue_size_zero_writes_in_the_request(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, AUDIT_QUEUE_SIZE=0)
    call_unrelated(app.test_client())
    assert count(app.extensions["cds_hooks"].store) == 1


def test_failed_calls_wait_in_the_queue_too(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, **SLOW)
    assert app.test_client().post("/cds-services/antispasticity-order-select", json={}).status_code
    store = app.extensions["cds_hooks"].store
    assert len(store.queue) == 1 and store.drain()
    with store.engine.connect() as conn:
        assert conn.execute(select(hook_calls.c.status)).scalar() == "bad_request"


def test_a_call_with_cards_waits_in_the_queue_and_close_writes_it(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, **SLOW)
    assert len(rule_cards(app.test_client(), "order-select")) == 1
    store = store_of(app)
    assert len(store.queue) == 1 and count(store, cards) == 0  # not in the request
    store.close()
    reopened = open_store(StoreSettings(data_dir=str(tmp_path)))
    assert count(reopened) == 1 and count(reopened, cards) == 2  # both of its cards
    assert count(reopened, suppression_state) == 2  # remembered for order-sign
    reopened.close()


def test_queue_size_zero_writes_a_carded_call_in_the_request(knowledge, tmp_path):
    """AUDIT_QUEUE_SIZE=0: as before the queue, decided and written in one transaction."""
    app = make_app(knowledge, tmp_path, AUDIT_QUEUE_SIZE=0)
    rule_cards(app.test_client(), "order-select")
    store = store_of(app)
    assert len(store.queue) == 0 and len(store.pending) == 0
    assert count(store) == 1 and count(store, cards) == 2 and count(store, suppression_state) == 2


def test_order_sign_right_after_select_counts_the_queued_select(knowledge, tmp_path):
    """Same process, before the writer flushed: order-sign is decided as if select's rows were
    written (the pending overlay), and the overlay goes once the writer has written them."""
    app = make_app(knowledge, tmp_path, **SLOW)
    client = app.test_client()
    (shown,) = rule_cards(client, "order-select")
    store = store_of(app)
    assert count(store, suppression_state) == 0  # still queued
    response = client.post(
        "/cds-services/antispasticity-order-sign", json=warning_request("order-sign")
    )
    assert response.status_code == 200 and response.headers["X-CDS-Suppressed"] == "2"
    assert [c for c in response.get_json()["cards"] if RULE in str(c)] == []
    assert store.drain() and len(store.pending) == 0
    with store.engine.connect() as conn:
        rows = conn.execute(select(cards.c.hook, cards.c.suppressed_by, cards.c.earlier_card))
        signed = [r for r in rows if r.hook == "order-sign"]
    assert len(signed) == 2 and {r.suppressed_by for r in signed} == {"select-sign"}
    assert shown["uuid"] in {r.earlier_card for r in signed}
    assert rule_cards(client, "order-sign") == []  # now from the database


def test_feedback_here_for_a_queued_card_waits_for_the_queue(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, **SLOW)
    client = app.test_client()
    (card,) = rule_cards(client, "order-select")
    status, receipt = post(client, [overridden(card["uuid"])])
    assert status == 200 and receipt == {"stored": 1, "duplicates": 0, "unknownCards": []}
    (row,) = feedback_rows(store_of(app))
    assert (row["known_card"], row["from_recipient"]) == (True, True)
    assert rule_cards(client, "order-select") == []  # the override holds at once


def test_feedback_elsewhere_before_the_card_is_written_is_reconciled(processes):
    """Worker (or host) A shows the card and still holds it in its queue; B gets the override:
    stored, not yet tied to a card; when A's writer writes the card, it is reconciled: known,
    from the recipient, the order silenced everywhere, and the report counts it."""
    a, b = processes(**SLOW), processes(**SLOW)
    (card,) = rule_cards(a.test_client(), "order-select")
    status, receipt = post(b.test_client(), [overridden(card["uuid"])])
    assert status == 200 and receipt["unknownCards"] == [card["uuid"]]  # stored, not lost
    (row,) = feedback_rows(store_of(b))
    assert row["known_card"] is False
    start, end = parse_day("2026-11-01"), parse_day("2026-12-01")
    assert store_of(b).report(start, end).unknown_card_feedback == 1
    # Until A's writer flushes, B does not know the order: the card shows (never one hidden).
    assert len(rule_cards(b.test_client(), "order-select")) == 1
    assert store_of(a).drain()
    (row,) = feedback_rows(store_of(b))
    assert (row["known_card"], row["from_recipient"]) == (True, True)
    assert rule_cards(b.test_client(), "order-select") == []  # the override now holds
    store_of(b).drain()
    report = store_of(b).report(start, end)
    (rule,) = [r for r in report.rules if r.rule_id == RULE]
    assert (rule.shown, rule.overridden, report.unknown_card_feedback) == (2, 1, 0)


def test_feedback_racing_the_writer_is_never_left_unknown(processes, monkeypatch):
    """The race: B's feedback transaction has looked the card up (not there yet) when A's writer
    inserts it and looks for feedback to reconcile. On PostgreSQL (READ COMMITTED), without
    the card lock both take, the writer finds nothing (B has not committed), B then commits its
    entry as unknown, and nothing ever reconciles it."""
    a, b = processes(**SLOW), processes(**SLOW)
    (card,) = rule_cards(a.test_client(), "order-select")
    looked_up, go_on = threading.Event(), threading.Event()
    lookup = feedback_store._known_cards

    def paused(conn, uuids):
        found = lookup(conn, uuids)
        looked_up.set()
        go_on.wait(10)
        return found

    monkeypatch.setattr(feedback_store, "_known_cards", paused)
    receipts: list = []
    sender = threading.Thread(
        target=lambda: receipts.append(post(b.test_client(), [overridden(card["uuid"])]))
    )
    sender.start()
    assert looked_up.wait(10)
    flusher = threading.Thread(target=store_of(a).drain)
    flusher.start()
    flusher.join(1.0)  # the writer waits for the feedback's transaction (with the lock)
    go_on.set()
    sender.join(30)
    flusher.join(30)
    assert receipts[0][0] == 200
    (row,) = feedback_rows(store_of(b))
    assert (row["known_card"], row["from_recipient"]) == (True, True)
    assert rule_cards(b.test_client(), "order-select") == []


def test_the_writer_checkpoints_the_wal_off_the_request_path(knowledge, tmp_path, monkeypatch):
    """SQLite: request connections checkpoint only as a far backstop; the writer does it."""
    done: list = []
    monkeypatch.setattr(writer, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(writer, "checkpoint", lambda engine: done.append(engine))
    app = make_app(knowledge, tmp_path, **SLOW)
    store = store_of(app)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10_000
    call_unrelated(app.test_client())
    assert store.drain() and done == [store.engine]
    off = make_app(knowledge, tmp_path, AUDIT_QUEUE_SIZE=0)
    with store_of(off).engine.connect() as conn:  # no writer: SQLite's own, as before
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000


def test_interpreter_exit_writes_the_queue(tmp_path):
    """No close(), no gunicorn: atexit drains what the process still holds."""
    script = textwrap.dedent(
        f"""
        from cds_hooks import create_app
        from tests.test_audit_queue import call_unrelated
        app = create_app({{"DATA_DIR": {str(tmp_path)!r}, "AUDIT_FLUSH_SECONDS": 60,
                          "LOG_FORMAT": "none"}})
        client = app.test_client()
        for _ in range(20):
            call_unrelated(client)
        assert len(app.extensions["cds_hooks"].store.queue) == 20
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    store = open_store(StoreSettings(data_dir=str(tmp_path)))
    assert count(store) == 20
    store.close()


@pytest.mark.skipif(not CLI.exists(), reason=f"no {CLI} (pip install -e .)")
def test_a_clean_shutdown_of_the_server_loses_nothing(tmp_path, monkeypatch):
    """gunicorn with two workers, audit flushes a minute apart: SIGTERM, and every call is kept."""
    monkeypatch.setenv("CDS_AUDIT_FLUSH_SECONDS", "60")
    log = tmp_path / "server.log"
    process, base = start_server(tmp_path, log)
    try:
        session = requests.Session()
        for _ in range(60):
            response = session.post(
                f"{base}/cds-services/antispasticity-order-select", json=unrelated(), timeout=10
            )
            assert response.status_code == 200 and response.json()["cards"] == []
        store = open_store(StoreSettings(data_dir=str(tmp_path)))
        assert count(store) == 0  # all still queued in the workers
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    time.sleep(0.1)
    assert count(store) == 60, log.read_text(errors="replace")[-2000:]
    store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_a_crash_loses_at_most_the_queue_and_never_feedback(tmp_path):
    """SIGKILL of the server and its worker: of the calls with cards, at most AUDIT_QUEUE_SIZE
    are lost (those still queued); acknowledged feedback, including feedback on a card that
    was queued when it arrived (the queue is written first), is all there."""
    port = free_port()
    env = {
        **os.environ,
        "CDS_DATA_DIR": str(tmp_path),
        "CDS_NOW": NOW,
        "CDS_LOG_FORMAT": "none",
        "CDS_AUDIT_QUEUE_SIZE": "4",
        "CDS_AUDIT_FLUSH_SECONDS": "60",
    }
    command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the worker is killed with it
    )
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                session.get(f"{base}/healthz", timeout=1)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)

        def shown() -> str:
            response = session.post(f"{base}/cds-services/{SERVICE}", json=warning_request())
            assert response.status_code == 200
            return next(c for c in response.json()["cards"] if RULE in str(c))["uuid"]

        first = [shown() for _ in range(10)]  # 4 queued, 6 written by their requests (full)
        response = session.post(
            f"{base}/cds-services/{SERVICE}/feedback", json={"feedback": [overridden(first[0])]}
        )
        assert response.status_code == 200 and response.json()["unknownCards"] == []
        for _ in range(3):
            session.post(
                f"{base}/cds-services/{SERVICE}", json=warning_request("order-select", dose_mg=5)
            )
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    store = open_store(StoreSettings(data_dir=str(tmp_path), audit_queue_size=0))
    try:
        assert count(store) == 10  # the 3 calls still queued are lost (at most 4 could be)
        (row,) = feedback_rows(store)
        assert (row["card_uuid"], row["known_card"]) == (first[0], True)
        with store.engine.connect() as conn:
            assert set(first) <= set(conn.execute(select(cards.c.uuid)).scalars())
    finally:
        store.close()


def test_reconciled_feedback_counts_only_from_the_cards_recipient(tmp_path):
    """The writer matches early feedback as `save` would: an override from another client than
    the card's recipient is kept, flagged, and silences nothing; the recipient's does."""
    from datetime import UTC, datetime

    from cds_hooks.store.db import writing
    from cds_hooks.store.suppression import Candidate

    store = open_store(StoreSettings(data_dir=str(tmp_path)))
    try:
        at = datetime(2026, 11, 21, 12, tzinfo=UTC)
        for uuid, sender in (("card-a", "client-x"), ("card-b", "client-y")):
            store.save_feedback(SERVICE, [overridden(uuid)], at)  # unknown: no card yet
            with writing(store.engine) as conn:  # the sender, as save stores it with auth on
                conn.execute(
                    feedback.update().where(feedback.c.card_uuid == uuid), {"sender": sender}
                )
        written = [
            Candidate(
                {"uuid": uuid, "indicator": "warning"}, RULE, "MedicationRequest/d1", fp, "client-x"
            )
            for uuid, fp in (("card-a", "fp-a"), ("card-b", "fp-b"))
        ]
        with writing(store.engine) as conn:
            assert feedback_store.reconcile(conn, written) == 2
        rows = {r["card_uuid"]: r for r in feedback_rows(store)}
        assert (rows["card-a"]["known_card"], rows["card-a"]["from_recipient"]) == (True, True)
        assert (rows["card-b"]["known_card"], rows["card-b"]["from_recipient"]) == (True, False)
        with store.engine.connect() as conn:
            state = {
                r.fingerprint: r.override_card for r in conn.execute(select(suppression_state))
            }
        assert state == {"fp-a": "card-a"}  # only the recipient's override silences its order
    finally:
        store.close()
