"""Back-test a rule file on archived events (pure): who would have fired, when, on which events.

Same semantics as the stream: the profile app's own validation and enrichment
(``check_record``), each ``event_id`` once, identity stitching by the earliest link seen so
far, rules evaluated on the person's merged profile right after each triggering event, with
cooldowns and caps; users linked by an identify are one person (as known so far, within
PULSE_IDENTITY_MAX_IDS). Time is event time here; the stream uses processing time and evaluates
once per checkpoint, so events of one person a few milliseconds apart may fire on the last of
them rather than the first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.time_format import iso_from_ms
from enrichment.catalog import Catalog
from streaming.profile_app.pipeline import check_record
from streaming.profiles.admission import Admission
from streaming.profiles.delta import event_category
from streaming.profiles.identity import merge_decision_states, merge_parts
from streaming.profiles.identity_graph import DEFAULT_MAX_IDS, member_ids
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
    """People as events arrive in event-time order (streaming/profiles/identity_graph.py, so far).

    An anonymous id belongs to the user of its earliest link; an id seen as a user id is never
    an anonymous part. An identify naming a user id links the two users, taken as the link
    becomes known (in event-time order, or when the named id first shows up as a user) and
    refused past ``max_ids`` user ids a person. ``unlinked`` pairs never link.
    """

    def __init__(self, max_ids: int = DEFAULT_MAX_IDS, unlinked: Collection[frozenset[str]] = ()) -> None:
        self.links: dict[str, tuple[int, str]] = {}
        self.users: set[str] = set()
        self._owned: dict[str, set[str]] = defaultdict(set)
        self._max_ids = max_ids
        self._unlinked = unlinked
        self._parent: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}  # root user -> the user ids of its person
        self._pending: dict[str, list[str]] = defaultdict(list)  # id -> users whose identify named it

    def add_user(self, user_id: str) -> None:
        if user_id in self.users:
            return
        self.users.add(user_id)
        self._parent[user_id] = user_id
        self._members[user_id] = {user_id}
        for other in self._pending.pop(user_id, ()):
            self._join(user_id, other)

    def link(self, anonymous_id: str, user_id: str, ts: int) -> None:
        if frozenset((anonymous_id, user_id)) in self._unlinked:
            return
        current = self.links.get(anonymous_id)
        if current is None or (ts, user_id) < current:
            if current is not None:
                self._owned[current[1]].discard(anonymous_id)
            self.links[anonymous_id] = (ts, user_id)
            self._owned[user_id].add(anonymous_id)

    def identify(self, user_id: str, other: str) -> None:
        """An identify of ``user_id`` naming ``other``: a user link once both are users."""
        if other == user_id or frozenset((user_id, other)) in self._unlinked:
            return
        if other in self.users:
            self._join(user_id, other)
        else:
            self._pending[other].append(user_id)

    def _root(self, user_id: str) -> str:
        while self._parent[user_id] != user_id:
            user_id = self._parent[user_id]
        return user_id

    def _join(self, a: str, b: str) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra == rb or len(self._members[ra]) + len(self._members[rb]) > self._max_ids:
            return  # one person already, or refused by the limit
        if len(self._members[ra]) < len(self._members[rb]):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._members[ra] |= self._members.pop(rb)

    def user_ids(self, person: str) -> set[str]:
        """The user ids of a person (empty for an anonymous visitor)."""
        return self._members[self._root(person)] if person in self.users else set()

    def person_of(self, profile_id: str) -> str:
        """The canonical id (the smallest user id) of the person of an id."""
        if profile_id in self.users:
            return min(self.user_ids(profile_id))
        link = self.links.get(profile_id)
        if link is None:
            return profile_id
        return min(self.user_ids(link[1])) if link[1] in self.users else link[1]

    def owned(self, person: str) -> list[str]:
        """The anonymous ids the person's users own, in id order."""
        users = self.user_ids(person) or {person}
        return sorted(set().union(*(self._owned.get(u, set()) for u in users)) - self.users)


def backtest(
    engine: RuleEngine,
    raw_events: Iterable[bytes],
    catalog: Catalog,
    session_gap_ms: int = DEFAULT_SESSION_GAP_MS,
    enrich: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    traits: TraitSet = BUILTIN_TRAITS,
    admission: Admission = Admission(),
    max_ids: int = DEFAULT_MAX_IDS,
    unlinked: Collection[frozenset[str]] = (),
) -> BacktestReport:
    """Replay events in event-time order through profiles and rules; nothing is written anywhere.

    Each rule sees the profile as of its event's time: windowed and decayed traits are read then.
    admission: Admission = Admission(),
    max_ids: int = DEFAULT_MAX_IDS,
    unlinked: Collection[frozenset[str]] = (),
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
    identities = _Identities(max_ids, unlinked)
    states: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event, delta in checked:
        part = parts.get(delta.profile_id) or parts.setdefault(
            delta.profile_id, ReferenceProfile(delta.profile_id)
        )
        if not part.apply(delta, session_gap_ms):
            continue  # a duplicate event_id
        report.events += 1
        if delta.user_id:
            identities.add_user(delta.user_id)
        if delta.user_id and delta.anonymous_id:
            identities.link(delta.anonymous_id, delta.user_id, delta.timestamp_ms)
            if delta.event_type == "identify":
                identities.identify(delta.user_id, delta.anonymous_id)
        if not engine.triggers(delta.event_type):
            continue
        person = identities.person_of(delta.profile_id)
        profile = _person_profile(person, parts, identities, session_gap_ms, traits, delta.timestamp_ms)
        if profile is None:
            continue
        members = member_ids(person, identities.user_ids(person), identities.owned(person))
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
    users = identities.user_ids(person)
    own = parts.get(person)
    user_id = (own.fields.get("user_id") if own else None) or (person if owned else None)
    pieces = [parts[pid].part() for pid in member_ids(person, users, owned) if pid in parts]
    return merge_parts(
        person, str(user_id) if user_id else None, pieces, session_gap_ms, traits, now_ms, user_ids=users
    )


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
