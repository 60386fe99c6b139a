"""Decide on one checkpoint's triggering events (pure): the stream side of the rules engine."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from quality.event_contract import Event
from streaming.profiles.delta import ProfileDelta
from streaming.rules.engine import RuleEngine, event_view


def decide_checkpoint(
    engine: RuleEngine,
    triggering: Iterable[tuple[Event, ProfileDelta]],
    person_of: Mapping[str, str],
    documents: Mapping[str, dict[str, Any] | None],
    states: Mapping[str, dict[str, dict[str, Any]]],
    now_ms: int,
    enrich: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    candidates: Mapping[str, Collection[int]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Fired decisions (in event-time order) and the new segment lists of people who joined one.

    ``documents`` are the people's merged profiles after the checkpoint's updates; ``states``
    their current decisions, updated here as rules fire so cooldowns hold within a checkpoint.
    ``enrich`` (metadata -> geo and campaign) runs only for events whose rules read them.
    ``candidates`` (event_id -> rule numbers), when given, limits each event to those rules.
    """
    fired: list[dict[str, Any]] = []
    segments: dict[str, list[str]] = {}
    for event, delta in sorted(triggering, key=lambda pair: pair[0].timestamp_ms):
        person = person_of.get(delta.profile_id)
        profile = documents.get(person) if person else None
        if profile is None:
            continue  # forgotten meanwhile
        person_states = states.setdefault(person, {})
        extra = enrich(event.metadata) if enrich is not None and engine.reads_enrichment(event.event_type) else None
        only = candidates.get(event.event_id, ()) if candidates is not None else None
        for decision in engine.evaluate(profile, event_view(event, delta.category, extra), person_states, now_ms, only):
            person_states[decision["key"]] = decision
            fired.append(decision)
            if decision["action"] == "segment":
                current = segments.get(person, profile.get("segments", []))
                if decision["segment"] not in current:
                    segments[person] = sorted({*current, decision["segment"]})
                    profile["segments"] = segments[person]
    return fired, segments
