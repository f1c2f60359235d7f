"""The typed rule API: what a rule may read (`RuleContext`) and how a rule declares itself (`Rule`).

A rule module declares RULE_ID, NEEDS (prefetch keys whose data it reads), TRIGGERS and
`evaluate(ctx: RuleContext) -> list[Finding]`; rules never do I/O. TRIGGERS say which draft
orders a rule speaks about: each entry is a value-set key (``drug/baclofen``, it has a ``/``) or
the name of one of the rule's own value sets in its knowledge file (``tizanidine``). A rule runs
only when a targeted draft order is in one of them, and the service's fast exit ("no draft order
touches any rule: nothing to check") is the union of every rule's triggers, resolved against the
knowledge at start (`trigger_keys`), so it cannot drift from the rules. A rule that speaks about
the record without a draft order would declare ALWAYS = True: it then runs on every call, and the
fast exit is off.

This module imports no rule, so the rules, the engine and tests can all import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from types import ModuleType

from cds_hooks.cards import Finding
from cds_hooks.knowledge import Knowledge, KnowledgeError, RuleSettings
from cds_hooks.record import MedOrder, PatientRecord


@dataclass
class RuleContext:
    """What a rule may read: the record, its own settings, the knowledge, and the time."""

    record: PatientRecord
    knowledge: Knowledge
    settings: RuleSettings
    now: datetime

    @cached_property
    def current(self) -> list[MedOrder]:
        """Current therapy, as amended by this session's drafts (computed once per rule)."""
        return self.record.current()

    def targets(self, *keys: str) -> list[MedOrder]:
        """The draft orders this call is about that are in one of the value sets `keys`."""
        return [o for o in self.record.targets if o.has(*keys)]


Evaluate = Callable[[RuleContext], list[Finding]]


@dataclass(frozen=True)
class Rule:
    """A rule as declared by its module."""

    id: str
    needs: tuple[str, ...]
    triggers: tuple[str, ...]
    evaluate: Evaluate
    always: bool = False  # speaks about the record without a draft order: runs on every call

    @classmethod
    def of(cls, module: ModuleType) -> Rule:
        return cls(
            module.RULE_ID,
            tuple(module.NEEDS),
            tuple(module.TRIGGERS),
            module.evaluate,
            bool(getattr(module, "ALWAYS", False)),
        )

    def trigger_keys(self, knowledge: Knowledge) -> frozenset[str]:
        """The value-set keys of the draft orders that make this rule run (checked: all known)."""
        settings = knowledge.rule(self.id)
        keys: set[str] = set()
        for trigger in self.triggers:
            if "/" in trigger:
                keys.add(trigger)
            elif trigger in settings.value_sets:
                keys.update(settings.keys(trigger))
            else:
                raise KnowledgeError(f"{self.id}: trigger {trigger!r} is not one of its value sets")
        unknown = sorted(k for k in keys if k not in set(knowledge.terminology.keys()))
        if unknown:
            raise KnowledgeError(f"{self.id}: triggers name unknown value sets {unknown}")
        return frozenset(keys)


@dataclass(frozen=True)
class Triggers:
    """Every rule's trigger keys, resolved once at start; the fast exit asks `relevant`."""

    by_rule: dict[str, frozenset[str]]
    always: bool  # some rule runs without a draft order: never exit early

    @classmethod
    def of(cls, rules: Iterable[Rule], knowledge: Knowledge) -> Triggers:
        rules = list(rules)
        return cls(
            by_rule={rule.id: rule.trigger_keys(knowledge) for rule in rules},
            always=any(rule.always for rule in rules),
        )

    @cached_property
    def keys(self) -> frozenset[str]:
        return frozenset().union(*self.by_rule.values())

    def relevant(self, targets: Iterable[MedOrder]) -> bool:
        """False only when no rule can speak: no targeted draft is in any rule's trigger set."""
        return self.always or any(not self.keys.isdisjoint(o.drugs) for o in targets)

    def runs(self, rule: Rule, targets: Iterable[MedOrder]) -> bool:
        """The engine's gate for one rule, from the same resolved keys."""
        keys = self.by_rule[rule.id]
        return rule.always or any(not keys.isdisjoint(o.drugs) for o in targets)
