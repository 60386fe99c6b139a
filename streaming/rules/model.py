"""Rules as loaded from YAML (pure): CEL conditions, actions, cooldowns and caps."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACTION_TYPES = ("banner", "offer", "webhook", "segment")
#: Fields of the triggering event a condition can read as ``event.<name>``.
EVENT_FIELDS = (
    "event_id",
    "event_type",
    "timestamp",
    "user_id",
    "anonymous_id",
    "category",
    "product_id",
    "metadata",
    "geo",
    "campaign",  # from the published geo ranges and campaigns (enrichment/context.py)
)
_REFERENCE = re.compile(r"\b(profile|event)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_WHOLE = re.compile(r"\b(profile|event)\b(?!\s*\.)")


@dataclass(frozen=True)
class Action:
    """What a fired rule does. ``params`` are CEL expressions evaluated when it fires."""

    type: str
    message: str = ""
    params: dict[str, str] = field(default_factory=dict)
    url: str = ""  # webhook
    segment: str = ""  # segment
    offer: dict[str, Any] = field(default_factory=dict)  # offer: code, discount, ...


@dataclass(frozen=True)
class Rule:
    """One rule. ``when`` is CEL over ``profile`` (the merged profile after the update) and ``event``."""

    id: str
    when: str
    action: Action
    on: frozenset[str] = frozenset()  # event types that trigger it; empty = every type
    per: str = ""  # optional CEL key: cooldown and caps count per value (e.g. per category)
    cooldown_ms: int = 0
    max_fires: int = 0  # 0 = no cap
    ttl_ms: int = 24 * 3600 * 1000  # how long a decision stays current
    description: str = ""

    def expressions(self) -> list[str]:
        return [self.when, self.per, *self.action.params.values()]

    def triggered_by(self, event_type: str) -> bool:
        return not self.on or event_type in self.on


def referenced_fields(expressions: list[str]) -> dict[str, set[str] | None]:
    """Top-level ``profile``/``event`` fields the expressions read; None means all of them."""
    used: dict[str, set[str] | None] = {"profile": set(), "event": set()}
    for expression in expressions:
        for root, name in _REFERENCE.findall(expression):
            names = used[root]
            if names is not None:
                names.add(name)
        for root in _WHOLE.findall(_REFERENCE.sub("", expression)):
            used[root] = None
    return used


@dataclass(frozen=True)
class RuleSet:
    """A validated rule file: rules by id, plus which event types trigger any rule."""

    rules: tuple[Rule, ...]
    source: str = ""
    version: str = ""

    def for_event_type(self, event_type: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.triggered_by(event_type)]

    def triggers(self, event_type: str) -> bool:
        return any(rule.triggered_by(event_type) for rule in self.rules)

    def __len__(self) -> int:
        return len(self.rules)


EMPTY_RULESET = RuleSet(())
