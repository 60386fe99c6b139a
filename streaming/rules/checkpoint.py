"""Decide on one checkpoint's triggering events (pure): the stream side of the rules engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
    on_entered: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Fired decisions (in event-time order) and the new segment lists of people who joined one.

    ``documents`` are the people's merged profiles after the checkpoint's updates; ``states``
    their current decisions, updated here as rules fire so cooldowns hold within a checkpoint.
    ``enrich`` (metadata -> geo and campaign) runs only for events whose rules read them.
    ``candidates`` (the update script's prefilter), when given, limits each event to the rules
    it names: those it found certain to fire become decisions without a profile (``documents``
    need only hold the people with other candidates), the rest are evaluated as usual.
    ``on_entered`` is called with each segment decision that put its person in a segment new to them.
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
                for decision in engine.fire_certain(
                    certain, person, event_view(event, delta.category), person_states, now_ms
                ):
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
        extra = (
            enrich(event.metadata)
            if enrich is not None and engine.reads_enrichment(event.event_type)
            else None
        )
        for decision in engine.evaluate(
            profile, event_view(event, delta.category, extra), person_states, now_ms, only
        ):
            person_states[decision["key"]] = decision
            fired.append(decision)
            if decision["action"] == "segment":
                current = segments.get(person, profile.get("segments", []))
                if decision["segment"] not in current:
                    segments[person] = sorted({*current, decision["segment"]})
                    profile["segments"] = segments[person]
                    if on_entered is not None:
                        on_entered(decision)
    return fired, segments


class UpdateOrder:
    """The order of a checkpoint's updates and identity links, as the profile app sent them.

    The update script prefilters each triggering event on its person right after the event's
    update. That person is the one the checkpoint ends with unless something later touched
    it: a later delta of one of its parts, or an identity link naming one of them sent in a
    later batch (the links of a batch are applied before its updates on one server; on a
    cluster they go to other nodes, so a link of the event's own batch counts as later too).
    """

    def __init__(self, *, cluster: bool = False) -> None:
        self._position = 0
        self._batch = 0
        self._cluster = cluster
        self._last_update: dict[str, tuple[int, int]] = {}  # profile id -> (position, batch)
        self._last_link: dict[str, int] = {}  # profile id -> batch

    def add(self, delta: ProfileDelta) -> tuple[int, int]:
        """Record a delta in the batch being gathered; returns its place (position, batch)."""
        self._position += 1
        place = self._last_update[delta.profile_id] = (self._position, self._batch)
        if delta.anonymous_id:  # a link of the anonymous id to the user (identity_links)
            self._last_link[delta.anonymous_id] = self._last_link[delta.user_id] = self._batch
        return place

    def batch_sent(self) -> None:
        """The deltas added so far were sent: the next ones form a new batch."""
        self._batch += 1

    def changed_after(self, profile_ids: Iterable[str], place: tuple[int, int]) -> bool:
        """Whether any of these profiles was updated, or named by a link, after ``place``."""
        position, batch = place
        last_update, last_link = self._last_update, self._last_link
        linked_from = batch if self._cluster else batch + 1
        for pid in profile_ids:  # a plain loop: this runs for every triggering event
            update = last_update.get(pid)
            if (update is not None and update[0] > position) or last_link.get(pid, -1) >= linked_from:
                return True
        return False

    def profile_changed_after(self, profile_id: str, place: tuple[int, int]) -> bool:
        """``changed_after([profile_id], place)`` without the loop: it runs for every triggering event."""
        update = self._last_update.get(profile_id)
        if update is not None and update[0] > place[0]:
            return True
        return self._last_link.get(profile_id, -1) >= (place[1] if self._cluster else place[1] + 1)

    def updated_later(
        self, triggering: Sequence[tuple[Any, ProfileDelta]], places: Sequence[tuple[int, int]]
    ) -> list[ProfileDelta]:
        """The deltas of ``triggering`` (event, delta) whose profile changed after their ``places``."""
        if len(triggering) != len(places):
            raise ValueError("one place per triggering event")
        changed = self.profile_changed_after
        return [delta for (_, delta), place in zip(triggering, places) if changed(delta.profile_id, place)]

    def linked_since_last_update(self, profile_id: str) -> bool:
        """Whether a link named the profile after its last update (a report of it may miss its owner)."""
        last = self._last_update.get(profile_id)
        return last is not None and self._linked_after(profile_id, last[1])

    def _linked_after(self, profile_id: str, batch: int) -> bool:
        return self._last_link.get(profile_id, -1) >= (batch if self._cluster else batch + 1)
