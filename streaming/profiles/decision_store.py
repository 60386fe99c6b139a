"""Decisions: each person's latest fired decision per rule key, read and recorded in Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import msgspec
from redis.commands.core import Script

from core.redis_client import RedisClient
from streaming.profiles.codec import decode, fire_state, pack
from streaming.profiles.identity import merge_decision_states
from streaming.profiles.keys import decision_keys, fields_key, profile_keys
from streaming.profiles.reader import People

#: Fired decisions stored in one call on a standalone server.
_RECORD_SCRIPT = resources.files("streaming.profiles").joinpath("record.lua").read_text()
#: GET /v1/decisions in one call on a standalone server (it reads keys of several ids).
_DECISIONS_SCRIPT = resources.files("streaming.profiles").joinpath("decisions.lua").read_text()

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


class DecisionStore:
    """Reads and writes of fired decisions (a mixin of RedisProfileStore).

    Expects ``self._client`` (the Redis client), ``self._cluster`` (whether it is a
    ``RedisCluster``) and ``read_people`` (ProfileReader); ``_register_decision_scripts()``
    sets ``self._read_decisions`` and ``self._record`` (None on a cluster: pipelines instead).
    """

    _client: RedisClient
    _cluster: bool
    _read_decisions: Script | None
    _record: Script | None
    read_people: Callable[..., People]

    def _register_decision_scripts(self) -> None:
        """Register record.lua and decisions.lua on one server; a cluster pipelines by key instead."""
        self._read_decisions = None if self._cluster else self._client.register_script(_DECISIONS_SCRIPT)
        self._record = None if self._cluster else self._client.register_script(_RECORD_SCRIPT)

    def get_decisions(self, profile_id: str, now_ms: int | None = None) -> list[dict[str, Any]]:
        """The person's current (unexpired) decisions, including those fired while anonymous, newest first."""
        people = self.read_people([profile_id])
        return self.current_decisions(people.members[people.person_of[profile_id]], now_ms)

    def decisions_view(self, profile_id: str, now_ms: int | None = None) -> dict[str, Any] | None:
        """What GET /v1/decisions serves (None = unknown id): one script call, or pipelines on a cluster.

        Reads only the person's own fields it needs, its anonymous ids' owners, and the
        decisions and segments stored under each of the person's ids.
        """
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        parts = self._person_decision_parts(profile_id)
        person, own = profile_id, parts[profile_id]
        if own["owner"] and own["owner"] != profile_id:
            person = own["owner"]
            own = parts[person]
        if any(part["user_linked"] or (pid != person and part["user_id"]) for pid, part in parts.items()):
            return self._linked_decisions_view(profile_id, now_ms)  # an identify linked user ids: read all
        anonymous = [a for a in own["anonymous_ids"] if a != person]
        owned = [parts[a] for a in sorted(anonymous) if parts[a]["owner"] == person and parts[a]["known"]]
        if not own["known"] and not owned:
            return None
        states = merge_decision_states([own["decisions"], *(o["decisions"] for o in owned)])
        segments = {s for part in (own, *owned) for s in part["segments"].split(",") if s}
        current = [d for d in states.values() if d.get("expires_at_ms", 0) > now_ms]
        stitched = person != profile_id or bool(owned)
        return {
            "profile_id": profile_id,
            "user_id": own["user_id"] or (person if stitched else None),
            "decisions": sorted(current, key=lambda d: d.get("fired_at_ms", 0), reverse=True),
            "intent_score": float(own["intent_score"] or 0.0),
            "segments": sorted(segments),
        }

    def _linked_decisions_view(self, profile_id: str, now_ms: int) -> dict[str, Any] | None:
        """decisions_view of a person an identify may have linked to other users (identity_graph.py)."""
        people = self.read_people([profile_id])
        person = people.person_of[profile_id]
        document = people.documents[person]
        if document is None:
            return None
        members = people.members[person]
        parts = self._decision_parts(members)
        states = merge_decision_states(parts[pid]["decisions"] for pid in members)
        current = [d for d in states.values() if d.get("expires_at_ms", 0) > now_ms]
        return {
            "profile_id": profile_id,
            "user_id": document["user_id"],
            "decisions": sorted(current, key=lambda d: d.get("fired_at_ms", 0), reverse=True),
            "intent_score": float(parts[person]["intent_score"] or 0.0),
            "segments": sorted({s for pid in members for s in parts[pid]["segments"].split(",") if s}),
        }

    def _person_decision_parts(self, profile_id: str) -> dict[str, dict[str, Any]]:
        """Decision parts of the id, of its owner (when another user owns it) and of that person's anonymous
        ids."""
        if self._read_decisions is not None:
            return {
                decode(reply[0]): _decision_part(*reply[1:])
                for reply in self._read_decisions(args=[profile_id])
            }
        parts = self._decision_parts([profile_id])
        person = parts[profile_id]["owner"] or profile_id
        if person not in parts:
            parts.update(self._decision_parts([person]))
        anonymous = [a for a in parts[person]["anonymous_ids"] if a not in parts]
        if anonymous:
            parts.update(self._decision_parts(anonymous))
        return parts

    def _decision_parts(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        pipe = self._client.pipeline(transaction=False)
        for pid in ids:
            keys = profile_keys(pid)
            pipe.zrange(keys.owner, 0, 0)
            pipe.hmget(keys.fields, "event_count", "user_id", "intent_score", "segments")
            pipe.smembers(keys.anonymous_ids)
            pipe.hgetall(keys.decisions)
        replies = pipe.execute()
        parts = {}
        for i, pid in enumerate(ids):
            owner, (count, user_id, intent, segments), anonymous, decisions = replies[4 * i : 4 * i + 4]
            parts[pid] = _decision_part(
                owner[0] if owner else None, count, user_id, intent, segments, anonymous, decisions
            )
        return parts

    def current_decisions(self, member_ids: Sequence[str], now_ms: int | None = None) -> list[dict[str, Any]]:
        """Unexpired decisions stored under any of a person's ids, newest first."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        states = self.decision_states({"person": member_ids})["person"]
        current = [d for d in states.values() if d.get("expires_at_ms", 0) > now_ms]
        return sorted(current, key=lambda d: d.get("fired_at_ms", 0), reverse=True)

    def decision_states(self, members: Mapping[str, Sequence[str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """person -> {rule key -> latest decision} over the person's ids: cooldowns and caps follow a
        merge."""
        ids = list(dict.fromkeys(pid for group in members.values() for pid in group))
        pipe = self._client.pipeline(transaction=False)
        for pid in ids:
            pipe.hgetall(profile_keys(pid).decisions)
        by_id = {
            pid: {decode(k): json.loads(v) for k, v in raw.items()}
            for pid, raw in zip(ids, pipe.execute(), strict=True)
        }
        return {
            person: merge_decision_states(by_id[pid] for pid in group) for person, group in members.items()
        }

    def record_decisions(
        self,
        decisions: Sequence[dict[str, Any]],
        segments: dict[str, list[str]],
        encoded: Sequence[bytes] | None = None,
    ) -> None:
        """Store fired decisions as each person's latest per rule key, and updated segment lists.

        ``encoded``: the decisions as JSON already (the triggers' values), in the same order.
        """
        if encoded is None:
            encoded = [_json_encode(decision) for decision in decisions]
        elif len(encoded) != len(decisions):
            raise ValueError(f"{len(encoded)} encoded decisions for {len(decisions)}")
        if self._record is not None:  # one call: no per-command client work
            keys = [key for decision in decisions for key in decision_keys(decision["profile_id"])]
            keys += [fields_key(person) for person in segments]
            rows = [(d["key"], fire_state(d)) for d in decisions]
            segment_lists = [",".join(sorted(names)) for names in segments.values()]
            self._record(keys=keys, args=[pack(rows), pack(segment_lists), *encoded])
            return
        pipe = self._client.pipeline(transaction=False)
        for decision, document in zip(decisions, encoded, strict=True):
            decisions_key, fires_key = decision_keys(decision["profile_id"])
            pipe.hset(decisions_key, decision["key"], document)
            pipe.hset(fires_key, decision["key"], fire_state(decision))
        for person, names in segments.items():
            pipe.hset(profile_keys(person).fields, "segments", ",".join(sorted(names)))
        pipe.execute()


def _decision_part(
    owner: bytes | None,
    count: bytes | None,
    user_id: bytes | None,
    intent: bytes | None,
    segments: bytes | None,
    anonymous: Iterable[bytes],
    decisions: dict[bytes, bytes] | list[bytes],
) -> dict[str, Any]:
    """One id's share of a person's decisions (``decisions`` as a map, or flat as a script returns it)."""
    pairs = (
        decisions.items()
        if isinstance(decisions, dict)
        else zip(decisions[::2], decisions[1::2], strict=True)
    )
    return {
        "owner": decode(owner) if owner and not user_id else None,  # a user's own profile is nobody's part
        "user_linked": bool(owner and user_id),  # a user named as an anonymous id: maybe linked to another
        "known": count is not None,
        "user_id": decode(user_id) if user_id else None,
        "intent_score": decode(intent) if intent else None,
        "segments": decode(segments) if segments else "",
        "anonymous_ids": {decode(a) for a in anonymous},
        "decisions": {decode(k): _json_decode(v) for k, v in pairs},
    }
