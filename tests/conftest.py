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


def pytest_terminal_summary(terminalreporter):
    """The Synthea false-alarm table (tests/test_synthea_budget.py), when that module ran."""
    import sys

    budget = sys.modules.get("tests.test_synthea_budget")
    lines = budget.summary_lines() if budget else []
    if lines:
        terminalreporter.write_sep("-", "false-alarm budget: cards per rule on Synthea records")
        for line in lines:
            terminalreporter.write_line(line)
