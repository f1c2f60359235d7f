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

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
SCENARIO = "bac-indication-stroke-warning"
LOOP = "two-warnings-one-order"  # the stroke scenario at 90 mg/day: BAC-INDICATION and BAC-DOSE
# Screenshots are kept for people to look at: artifacts/ (git-ignored), or $CDS_TEST_ARTIFACTS.
ARTIFACTS = Path(os.environ.get("CDS_TEST_ARTIFACTS") or ROOT / "artifacts")
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
    (fixtures / LOOP).mkdir()
    request = json.loads((FIXTURES / SCENARIO / "request.json").read_text())
    dosage = request["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"][0]
    dosage["doseAndRate"][0]["doseQuantity"]["value"] = 30
    dosage["text"] = "30 mg by mouth three times daily"
    (fixtures / LOOP / "request.json").write_text(json.dumps(request))
    expected = {"now": NOW, "description": "A stroke patient at 90 mg/day: two warnings"}
    (fixtures / LOOP / "expected.json").write_text(json.dumps(expected))
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


SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def expected_cards(app) -> list[dict]:
    request = json.loads((FIXTURES / SCENARIO / "request.json").read_text())
    client = app.test_client()
    cards = client.post("/preview/api/cards", json={"request": request, "now": NOW}).get_json()
    return sorted(cards["cards"], key=lambda c: SEVERITY[c["indicator"]])


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


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

    shot(page, "preview-scenario.png")

    cards = page.locator("#cards article.card")
    assert cards.count() == len(wanted)
    for i, card in enumerate(wanted):
        shown = cards.nth(i)
        assert shown.get_attribute("data-indicator") == card["indicator"]
        assert f"card-{card['indicator']}" in (shown.get_attribute("class") or "")
        assert shown.locator(".summary").inner_text() == card["summary"].replace(
            "x10^9", "\u00d710\u2079"
        )
        assert card["source"]["label"] in shown.locator(".source").inner_text()
        if card.get("detail"):
            assert shown.locator(".detail p, .detail li").count() > 0
        assert shown.locator(".override-reasons option").count() == 1 + len(
            card.get("overrideReasons", [])
        )
        assert shown.locator("button.suggestion").count() == len(card.get("suggestions", []))
        assert shown.locator("button.dismiss").is_enabled()
    assert page.locator("#now").input_value() == NOW
    assert "(matches)" in page.locator("#expected").inner_text()
    banner = page.locator("#banner").inner_text()
    assert "Robert Hughes" in banner and "54 y" in banner and "male" in banner
    orders = page.locator("#orders .order")
    assert orders.count() == 1
    assert "baclofen 5 MG Oral Tablet, 5 mg three times a day" in orders.first.inner_text()
    assert "selected" in orders.first.inner_text()
    # The rules' name and version is text, not a link to a label search page.
    assert page.locator(".card .source a").count() == page.locator(".card a.reference").count()
    assert (
        page.locator(".card .source")
        .first.locator("a.reference")
        .inner_text()
        .startswith("reference (")
    )
    raw = json.loads(page.locator("#raw-response").text_content())
    assert sorted(c["summary"] for c in raw["cards"]) == sorted(c["summary"] for c in wanted)
    assert page.evaluate(
        "fetch('/preview/static/favicon.svg').then(r => r.headers.get('content-type'))"
    ).startswith("image/svg+xml")
    assert page.locator("link[rel=icon]").get_attribute("href") == "/preview/static/favicon.svg"
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
    assert card.locator("button.suggestion.recommended").inner_text() == (
        "Accept: Use tizanidine (recommended)"
    )
    assert page.evaluate("window.pwned") is None


