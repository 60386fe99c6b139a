"""What the rules see after a checkpoint: each person's merged profile and decision state.

Built from the states ``update.lua`` reports in its own reply, so the usual case costs no
extra round trip. A user's anonymous parts (usually frozen after sign-in) come from a short
TTL cache; an anonymous id owned by a user resolves through a full read of that person.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from streaming.profiles.codec import PartReport
from streaming.profiles.identity import merge_decision_states, merged_view
from streaming.profiles.store import RedisProfileStore


class AnonymousPartCache:
    """Recently read anonymous parts (with their owner), kept ``ttl_seconds``."""

    def __init__(self, ttl_seconds: float = 5.0, max_entries: int = 200_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, PartReport]] = {}

    def get_many(self, store: RedisProfileStore, ids: set[str]) -> dict[str, PartReport]:
        now = time.monotonic()
        found, missing = {}, []
        for anonymous_id in ids:
            entry = self._entries.get(anonymous_id)
            if entry is not None and entry[0] > now:
                found[anonymous_id] = entry[1]
            else:
                missing.append(anonymous_id)
        if missing:
            if len(self._entries) + len(missing) > self._max:
                self._entries.clear()
            for anonymous_id, report in store.read_reports(missing).items():
                self._entries[anonymous_id] = (now + self._ttl, report)
                found[anonymous_id] = report
        return found

    def forget(self, ids: set[str]) -> None:
        for anonymous_id in ids:
            self._entries.pop(anonymous_id, None)


def rule_inputs(
    store: RedisProfileStore,
    reports: Mapping[str, PartReport],
    cache: AnonymousPartCache,
    names: set[str] | None,
    session_gap_ms: int,
) -> tuple[dict[str, str], dict[str, dict[str, Any] | None], dict[str, dict[str, dict[str, Any]]]]:
    """(id -> person, person -> merged profile view, person -> decision states) for reported ids."""
    person_of: dict[str, str] = {}
    documents: dict[str, dict[str, Any] | None] = {}
    states: dict[str, dict[str, dict[str, Any]]] = {}
    # Parts owned by another user, and users an identify may have linked to other users
    # (streaming/profiles/identity_graph.py), are read as whole people below.
    elsewhere = {
        pid for pid, report in reports.items() if (report.owner and report.owner != pid) or report.user_linked
    }
    owned_elsewhere = [pid for pid in reports if pid in elsewhere]
    own = {pid: report for pid, report in reports.items() if pid not in elsewhere}
    cache.forget(set(reports))  # these parts just changed
    anonymous = cache.get_many(
        store, {a for r in own.values() for a in r.part.anonymous_ids if a != r.part.profile_id}
    )
    for pid in [
        pid
        for pid, report in own.items()
        if any(
            a in anonymous and "user_id" in anonymous[a].part.fields
            for a in report.part.anonymous_ids - {pid}
        )
    ]:
        del own[pid]  # it named a user as its anonymous id: maybe linked
        owned_elsewhere.append(pid)
    # A part's report is taken when its own event is applied; a link applied later in the same
    # batch (an identify) can have given it an owner since. The fresh read above knows: such a
    # part belongs to its owner's person, or both "people" would fire the same rule.
    for pid in [
        pid for pid in own if pid in anonymous and anonymous[pid].owner and anonymous[pid].owner != pid
    ]:
        del own[pid]
        owned_elsewhere.append(pid)
    for pid, report in own.items():
        owned = [
            anonymous[a]
            for a in sorted(report.part.anonymous_ids)
            if a in anonymous and anonymous[a].owner == pid
        ]
        user_id = report.part.fields.get("user_id") or (pid if owned else None)
        person_of[pid] = pid
        documents[pid] = merged_view(
            pid, user_id, [report.part, *(o.part for o in owned)], session_gap_ms, names, store.traits()
        )
        states[pid] = merge_decision_states([report.decisions, *(o.decisions for o in owned)])
    if owned_elsewhere:
        people = store.read_people(owned_elsewhere)
        live = {p: doc for p, doc in people.documents.items() if doc is not None}
        person_states = store.decision_states({p: people.members[p] for p in live})
        for pid in owned_elsewhere:
            person = people.person_of[pid]
            person_of[pid] = person
            documents[person] = live.get(person)
            states[person] = person_states.get(person, {})
    return person_of, documents, states
