"""Crash test: SIGKILL a real server in the middle of a stream of feedback; nothing acknowledged
is lost, and the server starts again on the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from cds_hooks.store import StoreSettings, open_store
from cds_hooks.store.db import feedback
from tests.servers import free_port
from tests.servers import stop as stop_process  # `stop` is the test's own Event

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

CLI = Path(sys.executable).with_name("cds-hooks")
SERVICE = "antispasticity-order-select"


def start_server(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "CDS_DATA_DIR": str(data_dir), "CDS_LOG_FORMAT": "text"}
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    pytest.fail("the server did not start within 30 s")


def entry(card: str) -> dict:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {"reason": {"system": "https://example.org/o", "code": "aware"}},
        "outcomeTimestamp": "2026-11-21T12:00:00Z",
    }


@pytest.mark.skipif(not CLI.exists(), reason=f"no {CLI} (pip install -e .)")
def test_acknowledged_feedback_survives_sigkill(tmp_path):
    log = tmp_path / "server.log"
    process, base = start_server(tmp_path, log)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def stream() -> None:
        session = requests.Session()
        while not stop.is_set():
            cards = [str(uuid.uuid4()) for _ in range(2)]  # a batch of two per POST
            try:
                response = session.post(
                    f"{base}/cds-services/{SERVICE}/feedback",
                    json={"feedback": [entry(c) for c in cards]},
                    timeout=5,
                )
            except requests.RequestException:
                return  # the server is gone: this POST was never acknowledged
            if response.status_code == 200:
                with lock:
                    acknowledged.extend(cards)

    threads = [threading.Thread(target=stream) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # posts are still in flight
        process.wait(timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        if process.poll() is None:
            process.kill()
    assert len(acknowledged) >= 20, log.read_text(errors="replace")[-2000:]

    restarted, base = start_server(tmp_path, log)
    try:
        ok = requests.post(
            f"{base}/cds-services/{SERVICE}/feedback",
            json={"feedback": [entry(acknowledged[0])]},
            timeout=5,
        )
        assert ok.status_code == 200 and ok.json()["duplicates"] == 1
    finally:
        stop_process(restarted, timeout=10)
    store = open_store(StoreSettings(data_dir=str(tmp_path)))
    with store.engine.connect() as conn:
        found = set(conn.execute(select(feedback.c.card_uuid)).scalars())
    store.close()
    missing = set(acknowledged) - found
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged entries lost"
