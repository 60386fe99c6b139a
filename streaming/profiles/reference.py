"""Plain-Python profile arithmetic: the ground truth the Redis script must agree with.

Used by tests (stream result == this, for any order and any duplicates) and as the
executable specification of ``update.lua``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streaming.profiles.delta import ProfileDelta
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile
from streaming.profiles.identity import ProfilePart, merge_parts
from streaming.traits.cells import apply_ops
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

DEFAULT_SESSION_GAP_MS = 30 * 60 * 1000


@dataclass
class ReferenceProfile:
    """One profile's stored parts, kept the way ``update.lua`` keeps them in Redis."""

    profile_id: str
    seen: set[str] = field(default_factory=set)
    fields: dict[str, int | str] = field(default_factory=dict)
    anonymous_ids: set[str] = field(default_factory=set)
    products: dict[str, int] = field(default_factory=dict)  # product_id -> latest event ms
    sessions: list[tuple[int, int]] = field(default_factory=list)  # disjoint (start, end)

    def apply(self, delta: ProfileDelta, session_gap_ms: int = DEFAULT_SESSION_GAP_MS) -> bool:
        """Apply a delta once; return False when its event_id was already applied."""
        if delta.event_id in self.seen:
            return False
        self.seen.add(delta.event_id)
        f = self.fields
        ts = delta.timestamp_ms
        if delta.user_id:
            f["user_id"] = delta.user_id
        apply_ops(f, delta.ops)  # type: ignore[arg-type]  # the registry's traits, built-in ones included
        if delta.anonymous_id:
            self.anonymous_ids.add(delta.anonymous_id)
        if delta.product_id:
            self.products[delta.product_id] = max(self.products.get(delta.product_id, ts), ts)
            if len(self.products) > LAST_PRODUCTS_LIMIT:
                oldest = min(self.products.items(), key=lambda item: (item[1], item[0]))[0]
                del self.products[oldest]
        self._add_to_sessions(ts, session_gap_ms)
        return True

    def _add_to_sessions(self, ts: int, gap_ms: int) -> None:
        start, end = ts, ts
        kept = []
        for s, e in self.sessions:
            if s - gap_ms <= ts <= e + gap_ms:
                start, end = min(start, s), max(end, e)
            else:
                kept.append((s, e))
        kept.append((start, end))
        self.sessions = sorted(kept)

    def part(self) -> ProfilePart:
        """The stored parts as the identity merge reads them."""
        return ProfilePart(
            self.profile_id,
            {k: str(v) for k, v in self.fields.items()},
            frozenset(self.anonymous_ids),
            dict(self.products),
            list(self.sessions),
        )

    def document(self, traits: TraitSet = BUILTIN_TRAITS, now_ms: int | None = None) -> dict[str, Any]:
        """The profile as the API returns it (``updated_at`` is None here)."""
        # Same order as ZREVRANGE: newest first, ties by product id descending.
        recent = sorted(self.products.items(), key=lambda item: (item[1], item[0]), reverse=True)
        return build_profile(
            self.profile_id,
            {k: str(v) for k, v in self.fields.items()},
            self.anonymous_ids,
            [product for product, _ in recent],
            len(self.sessions),
            self.sessions[-1] if self.sessions else None,
            traits,
            now_ms,
        )


def reference_profiles(
    deltas: Iterable[ProfileDelta], session_gap_ms: int = DEFAULT_SESSION_GAP_MS
) -> dict[str, ReferenceProfile]:
    """Fold deltas (any order, duplicates allowed) into profiles keyed by profile id."""
    profiles: dict[str, ReferenceProfile] = {}
    for delta in deltas:
        profile = profiles.get(delta.profile_id)
        if profile is None:
            profile = profiles[delta.profile_id] = ReferenceProfile(delta.profile_id)
        profile.apply(delta, session_gap_ms)
    return profiles


def reference_owners(deltas: Iterable[ProfileDelta]) -> dict[str, str]:
    """anonymous_id -> owning user_id: the user of the earliest linking event (ties by user id).

    An id that is itself a user id (has events as ``user_id``) is nobody's anonymous id: it is a
    person of its own (see streaming/profiles/identity.py).
    """
    links: dict[str, tuple[int, str]] = {}
    users: set[str] = set()
    for delta in deltas:
        if delta.user_id:
            users.add(delta.user_id)
        if delta.user_id and delta.anonymous_id:
            link = (delta.timestamp_ms, delta.user_id)
            if delta.anonymous_id not in links or link < links[delta.anonymous_id]:
                links[delta.anonymous_id] = link
    return {anon: user for anon, (_, user) in links.items() if anon not in users}


def reference_person(
    profile_id: str,
    profiles: dict[str, ReferenceProfile],
    owners: dict[str, str],
    session_gap_ms: int = DEFAULT_SESSION_GAP_MS,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
) -> dict[str, Any] | None:
    """The merged profile GET /v1/profiles/{profile_id} must return (None = 404)."""
    person = owners.get(profile_id, profile_id)
    owned = sorted(anon for anon, user in owners.items() if user == person and anon != person)
    parts = [profiles[pid].part() for pid in [person, *owned] if pid in profiles]
    own = profiles.get(person)
    user_id = (own and own.fields.get("user_id")) or (person if owned or person != profile_id else None)
    return merge_parts(person, str(user_id) if user_id else None, parts, session_gap_ms, traits, now_ms)
