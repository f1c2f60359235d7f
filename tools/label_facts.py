"""Write docs/clinical/label-facts.md from the knowledge (`--write`), or check it is up to date.

Every reviewed fact of every cited source, with its locator (set id, section, date), its verdict
in the label fact-check, and the rules that cite it.

.venv/bin/python -m tools.label_facts --write
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from cds_hooks.knowledge import HERE, load_sources

DOC = Path(__file__).resolve().parent.parent / "docs" / "clinical" / "label-facts.md"

INTRO = """# Label facts: every clinical claim, its source and its verdict

Generated from `cds_hooks/knowledge/sources.json` and the rule families in
`cds_hooks/knowledge/rules/` by `python -m tools.label_facts --write`; `tests/test_label_facts.py`
fails when this page is out of date. Do not edit it by hand.

Verdicts of the label fact-check (issue 17): **correct** (the knowledge said what the source says),
**corrected** (it said something else; the note says what, and the knowledge now follows the
source), **kept-as-G-only** (not in the US labels: cited to the clinician guide [G] only),
**unverified** (not confirmed against the source text in this review; kept, and marked here).
Thresholds the sources do not give (INR, platelets, the ITB unit-error cut-offs) are local
settings: their defaults and reasons are in the knowledge files, not here.
"""


def _cited_by() -> dict[tuple[str, str], list[str]]:
    cited: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted((HERE / "rules").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for rule_id, rule in data["rules"].items():
            for citation in rule["citations"]:
                for fact in citation.get("facts", ()):
                    cited[(citation.get("source", ""), fact)].append(rule_id)
    return cited


def _locator(source: dict) -> str:
    parts = []
    if source.get("set_id"):
        parts.append(f"DailyMed set id `{source['set_id']}`")
    if source.get("ndc"):
        parts.append(f"NDC {source['ndc']} ({source['locator_note']})")
    if source.get("doi"):
        parts.append(f"DOI `{source['doi']}`")
    if source.get("file"):
        parts.append(f"seed `{source['file']}`")
    if source.get("document"):
        parts.append(source["document"])
    parts.append(f"version/revision {source['version_date']}")
    if source.get("version_note"):
        parts.append(source["version_note"])
    return "; ".join(parts)


def render() -> str:
    cited = _cited_by()
    out = [INTRO]
    for source_id, source in load_sources().items():
        out.append(f"\n## {source['title']}\n")
        out.append(f"`{source_id}` ({source['kind']}, tag {source['tag']}). {_locator(source)}.")
        if source.get("url"):
            out.append(f" <{source['url']}>")
        out.append(f"\n\nHow it was read: {source['read']}\n")
        out.append("\n| fact | section | what it says | verdict | cited by |")
        out.append("\n|---|---|---|---|---|")
        for fact_id, fact in source["facts"].items():
            verdict = fact["verdict"] + (f": {fact['note']}" if fact.get("note") else "")
            rules = ", ".join(cited.get((source_id, fact_id), [])) or "(not cited)"
            cells = [f"`{fact_id}`", fact["section"], fact["text"], verdict, rules]
            out.append("\n| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        out.append("\n")
    return "".join(out)


def main(argv: list[str]) -> int:
    wanted = render()
    if "--write" in argv:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(wanted, encoding="utf-8")
        return 0
    if not DOC.exists() or DOC.read_text(encoding="utf-8") != wanted:
        print("docs/clinical/label-facts.md is out of date: python -m tools.label_facts --write")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
