"""The /preview page in a real browser: Debian's chromium driven headless by Playwright.

Skipped, with the reason, only where no chromium or no Playwright can be had (.ci/run installs
chromium when it may). Playwright's own browser download is never used: it cannot run here.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cds_hooks import create_app

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
SCENARIO = "bac-indication-stroke-warning"
NOW = "2026-11-21T12:00:00Z"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="no chromium here (.ci/run: apt-get install chromium)"
)

MALICIOUS_CARD = {
    "uuid": "c-1",
    "summary": "<img src=x onerror=alert(1)> summary stays text",
    "indicator": "critical",
    "source": {"label": "Team <b>X</b>", "url": "javascript:alert(1)"},
    "detail": (
        "Intro with **bold**, *italic* and `code`.\n\n"
        "<script>window.pwned = 1</script>\n"
        '<img src=x onerror="window.pwned = 2">\n\n'
        "- [good link](https://example.org/a_b_c)\n"
        "- [bad link](javascript:window.pwned=3)\n"
        '- [quote](https://example.org/"onmouseover="x)\n\n'
        "1. first\n2. second"
    ),
    "suggestions": [{"label": "Use tizanidine", "uuid": "s-1", "isRecommended": True}],
    "selectionBehavior": "at-most-one",
    "links": [
        {"label": "Guideline", "url": "https://example.org/g", "type": "absolute"},
        {"label": "Evil", "url": "javascript:alert(1)", "type": "absolute"},
        {"label": "App", "url": "https://app.example.org/launch", "type": "smart"},
    ],
    "overrideReasons": [{"code": "r1", "system": "http://x", "display": "Patient tolerates it"}],
}


@pytest.fixture
def server(tmp_path, knowledge):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    shutil.copytree(FIXTURES / SCENARIO, fixtures / SCENARIO)
    app = create_app(
        {
            "PREVIEW": True,
            "FIXTURES_DIR": str(fixtures),
            "DATA_DIR": str(tmp_path),
            "KNOWLEDGE": knowledge,
            "LOG_FORMAT": "none",
        }
    )
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}", app
    finally:
        http.shutdown()
        thread.join(timeout=10)
        http.server_close()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def expected_cards(app) -> list[dict]:
    request = json.loads((FIXTURES / SCENARIO / "request.json").read_text())
    client = app.test_client()
    return client.post("/preview/api/cards", json={"request": request, "now": NOW}).get_json()[
        "cards"
    ]


def test_scenario_cards_render_like_an_ehr_sidebar(server, page, tmp_path):
    base, app = server
    wanted = expected_cards(app)
    assert wanted, "the scenario has cards to show"
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/preview")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    page.select_option("#scenario", SCENARIO)
    page.wait_for_selector("body[data-evaluated='1']", timeout=15_000)

    shot = Path(os.environ.get("PREVIEW_SCREENSHOT") or tmp_path / "preview.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    cards = page.locator("#cards article.card")
    assert cards.count() == len(wanted)
    for i, card in enumerate(wanted):
        shown = cards.nth(i)
        assert shown.get_attribute("data-indicator") == card["indicator"]
        assert f"card-{card['indicator']}" in (shown.get_attribute("class") or "")
        assert shown.locator(".summary").inner_text() == card["summary"]
        assert card["source"]["label"] in shown.locator(".source").inner_text()
        if card.get("detail"):
            assert shown.locator(".detail p, .detail li").count() > 0
        assert shown.locator(".override-reasons option").count() == 1 + len(
            card.get("overrideReasons", [])
        )
        assert shown.locator("button.suggestion").count() == len(card.get("suggestions", []))
    assert page.locator("#now").input_value() == NOW
    assert "(matches)" in page.locator("#expected").inner_text()
    raw = json.loads(page.locator("#raw-response").text_content())
    assert [c["summary"] for c in raw["cards"]] == [c["summary"] for c in wanted]
    assert not errors


def test_markdown_and_card_fields_are_rendered_safely(server, page, tmp_path):
    base, _app = server
    page.goto(f"{base}/preview")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    page.evaluate(
        "card => cdsPreview.renderCards(document.getElementById('cards'), [card])", MALICIOUS_CARD
    )
    page.screenshot(path=str(tmp_path / "markdown.png"), full_page=True)
    card = page.locator("#cards article.card")
    assert card.get_attribute("data-indicator") == "critical"
    assert card.locator(".summary").inner_text() == MALICIOUS_CARD["summary"]
    detail = card.locator(".detail")
    assert detail.locator("script, img, [onerror], [onmouseover]").count() == 0
    assert card.locator("img").count() == 0
    assert "<script>window.pwned = 1</script>" in detail.inner_text()
    assert detail.locator("strong").inner_text() == "bold"
    assert detail.locator("em").inner_text() == "italic"
    assert detail.locator("code").inner_text() == "code"
    assert detail.locator("ol li").count() == 2
    links = detail.locator("a")
    assert links.count() == 2  # the javascript: link is shown as text only
    assert links.nth(0).get_attribute("href") == "https://example.org/a_b_c"
    assert links.nth(0).get_attribute("rel") == "noopener noreferrer"
    assert "onmouseover" not in (links.nth(1).evaluate("a => a.getAttributeNames().join()"))
    assert card.locator(".source a").count() == 0  # javascript: source url is not a link
    assert card.locator(".links a").count() == 1
    assert "(SMART app)" in card.locator(".links").inner_text()
    assert card.locator("button.suggestion.recommended").is_disabled()
    assert page.evaluate("window.pwned") is None


def test_a_pasted_request_and_its_errors(server, page):
    base, _app = server
    page.goto(f"{base}/preview")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    page.fill("#request", "{not json")
    page.click("#run")
    assert "not valid JSON" in page.locator("#status").inner_text()
    request = json.loads((FIXTURES / SCENARIO / "request.json").read_text())
    del request["context"]["patientId"]
    page.fill("#request", json.dumps(request))
    page.click("#run")
    page.wait_for_selector("#status.error:has-text('HTTP 400')", timeout=15_000)
    assert page.locator("#cards article").count() == 0
