"""Wire formats between Python and the Redis scripts: what update.lua reads and what it reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from streaming.profiles.delta import ProfileDelta
from streaming.profiles.functions import LINK_FUNCTION
from streaming.profiles.identity import ProfilePart
from streaming.profiles.keys import owner_key

#: msgpack, as the scripts' ``cmsgpack.unpack`` reads it.
pack = msgspec.msgpack.Encoder().encode


def decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_map(mapping: dict[Any, Any]) -> dict[str, str]:
    return {decode(k): decode(v) for k, v in mapping.items()}


def interval(member: str) -> tuple[int, int]:
    """A session as stored in the sessions zset: "<start>:<end>"."""
    start, _, end = member.partition(":")
    return int(start), int(end)


def delta_row(key_index: int, delta: ProfileDelta) -> tuple[str | int, ...]:
    """One delta's values as ``update.lua`` reads them from its flat ARGV[4] (``key_index`` is
    1-based into KEYS): the event's fields, its marker, the number of op values, the ops."""
    ops = delta.ops
    return (
        key_index,
        delta.event_id,
        delta.event_type,
        delta.timestamp_ms,
        delta.user_id,
        delta.anonymous_id,
        delta.category,
        delta.product_id,
        delta.marker,
        len(ops),
        *ops,
    )


def decide_row(key_index: int, delta: ProfileDelta) -> tuple[str | int, ...]:
    """A delta as a decide call reads it: without its ops, which a decide call never applies
    (Redis then decodes a few values per event instead of every trait op)."""
    return (key_index, *delta[1:8], delta.marker, 0)


@dataclass(slots=True)
class ScriptCall:
    """One update.lua call: its KEYS, ARGV and the profile id of each key."""

    keys: list[str]
    args: tuple[Any, ...]
    ids: list[str]


class PartReport(NamedTuple):
    """A profile's state right after an update, as update.lua reports it for the rules."""

    part: ProfilePart
    owner: str | None
    decisions: dict[str, dict[str, Any]]  # fire state per rule key: fired_at_ms, fire_count, event_id
    user_linked: bool = False  # a user named as an anonymous id: an identify may link it to other users


def parse_link(text: str) -> tuple[int, str]:
    """An identify link as update.lua stores it: "<event ms>:<event_id>"."""
    ts, _, event_id = text.partition(":")
    return int(ts), event_id


def fire_state(decision: Mapping[str, Any]) -> str:
    """The compact fire state the rules engine needs (cooldown, cap, redelivery) of a decision."""
    return f"{decision['fired_at_ms']}:{decision['fire_count']}:{decision['event_id']}"


def parse_fire_state(text: str) -> dict[str, Any]:
    fired_at_ms, fire_count, event_id = text.split(":", 2)
    return {"fired_at_ms": int(fired_at_ms), "fire_count": int(fire_count), "event_id": event_id}


def parse_report(profile_id: str, entry: list[Any]) -> PartReport:
    """Decode one update.lua report entry (see the script's header)."""
    _, flat_fields, anonymous_ids, sessions, owner, flat_fires, flat_products = entry
    fields = {decode(flat_fields[i]): decode(flat_fields[i + 1]) for i in range(0, len(flat_fields), 2)}
    intervals = [interval(decode(member)) for member in sessions]
    if "ss" in fields:
        intervals.append((int(fields["ss"]), int(fields["se"])))
    products = {
        decode(flat_products[i]): int(float(flat_products[i + 1])) for i in range(0, len(flat_products), 2)
    }
    decisions = {
        decode(flat_fires[i]): parse_fire_state(decode(flat_fires[i + 1]))
        for i in range(0, len(flat_fires), 2)
    }
    part = ProfilePart(
        profile_id, fields, frozenset(decode(a) for a in anonymous_ids), products, sorted(intervals)
    )
    owned = owner and "user_id" not in fields  # a user's own profile is nobody's part
    return PartReport(part, decode(owner[0]) if owned else None, decisions, bool(owner) and not owned)


def identity_links(deltas: Sequence[ProfileDelta]) -> list[tuple[str, tuple[int, str]]]:
    """(anonymous_id, (earliest event time ms, user_id)) of every pair among ``deltas``, sorted.

    Every user seen with an anonymous id is recorded, not only its earliest: the owner is the
    earliest, but the others matter too (a user id named by several users links them, and an
    unlinked earliest pair leaves the next one the owner).
    """
    links: dict[tuple[str, str], int] = {}
    for delta in deltas:
        if delta.anonymous_id:
            pair = (delta.anonymous_id, delta.user_id)
            links[pair] = min(links.get(pair, delta.timestamp_ms), delta.timestamp_ms)
    return sorted((anonymous_id, (ts, user_id)) for (anonymous_id, user_id), ts in links.items())


def link_command(anonymous_id: str, link: tuple[int, str]) -> tuple[str | int, ...]:
    """Record a link (update.lua's pulse_link): each user's earliest time, so the write is idempotent;
    nothing for an unlinked pair, or when the anonymous id was forgotten at or after the link's time."""
    return ("FCALL", LINK_FUNCTION, 1, owner_key(anonymous_id), link[0], link[1])


def links_argument(links: Sequence[tuple[str, tuple[int, str]]]) -> bytes:
    """``identity_links`` as an update call records them itself on one server (update.lua's
    ARGV[13]): the owner key, event time and user of each, flat; as ``link_command`` each would."""
    flat: list[str | int] = []
    for anonymous_id, (ts, user_id) in links:
        flat += (owner_key(anonymous_id), ts, user_id)
    return pack(flat)
