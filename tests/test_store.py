"""The store: migrations, the audit record, persistence across restarts, jti replay, PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from cds_hooks import create_app
from cds_hooks.services import PURPOSES
from cds_hooks.store import StoreSettings, open_store
from cds_hooks.store.audit import PatientIds
from cds_hooks.store.db import LATEST, cards, hook_calls, make_engine, migrate, schema_version
from cds_hooks.store.replay import ReplayStore
from tests.factories import fhir_authorization
from tests.test_feedback import RULE, overridden, post, shown_card, stored, warning_request

NOW = "2026-11-21T12:00:00Z"
TOKEN = "secret-access-token-never-stored"


def with_token(body: dict) -> dict:
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = fhir_authorization(TOKEN)
    return body


def calls(app) -> list[dict]:
    app.extensions["cds_hooks"].store.drain()  # the audit queue written first
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(select(hook_calls).order_by(hook_calls.c.id))
        ]


def card_rows(app) -> list[dict]:
    app.extensions["cds_hooks"].store.drain()
    with app.extensions["cds_hooks"].store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(cards))]


def test_sqlite_file_in_wal_mode_under_data_dir(app, tmp_path):
    engine = app.extensions["cds_hooks"].store.engine
    assert (tmp_path / "cds-hooks.sqlite").exists()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        versions = conn.execute(select(schema_version.c.version)).scalars().all()
    assert versions == list(range(1, LATEST + 1))


def test_migrations_run_once_from_many_threads(tmp_path):
    url = f"sqlite:///{tmp_path}/m.sqlite"
    engines = [make_engine(url) for _ in range(6)]
    errors = []

    def run(engine):
        try:
            migrate(engine)
        except Exception as error:  # pragma: no cover - the assertion shows it
            errors.append(error)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engines[0].connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == list(
            range(1, LATEST + 1)
        )


def test_a_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/n.sqlite"
    migrate(make_engine(url))
    with make_engine(url).begin() as conn:
        conn.execute(
            schema_version.insert().values(version=LATEST + 1, applied_at=datetime.now(UTC))
        )
    with pytest.raises(RuntimeError, match="newer than this code"):
        migrate(make_engine(url))


def test_audit_of_a_hook_call(app, call):
    body = with_token(warning_request())
    status, answer = call(body)
    assert status == 200
    (row,) = calls(app)
    assert row["hook_instance"] == body["hookInstance"]
    assert row["service_id"] == "antispasticity-order-select"
    assert row["hook"] == "order-select"
    assert row["called_at"] == datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert 0 < row["duration_ms"] < 10_000
    assert row["status"] == "ok"
    assert row["patient"] == "pat-1"
    assert row["sources"] == dict.fromkeys(PURPOSES, "prefetch")
    assert row["drafts"] == ["MedicationRequest/d1"]
    assert RULE in row["fired"]
    audited = {c["uuid"]: c for c in card_rows(app)}
    assert set(audited) == {c["uuid"] for c in answer["cards"]}
    ours = next(c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE)
    assert audited[ours["uuid"]]["indicator"] == ours["indicator"]
    assert audited[ours["uuid"]]["summary"] == ours["summary"]
    assert audited[ours["uuid"]]["order_ref"] == "MedicationRequest/d1"
    assert len(audited[ours["uuid"]]["fingerprint"]) == 64


def test_the_database_holds_no_token_and_no_card_detail(app, call, tmp_path):
    status, answer = call(with_token(warning_request()))
    assert status == 200
    app.extensions["cds_hooks"].store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("cds-hooks.sqlite*"))
    assert TOKEN.encode() not in raw
    assert b"haloperidol" in raw  # the summary the card showed is kept
    detail = next(c for c in answer["cards"] if c["source"]["topic"]["code"] == RULE)["detail"]
    assert detail.split("\n")[0].encode() not in raw


def test_failed_calls_are_audited_too(app, client):
    body = warning_request()
    del body["prefetch"]  # no prefetch and no fhirServer: 412
    response = client.post("/cds-services/antispasticity-order-select", json=body)
    assert response.status_code == 412
    response = client.post("/cds-services/antispasticity-order-select", json={"hook": 1})
    assert response.status_code == 400
    rows = calls(app)
    assert [r["status"] for r in rows] == ["prefetch_missing", "bad_request"]
    assert rows[0]["hook_instance"] == body["hookInstance"] and rows[1]["hook_instance"] is None


def test_keyed_hash_of_the_patient_id(knowledge, tmp_path, call):
    app = create_app(
        {
            "NOW": NOW,
            "KNOWLEDGE": knowledge,
            "DATA_DIR": str(tmp_path),
            "AUDIT_PATIENT_ID": "hash",
            "AUDIT_PATIENT_KEY": "a-site-secret-of-some-length",
        }
    )
    client = app.test_client()
    assert client.post("/cds-services/antispasticity-order-select", json=warning_request())
    (row,) = calls(app)
    assert row["patient"].startswith("hmac-sha256:") and "pat-1" not in row["patient"]
    other = PatientIds("hash", "another-site-secret-here").stored("pat-1")
    assert row["patient"] != other  # keyed: a different key gives a different value
    assert row["patient"] == PatientIds("hash", "a-site-secret-of-some-length").stored("pat-1")


@pytest.mark.parametrize(
    "config",
    [{"AUDIT_PATIENT_ID": "hash"}, {"AUDIT_PATIENT_ID": "rot13"}, {"SQLITE_SYNCHRONOUS": "OFF"}],
)
def test_bad_store_settings_fail_at_start(knowledge, tmp_path, config):
    with pytest.raises(ValueError):
        create_app({"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), **config})


def test_everything_survives_an_app_restart(knowledge, tmp_path, call):
    first = create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)})
    client = first.test_client()
    card = shown_card(lambda body: _post(client, body))
    assert post(client, [overridden(card["uuid"])])[0] == 200
    first.extensions["cds_hooks"].store.close()

    second = create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)})
    assert [r["card_uuid"] for r in stored(second)] == [card["uuid"]]
    assert len(calls(second)) == 1
    (rule,) = [
        r
        for r in second.extensions["cds_hooks"]
        .store.report(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
        .rules
        if r.rule_id == RULE
    ]
    assert (rule.shown, rule.overridden) == (1, 1)
    # The duplicate of an acknowledged entry is still recognised after the restart.
    assert post(second.test_client(), [overridden(card["uuid"])])[1]["duplicates"] == 1


def _post(client, body):
    response = client.post(f"/cds-services/antispasticity-{body['hook']}", json=body)
    return response.status_code, response.get_json()


def test_a_broken_database_does_not_cost_the_clinician_the_cards(app, call, caplog):
    store = app.extensions["cds_hooks"].store
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE cards"))
    status, answer = call(warning_request())
    assert status == 200 and answer["cards"]
    store.drain()  # the writer thread finds the table gone
    assert "audit of hook call" in caplog.text


# ---- jti replay --------------------------------------------------------------------------------


def test_replay_store_remembers_until_expiry(tmp_path):
    now = [datetime(2026, 11, 21, 12, tzinfo=UTC)]
    store = ReplayStore(make_engine(f"sqlite:///{tmp_path}/r.sqlite"), clock=lambda: now[0])
    later = now[0] + timedelta(minutes=5)
    assert store.remember("jti-1", later) is True
    assert store.remember("jti-1", later) is False
    assert store.remember("jti-2", later) is True
    now[0] = later + timedelta(seconds=1)
    assert store.remember("jti-1", now[0] + timedelta(minutes=5)) is True  # expired: usable again
    assert store.remember("jti-1", now[0] + timedelta(minutes=5)) is False
    assert store.purge() == 1  # jti-2


def test_replay_store_is_atomic_across_threads_and_engines(tmp_path):
    url = f"sqlite:///{tmp_path}/r.sqlite"
    stores = [ReplayStore(make_engine(url)) for _ in range(4)]
    expires = datetime.now(UTC) + timedelta(minutes=5)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(store):
        for i in range(25):
            won = store.remember(f"jti-{i}", expires)
            with lock:
                results.append(won)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 25 and len(results) == 200


def test_the_app_store_offers_the_replay_store(app):
    assert app.extensions["cds_hooks"].store.replay.remember("x", datetime.now(UTC) + timedelta(1))


# ---- PostgreSQL --------------------------------------------------------------------------------


def test_postgresql_round_trip(knowledge, postgres_schema):
    app = create_app({"NOW": NOW, "KNOWLEDGE": knowledge, "DATABASE_URL": postgres_schema})
    client = app.test_client()
    card = shown_card(lambda body: _post(client, body))
    entry = overridden(card["uuid"])
    assert post(client, [entry, entry])[1] == {
        "stored": 1,
        "duplicates": 1,
        "unknownCards": [],
    }
    assert _post(client, warning_request("order-sign"))[1]["cards"] == [
        c
        for c in _post(client, warning_request("order-sign"))[1]["cards"]
        if c["source"]["topic"]["code"] != RULE
    ]
    replay = app.extensions["cds_hooks"].store.replay
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert replay.remember("j", later) is True and replay.remember("j", later) is False
    report = app.extensions["cds_hooks"].store.report(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    )
    (rule,) = [r for r in report.rules if r.rule_id == RULE]
    assert (rule.shown, rule.overridden, rule.suppressed) == (1, 1, 2)
    assert json.dumps(report.to_dict())
    app.extensions["cds_hooks"].store.close()


def test_open_store_with_an_in_memory_database():
    store = open_store(StoreSettings(database_url="sqlite://"))
    assert store.replay.remember("x", datetime.now(UTC) + timedelta(minutes=1))
    store.close()
