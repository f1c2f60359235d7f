"""`cds-hooks serve` runs gunicorn: a real server process on a free loopback port answers."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from cds_hooks import gunicorn_conf
from tests.servers import serve


@pytest.fixture
def server(tmp_path):
    with serve(tmp_path) as port:  # the one launcher the serve tests share (tests/servers.py)
        yield port, tmp_path / "serve.log"


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


def test_serve_warns_once_about_an_unknown_setting_name(tmp_path):
    """CDS_AUTH_ISSUER (for CDS_AUTH_ISSUERS) would leave authentication off without a word."""
    with serve(tmp_path, {"CDS_AUTH_ISSUER": "https://ehr.example.org"}):
        pass
    text = (tmp_path / "serve.log").read_text()
    warning = "CDS_AUTH_ISSUER is not a setting and is ignored; did you mean CDS_AUTH_ISSUERS?"
    assert text.count(warning) == 1, text


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
