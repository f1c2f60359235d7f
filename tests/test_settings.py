"""The one settings object: strict parsers, one-line refusals, and the README table."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_hooks import create_app
from cds_hooks import settings as settings_module
from cds_hooks.config import SettingsError, boolean
from cds_hooks.settings import OTHER_NAMES, OTHER_PREFIXES, fields, load
from tools import settings_table

ROOT = Path(__file__).resolve().parent.parent
OFF_WORDS = ["false", "FALSE", "False", "0", "no", "No", "off", "OFF", " off "]
ON_WORDS = ["true", "TRUE", "1", "yes", "on", "On"]
BOOLEANS = [
    ("PREVIEW", lambda s: s.preview.preview),
    ("ALLOW_HTTP_FHIR", lambda s: s.fhir.allow_http_fhir),
    ("METRICS", lambda s: s.observability.metrics),
    ("ALLOW_UNAUTHENTICATED", lambda s: s.app.allow_unauthenticated),
    ("SUPPRESS_SELECT_SIGN", lambda s: s.store.suppress_select_sign),
    ("FEEDBACK_KEEP_COMMENTS", lambda s: s.store.feedback_keep_comments),
    ("FHIR_ALLOW_PRIVATE", lambda s: s.fhir.fhir_allow_private),
    ("METRICS_PUBLIC", lambda s: s.observability.metrics_public),
]


def test_every_on_off_setting_is_in_the_table_above():
    """A new boolean setting is checked with every off and on word without being listed by hand."""
    on_off = boolean().expected
    declared = {f.name.upper() for _s, f in fields() if f.metadata["parse"].expected == on_off}
    assert declared == {name for name, _read in BOOLEANS}


@pytest.mark.parametrize("word", OFF_WORDS)
@pytest.mark.parametrize(("name", "read"), BOOLEANS)
def test_every_off_word_switches_off(name, read, word):
    assert read(load(environ={f"CDS_{name}": word})) is False
    assert read(load({name: word}, environ={})) is False


@pytest.mark.parametrize("word", ON_WORDS)
@pytest.mark.parametrize(("name", "read"), BOOLEANS)
def test_every_on_word_switches_on(name, read, word):
    assert read(load(environ={f"CDS_{name}": word})) is True


@pytest.mark.parametrize("word", ["", "maybe", "disabled", "2", "nein", "tru"])
def test_an_unknown_word_refuses_to_start_naming_the_variable(word):
    with pytest.raises(SettingsError) as raised:
        load(environ={"CDS_PREVIEW": word})
    message = str(raised.value)
    assert message.startswith("CDS_PREVIEW: got ")
    assert "true/false, 1/0, yes/no or on/off" in message
    assert "\n" not in message


def test_preview_no_leaves_the_preview_off(tmp_path, monkeypatch):
    """Regression: CDS_PREVIEW=no once turned the unauthenticated preview on."""
    monkeypatch.setenv("CDS_PREVIEW", "no")
    client = create_app({"DATA_DIR": str(tmp_path)}).test_client()
    assert client.get("/preview").status_code == 404
    monkeypatch.setenv("CDS_PREVIEW", "yes")
    assert create_app({"DATA_DIR": str(tmp_path)}).test_client().get("/preview").status_code == 200


def test_metrics_off_means_no_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("CDS_METRICS", "off")
    assert create_app({"DATA_DIR": str(tmp_path)}).test_client().get("/metrics").status_code == 404


def test_http_fhir_no_keeps_clear_text_refused():
    assert load(environ={"CDS_ALLOW_HTTP_FHIR": "no"}).fhir.allow_http_fhir is False


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DEADLINE_SECONDS", "0", "above 0"),
        ("DEADLINE_SECONDS", "-1", "above 0"),
        ("DEADLINE_SECONDS", "abc", "a number"),
        ("DEADLINE_SECONDS", "nan", "a number"),
        ("FHIR_MAX_PAGES", "0", "from 1"),
        ("FHIR_WORKERS", "2.5", "a whole number"),
        ("LOG_FORMAT", "yaml", "one of json, text, none"),
        ("SQLITE_SYNCHRONOUS", "OFF", "one of FULL, NORMAL, EXTRA"),
        ("NOW", "yesterday", "ISO 8601"),
        ("PUBLIC_BASE_URL", "cds.example.org", "absolute"),
    ],
)
def test_bad_values_are_refused_in_one_line(name, value, expected):
    with pytest.raises(SettingsError) as raised:
        load(environ={f"CDS_{name}": value})
    message = str(raised.value)
    assert message.startswith(f"CDS_{name}: got {value!r}")
    assert expected in message and "\n" not in message


def test_a_secret_is_not_echoed_when_refused_nor_in_repr():
    settings = load(environ={"CDS_AUDIT_PATIENT_KEY": "s3cret-key"})
    assert "s3cret-key" not in repr(settings)


def test_numbers_are_typed_once():
    settings = load(environ={"CDS_DEADLINE_SECONDS": "1.5", "CDS_FHIR_MAX_PAGES": "3"})
    assert settings.fhir.deadline_seconds == 1.5 and settings.fhir.fhir_max_pages == 3


def test_mapping_wins_over_environment_and_unknown_keys_are_refused():
    assert (
        load({"DEADLINE_SECONDS": 4}, environ={"CDS_DEADLINE_SECONDS": "1"}).fhir.deadline_seconds
        == 4
    )
    with pytest.raises(SettingsError, match="unknown setting DEADLINE_SECOND"):
        load({"DEADLINE_SECOND": 4}, environ={})


def test_settings_are_frozen():
    settings = load(environ={})
    with pytest.raises(AttributeError):
        settings.fhir.deadline_seconds = 9  # type: ignore[misc]


def test_field_names_are_unique_across_sections():
    names = [field.name for _section, field in fields()]
    assert len(names) == len(set(names))


def test_every_field_has_help_text():
    for _section, field in fields():
        assert len(field.metadata["help"]) > 10, field.name


def test_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table.render(readme) == readme, "run: python -m tools.settings_table --write"
    for _section, field in fields():
        assert f"| `CDS_{field.name.upper()}` |" in readme


def test_cli_reports_a_bad_setting_in_one_line_without_traceback(tmp_path):
    env = {"CDS_DEADLINE_SECONDS": "abc", "CDS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    fixture = next((ROOT / "fhir_fixtures").glob("*/request.json"))
    done = subprocess.run(
        [sys.executable, "-m", "cds_hooks.cli", "evaluate", str(fixture)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "CDS_DEADLINE_SECONDS: got 'abc'" in done.stderr


def test_now_is_parsed_once_by_the_settings(knowledge, tmp_path):
    noon = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert load(environ={"CDS_NOW": "2026-11-21T12:00:00Z"}).app.now == noon
    assert load(environ={"CDS_NOW": "2026-11-21"}).app.now == datetime(2026, 11, 21, tzinfo=UTC)
    assert load(environ={"CDS_NOW": " "}).app.now is None
    assert load({"NOW": noon}, environ={}).app.now == noon
    config = {"NOW": "2026-11-21T13:00:00+01:00", "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)}
    assert create_app(config).extensions["cds_hooks"].clock() == noon


def test_a_fixed_clock_also_dates_retention(knowledge, tmp_path):
    """CDS_NOW is the one clock: a demo dated years back keeps its audit and its override."""
    from tests.test_feedback import overridden, post, warning_request
    from tests.test_store import calls

    config = {"NOW": "2020-01-01T12:00:00Z", "KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path)}
    app = create_app(config)
    client = app.test_client()
    select = "/cds-services/antispasticity-order-select"
    (card,) = [
        c
        for c in client.post(select, json=warning_request()).get_json()["cards"]
        if c["source"]["topic"]["code"] == "BAC-DOPAMINE-ANTAGONIST"
    ]
    assert post(client, [overridden(card["uuid"])])[0] == 200
    store = app.extensions["cds_hooks"].store
    assert set(store.prune().values()) == {0}  # nothing is old on the clock that dated it
    assert len(calls(app)) == 1
    again = client.post(select, json=warning_request()).get_json()["cards"]
    assert card["summary"] not in [c["summary"] for c in again]  # the override still holds
    # On the real clock, the same rows are years past every window.
    assert store.drain()  # the second call's audit (with its cards) is written by the queue
    assert store.prune(datetime.now(UTC))["hook_calls"] == 2


# ---- unknown CDS_* names: a warning naming the closest setting, once ---------------------------


@pytest.fixture
def fresh_warnings(monkeypatch, caplog):
    """No name warned about yet in this process; the warnings of the test, as text."""
    monkeypatch.setattr(settings_module, "_warned", set())
    caplog.set_level(logging.WARNING, logger="cds_hooks.settings")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "cds_hooks.settings"]

    return warnings


def test_an_unknown_name_is_warned_about_once_naming_the_closest_setting(fresh_warnings):
    environ = {
        "CDS_AUTH_ISSUER": "https://ehr.example.org",  # the typo that leaves auth off
        "CDS_ZZZ": "1",
        "CDS_DEADLINE_SECONDS": "2",
        "CDS_FHIR_TOKEN": "t",  # read by the CLI on purpose
        "CDS_TEST_FHIR_URL": "http://127.0.0.1:1/fhir",  # the test suite's own
        "AUTH_ISSUER": "not ours",
    }
    settings = load(environ=environ)
    assert settings.fhir.deadline_seconds == 2 and not settings.auth.auth_issuers
    assert fresh_warnings() == [
        "CDS_AUTH_ISSUER is not a setting and is ignored; did you mean CDS_AUTH_ISSUERS?",
        "CDS_ZZZ is not a setting and is ignored; the README configuration table lists them",
    ]
    load(environ=environ)
    assert len(fresh_warnings()) == 2  # once per name


def test_app_start_warns_about_an_unknown_name(fresh_warnings, monkeypatch, tmp_path):
    monkeypatch.setenv("CDS_PREVEIW", "true")
    create_app({"DATA_DIR": str(tmp_path)})
    assert fresh_warnings() == [
        "CDS_PREVEIW is not a setting and is ignored; did you mean CDS_PREVIEW?"
    ]


# Names that stand in prose only: config.py's placeholder and the typo the tests above use.
EXAMPLES = {"CDS_NAME", "CDS_AUTH_ISSUER", "CDS_PREVEIW", "CDS_ZZZ"}
SCANNED = ("cds_hooks", "tests", "tools", "bench", "docs", ".ci")
SCANNED_FILES = ("Makefile", "Dockerfile", "docker-compose.yml", "README.md")


def test_every_cds_name_the_project_reads_is_a_setting_or_listed_as_not_one():
    """A new CDS_* name outside the settings object is added to OTHER_NAMES, or warned about."""
    files = [ROOT / name for name in SCANNED_FILES]
    files += [p for folder in SCANNED for p in (ROOT / folder).rglob("*") if p.is_file()]
    named: dict[str, str] = {}
    for path in files:
        if path.suffix in {".pyc", ".png", ".svg"} or "work" in path.relative_to(ROOT).parts:
            continue
        for name in re.findall(r"\bCDS_[A-Z0-9_]+", path.read_text(errors="replace")):
            if not name.endswith("_"):  # a prefix (CDS_TEST_), not a name
                named.setdefault(name, str(path.relative_to(ROOT)))
    settings = {f"CDS_{field.name.upper()}" for _section, field in fields()}
    stray = {
        name: where
        for name, where in named.items()
        if name not in settings | OTHER_NAMES | EXAMPLES and not name.startswith(OTHER_PREFIXES)
    }
    assert stray == {}
    assert OTHER_NAMES <= set(named), "a listed name nothing reads any more"
