"""Plain-Python profile arithmetic: the ground truth the Redis script must agree with.

Used by tests (stream result == this, for any order and any duplicates) and as the
executable specification of ``update.lua``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from streaming.profiles.delta import ProfileDelta
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile
from streaming.profiles.identity import ProfilePart, merge_parts
from streaming.profiles.identity_graph import DEFAULT_MAX_IDS, IdNode, Resolution, member_ids, resolve
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


def reference_nodes(
    deltas: Iterable[ProfileDelta], unlinked: Collection[frozenset[str]] = ()
) -> dict[str, IdNode]:
    """Each id's identity node as the store has it (update.lua, ``pulse_link``), unlinked pairs left out."""
    users: set[str] = set()
    owners: dict[str, dict[str, int]] = {}  # anonymous id -> user -> earliest event time
    links: dict[str, dict[str, tuple[int, str]]] = {}  # user -> anonymous id -> earliest identify
    ids: set[str] = set()
    for delta in deltas:
        ids.add(delta.profile_id)
        if delta.user_id:
            users.add(delta.user_id)
        anon, user = delta.anonymous_id, delta.user_id
        if anon:
            ids.add(anon)
        if not (user and anon) or frozenset((user, anon)) in unlinked:
            continue
        seen = owners.setdefault(anon, {})
        seen[user] = min(seen.get(user, delta.timestamp_ms), delta.timestamp_ms)
        if delta.event_type == "identify" and anon != user:
            link = (delta.timestamp_ms, delta.event_id)
            made = links.setdefault(user, {})
            made[anon] = min(made.get(anon, link), link)
    return {
        pid: IdNode(
            pid in users,
            links.get(pid, {}),
            tuple(u for _, u in sorted((ts, u) for u, ts in owners.get(pid, {}).items())),
        )
        for pid in ids
    }


def reference_identity(
    deltas: Iterable[ProfileDelta], max_ids: int = DEFAULT_MAX_IDS, unlinked: Collection[frozenset[str]] = ()
) -> Resolution:
    """Every id's person, the people's user ids and the user links with their outcome."""
    return resolve(reference_nodes(deltas, unlinked), max_ids)


def reference_owners(
    deltas: Iterable[ProfileDelta], max_ids: int = DEFAULT_MAX_IDS, unlinked: Collection[frozenset[str]] = ()
) -> dict[str, str]:
    """id -> the canonical id of its person, for every id that is not its person's canonical id.

    An anonymous id belongs to the user of its earliest link (ties by user id); an id with events
    as a user id is nobody's anonymous id, and users linked by identifies are one person
    (streaming/profiles/identity_graph.py). ``unlinked``: pairs ``pulse identity unlink`` suppressed.
    """
    person_of = reference_identity(deltas, max_ids, unlinked).person_of
    return {pid: person for pid, person in person_of.items() if person != pid}


def reference_person(
    profile_id: str,
    profiles: dict[str, ReferenceProfile],
    owners: dict[str, str],
    session_gap_ms: int = DEFAULT_SESSION_GAP_MS,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
) -> dict[str, Any] | None:
    """The merged profile GET /v1/profiles/{profile_id} must return (None = 404); ``owners`` as
    ``reference_owners`` gives them."""
    person = owners.get(profile_id, profile_id)
    others = [pid for pid, p in owners.items() if p == person and pid != person]
    users = {pid for pid in [person, *others] if pid in profiles and profiles[pid].fields.get("user_id")}
    owned = [pid for pid in others if pid not in users]
    order = member_ids(person, users, owned)
    parts = [profiles[pid].part() for pid in order if pid in profiles]
    own = profiles.get(person)
    user_id = (own and own.fields.get("user_id")) or (person if owned or person != profile_id else None)
    return merge_parts(
        person, str(user_id) if user_id else None, parts, session_gap_ms, traits, now_ms, user_ids=users
    )
