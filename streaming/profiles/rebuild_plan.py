"""What a profile rebuild touches (pure): the parts of the people asked for, and their markers' keys.

A person is its user part and the anonymous parts linked to it (streaming/profiles/identity.py);
each part holds only the events keyed by its id, so rebuilding any set of parts from the archive
is exact part by part. A rebuild therefore takes a superset where it cannot tell: every anonymous
id ever linked to the user, in Redis or in the archive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from streaming.profiles.keys import KEY_PREFIX, decode_id, encode_id

#: SCAN MATCH pattern of every event_id marker (``<base>:seen:<event_id>``).
ALL_MARKERS_PATTERN = f"{KEY_PREFIX}:{{*}}:seen:*"
_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


class Link(NamedTuple):
    """An archived event carrying both ids: ``anonymous_id`` was seen with ``user_id`` from ``first_ms``."""

    user_id: str
    anonymous_id: str
    first_ms: int


def marker_pattern(profile_id: str) -> str:
    """SCAN MATCH pattern of one profile's event_id markers (glob characters in the id escaped)."""
    return f"{KEY_PREFIX}:{{{encode_id(profile_id).translate(_GLOB_SPECIAL)}}}:seen:*"


def marker_profile(key: str) -> str | None:
    """The profile id a marker key belongs to, or None for a key that is not a marker."""
    head = f"{KEY_PREFIX}:{{"
    if not key.startswith(head):
        return None
    end = key.find("}", len(head))  # encoded ids hold no brace
    if end < 0 or not key.startswith(":seen:", end + 1):
        return None
    return decode_id(key[len(head) : end])


def part_version(event_count: str | None, updated_at: str | None) -> str:
    """A part's version as wipe.lua compares it: every applied update changes both fields."""
    return f"{event_count or ''}:{updated_at or ''}"


def people_of(
    requested: Iterable[str], redis_person: Mapping[str, str], archive_users: set[str], links: Iterable[Link]
) -> dict[str, str]:
    """id -> the person it belongs to.

    ``redis_person`` is the live resolution (see ``resolve_people``); when Redis knows no owner
    for an anonymous id (its keys were lost), the archive's earliest link decides, as the stream
    does: earliest event time, ties by user id. An id with events as a user id is its own person.
    """
    earliest: dict[str, tuple[int, str]] = {}
    for link in links:
        first = (link.first_ms, link.user_id)
        if link.anonymous_id not in earliest or first < earliest[link.anonymous_id]:
            earliest[link.anonymous_id] = first
    people = {}
    for profile_id in requested:
        person = redis_person.get(profile_id, profile_id)
        if person == profile_id and profile_id not in archive_users and profile_id in earliest:
            person = earliest[profile_id][1]
        people[profile_id] = person
    return people


def people_parts(
    people: Iterable[str], links: Iterable[Link], redis_linked: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """person -> the part ids to rebuild, the person first: every anonymous id linked to it, in
    the archive (``links``) or in its live part (``redis_linked``)."""
    linked: dict[str, set[str]] = {}
    for link in links:
        linked.setdefault(link.user_id, set()).add(link.anonymous_id)
    parts = {}
    for person in people:
        others = (linked.get(person, set()) | set(redis_linked.get(person, ()))) - {person}
        parts[person] = [person, *sorted(others)]
    return parts
