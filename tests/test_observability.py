"""JSON log lines per hook call (never tokens), X-Request-ID, Prometheus metrics at /metrics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import responses

from cds_hooks import create_app
from cds_hooks.observability import JsonFormatter, new_request_id, redact
from tests.factories import fhir_authorization

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
SCENARIO = "bac-indication-stroke-warning"
SERVICE = "/cds-services/antispasticity-order-select"
NOW = "2026-11-21T12:00:00Z"
TOKEN = "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def hook_request() -> dict:
    return json.loads((FIXTURES / SCENARIO / "request.json").read_text())


def make_app(tmp_path, **config):
    return create_app({"NOW": NOW, "DATA_DIR": str(tmp_path), "LOG_FORMAT": "json", **config})


def log_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def hook_lines(err: str) -> list[dict]:
    return [entry for entry in log_lines(err) if entry.get("event") == "hook_call"]


def test_one_json_line_per_hook_call_without_tokens(tmp_path, capsys):
    client = make_app(tmp_path).test_client()
    body = hook_request()
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = fhir_authorization(TOKEN, subject="cds")
    capsys.readouterr()
    response = client.post(SERVICE, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    err = capsys.readouterr().err
    [line] = hook_lines(err)
    assert line["hookInstance"] == body["hookInstance"]
    assert line["service"] == "antispasticity-order-select"
    assert line["status"] == 200
    assert line["cards"] == len(response.get_json()["cards"])
    assert line["sources"] == {k: "prefetch" for k in body["prefetch"]}
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 30_000
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["level"] == "INFO" and line["logger"] == "cds_hooks.calls"
    assert TOKEN not in err and "access_token" not in err


def test_failed_calls_are_logged_too(tmp_path, capsys):
    client = make_app(tmp_path).test_client()
    body = hook_request()
    del body["context"]["patientId"]
    capsys.readouterr()
    assert client.post(SERVICE, json=body).status_code == 400
    [line] = hook_lines(capsys.readouterr().err)
    assert line["status"] == 400 and line["hookInstance"] == body["hookInstance"]
    assert line["cards"] == 0 and "fired" not in line


def test_request_id_is_echoed_when_plain_and_made_up_otherwise(tmp_path):
    client = make_app(tmp_path).test_client()
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    for bad in ("has space", "x" * 65, "<script>"):
        made = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert made != bad and len(made) == 32
    first = client.get("/nope").headers["X-Request-ID"]
    assert first != client.get("/nope").headers["X-Request-ID"]


def test_metrics_count_calls_latency_cards_and_fhir_failures(tmp_path):
    client = make_app(tmp_path).test_client()
    body = hook_request()
    cards = client.post(SERVICE, json=body).get_json()["cards"]
    assert cards, "the scenario has a card, so the card metric is exercised"
    client.post("/cds-services/no-such-service", json=body)
    del body["prefetch"]["renal"]
    body["fhirServer"] = "https://ehr.example.org/fhir"
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, "https://ehr.example.org/fhir/Observation", status=500)
        assert client.post(SERVICE, json=body).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    svc = 'service="antispasticity-order-select"'
    assert f'cds_hook_calls_total{{{svc},status="200"}} 2.0' in text
    assert 'cds_hook_calls_total{service="unknown",status="404"} 1.0' in text
    assert f"cds_hook_call_duration_seconds_count{{{svc}}} 2.0" in text
    assert f'cds_hook_call_duration_seconds_bucket{{le="0.5",{svc}}}' in text
    card = cards[0]
    rule = card["source"]["topic"]["code"]
    assert f'cds_cards_total{{indicator="{card["indicator"]}",rule="{rule}"}}' in text
    assert 'cds_fhir_fetch_failures_total{key="renal"} 1.0' in text
    assert 'cds_prefetch_sources_total{key="patient",source="prefetch"} 2.0' in text


def test_metrics_can_be_turned_off(tmp_path):
    assert make_app(tmp_path, METRICS=False).test_client().get("/metrics").status_code == 404


def test_metrics_add_up_across_worker_processes(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR (as in the image), /metrics reads every process's files."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    script = f"""
import json
from cds_hooks import create_app
body = json.loads(open({str(FIXTURES / SCENARIO / "request.json")!r}).read())
for _ in range(2):  # two "workers": two apps, as after a fork
    app = create_app({{"NOW": {NOW!r}, "DATA_DIR": {str(tmp_path)!r}, "LOG_FORMAT": "none"}})
    assert app.test_client().post({SERVICE!r}, json=body).status_code == 200
print(app.test_client().get("/metrics").get_data(as_text=True))
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert 'cds_hook_calls_total{service="antispasticity-order-select",status="200"} 2.0' in (
        done.stdout
    )
    assert list(metrics_dir.iterdir())


