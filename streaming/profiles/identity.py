"""Identity stitching (pure): which user owns an anonymous id, and the merged profile of a person.

Events are stored on the profile of their key (user_id, else anonymous_id), never moved. An
event carrying both ids links the anonymous id to the user; the anonymous id's *owner* is the
user of its earliest link (event time, ties by user id), so ownership does not depend on the
order events arrive in. An id with events as a user id (its part has a ``user_id`` field) is
never another user's anonymous part; an ``identify`` naming it as the anonymous id links the two
*users* instead, and linked users are one person (streaming/profiles/identity_graph.py: chains,
the per-person limit, the canonical id). A person's profile is the merge of its users' parts
and the parts of every anonymous id they own. Each event lives in exactly one part, so merging counters by
addition counts every event exactly once, before or after the identify, in any order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from core.time_format import iso_from_ms
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile, now, session_facts
from streaming.traits.cells import combine
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet


class ProfilePart(NamedTuple):
    """What is stored under one profile id."""

    profile_id: str
    fields: Mapping[str, str]
    anonymous_ids: frozenset[str]
    products: Mapping[str, int]  # product_id -> latest event time (ms)
    sessions: list[tuple[int, int]]  # (start, end) ms of every session, the latest included


def merge_sessions(intervals: Iterable[tuple[int, int]], gap_ms: int) -> list[tuple[int, int]]:
    """Union of session intervals; two sessions at most ``gap_ms`` apart become one."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + gap_ms:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def merge_fields(
    person_fields: Mapping[str, str], others: Iterable[Mapping[str, str]], traits: TraitSet = BUILTIN_TRAITS
) -> dict[str, str]:
    """Merge field hashes: the registry's traits merge by their cell code (counters add up,
    first_seen is the min, ...), updated_at is the max, segments the union.

    Anything else (user_id, intent_score, rule state) is the person's own.
    """
    merged = dict(person_fields)
    for fields in others:
        for name, value in fields.items():
            current = merged.get(name)
            code = traits.code_of(name)
            if code is not None:
                merged[name] = combine(code, current, value)
            elif name == "updated_at":
                merged[name] = value if current is None or int(value) > int(current) else current
            elif name == "segments":
                merged[name] = ",".join(sorted({*(current or "").split(","), *value.split(",")} - {""}))
            elif current is None and name not in ("ss", "se", "w"):
                merged[name] = value
    return merged


def merge_parts(
    person_id: str,
    user_id: str | None,
    parts: list[ProfilePart],
    session_gap_ms: int,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
    *,
    user_ids: Collection[str] = (),
) -> dict[str, Any] | None:
    """The profile document of a person from its parts (the person's own part first, if any).

    ``user_id`` is the person's user id (None for an anonymous visitor nobody owns); trait
    fields are read with ``traits`` at ``now_ms`` (see ``build_profile``). ``user_ids``: the
    person's user ids when linked users merged (streaming/profiles/identity_graph.py); they are
    not listed as anonymous ids.
    """
    parts = [part for part in parts if part.fields]
    if not parts:
        return None
    own = parts[0] if parts[0].profile_id == person_id else ProfilePart(person_id, {}, frozenset(), {}, [])
    others = [part for part in parts if part is not own]
    fields = merge_fields(own.fields, (part.fields for part in others), traits)
    if user_id:
        fields["user_id"] = user_id
    anonymous_ids = set(own.anonymous_ids)
    products: dict[str, int] = dict(own.products)
    intervals = list(own.sessions)
    for part in others:
        anonymous_ids |= part.anonymous_ids
        anonymous_ids.add(part.profile_id)
        for product, ts in part.products.items():
            if ts > products.get(product, -1):
                products[product] = ts
        intervals.extend(part.sessions)
    anonymous_ids -= set(user_ids)
    recent = sorted(products.items(), key=lambda item: (item[1], item[0]), reverse=True)[:LAST_PRODUCTS_LIMIT]
    sessions = merge_sessions(intervals, session_gap_ms)
    return build_profile(
        person_id,
        fields,
        anonymous_ids,
        [product for product, _ in recent],
        len(sessions),
        sessions[-1] if sessions else None,
        traits,
        now_ms,
    )


