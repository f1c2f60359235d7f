"""`cds-hooks` talks to people: every mistake is one line naming the problem and its fix, exit 2.

Each row of MISTAKES is a command line (and environment) a person could type; the answer must be
exactly one line on stderr, starting `cds-hooks`, containing the words that name the problem, with
no traceback, and exit status 2. `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cds_hooks import cli
from tests.servers import free_port

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
REQUEST = FIXTURES / "bac-indication-stroke-warning" / "request.json"
NOW = "2026-11-21T12:00:00Z"


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CDS_LOG_FORMAT", "text")
    # evaluate and call log only errors: put the package logger back for the tests after these.
    logger = logging.getLogger("cds_hooks")
    level = logger.level
    yield
    logger.setLevel(level)


# (id, argv, environment, words the one line must contain). `{tmp}`, `{port}` (a busy port),
# `{free}` (a free one) and `{request}` are filled in by the test.
MISTAKES = [
    ("missing file", ["evaluate", "nope.json"], {}, ["nope.json", "no such file", "-"]),
    ("a folder", ["evaluate", "{tmp}"], {}, ["is a folder"]),
    (
        "a scenario folder",
        ["evaluate", str(REQUEST.parent)],
        {},
        ["is a folder", "did you mean", "request.json"],
    ),
    ("unreadable file", ["evaluate", "{tmp}/secret.json"], {}, ["permission denied", "chmod"]),
    ("not a hook", ["evaluate", "{tmp}/patient-view.json"], {}, ["patient-view", "order-sign"]),
    ("bad date", ["evaluate", "{request}", "--now", "yesterday"], {}, ["--now", "yesterday", NOW]),
    (
        "bad setting",
        ["evaluate", "{request}", "--now", NOW],
        {"CDS_DEADLINE_SECONDS": "abc"},
        ["CDS_DEADLINE_SECONDS", "abc"],
    ),
    (
        "issuers file missing",
        ["evaluate", "{request}", "--now", NOW],
        {"CDS_AUTH_ISSUERS": "{tmp}/missing-issuers.json"},
        ["AUTH_ISSUERS", "missing-issuers.json"],
    ),
    (
        "bad setting at serve",
        ["serve", "--port", "{free}"],
        {"CDS_FHIR_MAX_PAGES": "many"},
        ["CDS_FHIR_MAX_PAGES", "many"],
    ),
    ("busy port", ["serve", "--port", "{port}"], {}, ["{port}", "already in use", "--port"]),
    ("bad port", ["serve", "--port", "http"], {}, ["--port", "'http'"]),
    ("zero workers", ["serve", "--workers", "0"], {}, ["--workers", "at least 1"]),
    (
        "public bind without auth",
        ["serve", "--host", "0.0.0.0", "--port", "{free}"],
        {},
        ["0.0.0.0", "--allow-unauthenticated"],
    ),
    ("unknown option", ["evaluate", "{request}", "--nope"], {}, ["--nope", "evaluate --help"]),
    ("unknown top option", ["--nope"], {}, ["--nope", "--help"]),
    ("unknown command", ["evalute", "x.json"], {}, ["evalute", "evaluate"]),
    ("missing argument", ["evaluate"], {}, ["request", "evaluate --help"]),
    ("report bad day", ["report", "--from", "2026-13-01"], {}, ["--from", "YYYY-MM-DD"]),
    (
        "report reversed range",
        ["report", "--from", "2026-11-22", "--to", "2026-11-21"],
        {},
        ["--to", "before", "--from"],
    ),
    ("report bad format", ["report", "--format", "pdf"], {}, ["--format", "json"]),
    ("call missing draft", ["call", "--fhir", "http://x", "--draft", "nope.json"], {}, ["nope"]),
    ("call bad draft", ["call", "--fhir", "http://x", "--draft", "{tmp}/list.json"], {}, ["JSON"]),
    ("call bad time", ["call", "--fhir", "http://x", "--draft", "{request}", "--now", "x"], {}, []),
    (
        "load missing folder",
        ["load-fixtures", "--fhir", "http://x", "--fixtures", "{tmp}/n"],
        {},
        [],
    ),
]


def fill(value: str, tmp: Path, port: int) -> str:
    return value.format(tmp=tmp, port=port, request=REQUEST, free=FREE_PORT)


FREE_PORT = free_port()  # never listened on: serve must stop before it binds


@pytest.mark.parametrize(
    ("argv", "env", "words"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_is_one_line_and_exit_2(
    argv, env, words, tmp_path, busy_port, monkeypatch, capsys
):
    (tmp_path / "secret.json").write_text("{}")
    (tmp_path / "patient-view.json").write_text('{"hook": "patient-view", "context": {}}')
    (tmp_path / "list.json").write_text("[1, 2]")
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:  # root reads any file: make one unreadable for all
        if path.name == "secret.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    for name, value in env.items():
        monkeypatch.setenv(name, fill(value, tmp_path, busy_port))
    status = cli.main([fill(a, tmp_path, busy_port) for a in argv])
    out, err = capsys.readouterr()
    assert status == 2, err
    assert "Traceback" not in out + err
    assert "serving on" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cds-hooks"), lines[0]
    for word in words:
        assert fill(word, tmp_path, busy_port) in lines[0], lines[0]


def test_debug_shows_the_traceback(capsys):
    assert cli.main(["evaluate", "nope.json", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileNotFoundError" in err
    assert err.strip().splitlines()[-1].startswith("cds-hooks evaluate: nope.json")


def test_a_bad_setting_does_not_break_help():
    env = {**os.environ, "CDS_DEADLINE_SECONDS": "abc", "CDS_FHIR_MAX_PAGES": "many"}
    for argv in (["--help"], ["serve", "--help"], ["evaluate", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "cds_hooks.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: cds-hooks") and not done.stderr


def test_no_arguments_prints_the_help(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: cds-hooks")
    for name in cli.COMMANDS:
        assert name in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"cds-hooks {cli.version()}"
    assert cli.version()[0].isdigit()


def test_every_option_has_help_text():
    parsers = [cli.build_parser()]
    subparsers = next(a for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction))
    parsers += list(subparsers.choices.values())
    assert len(parsers) == 1 + len(cli.COMMANDS)
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{parser.prog} {action.dest}"


def test_evaluate_reads_stdin_and_prints_no_server_warning(monkeypatch, capsys):
    import io

    stdin = io.TextIOWrapper(io.BytesIO(REQUEST.read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert cli.main(["evaluate", "-", "--now", NOW]) == 0
    out, err = capsys.readouterr()
    cards = json.loads(out)["cards"]
    assert cards and cards[0]["source"]["topic"]["code"] == "BAC-INDICATION"
    assert err == ""  # no "authentication is OFF ... serve binds loopback" here


def test_evaluate_a_file_equals_stdin(monkeypatch, capsys):
    assert cli.main(["evaluate", str(REQUEST), "--now", NOW]) == 0
    from_file = json.loads(capsys.readouterr().out)["cards"]
    assert [c["summary"] for c in from_file]
