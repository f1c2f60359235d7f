"""The audit queue (issue 15): hook-call audit written off the request's path without losing it.

A clean shutdown loses nothing (gunicorn workers, interpreter exit, Store.close); a full queue
makes the request write its own audit; suppression sees a call still in the queue; feedback that
outruns the queue of another process still counts once the card is written.
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
from cds_hooks.store.db import cards, feedback, hook_calls
from tests.test_crash import CLI, start_server
from tests.test_feedback import RULE, overridden, post, warning_request

NOW = "2026-11-21T12:00:00Z"
SLOW = {"AUDIT_FLUSH_SECONDS": 60}  # nothing is written unless drained, full or closed


def count(store, table=hook_calls) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def make_app(knowledge, tmp_path, **config):
    return create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), **config})


def rule_cards(client, hook: str) -> list[dict]:
    response = client.post(f"/cds-services/antispasticity-{hook}", json=warning_request(hook))
    assert response.status_code == 200
    return [c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == RULE]


def test_the_audit_waits_in_the_queue_and_close_writes_it(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, **SLOW)
    client = app.test_client()
    for _ in range(5):
        rule_cards(client, "order-select")
    store = app.extensions["cds_hooks"].store
    assert count(store) == 0 and len(store.queue) == 5  # off the request's path
    store.close()
    reopened = open_store(StoreSettings(data_dir=str(tmp_path)))
    assert count(reopened) == 5 and count(reopened, cards) == 10
    reopened.close()


def test_a_full_queue_makes_the_request_write_its_own_audit(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, AUDIT_QUEUE_SIZE=3, **SLOW)
    client = app.test_client()
    for _ in range(7):
        rule_cards(client, "order-select")
    store = app.extensions["cds_hooks"].store
    assert count(store) == 4 and len(store.queue) == 3  # the overflow was written, not dropped
    assert store.drain()
    assert count(store) == 7


def test_queue_size_zero_writes_in_the_request(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, AUDIT_QUEUE_SIZE=0)
    rule_cards(app.test_client(), "order-select")
    assert count(app.extensions["cds_hooks"].store) == 1


def test_suppression_sees_a_call_still_in_the_queue(knowledge, tmp_path):
    app = make_app(knowledge, tmp_path, **SLOW)
    client = app.test_client()
    (card,) = rule_cards(client, "order-select")
    assert count(app.extensions["cds_hooks"].store) == 0  # its audit still waits
    assert rule_cards(client, "order-sign") == []  # the in-place state was written at once
    # Feedback on a card still queued: this process writes its queue first, so the card is known.
    status, receipt = post(client, [overridden(card["uuid"])])
    assert status == 200 and receipt["unknownCards"] == []
    assert rule_cards(client, "order-select") == []


def test_feedback_that_outruns_another_processs_queue_still_counts(knowledge, tmp_path):
    """Worker A answered the call (its audit still queued); worker B receives the override."""
    a = make_app(knowledge, tmp_path, **SLOW)
    b = make_app(knowledge, tmp_path, **SLOW)
    (card,) = rule_cards(a.test_client(), "order-select")
    status, receipt = post(b.test_client(), [overridden(card["uuid"])])
    assert status == 200 and receipt["unknownCards"] == [card["uuid"]]  # B cannot know it yet
    assert len(rule_cards(b.test_client(), "order-select")) == 1  # not yet applied
    a.extensions["cds_hooks"].store.drain()  # A writes the card and finds the early feedback
    with b.extensions["cds_hooks"].store.engine.connect() as conn:
        (row,) = conn.execute(select(feedback)).all()
    assert (row.known_card, row.from_recipient) == (True, True)
    assert rule_cards(b.test_client(), "order-select") == []  # the override now holds


def test_interpreter_exit_writes_the_queue(tmp_path):
    """No close(), no gunicorn: atexit drains what the process still holds."""
    script = textwrap.dedent(
        f"""
        from cds_hooks import create_app
        from tests.test_feedback import warning_request
        app = create_app({{"DATA_DIR": {str(tmp_path)!r}, "AUDIT_FLUSH_SECONDS": 60,
                          "LOG_FORMAT": "none"}})
        client = app.test_client()
        for _ in range(20):
            assert client.post("/cds-services/antispasticity-order-select",
                               json=warning_request()).status_code == 200
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
                f"{base}/cds-services/antispasticity-order-select",
                json=warning_request(),
                timeout=10,
            )
            assert response.status_code == 200
        store = open_store(StoreSettings(data_dir=str(tmp_path)))
        assert count(store) == 0  # all still queued in the workers
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.1)
    assert count(store) == 60, log.read_text(errors="replace")[-2000:]
    store.close()
