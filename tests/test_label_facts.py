"""docs/clinical/label-facts.md is generated from the knowledge and kept up to date."""

from __future__ import annotations

from tools import label_facts


def test_label_facts_page_is_up_to_date():
    assert label_facts.DOC.read_text(encoding="utf-8") == label_facts.render(), (
        "run: .venv/bin/python -m tools.label_facts --write"
    )


def test_every_reviewed_fact_is_listed_with_its_verdict():
    page = label_facts.render()
    for source in label_facts.load_sources().values():
        for fact_id, fact in source["facts"].items():
            assert f"`{fact_id}`" in page and fact["verdict"] in page
