"""Back-test a rule file on archived events (pure): who would have fired, when, on which events.

Same semantics as the stream: the profile app's own validation and enrichment
(``check_record``), each ``event_id`` once, identity stitching by the earliest link seen so
far, rules evaluated on the person's merged profile right after each triggering event, with
cooldowns and caps. Time is event time here; the stream uses processing time and evaluates
once per checkpoint, so events of one person a few milliseconds apart may fire on the last of
them rather than the first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.time_format import iso_from_ms
from enrichment.catalog import Catalog
from streaming.profile_app.pipeline import check_record
from streaming.profiles.admission import Admission
from streaming.profiles.delta import event_category
from streaming.profiles.identity import merge_decision_states, merge_parts
from streaming.profiles.reference import DEFAULT_SESSION_GAP_MS, ReferenceProfile
from streaming.rules.engine import RuleEngine, event_view
from streaming.traits.ops import trait_ops
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

EXAMPLES_PER_RULE = 5


@dataclass
class RuleResult:
    """What one rule would have done."""

    rule: str
    fired: int = 0
    people: set[str] = field(default_factory=set)
    keys: set[tuple[str, str]] = field(default_factory=set)  # (person, rule key) pairs that fired
    first_fired_at: str | None = None
    last_fired_at: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "fired": self.fired,
            "people": len(self.people),
            "first_fired_at": self.first_fired_at,
            "last_fired_at": self.last_fired_at,
            "examples": self.examples,
        }


@dataclass
class BacktestReport:
    events: int = 0
    people: int = 0
    results: dict[str, RuleResult] = field(default_factory=dict)
    runtime_errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "people": self.people,
            "rules": [result.as_dict() for result in self.results.values()],
            "runtime_errors": self.runtime_errors,
        }


class _Identities:
    """Owners of anonymous ids as links arrive in event-time order (earliest link wins).

    An id seen as a user id is a person of its own: links naming it are kept, not followed.
    """

    def __init__(self) -> None:
        self.links: dict[str, tuple[int, str]] = {}
        self.users: set[str] = set()
        self._owned: dict[str, set[str]] = defaultdict(set)

    def link(self, anonymous_id: str, user_id: str, ts: int) -> None:
        current = self.links.get(anonymous_id)
        if current is None or (ts, user_id) < current:
            if current is not None:
                self._owned[current[1]].discard(anonymous_id)
            self.links[anonymous_id] = (ts, user_id)
            self._owned[user_id].add(anonymous_id)

    def person_of(self, profile_id: str) -> str:
        link = self.links.get(profile_id)
        return link[1] if link and profile_id not in self.users else profile_id

    def owned(self, person: str) -> list[str]:
        """The anonymous ids the person owns, in id order."""
        return sorted(self._owned.get(person, set()) - self.users)


def backtest(
    engine: RuleEngine,
    raw_events: Iterable[bytes],
    catalog: Catalog,
    session_gap_ms: int = DEFAULT_SESSION_GAP_MS,
    enrich: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    traits: TraitSet = BUILTIN_TRAITS,
    admission: Admission = Admission(),
) -> BacktestReport:
    """Replay events in event-time order through profiles and rules; nothing is written anywhere.

    Each rule sees the profile as of its event's time: windowed and decayed traits are read then.
    Events ``admission`` refuses (bots, no consent) are left out, as in the stream.
    """
    checked = []
    for raw in raw_events:
        record = check_record(raw, catalog, admission=admission)
        if record.delta is not None and record.event is not None:
            event = record.event
            category = event_category(event, catalog.category_of(event.metadata.get("product_id")))
            ops = trait_ops(event, category, traits, event.timestamp_ms)  # windows as of the event
            checked.append((event, record.delta._replace(ops=ops)))
    checked.sort(key=lambda pair: (pair[1].timestamp_ms, pair[1].event_id))
    report = BacktestReport(results={rule.id: RuleResult(rule.id) for rule in engine.ruleset.rules})
    parts: dict[str, ReferenceProfile] = {}
    identities = _Identities()
    states: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event, delta in checked:
        part = parts.get(delta.profile_id) or parts.setdefault(
            delta.profile_id, ReferenceProfile(delta.profile_id)
        )
        if not part.apply(delta, session_gap_ms):
            continue  # a duplicate event_id
        report.events += 1
        if delta.user_id:
            identities.users.add(delta.user_id)
        if delta.user_id and delta.anonymous_id:
            identities.link(delta.anonymous_id, delta.user_id, delta.timestamp_ms)
        if not engine.triggers(delta.event_type):
            continue
        person = identities.person_of(delta.profile_id)
        profile = _person_profile(person, parts, identities, session_gap_ms, traits, delta.timestamp_ms)
        if profile is None:
            continue
        members = [person, *identities.owned(person)]
        person_states = merge_decision_states(states[pid] for pid in members if pid in states)
        extra = (
            enrich(event.metadata)
            if enrich is not None and engine.reads_enrichment(event.event_type)
            else None
        )
        for decision in engine.evaluate(
            profile, event_view(event, delta.category, extra), person_states, delta.timestamp_ms
        ):
            person_states[decision["key"]] = decision
            states[person][decision["key"]] = decision
            _record(report.results[decision["rule"]], person, decision)
    report.people = len({identities.person_of(pid) for pid in parts})
    report.runtime_errors = dict(engine.errors)
    return report


def _person_profile(
    person: str,
    parts: dict[str, ReferenceProfile],
    identities: _Identities,
    session_gap_ms: int,
    traits: TraitSet,
    now_ms: int,
) -> dict[str, Any] | None:
    owned = identities.owned(person)
    own = parts.get(person)
    user_id = (own.fields.get("user_id") if own else None) or (person if owned else None)
    pieces = [parts[pid].part() for pid in [person, *owned] if pid in parts]
    return merge_parts(person, str(user_id) if user_id else None, pieces, session_gap_ms, traits, now_ms)


def _record(result: RuleResult, person: str, decision: dict[str, Any]) -> None:
    result.fired += 1
    result.people.add(person)
    result.keys.add((person, decision["key"]))
    fired_at = iso_from_ms(decision["fired_at_ms"])
    result.first_fired_at = result.first_fired_at or fired_at
    result.last_fired_at = fired_at
    if len(result.examples) < EXAMPLES_PER_RULE:
        result.examples.append(
            {
                "person": person,
                "at": fired_at,
                "event_id": decision["event_id"],
                "message": decision["message"],
                "key": decision["key"],
            }
        )
