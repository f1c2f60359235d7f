"""CI cannot skip the PostgreSQL tests: without TEST_DATABASE_URL they fail under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_TEST = "tests/test_store.py::test_postgresql_round_trip"


def run_pg_test(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in {"CI", "TEST_DATABASE_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", PG_TEST],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_without_a_database_the_postgresql_tests_fail_under_ci():
    done = run_pg_test(CI="true")
    assert done.returncode != 0, done.stdout
    assert "CI=true but no PostgreSQL to test" in done.stdout


def test_without_a_database_they_skip_on_a_developer_machine():
    done = run_pg_test()
    assert done.returncode == 0, done.stdout
    assert "SKIPPED [1]" in done.stdout and "TEST_DATABASE_URL" in done.stdout


def test_ci_starts_postgresql_before_the_tests():
    run = (ROOT / ".ci" / "run").read_text()
    assert run.index(". .ci/postgres") < run.index("make test")
    script = (ROOT / ".ci" / "postgres").read_text()
    assert "export TEST_DATABASE_URL=" in script and 'export CI="${CI:-true}"' in script
