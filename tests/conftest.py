"""Shared fixtures: the app from the factory, a client, a frozen clock, loaded knowledge."""

from __future__ import annotations

import pytest

from cds_hooks import create_app, schemas
from cds_hooks.knowledge import Knowledge

NOW = "2026-11-21T12:00:00Z"


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return Knowledge.load()


@pytest.fixture
def app(knowledge, tmp_path):
    return create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def call(client):
    """POST a hook request to the service for its hook; return (status, JSON body)."""

    def _call(body, service: str | None = None):
        service = service or f"antispasticity-{body['hook']}"
        response = client.post(f"/cds-services/{service}", json=body)
        if response.status_code == 200:
            assert_valid_response(response.get_json())
        return response.status_code, response.get_json()

    return _call


def assert_valid_response(body) -> None:
    """Every 200 answer must satisfy our CDS Hooks response schema."""
    assert schemas.problems("response", body) == []


# ---- PostgreSQL (.ci/postgres starts one in CI and exports TEST_DATABASE_URL) -----------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server's URL; skips on a developer machine without one, fails in CI."""
    import os

    url = os.environ.get("TEST_DATABASE_URL", "")
    in_ci = os.environ.get("CI", "").lower() in {"true", "1", "yes"}
    how = "set TEST_DATABASE_URL=postgresql+psycopg://user:pw@host/db (.ci/postgres starts one)"
    if not url.startswith("postgresql"):
        if in_ci:
            pytest.fail(f"CI=true but no PostgreSQL to test: {how}")
        pytest.skip(f"PostgreSQL tests: {how}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if in_ci:
            pytest.fail(
                "CI=true but the PostgreSQL driver is missing: pip install -e '.[postgres]'"
            )
        pytest.skip("PostgreSQL tests: pip install -e '.[postgres]' for the driver")
    return url


@pytest.fixture
def postgres_schema(postgres_url):
    """A DATABASE_URL on a fresh schema of the test server, dropped afterwards."""
    import uuid

    from sqlalchemy import text

    from cds_hooks.store.db import make_engine

    schema = f"cds_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def pytest_terminal_summary(terminalreporter):
    """The Synthea false-alarm table (tests/test_synthea_budget.py), when that module ran."""
    import sys

    budget = sys.modules.get("tests.test_synthea_budget")
    lines = budget.summary_lines() if budget else []
    if lines:
        terminalreporter.write_sep("-", "false-alarm budget: cards per rule on Synthea records")
        for line in lines:
            terminalreporter.write_line(line)
