"""A person's identity record and undoing a bad merge (``pulse identity show/unlink``, I/O).

A mixin of RedisProfileStore. Merging is done at read (streaming/profiles/identity_graph.py),
so unlinking moves no event: it deletes the link where it is stored and suppresses the pair
where links are written (update.lua's identify links, ``pulse_link``), and both people are
exact at once. What is kept per person beside the parts (segments) is dropped on every id of
the people involved; the rules derive it again on each person's next triggering event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from core.redis_client import RedisClient
from core.time_format import iso_from_ms
from streaming.profiles.codec import decode, decode_map, parse_link
from streaming.profiles.identity_graph import (
    IdNode,
    Resolution,
    member_ids,
    owner_of,
    person_anonymous_ids,
)
from streaming.profiles.keys import (
    REFUSED_LINKS,
    fields_key,
    links_key,
    owner_key,
    profile_keys,
    refused_field,
    unlinked_key,
)

logger = logging.getLogger(__name__)


class PersonIds(NamedTuple):
    person: str  # the canonical id
    users: list[str]
    owned: list[str]  # anonymous ids
    nodes: dict[str, IdNode]
    resolution: Resolution


class UnlinkError(ValueError):
    """An unlink that cannot be done (the same id twice, or an empty id)."""


class IdentityAdmin:
    """Identity records and unlinks (a mixin of RedisProfileStore, next to ProfileReader)."""

    _client: RedisClient
    identity_max_ids: int
    resolve_identity: Callable[[Sequence[str]], tuple[Resolution, dict[str, IdNode]]]  # ProfileReader
    read_id_nodes: Callable[[Sequence[str]], dict[str, IdNode]]  # ProfileReader

    def person_ids(self, profile_id: str) -> PersonIds:
        """The canonical id, user ids and owned anonymous ids of the person of ``profile_id``."""
        resolution, nodes = self.resolve_identity([profile_id])
        person = resolution.person_of[profile_id]
        users = resolution.user_ids.get(person, [])
        pipe = self._client.pipeline(transaction=False)
        for uid in users or [person]:
            pipe.smembers(profile_keys(uid).anonymous_ids)
        seen = sorted({decode(a) for members in pipe.execute() for a in members} - {person, *users})
        missing = [a for a in seen if a not in nodes]
        nodes = {**nodes, **(self.read_id_nodes(missing) if missing else {})}
        owned = person_anonymous_ids(set(users) or {person}, seen, nodes)
        return PersonIds(person, users, owned, nodes, resolution)

    def identity_view(self, profile_id: str) -> dict[str, Any] | None:
        """What GET /v1/profiles/{id}/identity serves (None: an unknown id)."""
        person, users, owned, nodes, resolution = self.person_ids(profile_id)
        if not users and not self._client.exists(fields_key(person)) and not owned:
            return None
        group = set(users)
        pipe = self._client.pipeline(transaction=False)
        owners = {a: owner_of(a, nodes[a]) for a in owned}
        for a, owner in owners.items():
            pipe.zscore(owner_key(a), owner)
            pipe.hget(links_key(owner or a), a)
        for pid in member_ids(person, users, owned):
            pipe.hgetall(unlinked_key(pid))
        replies = pipe.execute()
        anonymous = []
        for i, (a, owner) in enumerate(owners.items()):
            score, link = replies[2 * i : 2 * i + 2]
            anonymous.append(
                {
                    "id": a,
                    "user_id": owner,
                    "linked_at": iso_from_ms(int(score)) if score is not None else None,
                    "event_id": parse_link(decode(link))[1] if link else None,
                }
            )
        unlinked: dict[tuple[str, str], int] = {}
        for pid, raw in zip(member_ids(person, users, owned), replies[2 * len(owners) :], strict=True):
            for other, at in decode_map(raw).items():
                pair = (min(pid, other), max(pid, other))
                unlinked[pair] = max(unlinked.get(pair, 0), int(at))
        links = [link for link in resolution.links if link.a in group or link.b in group]
        return {
            "profile_id": profile_id,
            "person_id": person,
            "user_ids": users,
            "anonymous_ids": anonymous,
            "links": [_link(link) for link in links if link.merged],
            "refused_links": [_link(link) for link in links if not link.merged],
            "unlinked": [
                {"ids": list(pair), "unlinked_at": iso_from_ms(at)} for pair, at in sorted(unlinked.items())
            ],
            "max_ids": self.identity_max_ids,
        }

    def suppress_link(self, id_a: str, id_b: str, unlinked_at_ms: int) -> None:
        """Delete the link of two ids where it is stored and suppress the pair where links are written.

        Idempotent: what ``unlink`` writes, and what a rebuild re-applies from the unlink log
        (assets/identity_unlinks.py) before replaying the archive.
        """
        pipe = self._client.pipeline(transaction=False)
        for this, other in ((id_a, id_b), (id_b, id_a)):
            pipe.hset(unlinked_key(this), other, unlinked_at_ms)
            pipe.hdel(links_key(this), other)
            pipe.zrem(owner_key(this), other)
        pipe.hdel(REFUSED_LINKS, refused_field(id_a, id_b))  # no link now, refused or not
        pipe.execute()

    def unlink(self, id_a: str, id_b: str) -> dict[str, Any]:
        """Undo the link of two ids for good; return the people before and after.

        Deletes the link where it is stored (an identify's record on either user, the owner entry
        of either id), suppresses the pair where links are written (a redelivered or new event
        linking them is not recorded again), and drops the segments of every id of the people
        involved (the rules derive them again on the people's next triggering events).
        """
        if not id_a or not id_b or id_a == id_b:
            raise UnlinkError(f"unlink needs two different ids, got {id_a!r} and {id_b!r}")
        before = {pid: self.person_ids(pid) for pid in (id_a, id_b)}
        unlinked_at_ms = int(time.time() * 1000)
        self.suppress_link(id_a, id_b, unlinked_at_ms)
        after = {pid: self.person_ids(pid) for pid in (id_a, id_b)}
        touched = {pid for p in (*before.values(), *after.values()) for pid in (p.person, *p.users, *p.owned)}
        pipe = self._client.pipeline(transaction=False)
        for pid in sorted(touched):
            pipe.hdel(fields_key(pid), "segments")
        pipe.execute()
        logger.info(
            "unlinked %s and %s: people %s -> %s",
            id_a,
            id_b,
            sorted({p.person for p in before.values()}),
            sorted({p.person for p in after.values()}),
        )
        return {
            "unlinked": [id_a, id_b],
            "unlinked_at": iso_from_ms(unlinked_at_ms),
            "unlinked_at_ms": unlinked_at_ms,
            "were_one_person": before[id_a].person == before[id_b].person,
            "still_one_person": after[id_a].person == after[id_b].person,
            "before": {pid: _summary(p) for pid, p in before.items()},
            "after": {pid: _summary(p) for pid, p in after.items()},
            "segments_cleared": sorted(touched),
        }


def _link(link: Any) -> dict[str, Any]:
    return {
        "ids": [link.a, link.b],
        "event_id": link.event_id,
        "timestamp": iso_from_ms(link.timestamp_ms),
        "status": "merged" if link.merged else "refused",
    }


def _summary(people: PersonIds) -> dict[str, Any]:
    return {"person_id": people.person, "user_ids": people.users, "anonymous_ids": people.owned}
