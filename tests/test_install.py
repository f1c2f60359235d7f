"""Installing to serve pulls what the service needs to run, never the test tools.

`pip install .` is resolved for real (`--dry-run --report`: every distribution it would install,
transitively) and compared with the test extras; `make serve` must install that way too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    """PEP 503 normalised distribution name of a requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_runtime_install_resolves_without_the_test_extras(tmp_path):
    project = _project()
    test_tools = {_name(r) for r in project["optional-dependencies"]["test"]}
    assert {"pytest", "playwright", "schemathesis", "hypothesis", "ruff"} <= test_tools
    report = tmp_path / "install.json"
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    done = subprocess.run(
        [*pip, "--report", str(report), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = {_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    assert _name(project["name"]) in resolved
    assert {_name(r) for r in project["dependencies"]} <= resolved  # it did resolve them all
    assert not resolved & test_tools, sorted(resolved & test_tools)


def test_make_serve_installs_the_runtime_only_and_make_test_the_extras():
    def commands(target: str) -> str:
        done = subprocess.run(
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return done.stdout

    serve = commands("serve")
    assert re.search(r"pip install --quiet -e \.$", serve, re.MULTILINE), serve
    assert "[test" not in serve and "cds-hooks serve --host 127.0.0.1 --port 8080" in serve
    assert (
        "--port 9090"
        in subprocess.run(
            ["make", "-n", "-B", "serve", "PORT=9090"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    )
    assert "-e '.[test" in commands("test")
