"""The false-alarm budget: every Synthea record, with a baclofen, a tizanidine or an unrelated draft
added, through every service; warning and critical cards must be exactly the reviewed findings.

`tests/data/synthea_alerts.json` lists, per record and draft, the warning/critical findings a
pharmacist judged real, with the reason. Anything else that speaks above info fails the test;
a listed finding that goes missing fails it too. The counts per rule are printed at the end of
the run (tests/conftest.py, pytest_terminal_summary).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.factories import LISINOPRIL_10_TAB, TIZANIDINE_4_TAB, med_request
from tests.test_synthea import BUNDLES, as_request

REVIEWED = json.loads((Path(__file__).parent / "data" / "synthea_alerts.json").read_text())
DRAFTS = {
    "baclofen": lambda: med_request("d1", dose_mg=5, per_day=3),
    "tizanidine": lambda: med_request("d1", TIZANIDINE_4_TAB, dose_mg=2, per_day=3),
    "unrelated": lambda: med_request("d1", LISINOPRIL_10_TAB),
}
HOOKS = ("order-select", "order-sign", "medication-prescribe")
# (rule, indicator) -> cards raised on the Synthea records; read by the terminal summary.
COUNTS: Counter[tuple[str, str]] = Counter()
RUNS: Counter[str] = Counter()


def record_name(path: Path) -> str:
    return "_".join(path.stem.split("_")[:2])


def for_hook(body: dict, hook: str) -> dict:
    """The same drafts as an order-sign or medication-prescribe request."""
    if hook == "order-select":
        return body
    context = body["context"]
    drafts = context.pop("draftOrders")
    context.pop("selections", None)
    context["medications" if hook == "medication-prescribe" else "draftOrders"] = drafts
    return {**body, "hook": hook}


def test_every_reviewed_record_exists():
    names = {record_name(p) for p in BUNDLES}
    assert set(REVIEWED["records"]) <= names


@pytest.mark.skipif(not BUNDLES, reason="../shared/data/synthea is not present beside the checkout")
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("draft", sorted(DRAFTS))
@pytest.mark.parametrize("path", BUNDLES, ids=record_name)
def test_alerts_are_the_reviewed_findings(call, path, draft, hook):
    status, body = call(for_hook(as_request(path, DRAFTS[draft]()), hook))
    assert status == 200, body
    RUNS[draft] += 1
    for card in body["cards"]:
        COUNTS[(card["source"]["topic"]["code"], card["indicator"])] += 1
    loud = sorted(
        (c["source"]["topic"]["code"], c["indicator"])
        for c in body["cards"]
        if c["indicator"] != "info"
    )
    reviewed = REVIEWED["records"].get(record_name(path), {}).get(draft, [])
    assert loud == sorted((f["rule"], f["indicator"]) for f in reviewed), [
        c["summary"] for c in body["cards"]
    ]
    if draft == "unrelated":
        assert body["cards"] == []


def summary_lines() -> list[str]:
    """The table the terminal summary prints: cards per rule and tier on the Synthea records."""
    if not COUNTS and not RUNS:
        return []
    rules = sorted({rule for rule, _tier in COUNTS})
    runs = ", ".join(f"{n} {draft}" for draft, n in sorted(RUNS.items()))
    lines = [f"Synthea records x drafts x services: {sum(RUNS.values())} calls ({runs})"]
    lines.append(f"{'rule':<26}{'info':>8}{'warning':>9}{'critical':>10}")
    for rule in rules:
        info, warning, critical = (COUNTS[(rule, t)] for t in ("info", "warning", "critical"))
        lines.append(f"{rule:<26}{info:>8}{warning:>9}{critical:>10}")
    silent = sorted(REVIEWED["silent_reasons"])
    lines.append("silent above info by review: " + ", ".join(s for s in silent if s != "unrelated"))
    return lines