def test_cards_by_severity_suggestions_in_words_units_typeset(server, page):
    base, _app = server
    page.goto(f"{base}/preview")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    taper = json.loads((FIXTURES / "bac-taper-stop-warning" / "request.json").read_text())
    drafts = [e["resource"] for e in taper["context"]["draftOrders"]["entry"]]
    step = {
        "timing": {
            "repeat": {
                "frequency": 3,
                "period": 1,
                "periodUnit": "d",
                "boundsDuration": {"value": 7, "unit": "days", "code": "d"},
            }
        },
        "doseAndRate": [{"doseQuantity": {"value": 17.5, "unit": "mg"}}],
    }
    last = {**step, "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}], "sequence": 2}
    cards = [
        {"uuid": "i", "summary": "info first", "indicator": "info", "source": {"label": "x"}},
        {
            "uuid": "w",
            "summary": "Platelets 40 x10^9/L",
            "indicator": "warning",
            "source": {"label": "x"},
            "suggestions": [
                {
                    "uuid": "s1",
                    "label": "Taper",
                    "actions": [
                        {
                            "type": "update",
                            "description": "d",
                            "resource": {
                                "resourceType": "MedicationRequest",
                                "id": drafts[0]["id"],
                                "dosageInstruction": [last, {**step, "sequence": 1}],
                            },
                        }
                    ],
                },
                {
                    "uuid": "s2",
                    "label": "Cancel",
                    "actions": [
                        {
                            "type": "delete",
                            "description": "d",
                            "resourceId": f"MedicationRequest/{drafts[0]['id']}",
                        }
                    ],
                },
            ],
        },
        {
            "uuid": "c",
            "summary": "critical last",
            "indicator": "critical",
            "source": {"label": "x"},
        },
    ]
    page.evaluate(
        "([c, d]) => cdsPreview.renderCards(document.getElementById('cards'), c, d)",
        [cards, drafts],
    )
    shown = page.locator("#cards article.card")
    assert [shown.nth(i).get_attribute("data-indicator") for i in range(3)] == [
        "critical",
        "warning",
        "info",
    ]
    assert shown.nth(1).locator(".summary").inner_text() == "Platelets 40 \u00d710\u2079/L"
    actions = shown.nth(1).locator(".actions li")
    assert actions.nth(0).inner_text() == (
        "Replace baclofen 20 MG Oral Tablet (MedicationRequest/mr-baclofen-current) with: "
        "17.5 mg three times a day for 7 days, then 5 mg three times a day for 7 days"
    )
    assert actions.nth(1).inner_text() == (
        "Cancel order baclofen 20 MG Oral Tablet (MedicationRequest/mr-baclofen-current)"
    )


def test_the_feedback_loop_accept_dismiss_call_again(server, page):
    """Pick a scenario, accept one card, dismiss one with a reason, call again: it is held back."""
    base, app = server
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/preview")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    page.select_option("#scenario", LOOP)
    page.wait_for_selector("body[data-evaluated='1']", timeout=15_000)
    cards = page.locator("#cards article.card")
    assert cards.count() == 2
    dose = page.locator("#cards article.card", has_text="90 mg/day")
    indication = page.locator("#cards article.card", has_text="efficacy not established")
    assert "(recorded)" in page.locator("#status").inner_text()
    shot(page, "preview-loop-1-cards.png")

    # Accept the dose card's suggestion: real feedback, an accepted card is not held back.
    dose.locator("button.suggestion").first.click()
    page.wait_for_selector("body[data-feedback='1']", timeout=15_000)
    assert dose.locator(".outcome.done").inner_text().startswith("Accepted: Cancel this baclofen")
    page.wait_for_selector("body[data-next='0']", timeout=15_000)
    assert "would show every card again" in page.locator("#next").inner_text()

    # Dismiss the indication card with a reason and a comment.
    indication.locator("select.override-reasons").select_option(label="Benefit outweighs risk")
    indication.locator("input.override-comment").fill("discussed with the patient")
    indication.locator("button.dismiss").click()
    page.wait_for_selector("body[data-feedback='2']", timeout=15_000)
    assert "Dismissed: Benefit outweighs risk" in indication.locator(".outcome").inner_text()
    page.wait_for_selector("body[data-next='1']", timeout=15_000)
    upcoming = page.locator("#next").inner_text()
    assert "would not show 1 card" in upcoming
    assert "efficacy not established" in upcoming
    assert "\u201cBenefit outweighs risk\u201d" in upcoming and "24 h" in upcoming
    shot(page, "preview-loop-2-feedback.png")

    # The service stored both, as CDS Hooks feedback.
    store = app.extensions["cds_hooks"].store
    from sqlalchemy import select

    from cds_hooks.store.db import feedback

    with store.engine.connect() as conn:
        outcomes = sorted(r.outcome for r in conn.execute(select(feedback.c.outcome)))
    assert outcomes == ["accepted", "overridden"]

    # Call again: the dismissed card is held back, folded under "not shown (why)".
    page.click("#run")
    page.wait_for_selector("body[data-evaluated='2']", timeout=15_000)
    assert page.locator("#cards article.card").count() == 1
    assert "90 mg/day" in page.locator("#cards article.card").inner_text()
    held = page.locator("#held-back")
    assert held.is_visible() and held.get_attribute("open") is None
    assert held.locator("summary").inner_text() == "1 card not shown (why)"
    held.locator("summary").click()
    assert "efficacy not established" in held.locator(".held").inner_text()
    assert "overrode this card" in held.locator(".because").inner_text()
    assert "1 held back" in page.locator("#status").inner_text()
    shot(page, "preview-loop-3-held-back.png")
    assert not errors


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
