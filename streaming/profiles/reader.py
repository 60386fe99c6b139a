"""Profile reads: one id's stored part, people merged over their ids, and report-shaped states."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from core.redis_client import RedisClient
from streaming.profiles.codec import PartReport, decode, decode_map, interval, parse_link, parse_report
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile
from streaming.profiles.identity import ProfilePart, merge_parts
from streaming.profiles.identity_graph import (
    IdNode,
    Resolution,
    UserLink,
    linked_users,
    member_ids,
    neighbours,
    owner_of,
    person_anonymous_ids,
    resolve,
)
from streaming.profiles.keys import (
    REFUSED_LINKS,
    fields_key,
    links_key,
    owner_key,
    profile_keys,
    refused_field,
)
from streaming.traits.registry import TraitSet

logger = logging.getLogger(__name__)


class People(NamedTuple):
    """Ids resolved to people: id -> person, person -> merged profile, person -> all its ids."""

    person_of: dict[str, str]
    documents: dict[str, dict[str, Any] | None]
    members: dict[str, list[str]]
    links: list[UserLink]  # the user links among the people read (and their linked users)


class ProfileReader:
    """Reads of profiles and people (a mixin of RedisProfileStore).

    Expects ``self._client`` (the Redis client), ``self.traits`` (the trait fields profiles
    show), ``self._session_gap_ms`` (the session gap merged parts use) and ``self.identity_max_ids``
    (user ids per person, PULSE_IDENTITY_MAX_IDS).
    """

    _client: RedisClient
    traits: Callable[[], TraitSet]
    _session_gap_ms: int
    identity_max_ids: int

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
        """id -> the canonical id of the person it belongs to (see streaming/profiles/identity_graph.py)."""
        resolution, _ = self.resolve_identity(ids)
        return {pid: resolution.person_of[pid] for pid in ids}

    def resolve_identity(self, ids: Sequence[str]) -> tuple[Resolution, dict[str, IdNode]]:
        """The people of ``ids`` with every user linked to them, and the ids read on the way.

        Reads the ids, then the users they may be linked to, a pipelined round trip per step of
        the link graph, until the linked users of every person are all read.
        """
        nodes: dict[str, IdNode] = {}
        wanted = set(ids)
        while missing := [pid for pid in wanted if pid not in nodes]:
            nodes.update(self.read_id_nodes(missing))
            roots = {pid for pid in ids if nodes[pid].is_user}
            roots |= {owner for pid in ids if (owner := owner_of(pid, nodes[pid]))}
            wanted = roots | {pid for pid in ids}
            for uid in linked_users(roots, nodes):
                wanted |= neighbours(uid, nodes[uid]) if uid in nodes else {uid}
        resolution = resolve(nodes, self.identity_max_ids)
        if resolution.links:
            self._record_refused(resolution.links)
        return resolution, nodes

    def read_id_nodes(self, ids: Sequence[str]) -> dict[str, IdNode]:
        """What the identity resolution needs of each id, in one pipelined round trip."""
        pipe = self._client.pipeline(transaction=False)
        for profile_id in ids:
            pipe.hexists(fields_key(profile_id), "user_id")
            pipe.hgetall(links_key(profile_id))
            pipe.zrange(owner_key(profile_id), 0, -1)
        replies = pipe.execute()
        nodes = {}
        for i, pid in enumerate(ids):
            is_user, links, owners = replies[3 * i : 3 * i + 3]
            nodes[pid] = IdNode(
                bool(is_user),
                {other: parse_link(link) for other, link in decode_map(links).items()},
                tuple(decode(o) for o in owners),
            )
        return nodes

    def _record_refused(self, links: list[UserLink]) -> None:
        """Keep ``pulse:identity:refused`` current for these links: the refused ones in, the merged out.

        The links are every user link of the people just resolved, so the hash holds the links
        refused now (as their people were last read), whatever the order events, reads, unlinks
        and limit changes came in. A link is logged the first time it is found refused.
        """
        pipe = self._client.pipeline(transaction=False)
        refused = [link for link in links if not link.merged]
        for link in refused:
            value = {
                "event_id": link.event_id,
                "timestamp_ms": link.timestamp_ms,
                "max_ids": self.identity_max_ids,
            }
            pipe.hsetnx(REFUSED_LINKS, refused_field(link.a, link.b), json.dumps(value))
        merged = [refused_field(link.a, link.b) for link in links if link.merged]
        if merged:
            pipe.hdel(REFUSED_LINKS, *merged)
        for link, new in zip(refused, pipe.execute()[: len(refused)], strict=True):
            if new:
                logger.warning(
                    "identity link %s ~ %s (event %s) refused: the person would hold more than %d user ids "
                    "(PULSE_IDENTITY_MAX_IDS)",
                    link.a,
                    link.b,
                    link.event_id,
                    self.identity_max_ids,
                )

    def refused_link_count(self) -> int:
        """How many user links the per-person limit refuses (as their people were last read)."""
        return int(self._client.hlen(REFUSED_LINKS))

    def get_people(self, ids: Sequence[str], now_ms: int | None = None) -> dict[str, dict[str, Any] | None]:
        """Merged profiles for user or anonymous ids (see streaming/profiles/identity.py)."""
        people = self.read_people(ids, now_ms)
        return {
            pid: None if (doc := people.documents[people.person_of[pid]]) is None else dict(doc)
            for pid in ids
        }

    def read_people(self, ids: Sequence[str], now_ms: int | None = None) -> People:
        """The people the ids belong to and their merged profiles.

        Trait fields are read at ``now_ms`` (default: now).
        """
        resolution, nodes = self.resolve_identity(ids)
        person_of = {pid: resolution.person_of[pid] for pid in ids}
        people = list(dict.fromkeys(person_of.values()))
        users = {p: resolution.user_ids.get(p, []) for p in people}
        own = self._read_parts(list(dict.fromkeys(uid for p in people for uid in users[p] or [p])))
        anon_ids = list(
            dict.fromkeys(
                a for p in people for uid in users[p] or [p] for a in own[uid].anonymous_ids if a != uid
            )
        )
        anon_parts = self._read_parts(anon_ids) if anon_ids else {}
        missing = [a for a in anon_ids if a not in nodes]
        nodes = {**nodes, **(self.read_id_nodes(missing) if missing else {})}
        documents: dict[str, dict[str, Any] | None] = {}
        members: dict[str, list[str]] = {}
        traits = self.traits()
        for person in people:
            group = set(users[person])
            owned = person_anonymous_ids(
                group or {person}, (a for uid in users[person] for a in own[uid].anonymous_ids), nodes
            )
            members[person] = member_ids(person, group, owned)
            others = members[person][1 : len(group) or 1]
            stitched = any(person_of[pid] == person != pid for pid in ids)
            user_id = own[person].fields.get("user_id") or (person if owned or stitched else None)
            parts = [own[person], *(own[u] for u in others), *(anon_parts[a] for a in owned)]
            documents[person] = merge_parts(
                person, user_id, parts, self._session_gap_ms, traits, now_ms, user_ids=group
            )
        return People(person_of, documents, members, resolution.links)

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
