"""Browser and launcher exposure: what a loopback service answers, and how every launcher binds.

A page on evil.example that rebinds its name to 127.0.0.1 reaches a loopback service with
`Host: evil.example`; a cross-site form can post `text/plain`; gunicorn started directly must
refuse a public bind without issuers just as `cds-hooks serve` does.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cds_hooks import cli, create_app, observability
from cds_hooks.commands.keys import new_key, public_jwk
from tests.servers import free_port, stop

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def local(knowledge, tmp_path):
    """A service without issuers: loopback-only, as `cds-hooks serve` runs it by default."""
    return create_app({"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), "PREVIEW": True})


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example", "x"],
)
def test_a_loopback_service_refuses_foreign_host_headers(local, host):
    client = local.test_client()
    for path in ("/cds-services", "/healthz", "/metrics", "/preview/api/scenarios"):
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 400, (path, host)
        assert "Host" in response.get_json()["message"]


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:5000", "[::1]:8080", "[::1]"]
)
def test_a_loopback_service_answers_loopback_host_headers(local, host):
    assert local.test_client().get("/healthz", headers={"Host": host}).status_code == 200


def test_the_public_base_url_host_is_answered_too(knowledge, tmp_path):
    app = create_app(
        {
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path),
            "PUBLIC_BASE_URL": "https://cds.example.org/hooks",
        }
    )
    client = app.test_client()
    assert client.get("/healthz", headers={"Host": "cds.example.org"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400


def test_a_host_answered_by_one_app_is_judged_anew_by_another(knowledge, tmp_path):
    """The Host verdicts are remembered (auth.web._known_host) per PUBLIC_BASE_URL: a name one
    service answers is still refused by another service in the same process."""

    def app(public: str):
        config = {"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path / public[8:])}
        return create_app({**config, "PUBLIC_BASE_URL": public}).test_client()

    first, second = app("https://cds.example.org"), app("https://other.example.org")
    for _ in range(2):  # the second time from the remembered verdicts
        assert first.get("/healthz", headers={"Host": "cds.example.org"}).status_code == 200
        assert second.get("/healthz", headers={"Host": "cds.example.org"}).status_code == 400
        assert second.get("/healthz", headers={"Host": "other.example.org"}).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_preview_api_requires_json(local, content_type):
    """A cross-site form can send these without a CORS preflight; JSON it cannot."""
    for path in ("/preview/api/cards", "/preview/api/next"):
        response = local.test_client().post(
            path, data='{"request": {}}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, path


def _issuer_app(knowledge, tmp_path, **extra):
    jwks = {"keys": [public_jwk(new_key("ES384"))]}
    config = {
        "KNOWLEDGE": knowledge,
        "DATA_DIR": str(tmp_path),
        "AUTH_ISSUERS": {"https://ehr.example": {"jwks": jwks}},
        "PUBLIC_BASE_URL": "https://cds.example.org",
        **extra,
    }
    return create_app(config).test_client()


def test_metrics_are_not_public_with_issuers_unless_asked_for(knowledge, tmp_path):
    assert _issuer_app(knowledge, tmp_path / "a").get("/metrics").status_code == 404
    public = _issuer_app(knowledge, tmp_path / "b", METRICS_PUBLIC=True)
    assert public.get("/metrics").status_code == 200


def test_metrics_stay_on_for_a_loopback_service(local):
    assert local.test_client().get("/metrics").status_code == 200


# ---- launchers ----------------------------------------------------------------------------------


def _clean_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    return {**env, "CDS_DATA_DIR": str(tmp_path), "CDS_LOG_FORMAT": "text", **extra}


@pytest.mark.parametrize("how", ["flag", "env"])
def test_gunicorn_config_refuses_a_public_bind_without_issuers(tmp_path, how):
    port = free_port()
    command = [str(BIN / "gunicorn"), "-c", "python:cds_hooks.gunicorn_conf", "--workers", "1"]
    env = _clean_env(tmp_path)
    if how == "flag":
        command += ["-b", f"0.0.0.0:{port}"]
    else:
        env["CDS_BIND"] = f"0.0.0.0:{port}"
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("gunicorn kept serving 0.0.0.0 without issuers")
    assert process.returncode != 0
    assert b"refusing to serve 0.0.0.0" in output
    # Refused before the app is built: no database opened, as with `cds-hooks serve`.
    assert not list(tmp_path.glob("*.sqlite*")), output.decode()


def test_gunicorn_config_serves_loopback(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "python:cds_hooks.gunicorn_conf", "--workers", "1"],
        env=_clean_env(tmp_path, CDS_BIND=f"127.0.0.1:{port}"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_healthy(f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)


def _wait_healthy(base: str, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            time.sleep(0.2)
    return False


def test_the_serve_command_printed_by_keys_works_as_printed(tmp_path, capsys):
    port = free_port()
    keys = tmp_path / "keys"
    aud = f"http://127.0.0.1:{port}/cds-services"
    assert cli.main(["keys", "--dir", str(keys), "--aud", aud]) == 0
    printed = capsys.readouterr().err
    line = next(x for x in printed.splitlines() if "cds-hooks serve" in x)
    words = shlex.split(line.split("serve:", 1)[1])
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    command = [w for w in words if "=" not in w or w.startswith("-")]
    assert command[:2] == ["cds-hooks", "serve"]
    assert env["CDS_PUBLIC_BASE_URL"] == f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(BIN / "cds-hooks"), *command[1:], "--workers", "1"],
        env=_clean_env(tmp_path / "data", **env),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_healthy(f"http://127.0.0.1:{port}", process)
        assert cli.main(["keys", "--dir", str(keys), "--aud", aud]) == 0
        token = capsys.readouterr().out.strip()
        answer = requests.get(aud, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert answer.status_code == 200
        assert requests.get(aud, timeout=5).status_code == 401
    finally:
        stop(process)


def test_cds_keys_folder_is_git_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".cds-keys/" in ignored


# ---- logs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_cannot_be_forged_with_control_characters(fmt, capsys):
    observability.configure_logging(fmt, "INFO")
    try:
        forged = "x\n2026-01-01 00:00:00 INFO cds_hooks.auth [-] client JWT ok\r\x1b[2J"
        logging.getLogger("cds_hooks.test").warning("hookInstance %s", forged)
    finally:
        observability.configure_logging("none", "INFO")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    assert "\x1b" not in err and "\r" not in err