def merge_decision_states(states: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Decisions of a person's ids merged per rule key: the latest one, with the highest fire count."""
    merged: dict[str, dict[str, Any]] = {}
    for state in states:
        for key, decision in state.items():
            current = merged.get(key)
            if current is None:
                merged[key] = dict(decision)
                continue
            latest = (
                dict(decision) if decision.get("fired_at_ms", 0) > current.get("fired_at_ms", 0) else current
            )
            latest["fire_count"] = max(int(current.get("fire_count", 1)), int(decision.get("fire_count", 1)))
            merged[key] = latest
    return merged


def merged_view(
    person_id: str,
    user_id: str | None,
    parts: list[ProfilePart],
    session_gap_ms: int,
    names: set[str] | None,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
) -> dict[str, Any] | None:
    """Like ``merge_parts`` but only the profile fields in ``names`` (None = all), for the rules.

    ``profile_id``, ``user_id`` and ``segments`` are always included.
    """
    if names is None:
        return merge_parts(person_id, user_id, parts, session_gap_ms, traits, now_ms)
    parts = [part for part in parts if part.fields]
    if not parts:
        return None
    own = parts[0] if parts[0].profile_id == person_id else None
    others = parts[1:] if own is not None else parts
    fields = (
        merge_fields(own.fields if own else {}, (part.fields for part in others), traits)
        if others
        else parts[0].fields
    )
    view: dict[str, Any] = {
        "profile_id": person_id,
        "user_id": user_id or fields.get("user_id") or None,
        "segments": sorted(s for s in fields.get("segments", "").split(",") if s),
    }
    for name in names:
        builder = _VIEW_BUILDERS.get(name)
        if builder is not None:
            view[name] = builder(fields, parts, session_gap_ms)
    wanted = names & traits.field_names
    if wanted:
        view.update(traits.profile_fields(fields, now() if now_ms is None else now_ms, wanted))
    return view


#: Profile fields read from the trait registry (streaming/traits/registry.py).
TRAIT_FIELDS = BUILTIN_TRAITS.field_names


def _time(name: str):
    def build(fields: Mapping[str, str], _parts: list[ProfilePart], _gap: int) -> str | None:
        value = fields.get(name)
        return None if value is None else iso_from_ms(int(value))

    return build


def _last_products(_fields: Mapping[str, str], parts: list[ProfilePart], _gap: int) -> list[str]:
    products: dict[str, int] = {}
    for part in parts:
        for product, ts in part.products.items():
            if ts > products.get(product, -1):
                products[product] = ts
    recent = sorted(products.items(), key=lambda item: (item[1], item[0]), reverse=True)[:LAST_PRODUCTS_LIMIT]
    return [product for product, _ in recent]


def _anonymous_ids(fields: Mapping[str, str], parts: list[ProfilePart], _gap: int) -> list[str]:
    ids = set().union(*(part.anonymous_ids for part in parts))
    ids |= {part.profile_id for part in parts[1:]}
    if not fields.get("user_id"):
        ids.add(parts[0].profile_id)
    return sorted(ids)


_VIEW_BUILDERS = {
    "intent_score": lambda f, _p, _g: float(f.get("intent_score", 0.0)),
    "session_count": lambda _f, p, g: len(merge_sessions((i for part in p for i in part.sessions), g)),
    "last_session": lambda _f, p, g: session_facts(
        (merge_sessions((i for part in p for i in part.sessions), g) or [None])[-1]
    ),
    "updated_at": _time("updated_at"),
    "last_products": _last_products,
    "anonymous_ids": _anonymous_ids,
}