def test_redact_masks_bearer_tokens_and_jwts():
    assert redact(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer [redacted]"
    assert redact(f"jwt={TOKEN} end") == "jwt=[redacted] end"
    assert redact("nothing secret") == "nothing secret"


def test_formatter_adds_fields_and_masks_exceptions():
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "oops %s", ("a",), sys.exc_info()
        )
    record.fields = {"event": "e", "n": 1}
    record.request_id = "r1"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "oops a" and entry["event"] == "e" and entry["n"] == 1
    assert entry["request_id"] == "r1"
    assert "ValueError" in entry["exc"] and TOKEN not in entry["exc"]


def test_formatter_writes_what_orjson_refuses_as_before():
    """Integers past 64 bits and lone surrogates take the stdlib path; datetimes and
    dataclasses read as str() gives them, whichever encoder wrote the line."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    when = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    record.fields = {"big": 2**70, "when": when, "odd": "\ud800", 3: "int key"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["big"] == 2**70 and entry["when"] == str(when) and entry["odd"] == "\ud800"
    assert entry["3"] == "int key"
    record.fields = {"when": when, "text": "µmol/L ≥ 30"}
    line = JsonFormatter().format(record)
    assert json.loads(line)["when"] == str(when) and "µmol/L ≥ 30" in line  # UTF-8, unescaped


def test_made_up_request_ids_are_random_version_4_uuids():
    made = {new_request_id() for _ in range(2000)}
    assert len(made) == 2000
    for value in made:
        parsed = uuid.UUID(value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_metric_children_are_remembered_per_metric_and_labels(tmp_path):
    metrics = make_app(tmp_path).extensions["cds_hooks_metrics"]
    one = metrics.child(metrics.calls, "s", "200")
    assert metrics.child(metrics.calls, "s", "200") is one
    assert metrics.child(metrics.calls, "s", "400") is not one
    assert metrics.child(metrics.sources, "s", "200") is not one  # same values, other metric
    one.inc()
    assert metrics.calls.labels("s", "200")._value.get() == 1


def _calls_total(text: str) -> float:
    wanted = 'cds_hook_calls_total{service="antispasticity-order-select",status="200"} '
    return sum(float(line[len(wanted) :]) for line in text.splitlines() if line.startswith(wanted))


def test_serve_metrics_add_up_every_gunicorn_worker_and_start_from_zero(tmp_path):
    """`cds-hooks serve` turns on multiprocess mode itself and clears an earlier run's files."""
    import threading

    from tests.servers import request, serve

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "CDS_NOW": NOW, "CDS_LOG_FORMAT": "none"}
    # An earlier run's value files (2 calls) in the same folder: they must not count.
    script = f"""
import json
from cds_hooks import create_app
body = json.loads(open({str(FIXTURES / SCENARIO / "request.json")!r}).read())
app = create_app({{"NOW": {NOW!r}, "DATA_DIR": {str(tmp_path)!r}, "LOG_FORMAT": "none"}})
for _ in range(2):
    assert app.test_client().post({SERVICE!r}, json=body).status_code == 200
"""
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0 and list(metrics_dir.glob("counter_*.db"))
    body = hook_request()
    with serve(tmp_path / "server", env, workers=2, threads=1) as port:
        statuses: list[int] = []

        def caller() -> None:
            for _ in range(4):  # each on a new connection: either worker may take it
                statuses.append(request(port, "POST", SERVICE, body)[0])

        for _ in range(25):  # until both workers have answered calls (their own value files)
            callers = [threading.Thread(target=caller) for _ in range(4)]
            for thread in callers:
                thread.start()
            for thread in callers:
                thread.join()
            if len(list(metrics_dir.glob("counter_*.db"))) >= 2:
                break
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2, "one worker took every call"
        assert statuses == [200] * len(statuses)
        scrapes = [request(port, "GET", "/metrics")[1] for _ in range(6)]
    assert [_calls_total(text) for text in scrapes] == [float(len(statuses))] * 6


def test_serve_removes_the_temporary_metrics_folder_it_made(tmp_path):
    from tests.servers import request, serve

    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp), "CDS_LOG_FORMAT": "none"}
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    old = os.environ.copy()
    os.environ.clear()
    os.environ.update(environ)
    try:
        with serve(tmp_path / "server", env, workers=2, threads=1) as port:
            assert request(port, "POST", SERVICE, hook_request())[0] == 200
            (made,) = temp.glob("cds-hooks-metrics-*")
            assert list(made.glob("counter_*.db"))
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert not made.exists()


def test_a_refused_serve_leaves_this_process_metrics_as_they_were(monkeypatch, tmp_path):
    import tempfile

    from prometheus_client import values

    from cds_hooks import cli

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2  # no issuers: refused
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert values.ValueClass is values.MutexValue
    assert not list(tmp_path.glob("cds-hooks-metrics-*"))  # its temporary folder is gone
