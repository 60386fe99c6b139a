"""Evaluate rules against a profile and its triggering event (pure; no I/O).

Shared by the profile app (processing time, after each checkpoint's profile update) and by
``pulse rules test`` (event time, after each archived event). A rule fires when its event
type matches, its CEL condition is true, and its cooldown and cap allow it; at most once per
rule (and ``per`` key) for a given event, so redelivered events never fire twice.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from core.time_format import iso_from_ms
from quality.event_contract import Event
from streaming.rules.cel import compile_expression, context
from streaming.rules.model import EVENT_FIELDS, Rule, RuleSet, referenced_fields
from streaming.rules.prefilter import Prefilter

logger = logging.getLogger(__name__)

DECISION_NAMESPACE = uuid.UUID("6f1c1e0e-5d0b-4b8e-9a53-2f7c3d0a9e41")
_NAMESPACE_BYTES = DECISION_NAMESPACE.bytes
_WARN_EVERY_SECONDS = 60.0


def event_view(event: Event, category: str, enrichment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``event`` variable of a condition (``enrichment`` adds ``geo`` and ``campaign``)."""
    metadata = event.metadata
    return {
        **(enrichment or {}),
        "event_id": event.event_id,
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "user_id": event.user_id or "",
        "anonymous_id": event.anonymous_id or "",
        "category": category,
        "product_id": str(metadata.get("product_id") or ""),
        "metadata": dict(metadata),
    }


def decision_id(key: str, event_id: str) -> str:
    """``str(uuid.uuid5(DECISION_NAMESPACE, f"{key}/{event_id}"))``, without the UUID object.

    Deterministic, so a decision fired again on a redelivery keeps its id.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{key}/{event_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def state_key(rule: Rule, per_value: Any) -> str:
    """Field under which a rule's current decision (and fire state) is kept for a person."""
    return rule.id if per_value in (None, "") else f"{rule.id}:{per_value}"


#: ``event.<field>`` alone, for a field every event view has as a string: read without CEL.
_EVENT_FIELD = re.compile(
    r"^\s*event\s*\.\s*(event_id|event_type|timestamp|user_id|anonymous_id|category|product_id)\s*$"
)


class _CompiledRule:
    __slots__ = ("number", "rule", "when", "per", "params", "event_only")

    def __init__(self, number: int, rule: Rule) -> None:
        self.number = number
        self.rule = rule
        self.when = compile_expression(rule.when)
        self.per = compile_expression(rule.per) if rule.per else None
        self.params = {name: compile_expression(expr) for name, expr in rule.action.params.items()}
        # The event field each of ``per`` and the params names, when that is all it does.
        expressions = {"": rule.per, **rule.action.params} if rule.per else dict(rule.action.params)
        fields = {name: _EVENT_FIELD.match(expr) for name, expr in expressions.items()}
        self.event_only = (
            {name: m.group(1) for name, m in fields.items() if m} if all(fields.values()) else None
        )


