"""Knowledge written once: each citation has a locator and cites reviewed facts of its source.

`knowledge/sources.json` holds every source with its locator (DailyMed set id and revision date
for a US label, file and section heading for a seed, DOI for the guideline) and the reviewed list
of facts taken from it. A rule cites a source and the facts it relies on; the README rule table and
the first line of each rule's docstring are checked against the knowledge files here.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from cds_hooks import rules as rules_package
from cds_hooks.knowledge import HERE, Knowledge, KnowledgeError, load_sources

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = sorted((HERE / "rules").glob("*.json"))
SOURCES = load_sources()
SET_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
VERDICTS = {"correct", "corrected", "kept-as-G-only", "unverified"}
SEEDS = {"000_42c29977e91dbba9.txt": "[G]", "004_eea82d1825d1c8eb.txt": "[P]"}


def family(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def all_citations():
    for path in FAMILIES:
        for rule_id, rule in family(path)["rules"].items():
            for citation in rule["citations"]:
                yield path.name, rule_id, citation


@pytest.mark.parametrize("path", FAMILIES, ids=lambda p: p.name)
def test_each_family_has_a_canonical_url_and_a_version(path):
    data = family(path)
    assert data["url"] == f"http://antispasticity-cds.org/fhir/knowledge/rules/{path.stem}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", data["version"])
    assert data["changes"][0]["version"] == data["version"]


def test_every_citation_names_a_source_and_reviewed_facts_of_it():
    for name, rule_id, citation in all_citations():
        where = f"{name} {rule_id}"
        assert "source" in citation, f"{where}: a free-text citation has no locator"
        source = SOURCES.get(citation["source"])
        assert source is not None, f"{where}: unknown source {citation['source']}"
        assert citation["facts"], where
        for fact in citation["facts"]:
            assert fact in source["facts"], f"{where}: {fact} is not a reviewed fact of it"


@pytest.mark.parametrize("source_id", sorted(SOURCES))
def test_every_source_carries_its_locator(source_id):
    source = SOURCES[source_id]
    kind = source["kind"]
    assert source["title"] and source["read"] and source["version_date"]
    if kind == "us-label":
        # A set id, or (only where the page read did not show it) the NDC that finds the listing.
        if source.get("set_id"):
            assert SET_ID.match(source["set_id"])
            assert source["set_id"] in source["title"]
            assert source["url"].endswith(f"drugInfo.cfm?setid={source['set_id']}")
        else:
            assert re.fullmatch(r"\d{4,5}-\d{3,4}", source["ndc"]) and source["locator_note"]
        assert source["tag"] == "[L]"
    elif kind == "seed":
        assert SEEDS[source["file"]] == source["tag"]
    elif kind == "guideline":
        assert source["url"] == f"https://doi.org/{source['doi']}"
    elif kind == "non-us-label":
        # Named as what it is, never passed off as the US label.
        assert source["document"] and "US" not in source["title"].split()
        assert source["tag"] != "[L]"
    else:
        pytest.fail(f"{source_id}: unknown kind {kind}")
    for fact_id, fact in source["facts"].items():
        assert fact["section"] and fact["text"], fact_id
        assert fact["verdict"] in VERDICTS, fact_id
        if fact["verdict"] in ("corrected", "unverified", "kept-as-G-only"):
            assert fact.get("note"), f"{source_id}/{fact_id}: say what was wrong or unconfirmed"


def test_no_search_page_is_cited_anywhere():
    for path in [*HERE.rglob("*.json"), ROOT / "README.md"]:
        assert "search.cfm" not in path.read_text(encoding="utf-8"), path.name


def test_markers_in_a_recommendation_are_backed_by_a_cited_source():
    kinds = {"[L]": "us-label", "[G]": "[G]", "[P]": "[P]"}
    for path in FAMILIES:
        for rule_id, rule in family(path)["rules"].items():
            cited = {SOURCES[c["source"]]["kind"] for c in rule["citations"]}
            cited |= {SOURCES[c["source"]]["tag"] for c in rule["citations"]}
            for marker, needed in kinds.items():
                if marker in rule.get("recommendation", ""):
                    assert needed in cited, f"{rule_id} says {marker} without citing it"


def test_a_dopamine_antagonist_or_itb_contraindication_is_never_cited_to_a_label():
    # The two statements issue 17 found wrongly sourced: [G] (and the guideline) only.
    for _name, rule_id, citation in all_citations():
        if rule_id in ("BAC-DOPAMINE-ANTAGONIST", "ITB-CONTRAINDICATION"):
            assert SOURCES[citation["source"]]["kind"] != "us-label", rule_id


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "knowledge"
    shutil.copytree(HERE, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


@pytest.mark.parametrize(
    ("source", "fact", "message"),
    [
        ("tizanidine-tablets-us", "single-12", "not in the reviewed list"),
        # A real fact, but of another source: a label citation cannot borrow [G]'s statement.
        ("baclofen-tablets-us", "g-dopamine", "not in the reviewed list"),
        ("baclofen-label-somewhere", "max-80", "unknown source"),
    ],
)
def test_the_loader_refuses_a_citation_outside_its_sources_list(tmp_path, source, fact, message):
    directory = _copy(tmp_path)
    path = directory / "rules" / "tizanidine.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    rule = data["rules"]["TIZ-DOSE"]
    rule["citations"] = [*copy.deepcopy(rule["citations"]), {"source": source, "facts": [fact]}]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=message):
        Knowledge.load(directory)


def test_a_card_shows_the_set_id_section_and_label_url(knowledge):
    (label, guide) = knowledge.rule("TIZ-DOSE").citations
    assert "89105a78-badb-469e-966e-195fa3a53f0a" in label["label"]
    assert "Dosage and Administration (Recommended Dosage)" in label["label"]
    assert label["url"].startswith("https://dailymed.nlm.nih.gov/dailymed/drugInfo.cfm?setid=")
    assert "Tizanidine as Alternative" in guide["label"] and "url" not in guide


# --- README rule table and rule docstrings, checked against the knowledge ---------------------


def readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        if match := re.match(r"^\| `([A-Z0-9-]+)` \|", line):
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def knowledge_rules():
    for path in FAMILIES:
        for rule_id, rule in family(path)["rules"].items():
            yield path, rule_id, rule


def test_readme_rule_table_matches_the_knowledge():
    rows = readme_rows()
    known = {rule_id for _p, rule_id, _r in knowledge_rules()}
    assert set(rows) == known, "README rule table and knowledge list different rules"
    for path, rule_id, rule in knowledge_rules():
        _id, _fires, indicators, citation, file = rows[rule_id]
        assert file == f"`rules/{path.name}`", rule_id
        expected = {card["indicator"] for card in rule["cards"].values()}
        assert set(indicators.split(" / ")) == expected, rule_id
        tags = {SOURCES[c["source"]]["tag"] for c in rule["citations"]}
        assert {t.strip() for t in citation.split(",")} == tags, rule_id


def test_each_rule_docstring_opens_with_its_id_and_knowledge_title(knowledge):
    for rule in rules_package.RULES:
        first = (_module_doc(rule.id) or "").splitlines()[0]
        title = knowledge.rule(rule.id).title
        assert first.lower() == f"{rule.id}: {title}.".lower(), rule.id


def _module_doc(rule_id: str) -> str | None:
    import importlib

    name = rule_id.lower().replace("-", "_")
    return importlib.import_module(f"cds_hooks.rules.{name}").__doc__
