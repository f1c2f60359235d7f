"""The audit queue (issue 15): the audit of calls without cards is written off the request's
path without losing it.

A clean shutdown loses nothing (gunicorn workers, interpreter exit, Store.close); a full queue
makes the request write its own audit; a call with cards is in the database before its answer,
so the next call and feedback sent to another process see its cards at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from sqlalchemy import func, select

from cds_hooks import create_app
from cds_hooks.store import StoreSettings, open_store
from cds_hooks.store.db import cards, hook_calls
from tests.factories import LISINOPRIL_10_TAB, MS, condition, hook_request, med_request
from tests.test_crash import CLI, start_server
from tests.test_feedback import RULE, overridden, post, warning_request

NOW = "2026-11-21T12:00:00Z"
SLOW = {"AUDIT_FLUSH_SECONDS": 60}  # nothing is written unless drained, full or closed


def count(store, table=hook_calls) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def make_app(knowledge, tmp_path, **config):
    return create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), **config})


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


def test_a_call_with_cards_is_in_the_database_before_its_answer(knowledge, tmp_path):
    """Worker A shows the card; worker B (another process, same database) gets the override
    at once, knows the card, and the next call anywhere holds the card back."""
    a = make_app(knowledge, tmp_path, **SLOW)
    b = make_app(knowledge, tmp_path, **SLOW)
    (card,) = rule_cards(a.test_client(), "order-select")
    assert len(a.extensions["cds_hooks"].store.queue) == 0
    assert count(b.extensions["cds_hooks"].store, cards) == 2  # both of its cards
    assert rule_cards(b.test_client(), "order-sign") == []  # select -> sign, across workers
    status, receipt = post(b.test_client(), [overridden(card["uuid"])])
    assert status == 200 and receipt["unknownCards"] == []
    assert rule_cards(a.test_client(), "order-select") == []


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
