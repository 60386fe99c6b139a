"""Profile reads: one id's stored part, people merged over their ids, and report-shaped states."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from core.redis_client import RedisClient
from streaming.profiles.codec import PartReport, decode, decode_map, interval, parse_report
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile
from streaming.profiles.identity import ProfilePart, merge_parts
from streaming.profiles.keys import fields_key, owner_key, profile_keys
from streaming.traits.registry import TraitSet


class People(NamedTuple):
    """Ids resolved to people: id -> person, person -> merged profile, person -> all its ids."""

    person_of: dict[str, str]
    documents: dict[str, dict[str, Any] | None]
    members: dict[str, list[str]]


class ProfileReader:
    """Reads of profiles and people (a mixin of RedisProfileStore).

    Expects ``self._client`` (the Redis client), ``self.traits`` (the trait fields profiles
    show) and ``self._session_gap_ms`` (the session gap merged parts use).
    """

    _client: RedisClient
    traits: Callable[[], TraitSet]
    _session_gap_ms: int

    def get_profile(self, profile_id: str) -> dict[str, Any] | None:
        """The profile stored under this id alone (no identity merge), or None.

        Reconciliation compares these parts; the API serves ``get_person``.
        """
        return self.get_profiles([profile_id])[profile_id]

    def get_profiles(self, ids: Sequence[str], now_ms: int | None = None) -> dict[str, dict[str, Any] | None]:
        """``get_profile`` of each id, in one pipelined round trip (trait fields read at ``now_ms``)."""
        profiles: dict[str, dict[str, Any] | None] = {}
        traits = self.traits()
        for profile_id, part in self._read_parts(ids).items():
            profiles[profile_id] = (
                None
                if not part.fields
                else build_profile(
                    profile_id,
                    part.fields,
                    part.anonymous_ids,
                    [p for p, _ in sorted(part.products.items(), key=lambda i: (i[1], i[0]), reverse=True)],
                    len(part.sessions),
                    traits=traits,
                    now_ms=now_ms,
                )
            )
        return profiles

    def resolve_people(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> the id of the person it belongs to (its owning user, else itself).

        An id with events as a user id is a person of its own, whatever links name it.
        """
        pipe = self._client.pipeline(transaction=False)
        for profile_id in ids:
            pipe.zrange(owner_key(profile_id), 0, 0)
            pipe.hexists(fields_key(profile_id), "user_id")
        replies = pipe.execute()
        people = {}
        for i, pid in enumerate(ids):
            owner, is_user = replies[2 * i], replies[2 * i + 1]
            people[pid] = decode(owner[0]) if owner and not is_user else pid
        return people

    def get_people(self, ids: Sequence[str], now_ms: int | None = None) -> dict[str, dict[str, Any] | None]:
        """Merged profiles for user or anonymous ids (see streaming/profiles/identity.py)."""
        people = self.read_people(ids, now_ms)
        return {
            pid: None if (doc := people.documents[people.person_of[pid]]) is None else dict(doc)
            for pid in ids
        }

    def read_people(self, ids: Sequence[str], now_ms: int | None = None) -> People:
        """The people the ids belong to and their merged profiles, in three pipelined round trips.

        Trait fields are read at ``now_ms`` (default: now).
        """
        person_of = self.resolve_people(ids)
        people = list(dict.fromkeys(person_of.values()))
        own = self._read_parts(people)
        anon_ids = list(dict.fromkeys(a for p in people for a in own[p].anonymous_ids if a != p))
        anon_parts = self._read_parts(anon_ids) if anon_ids else {}
        owners = self.resolve_people(anon_ids) if anon_ids else {}
        documents: dict[str, dict[str, Any] | None] = {}
        members: dict[str, list[str]] = {}
        traits = self.traits()
        for person in people:
            owned = [a for a in sorted(own[person].anonymous_ids) if a != person and owners.get(a) == person]
            members[person] = [person, *owned]
            stitched = any(person_of[pid] == person != pid for pid in ids)
            user_id = own[person].fields.get("user_id") or (person if owned or stitched else None)
            parts = [own[person], *(anon_parts[a] for a in owned)]
            documents[person] = merge_parts(person, user_id, parts, self._session_gap_ms, traits, now_ms)
        return People(person_of, documents, members)

    def get_person(self, profile_id: str) -> dict[str, Any] | None:
        """The merged profile of a user_id, or of the user an anonymous_id is stitched to."""
        return self.get_people([profile_id])[profile_id]

    def _read_parts(self, ids: Sequence[str]) -> dict[str, ProfilePart]:
        pipe = self._client.pipeline(transaction=False)
        for profile_id in ids:
            keys = profile_keys(profile_id)
            pipe.hgetall(keys.fields)
            pipe.smembers(keys.anonymous_ids)
            pipe.zrevrange(keys.products, 0, LAST_PRODUCTS_LIMIT - 1, withscores=True)
            pipe.zrange(keys.sessions, 0, -1)
        replies = pipe.execute()
        parts = {}
        for i, profile_id in enumerate(ids):
            fields, anonymous_ids, products, sessions = replies[4 * i : 4 * i + 4]
            decoded = decode_map(fields)
            intervals = [interval(decode(member)) for member in sessions]
            if "ss" in decoded:
                intervals.append((int(decoded["ss"]), int(decoded["se"])))
            parts[profile_id] = ProfilePart(
                profile_id,
                decoded,
                frozenset(decode(a) for a in anonymous_ids),
                {decode(p): int(score) for p, score in products},
                sorted(intervals),
            )
        return parts

    def read_reports(self, ids: Sequence[str]) -> dict[str, PartReport]:
        """Part, owner and decisions of each id, as update.lua reports them (one round trip)."""
        pipe = self._client.pipeline(transaction=False)
        for profile_id in ids:
            keys = profile_keys(profile_id)
            pipe.hgetall(keys.fields)
            pipe.smembers(keys.anonymous_ids)
            pipe.zrange(keys.sessions, 0, -1)
            pipe.zrange(keys.owner, 0, 0)
            pipe.hgetall(keys.fires)
            pipe.zrevrange(keys.products, 0, LAST_PRODUCTS_LIMIT - 1, withscores=True)
        replies = pipe.execute()
        reports = {}
        for i, profile_id in enumerate(ids):
            fields, anonymous_ids, sessions, owner, fires, products = replies[6 * i : 6 * i + 6]
            flat = lambda mapping: [x for pair in mapping.items() for x in pair]  # noqa: E731
            entry = [
                0,
                flat(fields),
                list(anonymous_ids),
                sessions,
                owner,
                flat(fires),
                [x for pair in products for x in pair],
            ]
            reports[profile_id] = parse_report(profile_id, entry)
        return reports
