"""Identity beyond one level (pure): which user ids are one person, and which links were refused.

An ``identify`` (a Segment ``alias`` too) whose ``anonymous_id`` is itself a *known user id* (an
id with events as ``user_id``) links the two users: a **user link**. Linked users are one
person, chains included (A~B, B~C: one person). Each pair of users is linked by its earliest
identify (event time, ties by ``event_id``). Merging happens at read, over the stored parts, so
it is exact and independent of the order events arrive in.

Over-merging guard: a person holds at most ``max_ids`` user ids. The links of a connected set
of users are taken in order (event time, then ``event_id``, then the pair); a link that would
join two groups into more than ``max_ids`` user ids is **refused** (its two sides stay apart).
The outcome depends only on the set of links, never on arrival order. Anonymous ids do not
count: each belongs to exactly one user (its earliest link) and cannot chain people together.

The person's **canonical id** is the smallest of its user ids (code point order): every id of
the person answers with that ``profile_id``/``user_id``, whichever was asked for.
Unlinked pairs (``pulse identity unlink``) never appear here: the store suppresses them where
links are written (see ``RedisProfileStore.unlink``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

#: User ids per person (PULSE_IDENTITY_MAX_IDS), Segment's default.
DEFAULT_MAX_IDS = 100


class IdNode(NamedTuple):
    """What the identity resolution needs to know about one id."""

    is_user: bool  # the id has events as a user_id
    links: Mapping[str, tuple[int, str]]  # identify links this user made: other id -> (ts ms, event_id)
    owners: tuple[str, ...] = ()  # users seen with this id as anonymous_id, earliest link first


class UserLink(NamedTuple):
    """The earliest identify linking two user ids (``a`` < ``b``), and what became of it."""

    a: str
    b: str
    timestamp_ms: int
    event_id: str
    merged: bool  # False: refused, the person would have held more than max_ids user ids


def user_links(nodes: Mapping[str, IdNode]) -> list[tuple[int, str, str, str]]:
    """(ts, event_id, a, b) of every pair of users in ``nodes`` linked by an identify, earliest per pair."""
    best: dict[tuple[str, str], tuple[int, str]] = {}
    for uid, node in nodes.items():
        if not node.is_user:
            continue
        for other, link in node.links.items():
            target = nodes.get(other)
            if other == uid or target is None or not target.is_user:
                continue
            pair = (uid, other) if uid < other else (other, uid)
            if pair not in best or link < best[pair]:
                best[pair] = link
    return sorted((ts, event_id, a, b) for (a, b), (ts, event_id) in best.items())


def neighbours(uid: str, node: IdNode) -> set[str]:
    """Ids that may be linked to user ``uid``: the ids it linked, and the users that named it."""
    if not node.is_user:
        return set()
    return {*node.links, *node.owners} - {uid}


def linked_users(roots: Iterable[str], nodes: Mapping[str, IdNode]) -> set[str]:
    """The user ids connected to ``roots`` by the user links among ``nodes`` (whatever the limit)."""
    adjacent: dict[str, set[str]] = {}
    for _, _, a, b in user_links(nodes):
        adjacent.setdefault(a, set()).add(b)
        adjacent.setdefault(b, set()).add(a)
    seen, stack = set(roots), list(roots)
    while stack:
        for other in adjacent.get(stack.pop(), ()):
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


def merge_users(
    users: Iterable[str], links: list[tuple[int, str, str, str]], max_ids: int
) -> tuple[dict[str, str], list[UserLink]]:
    """(user id -> canonical id of its person, every link with its outcome), links in order."""
    parent = {uid: uid for uid in users}
    size = dict.fromkeys(parent, 1)

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    outcomes = []
    for ts, event_id, a, b in links:
        ra, rb = root(a), root(b)
        merged = ra == rb or size[ra] + size[rb] <= max_ids
        if ra != rb and merged:
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
        outcomes.append(UserLink(a, b, ts, event_id, merged))
    groups: dict[str, list[str]] = {}
    for uid in parent:
        groups.setdefault(root(uid), []).append(uid)
    canonical = {uid: min(group) for group in groups.values() for uid in group}
    return canonical, outcomes


def owner_of(anonymous_id: str, node: IdNode) -> str | None:
    """The user owning a non-user id: its earliest link (event time, ties by user id); None for a user."""
    if node.is_user:
        return None
    owners = [o for o in node.owners if o != anonymous_id]
    return owners[0] if owners else None


def person_anonymous_ids(
    group: set[str], anonymous_ids: Iterable[str], nodes: Mapping[str, IdNode]
) -> list[str]:
    """The anonymous ids (of ``anonymous_ids``, each with its node) a user of ``group`` owns, sorted."""
    owned = set()
    for a in anonymous_ids:
        node = nodes.get(a)
        if a not in group and node is not None and owner_of(a, node) in group:
            owned.add(a)
    return sorted(owned)


def member_ids(person: str, user_ids: Iterable[str], owned: Iterable[str]) -> list[str]:
    """A person's ids in merge order: the canonical id, its other user ids, then its anonymous ids."""
    return [person, *sorted(set(user_ids) - {person}), *sorted(owned)]


class Resolution(NamedTuple):
    """People over a closed set of ids: id -> person, person -> user ids, and the user links."""

    person_of: dict[str, str]
    user_ids: dict[str, list[str]]  # person -> its user ids, canonical first
    links: list[UserLink]


def resolve(nodes: Mapping[str, IdNode], max_ids: int) -> Resolution:
    """Resolve every id of ``nodes``; the users' link graph must be closed over them."""
    users = [uid for uid, node in nodes.items() if node.is_user]
    canonical, outcomes = merge_users(users, user_links(nodes), max_ids)
    person_of: dict[str, str] = {}
    for pid, node in nodes.items():
        if node.is_user:
            person_of[pid] = canonical[pid]
        else:
            owner = owner_of(pid, node)
            person_of[pid] = canonical.get(owner, owner) if owner else pid
    user_ids: dict[str, list[str]] = {}
    for uid in sorted(users):
        user_ids.setdefault(canonical[uid], []).append(uid)
    return Resolution(person_of, user_ids, outcomes)
