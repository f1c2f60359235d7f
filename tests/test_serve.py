"""`cds-hooks serve` runs gunicorn: a real server process on a free loopback port answers."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from cds_hooks import gunicorn_conf


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "CDS_DATA_DIR": str(tmp_path), "CDS_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--workers", "1", "--threads", "2"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not listen within 60 s")
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serving_on_is_said_once_gunicorn_listens(server):
    port, log = server
    deadline = time.monotonic() + 30
    while "serving on http" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert f"cds-hooks: serving on http://127.0.0.1:{port}/cds-services" in text
    assert text.index(f"Listening at: http://127.0.0.1:{port}") < text.index("serving on http")
    # The operator is told about authentication once (not by the app build, not by gunicorn again).
    assert text.count("client authentication") == 1, text


def test_gunicorn_answers_discovery_twice_on_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server[0], timeout=30)
    bodies = []
    for _ in range(2):  # keep-alive: the second request reuses the connection
        connection.request("GET", "/cds-services")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Server", "").startswith("gunicorn")
        assert response.getheader("Connection", "").lower() != "close"
        bodies.append(json.loads(response.read()))
    connection.close()
    assert [s["hook"] for s in bodies[0]["services"]] == [
        "order-select",
        "order-sign",
        "medication-prescribe",
    ]
    assert bodies[0] == bodies[1]


def test_worker_timeout_sits_past_the_call_deadline():
    assert gunicorn_conf.timeouts(2.5)["timeout"] == 8
    assert gunicorn_conf.timeouts(10)["timeout"] == 15
    settings = gunicorn_conf.settings(2.5)
    assert settings["worker_class"] == "gthread"
    assert settings["preload_app"] is True
    assert settings["workers"] == gunicorn_conf.default_workers() >= 1
