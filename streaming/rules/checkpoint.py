"""Decide on one checkpoint's triggering events (pure): the stream side of the rules engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from quality.event_contract import Event
from streaming.profiles.delta import ProfileDelta
from streaming.rules.engine import RuleEngine, event_view
from streaming.rules.prefilter import Candidate


def decide_checkpoint(
    engine: RuleEngine,
    triggering: Iterable[tuple[Event, ProfileDelta]],
    person_of: Mapping[str, str],
    documents: Mapping[str, dict[str, Any] | None],
    states: Mapping[str, dict[str, dict[str, Any]]],
    now_ms: int,
    enrich: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    candidates: Mapping[str, Candidate] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Fired decisions (in event-time order) and the new segment lists of people who joined one.

    ``documents`` are the people's merged profiles after the checkpoint's updates; ``states``
    their current decisions, updated here as rules fire so cooldowns hold within a checkpoint.
    ``enrich`` (metadata -> geo and campaign) runs only for events whose rules read them.
    ``candidates`` (the update script's prefilter), when given, limits each event to the rules
    it names: those it found certain to fire become decisions without a profile (``documents``
    need only hold the people with other candidates), the rest are evaluated as usual.
    """
    fired: list[dict[str, Any]] = []
    segments: dict[str, list[str]] = {}
    for event, delta in sorted(triggering, key=lambda pair: pair[0].timestamp_ms):
        candidate = candidates.get(event.event_id) if candidates is not None else None
        if candidate is not None and candidate.person:
            certain = {n: count for n, (sure, count) in candidate.rules.items() if sure}
            if certain:
                person_states = states.setdefault(candidate.person, {})
                person = {"profile_id": candidate.person, "user_id": candidate.user_id}
                for decision in engine.fire_certain(certain, person, event_view(event, delta.category), person_states, now_ms):
                    person_states[decision["key"]] = decision
                    fired.append(decision)
            only: set[int] | None = candidate.uncertain()
            if not only:
                continue
        else:
            only = set(candidate.rules) if candidate is not None else None
        person = person_of.get(delta.profile_id)
        profile = documents.get(person) if person else None
        if profile is None:
            continue  # forgotten meanwhile
        person_states = states.setdefault(person, {})
        extra = enrich(event.metadata) if enrich is not None and engine.reads_enrichment(event.event_type) else None
        for decision in engine.evaluate(profile, event_view(event, delta.category, extra), person_states, now_ms, only):
            person_states[decision["key"]] = decision
            fired.append(decision)
            if decision["action"] == "segment":
                current = segments.get(person, profile.get("segments", []))
                if decision["segment"] not in current:
                    segments[person] = sorted({*current, decision["segment"]})
                    profile["segments"] = segments[person]
    return fired, segments
