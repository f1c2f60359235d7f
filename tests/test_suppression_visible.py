"""Suppression visible to integrators (issue 14): the audit, the JSON log line, a response header
and /metrics all say which cards were held back as repeats, and why."""

from __future__ import annotations

from sqlalchemy import select

from cds_hooks import create_app
from cds_hooks.store.db import cards as cards_table
from tests.test_feedback import warning_request
from tests.test_observability import hook_lines

NOW = "2026-11-21T12:00:00Z"


def make_app(knowledge, tmp_path, **config):
    config = {"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), **config}
    return create_app({"LOG_FORMAT": "json", **config})


def post(client, hook: str, **headers):
    return client.post(
        f"/cds-services/antispasticity-{hook}", json=warning_request(hook), headers=headers
    )


def test_held_back_cards_show_in_audit_log_header_and_metrics(knowledge, tmp_path, capsys):
    app = make_app(knowledge, tmp_path)
    client = app.test_client()
    selected = post(client, "order-select")
    shown = {c["uuid"]: c["source"]["topic"]["code"] for c in selected.get_json()["cards"]}
    assert "X-CDS-Suppressed" not in selected.headers  # nothing held back
    capsys.readouterr()

    signed = post(client, "order-sign")
    assert signed.get_json()["cards"] == []
    assert signed.headers["X-CDS-Suppressed"] == str(len(shown))

    (line,) = hook_lines(capsys.readouterr().err)
    assert line["cards"] == 0
    logged = {(s["rule"], s["reason"], s["earlier"]) for s in line["suppressed"]}
    assert logged == {(rule, "select-sign", uuid) for uuid, rule in shown.items()}

    app.extensions["cds_hooks"].store.drain()  # the audit queue written first
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        rows = conn.execute(select(cards_table).where(cards_table.c.hook == "order-sign")).all()
    audited = {(r.rule_id, r.shown, r.suppressed_by, r.earlier_card) for r in rows}
    assert audited == {(rule, False, "select-sign", uuid) for uuid, rule in shown.items()}
    assert {r.uuid for r in rows} == {s["card"] for s in line["suppressed"]}

    metrics = client.get("/metrics").get_data(as_text=True)
    for rule in shown.values():
        assert f'cds_cards_suppressed_total{{reason="select-sign",rule="{rule}"}} 1.0' in metrics


def test_browser_clients_may_read_the_header(knowledge, tmp_path):
    client = make_app(knowledge, tmp_path).test_client()
    post(client, "order-select")
    signed = post(client, "order-sign", Origin="https://sandbox.cds-hooks.org")
    assert "X-CDS-Suppressed" in signed.headers["Access-Control-Expose-Headers"]