class RuleEngine:
    """Compiled rules, indexed by triggering event type; counts runtime errors per rule."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._compiled = [_CompiledRule(number, rule) for number, rule in enumerate(ruleset.rules)]
        #: What update.lua runs to name the rules that may fire (streaming/rules/prefilter.py).
        self.prefilter = Prefilter(ruleset.rules)
        self._by_type: dict[str, tuple[list[_CompiledRule], set[str] | None, set[str] | None]] = {}
        self.errors: Counter[str] = Counter()
        self.fired: Counter[str] = Counter()
        self._last_warning: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._compiled)

    def triggers(self, event_type: str) -> bool:
        return bool(self._plan(event_type)[0])

    def profile_fields(self, event_types: set[str]) -> set[str] | None:
        """Profile fields the rules triggered by these event types read (None = all of them)."""
        names: set[str] = set()
        for event_type in event_types:
            used = self._plan(event_type)[1]
            if used is None:
                return None
            names |= used
        return names

    def event_fields(self, event_type: str) -> set[str] | None:
        return self._plan(event_type)[2]

    def reads_enrichment(self, event_type: str) -> bool:
        """Whether the rules of this event type read ``event.geo`` or ``event.campaign``."""
        rules, _, fields = self._plan(event_type)
        return bool(rules) and (fields is None or "geo" in fields or "campaign" in fields)

    def _plan(self, event_type: str) -> tuple[list[_CompiledRule], set[str] | None, set[str] | None]:
        plan = self._by_type.get(event_type)
        if plan is None:
            rules = [c for c in self._compiled if c.rule.triggered_by(event_type)]
            used = referenced_fields([e for c in rules for e in c.rule.expressions() if e])
            plan = self._by_type[event_type] = (rules, used["profile"], used["event"])
        return plan

    def evaluate(
        self,
        profile: Mapping[str, Any],
        event: Mapping[str, Any],
        states: Mapping[str, Mapping[str, Any]],
        now_ms: int,
        only: Collection[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Decisions fired by ``event`` on ``profile`` given the person's current ``states``.

        ``only`` limits the evaluation to these rule numbers (the prefilter's candidates).
        """
        rules, profile_fields, event_fields = self._plan(event["event_type"])
        if only is not None:
            rules = [compiled for compiled in rules if compiled.number in only]
        if not rules:
            return []
        ctx = context(_subset(profile, profile_fields), _subset(event, event_fields, EVENT_FIELDS))
        decisions = []
        for compiled in rules:
            rule = compiled.rule
            try:
                if compiled.when.execute(ctx) is not True:
                    continue
                per_value = compiled.per.execute(ctx) if compiled.per else None
                key = state_key(rule, per_value)
                if not _allowed(rule, states.get(key), event["event_id"], now_ms):
                    continue
                params = {name: program.execute(ctx) for name, program in compiled.params.items()}
            except Exception as exc:  # noqa: BLE001 - a rule's runtime error must never stop the stream
                self._runtime_error(rule, exc)
                continue
            decisions.append(_decision(rule, key, params, profile, event, states.get(key), now_ms))
            self.fired[rule.id] += 1
        return decisions

    def fire_certain(
        self,
        counts: Mapping[int, int],
        person: Mapping[str, Any],
        event: Mapping[str, Any],
        states: Mapping[str, Mapping[str, Any]],
        now_ms: int,
    ) -> list[dict[str, Any]]:
        """Decisions of rules the update script found certain to fire (condition true, state allowing).

        ``counts`` maps those rules' numbers to their fire count before the checkpoint;
        ``person`` holds the person's ``profile_id`` and ``user_id``. ``states`` are the fires of
        this checkpoint so far, so a cooldown or cap reached earlier in the checkpoint still holds.
        Such rules read no profile in their ``per`` and params, so only the event is converted for CEL.
        """
        ctx = None
        decisions = []
        for number in sorted(counts):
            compiled = self._compiled[number]
            rule = compiled.rule
            try:
                fields = compiled.event_only
                if fields is None and ctx is None:
                    ctx = context({}, _subset(event, self._plan(event["event_type"])[2], EVENT_FIELDS))
                if fields is not None:
                    per_value = event[fields[""]] if rule.per else None
                else:
                    per_value = compiled.per.execute(ctx) if compiled.per else None
                key = state_key(rule, per_value)
                local = states.get(key)
                if local is not None and not _allowed(rule, local, event["event_id"], now_ms):
                    continue
                if fields is not None:
                    params = {name: event[fields[name]] for name in compiled.params}
                else:
                    params = {name: program.execute(ctx) for name, program in compiled.params.items()}
            except Exception as exc:  # noqa: BLE001 - a rule's runtime error must never stop the stream
                self._runtime_error(rule, exc)
                continue
            previous = (
                local
                if local is not None
                else ({"fire_count": counts[number]} if counts.get(number) else None)
            )
            decisions.append(_decision(rule, key, params, person, event, previous, now_ms))
            self.fired[rule.id] += 1
        return decisions

    def _runtime_error(self, rule: Rule, exc: Exception) -> None:
        self.errors[rule.id] += 1
        now = time.monotonic()
        if now - self._last_warning.get(rule.id, -_WARN_EVERY_SECONDS) >= _WARN_EVERY_SECONDS:
            self._last_warning[rule.id] = now
            logger.warning(
                "rule %r failed at run time (%s: %s); it is skipped for this event (%d errors so far)",
                rule.id,
                type(exc).__name__,
                exc,
                self.errors[rule.id],
            )


def _subset(
    values: Mapping[str, Any], names: set[str] | None, allowed: tuple[str, ...] | None = None
) -> dict[str, Any]:
    if names is None:
        return dict(values)
    return {name: values[name] for name in names if name in values and (allowed is None or name in allowed)}


def _allowed(rule: Rule, state: Mapping[str, Any] | None, event_id: str, now_ms: int) -> bool:
    if state is None:
        return True
    if state.get("event_id") == event_id:
        return False  # already fired for this very event (a redelivery)
    if rule.max_fires and int(state.get("fire_count", 0)) >= rule.max_fires:
        return False
    return now_ms - int(state.get("fired_at_ms", 0)) >= rule.cooldown_ms


def _decision(
    rule: Rule,
    key: str,
    params: dict[str, Any],
    profile: Mapping[str, Any],
    event: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    now_ms: int,
) -> dict[str, Any]:
    action = rule.action
    decision: dict[str, Any] = {
        "decision_id": decision_id(key, event["event_id"]),
        "rule": rule.id,
        "key": key,
        "action": action.type,
        "message": action.message.format(**{k: _text(v) for k, v in params.items()})
        if action.message
        else "",
        "params": params,
        "profile_id": profile.get("profile_id"),
        "user_id": profile.get("user_id"),
        "event_id": event["event_id"],
        "fired_at": iso_from_ms(now_ms),
        "fired_at_ms": now_ms,
        "expires_at": iso_from_ms(now_ms + rule.ttl_ms),
        "expires_at_ms": now_ms + rule.ttl_ms,
        "fire_count": int(previous.get("fire_count", 0)) + 1 if previous else 1,
    }
    if action.type == "offer":
        decision["offer"] = action.offer
    elif action.type == "webhook":
        decision["url"] = action.url
    elif action.type == "segment":
        decision["segment"] = action.segment
    return decision


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
