"""`cds-hooks report --format html`: one self-contained page of charts, as data and in Chromium.

Four weeks of real hook calls (the audit) and real feedback through the endpoint; the override
rate of BAC-DOPAMINE-ANTAGONIST rises week by week, so the page must say "rising".
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest

from cds_hooks import cli, create_app
from cds_hooks.commands import report_html
from cds_hooks.pipeline import call_service
from cds_hooks.services import BY_ID
from tests.test_feedback import RULE, SERVICE, accepted, overridden, post, warning_request

MONDAY = datetime(2026, 11, 2, 10, tzinfo=UTC)
REASONS = ["patient-aware", "benefit-outweighs-risk", "patient-aware", "specialist-advice"]


@pytest.fixture
def audited(tmp_path, knowledge):
    """Week w: 4 cards shown, w of them overridden (with a reason), the others accepted.

    Each call orders another dose: the feedback arrives now (after these weeks), so an
    overridden card for the same order would be held back as a repeat.
    """
    app = create_app({"DATA_DIR": str(tmp_path), "KNOWLEDGE": knowledge, "LOG_FORMAT": "none"})
    client = app.test_client()
    runtime = app.extensions["cds_hooks"]
    for week in range(4):
        for i in range(4):
            when = MONDAY + timedelta(days=7 * week, hours=i)
            at = dataclasses.replace(runtime, clock=lambda when=when: when)
            result = call_service(BY_ID[SERVICE], warning_request(dose_mg=10 + 4 * week + i), at)
            (card,) = [c for c in result.response["cards"] if c["source"]["topic"]["code"] == RULE]
            entry = overridden(card["uuid"], REASONS[i]) if i < week else accepted(card)
            assert post(client, [entry])[0] == 200
    return tmp_path


def html_report(folder, capsys) -> str:
    argv = ["report", "--data-dir", str(folder), "--from", "2026-11-02", "--to", "2026-11-29"]
    assert cli.main([*argv, "--format", "html"]) == 0
    return capsys.readouterr().out


def test_weeks_are_cut_at_mondays():
    start = datetime(2026, 11, 4, tzinfo=UTC)  # a Wednesday
    bounds = report_html.week_bounds(start, datetime(2026, 11, 20, tzinfo=UTC))
    assert [(a.day, b.day) for a, b in bounds] == [(4, 9), (9, 16), (16, 20)]


def test_trend_is_the_least_squares_slope():
    assert report_html.trend([0.0, 0.25, 0.5, 0.75]) == pytest.approx(0.25)
    assert report_html.trend([None, 0.5, None]) is None
    assert report_html.trend_words(0.25).startswith("rising (+25.0 points")
    assert report_html.trend_words(-0.002).startswith("steady")


def test_html_report_is_self_contained_with_the_figures(audited, capsys):
    page = html_report(audited, capsys)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    # Nothing loaded from elsewhere: the only URL is the SVG namespace.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    assert re.search(r"<(img|link|iframe)\b", page) is None
    section = page[page.index(f'id="rule-{RULE}"') :]
    assert f"{RULE}: 16 shown, 10 accepted, 6 overridden, override rate 38%" in section
    assert "rising (+25.0 points a week)" in section
    rows = re.findall(
        r"<tr><td>(2026-11-\d\d)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", page
    )
    assert rows[:4] == [
        ("2026-11-02", "4", "4", "0"),
        ("2026-11-09", "4", "3", "1"),
        ("2026-11-16", "4", "2", "2"),
        ("2026-11-23", "4", "1", "3"),
    ]
    reasons = page[page.index("Top override reasons</h2>") :]
    assert reasons.index("patient-aware") < reasons.index("benefit-outweighs-risk")
    assert "<td>patient-aware</td><td>4</td>" in reasons
    assert "<td>benefit-outweighs-risk</td><td>2</td>" in reasons
    top = page[page.index("Cards most often overridden</h2>") :]
    assert f"<td>{RULE}</td>" in top
    assert page.count("<svg") >= 4


def test_text_csv_json_stay(audited, capsys):
    argv = ["report", "--data-dir", str(audited), "--from", "2026-11-02", "--to", "2026-11-29"]
    assert cli.main(argv) == 0
    assert RULE in capsys.readouterr().out
    for fmt in ("csv", "json"):
        assert cli.main([*argv, "--format", fmt]) == 0
        assert RULE in capsys.readouterr().out


def test_html_report_in_chromium(audited, capsys):
    from tests.test_preview_browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path

    playwright = pytest.importorskip("playwright.sync_api")
    if chromium_path() is None:
        pytest.skip("no chromium here (.ci/run: apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / "report.html"
    target.write_text(html_report(audited, capsys), encoding="utf-8")
    requests: list[str] = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(target.as_uri())
            shot = ARTIFACTS / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            # The charts are drawn: bars with height, the rate points, the trend line.
            heights = page.eval_on_selector_all(
                f"#rule-{RULE} svg rect", "rs => rs.map(r => r.getBBox().height)"
            )
            assert len(heights) == 12 and max(heights) > 50
            assert page.locator(f"#rule-{RULE} svg circle").count() == 4
            assert page.locator(f"#rule-{RULE} svg line.trend").count() == 1
            assert page.locator("h1").inner_text().startswith("Antispasticity CDS: card outcomes")
        finally:
            browser.close()
    assert requests == [target.as_uri()]  # nothing fetched from anywhere else
