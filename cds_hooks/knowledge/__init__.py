"""Clinical knowledge as versioned data: value sets, rule settings, card wording; checked at start.

Nothing clinical is a literal in code: thresholds, indicators, wording and citations live in
`rules/<family>.json` (validated against `settings.schema.json`, unknown keys fail), value sets in
`valuesets/` (FHIR ValueSet JSON with per-code provenance), shared settings in `common.json`, and
every cited source with its locator and reviewed facts in `sources.json`: a rule citation names a
source and the facts it relies on, and its label, sections and URL are filled from there.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from cds_hooks.terminology import Terminology

HERE = Path(__file__).parent


class KnowledgeError(Exception):
    """The knowledge files are inconsistent; the service refuses to start rather than guess."""


@dataclass(frozen=True)
class CardText:
    indicator: str
    summary: str
    detail: str
    suggestions: Mapping[str, str]


@dataclass(frozen=True)
class RuleSettings:
    id: str
    family: str
    family_version: str
    title: str
    citations: tuple[Mapping[str, Any], ...]
    settings: Mapping[str, Any]
    value_sets: Mapping[str, tuple[str, ...]]
    cards: Mapping[str, CardText]

    def value(self, name: str) -> Any:
        """A setting's value (KeyError names the rule, so a missing threshold is found at start)."""
        try:
            return self.settings[name]["value"]
        except KeyError:
            raise KeyError(f"{self.id}: no setting {name!r}") from None

    def keys(self, name: str) -> tuple[str, ...]:
        return self.value_sets[name]

    @property
    def url(self) -> str | None:
        return next((c["url"] for c in self.citations if c.get("url")), None)


class Knowledge:
    """Everything the rules know, loaded once per process."""

    def __init__(
        self, common: Mapping[str, Any], rules: Mapping[str, RuleSettings], terminology: Terminology
    ):
        self.common = common
        self.rules = rules
        self.terminology = terminology
        self.version = str(common["version"])

    @classmethod
    def load(cls, directory: Path = HERE, terminology: Terminology | None = None) -> Knowledge:
        terminology = terminology or Terminology.load(directory / "valuesets")
        common = json.loads((directory / "common.json").read_text(encoding="utf-8"))
        schema = json.loads((directory / "settings.schema.json").read_text(encoding="utf-8"))
        validator = Draft202012Validator(schema)
        sources = load_sources(directory)
        rules: dict[str, RuleSettings] = {}
        for path in sorted((directory / "rules").glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            errors = sorted(validator.iter_errors(data), key=lambda e: e.json_path)
            if errors:
                raise KnowledgeError(f"{path.name}: {errors[0].json_path}: {errors[0].message}")
            for rule_id, raw in data["rules"].items():
                if rule_id in rules:
                    raise KnowledgeError(f"{path.name}: rule {rule_id} is defined twice")
                try:
                    rules[rule_id] = _rule(rule_id, data, raw, sources)
                except KeyError as error:
                    raise KnowledgeError(f"{path.name}: {rule_id}: {error.args[0]}") from None
        knowledge = cls(common, rules, terminology)
        knowledge.check()
        return knowledge

    def rule(self, rule_id: str) -> RuleSettings:
        return self.rules[rule_id]

    def data_setting(self, name: str) -> Any:
        return self.common["data"][name]

    def source_label(self, rule: RuleSettings) -> str:
        major, minor, _patch = rule.family_version.split(".")
        return self.common["source_label"].format(version=f"{major}.{minor}")

    @cached_property
    def override_reasons(self) -> list[dict[str, str]]:
        system = self.common["override_reason_system"]
        return [{"system": system, **reason} for reason in self.common["override_reasons"]]

    def check(self) -> None:
        """Every value set a rule names exists, and every template field is a plain name."""
        known = set(self.terminology.keys())
        for rule in self.rules.values():
            for name, keys in rule.value_sets.items():
                for key in keys:
                    if key not in known:
                        raise KnowledgeError(f"{rule.id}: value set {name} names unknown {key}")
            for card_name, card in rule.cards.items():
                for template in (card.summary, card.detail, *card.suggestions.values()):
                    for _text, field, _spec, _conv in string.Formatter().parse(template):
                        if field is not None and not field.isidentifier():
                            raise KnowledgeError(f"{rule.id}/{card_name}: bad field {field!r}")


def load_sources(directory: Path = HERE) -> dict[str, dict[str, Any]]:
    """The cited sources by id (`sources.json`): locator, reviewed facts and verdicts."""
    path = directory / "sources.json"
    return json.loads(path.read_text(encoding="utf-8"))["sources"] if path.exists() else {}


def resolve_citation(
    citation: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """A citation as a card shows it: the source's title and the sections of the cited facts,
    and its URL. A citation without `source` (a free label) is returned as written."""
    if "source" not in citation:
        return dict(citation)
    source = sources.get(citation["source"])
    if source is None:
        raise KeyError(f"citation names unknown source {citation['source']!r}")
    sections: list[str] = []
    for fact_id in citation["facts"]:
        fact = source["facts"].get(fact_id)
        if fact is None:
            raise KeyError(f"fact {fact_id!r} is not in the reviewed list of {citation['source']}")
        if fact["section"] not in sections:
            sections.append(fact["section"])
    resolved = {**citation, "label": f"{source['title']}: {'; '.join(sections)}"}
    if source.get("url"):
        resolved["url"] = source["url"]
    return resolved


def _rule(
    rule_id: str,
    family: Mapping[str, Any],
    raw: Mapping[str, Any],
    sources: Mapping[str, Mapping[str, Any]],
) -> RuleSettings:
    cards = {
        name: CardText(c["indicator"], c["summary"], c["detail"], c.get("suggestions", {}))
        for name, c in raw["cards"].items()
    }
    return RuleSettings(
        id=rule_id,
        family=family["family"],
        family_version=family["version"],
        title=raw["title"],
        citations=tuple(resolve_citation(c, sources) for c in raw["citations"]),
        settings=raw.get("settings", {}),
        value_sets={name: tuple(keys) for name, keys in raw.get("value_sets", {}).items()},
        cards=cards,
    )
