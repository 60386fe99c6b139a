"""Profile store in Redis (I/O): apply deltas idempotently, read and forget profiles."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, TypeVar

import msgspec
import redis
from redis.cluster import ClusterNode

from core.redis_client import RedisClient
from streaming.profiles.delta import ProfileDelta
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile
from streaming.profiles.identity import ProfilePart, merge_decision_states, merge_parts
from streaming.profiles.intent import IntentModel
from streaming.profiles.keys import (
    FORGET_STREAM,
    decision_keys,
    fields_key,
    owner_key,
    profile_keys,
    profile_slot,
)
from streaming.rules.prefilter import Prefilter, Prefiltered
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

logger = logging.getLogger(__name__)

_UPDATE_LIBRARY_TEXT = resources.files("streaming.profiles").joinpath("update.lua").read_text()
#: The update function, named after a digest of its library: an app only ever calls its own version.
UPDATE_FUNCTION = f"pulse_update_{hashlib.sha1(_UPDATE_LIBRARY_TEXT.encode()).hexdigest()[:12]}"
_UPDATE_LIBRARY = _UPDATE_LIBRARY_TEXT.replace(
    "#!lua name=pulse_update\n", f"#!lua name={UPDATE_FUNCTION}\n", 1
).replace("function_name = 'pulse_update'", f"function_name = '{UPDATE_FUNCTION}'", 1)
#: Backfills of traits (streaming/traits/backfill.py), in the same library.
BACKFILL_FUNCTION = UPDATE_FUNCTION.replace("pulse_update", "pulse_backfill")
_UPDATE_LIBRARY = _UPDATE_LIBRARY.replace(
    "function_name = 'pulse_backfill'", f"function_name = '{BACKFILL_FUNCTION}'", 1
)
#: Fired decisions stored in one call on a standalone server.
_RECORD_SCRIPT = resources.files("streaming.profiles").joinpath("record.lua").read_text()
#: GET /v1/decisions in one call on a standalone server (it reads keys of several ids).
_DECISIONS_SCRIPT = resources.files("streaming.profiles").joinpath("decisions.lua").read_text()

T = TypeVar("T")


class ClusterTopologyChanged(redis.exceptions.ConnectionError):
    """A cluster node answered MOVED, ASK, TRYAGAIN or CLUSTERDOWN, or a slot had no node.

    The slot map is re-read before the next write; the batch must be sent again (every delta
    is idempotent). A ``ConnectionError``, so the profile app pauses and retries the checkpoint.
    """


#: Deltas per script call: bounds how long one call blocks Redis (about 10 µs per delta).
SCRIPT_CHUNK = 500


def delta_row(key_index: int, delta: ProfileDelta) -> tuple[str | int, ...]:
    """One delta as ``update.lua`` reads it (``key_index`` is 1-based into KEYS)."""
    return (
        key_index,
        delta.event_id,
        delta.event_type,
        delta.timestamp_ms,
        delta.user_id,
        delta.anonymous_id,
        delta.category,
        delta.product_id,
        delta.cart_change,
        delta.purchase_micros,
        delta.engagement,
        delta.ops,
        delta.marker,
    )


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


def fire_state(decision: Mapping[str, Any]) -> str:
    """The compact fire state the rules engine needs (cooldown, cap, redelivery) of a decision."""
    return f"{decision['fired_at_ms']}:{decision['fire_count']}:{decision['event_id']}"


def parse_fire_state(text: str) -> dict[str, Any]:
    fired_at_ms, fire_count, event_id = text.split(":", 2)
    return {"fired_at_ms": int(fired_at_ms), "fire_count": int(fire_count), "event_id": event_id}


def parse_report(profile_id: str, entry: list[Any]) -> PartReport:
    """Decode one update.lua report entry (see the script's header)."""
    _, flat_fields, anonymous_ids, sessions, owner, flat_fires, flat_products = entry
    fields = {_decode(flat_fields[i]): _decode(flat_fields[i + 1]) for i in range(0, len(flat_fields), 2)}
    intervals = [_interval(_decode(member)) for member in sessions]
    if "ss" in fields:
        intervals.append((int(fields["ss"]), int(fields["se"])))
    products = {
        _decode(flat_products[i]): int(float(flat_products[i + 1])) for i in range(0, len(flat_products), 2)
    }
    decisions = {
        _decode(flat_fires[i]): parse_fire_state(_decode(flat_fires[i + 1]))
        for i in range(0, len(flat_fires), 2)
    }
    part = ProfilePart(
        profile_id, fields, frozenset(_decode(a) for a in anonymous_ids), products, sorted(intervals)
    )
    owned = owner and "user_id" not in fields  # a user's own profile is nobody's part
    return PartReport(part, _decode(owner[0]) if owned else None, decisions)


class People(NamedTuple):
    """Ids resolved to people: id -> person, person -> merged profile, person -> all its ids."""

    person_of: dict[str, str]
    documents: dict[str, dict[str, Any] | None]
    members: dict[str, list[str]]


def identity_links(deltas: Sequence[ProfileDelta]) -> dict[str, tuple[int, str]]:
    """anonymous_id -> earliest (event time ms, user_id) link among ``deltas``."""
    links: dict[str, tuple[int, str]] = {}
    for delta in deltas:
        if delta.anonymous_id:
            link = (delta.timestamp_ms, delta.user_id)
            current = links.get(delta.anonymous_id)
            if current is None or link < current:
                links[delta.anonymous_id] = link
    return links


def link_command(anonymous_id: str, link: tuple[int, str]) -> tuple[str | int, ...]:
    """Record a link; ``LT`` keeps each user's earliest time, so the write is idempotent."""
    return ("ZADD", owner_key(anonymous_id), "LT", link[0], link[1])


class RedisProfileStore:
    """Profiles in Redis; every write is one atomic script call per profile."""

    def __init__(
        self,
        client: RedisClient,
        *,
        dedupe_window_seconds: int,
        session_gap_ms: int,
        intent_model: Callable[[], IntentModel | None] = lambda: None,
        traits: Callable[[], TraitSet] = lambda: BUILTIN_TRAITS,
    ) -> None:
        self._client = client
        self.traits = traits  # the trait fields profiles show (streaming/traits/follower.py)
        self._intent_model = intent_model
        self._dedupe_window_seconds = dedupe_window_seconds
        self._session_gap_ms = session_gap_ms
        self._cluster = isinstance(client, redis.RedisCluster)
        self._slots_stale = False
        self._functions_loaded = False
        self._read_decisions = None if self._cluster else client.register_script(_DECISIONS_SCRIPT)
        self._record = None if self._cluster else client.register_script(_RECORD_SCRIPT)

    @property
    def client(self) -> RedisClient:
        return self._client

    @property
    def is_cluster(self) -> bool:
        return self._cluster

    @property
    def session_gap_ms(self) -> int:
        return self._session_gap_ms

    def _script_calls(
        self,
        deltas: Sequence[ProfileDelta],
        now_ms: int,
        watch: Collection[str] = (),
        with_products: bool = False,
        *,
        declare_keys: bool = True,
        plan: Prefilter | None = None,
        decide_only: bool = False,
        rules_now_ms: int | None = None,
    ) -> list[ScriptCall]:
        """The script calls applying ``deltas``, SCRIPT_CHUNK deltas each.

        Profiles in ``watch`` are reported on by the call that updates them last. With a rules
        ``plan`` each triggering event is prefiltered right after its update, fire states
        judged at ``rules_now_ms``; ``decide_only`` calls apply nothing (see update.lua).
        Without ``declare_keys`` (a cluster call spanning slots) the keys travel in ARGV[8], not KEYS.
        """
        calls = []
        model = self._intent_model()
        model_argument = model.script_argument() if model is not None else b""
        for start in range(0, len(deltas), SCRIPT_CHUNK):
            ids: list[str] = []
            index: dict[str, int] = {}
            rows = []
            for delta in deltas[start : start + SCRIPT_CHUNK]:
                key_index = index.get(delta.profile_id)
                if key_index is None:
                    ids.append(delta.profile_id)
                    key_index = index[delta.profile_id] = len(ids)
                rows.append(delta_row(key_index, delta))
            args: tuple[Any, ...] = (
                self._dedupe_window_seconds,
                now_ms,
                self._session_gap_ms,
                _pack(rows),
                model_argument,
            )
            calls.append(ScriptCall([fields_key(pid) for pid in ids], args, ids))
        last_call = {pid: call for call in calls for pid in call.ids if pid in watch} if watch else {}
        for call in calls:
            indices = [i for i, pid in enumerate(call.ids, 1) if last_call.get(pid) is call]
            if not (indices or plan or not declare_keys):
                continue
            reporting = (_pack(indices), "1" if with_products else "0") if indices else ("", "0")
            cluster_keys = _pack(call.keys) if not declare_keys else ""
            rules = (plan.argument(), "1" if decide_only else "0", rules_now_ms or now_ms) if plan else ("",)
            call.args = (*call.args, *reporting, cluster_keys, *rules)
            if not declare_keys:
                call.keys = []
        return calls

    def apply_deltas(self, deltas: Sequence[ProfileDelta]) -> int:
        """Apply deltas in pipelined script calls and wait; return how many were new."""
        if not deltas:
            return 0
        if not self._functions_loaded:
            self.load_functions()
        if self._cluster:  # script calls go to the node of their profiles: the writer routes them
            writer = StreamingWriter(self)
            writer.send(deltas)
            return writer.confirm()
        try:
            return self._apply_pipelined(deltas)
        except redis.ResponseError as exc:
            if not function_missing(exc):
                raise
            self.load_functions()  # Redis restarted without its functions; every call is idempotent
            return self._apply_pipelined(deltas)

    def _apply_pipelined(self, deltas: Sequence[ProfileDelta]) -> int:
        pipe = self._client.pipeline(transaction=False)
        links = identity_links(deltas)
        for anonymous_id, link in links.items():
            pipe.execute_command(*link_command(anonymous_id, link))
        for call in self._script_calls(deltas, int(time.time() * 1000)):
            pipe.fcall(UPDATE_FUNCTION, len(call.keys), *call.keys, *call.args)
        return sum(pipe.execute()[len(links) :])

    def backfill(self, jobs: Sequence[tuple[str, Any]]) -> list[int]:
        """Run ``pulse_backfill`` for (profile id, job) pairs, pipelined; ops applied each (-1: no profile).

        See update.lua and streaming/traits/backfill.py.
        """
        if not self._functions_loaded:
            self.load_functions()

        def run() -> list[int]:
            pipe = self._client.pipeline(transaction=False)
            for profile_id, job in jobs:
                pipe.fcall(BACKFILL_FUNCTION, 1, fields_key(profile_id), _pack(job))
            return [int(x) for x in pipe.execute()]

        try:
            return run()
        except redis.ResponseError as exc:
            if not function_missing(exc):
                raise
            self.load_functions()
            return run()

    def load_functions(self) -> None:
        """Load the update function library (on every master of a cluster); idempotent."""
        try:
            self._client.function_load(_UPDATE_LIBRARY, replace=True)
        except redis.ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise RedisTooOld(
                    f"Pulse needs Redis or Valkey 7.0 or newer (profile updates are a Redis function): {exc}"
                ) from exc
            raise
        self._functions_loaded = True

    def writer(self) -> StreamingWriter:
        """A writer that sends script calls at once and confirms them later (see StreamingWriter)."""
        self.load_functions()  # on every master of a cluster
        return StreamingWriter(self)

    def by_node(
        self, items: Sequence[T], profile_id: Callable[[T], str]
    ) -> list[tuple[ClusterNode | None, Sequence[T]]]:
        """``items`` grouped by the master holding their profile's slot; one group (None) on one server."""
        if not self._cluster:
            return [(None, items)]
        nodes = self._client.nodes_manager
        if self._slots_stale:
            self._refresh_slots()
        groups: dict[str, tuple[ClusterNode, list[T]]] = {}
        node_of: dict[str, ClusterNode] = {}
        try:
            for item in items:
                pid = profile_id(item)
                node = node_of.get(pid)
                if node is None:
                    node = node_of[pid] = nodes.get_node_from_slot(profile_slot(pid))
                group = groups.get(node.name)
                if group is None:
                    group = groups[node.name] = (node, [])
                group[1].append(item)
        except redis.exceptions.SlotNotCoveredError as exc:
            self._slots_stale = True
            raise ClusterTopologyChanged(f"a slot has no master: {exc}") from exc
        return list(groups.values())

    def slots_changed(self) -> None:
        """Re-read the cluster's slot map before the next routed write."""
        self._slots_stale = self._cluster

    def _refresh_slots(self) -> None:
        try:
            self._client.nodes_manager.initialize()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise ClusterTopologyChanged(f"cannot read the cluster's slot map: {exc}") from exc
        self._slots_stale = False

    def run_call(self, call: ScriptCall, node: ClusterNode | None) -> Any:
        """Run one update call synchronously (loading the function when the server lost it)."""
        client = self._client if node is None else self._client.get_redis_connection(node)
        try:
            return client.fcall(UPDATE_FUNCTION, len(call.keys), *call.keys, *call.args)
        except redis.ResponseError as exc:
            if not function_missing(exc):
                raise
            self.load_functions()
            return client.fcall(UPDATE_FUNCTION, len(call.keys), *call.keys, *call.args)

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
            people[pid] = _decode(owner[0]) if owner and not is_user else pid
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
            decoded = _decode_map(fields)
            intervals = [_interval(_decode(member)) for member in sessions]
            if "ss" in decoded:
                intervals.append((int(decoded["ss"]), int(decoded["se"])))
            parts[profile_id] = ProfilePart(
                profile_id,
                decoded,
                frozenset(_decode(a) for a in anonymous_ids),
                {_decode(p): int(score) for p, score in products},
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

    def _person_decision_parts(self, profile_id: str) -> dict[str, dict[str, Any]]:
        """Decision parts of the id, of its owner (when another user owns it) and of that person's anonymous
        ids."""
        if self._read_decisions is not None:
            return {
                _decode(reply[0]): _decision_part(*reply[1:])
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
            pid: {_decode(k): json.loads(v) for k, v in raw.items()}
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
            self._record(keys=keys, args=[_pack(rows), _pack(segment_lists), *encoded])
            return
        pipe = self._client.pipeline(transaction=False)
        for decision, document in zip(decisions, encoded, strict=True):
            decisions_key, fires_key = decision_keys(decision["profile_id"])
            pipe.hset(decisions_key, decision["key"], document)
            pipe.hset(fires_key, decision["key"], fire_state(decision))
        for person, names in segments.items():
            pipe.hset(profile_keys(person).fields, "segments", ",".join(sorted(names)))
        pipe.execute()

    def forget(self, profile_id: str) -> bool:
        """Forget the person: every part, its decisions and identity links; queue ids for the batch purge.

        ``event_id`` markers stay until they expire, so a replay cannot resurrect the user.
        """
        person = self.resolve_people([profile_id])[profile_id]
        anonymous_ids = [_decode(a) for a in self._client.smembers(profile_keys(person).anonymous_ids)]
        owners = self.resolve_people(anonymous_ids) if anonymous_ids else {}
        ids = [person, *(a for a in anonymous_ids if owners.get(a) == person)]
        if profile_id not in ids:
            ids.append(profile_id)
        pipe = self._client.pipeline(transaction=False)
        for pid in ids:
            keys = profile_keys(pid)
            # One DEL of one slot's keys (a cluster pipeline's delete() takes a single key).
            pipe.execute_command("DEL", *keys.state_keys, keys.decisions, keys.fires, keys.owner)
        for anonymous_id in anonymous_ids:
            pipe.zrem(owner_key(anonymous_id), person)
        now = int(time.time())
        for pid in ids:
            pipe.xadd(FORGET_STREAM, {"profile_id": pid, "requested_at": now})
        deleted = sum(pipe.execute()[: len(ids)])
        logger.info("forgot a person: %d ids, %d keys deleted", len(ids), deleted)
        return bool(deleted)


class RedisTooOld(RuntimeError):
    """The server has no FUNCTION command (Redis 6 or older)."""


def function_missing(exc: redis.ResponseError) -> bool:
    """The server does not have the update function (restarted without persistence, flushed)."""
    return "Function not found" in str(exc)


def topology_error(exc: BaseException) -> bool:
    """A reply saying the slot map is out of date: MOVED, ASK, TRYAGAIN, CLUSTERDOWN.

    A script call whose keys are not declared (a cluster call spanning slots) gets no MOVED
    but an error from inside the script when it touches a slot its node no longer serves.
    The script touches a delta's marker first, so the deltas before it were applied whole
    and the rest not at all.
    """
    if isinstance(
        exc, (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
    ):
        return True  # MovedError is an AskError
    text = str(exc) if isinstance(exc, redis.ResponseError) else ""
    return "non local key" in text or "cluster is down" in text


def _interval(member: str) -> tuple[int, int]:
    start, _, end = member.partition(":")
    return int(start), int(end)


_pack = msgspec.msgpack.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
        "owner": _decode(owner) if owner and not user_id else None,  # a user's own profile is nobody's part
        "known": count is not None,
        "user_id": _decode(user_id) if user_id else None,
        "intent_score": _decode(intent) if intent else None,
        "segments": _decode(segments) if segments else "",
        "anonymous_ids": {_decode(a) for a in anonymous},
        "decisions": {_decode(k): _json_decode(v) for k, v in pairs},
    }


def _decode_map(mapping: dict[Any, Any]) -> dict[str, str]:
    return {_decode(k): _decode(v) for k, v in mapping.items()}


class StreamingWriter:
    """Sends script calls without waiting for replies; ``confirm()`` reads them all.

    Redis applies a batch while the caller prepares the next one, instead of the two taking
    turns. Nothing counts as written before ``confirm()`` returns, and every call is
    idempotent, so a crash in between only means the same deltas are sent again.

    On a Redis Cluster each master gets its own connection and only the calls for the
    profiles (and identity links) in its slots. A redirection (MOVED, ASK...) is not
    followed: ``confirm()`` raises ``ClusterTopologyChanged``, the slot map is re-read and
    the caller sends the batch again.
    """

    def __init__(self, store: RedisProfileStore) -> None:
        self._store = store
        # node name (None on one server) -> (its connection pool, the connection taken from it)
        self._connections: dict[str | None, tuple[Any, Any]] = {}
        # (connection, update call or None for an identity link, node, decide call), in the order sent.
        self._sent: list[tuple[Any, ScriptCall | None, ClusterNode | None, bool]] = []
        self.reports: dict[str, PartReport] = {}
        #: The rules prefilter's findings since the last ``take_prefiltered()``.
        self.prefiltered = Prefiltered()
        #: The time (ms) the first calls since the last take_prefiltered were sent with.
        self.first_sent_ms: int | None = None

    def send(
        self,
        deltas: Sequence[ProfileDelta],
        watch: Collection[str] = (),
        with_products: bool = False,
        plan: Prefilter | None = None,
    ) -> None:
        """Queue the calls for ``deltas`` on the connection(s) (no reply awaited).

        Profiles in ``watch`` come back in ``reports`` after ``confirm()``. With a rules
        ``plan`` each triggering event is prefiltered right after its update: its candidates
        land in ``prefiltered.candidates`` (and, for a person other than its own profile, the
        parts in ``prefiltered.stitched``); only watched profiles with an uncertain candidate
        are reported.
        """
        if not deltas:
            return
        try:
            self._send(deltas, watch, with_products, plan, decide_only=False)
        except redis.ConnectionError:
            self._store.slots_changed()  # a master may have failed over
            raise

    def decide(self, deltas: Sequence[ProfileDelta], plan: Prefilter, with_products: bool = False) -> None:
        """Queue decide calls: the rules prefilter on these deltas' events, after every update sent.

        Nothing is applied. After ``confirm()``, ``prefiltered.decided`` names per event the
        rules that may fire, and ``reports`` holds the profiles Python must evaluate.
        """
        if not deltas:
            return
        try:
            self._send(deltas, {delta.profile_id for delta in deltas}, with_products, plan, decide_only=True)
        except redis.ConnectionError:
            self._store.slots_changed()
            raise

    def _send(
        self,
        deltas: Sequence[ProfileDelta],
        watch: Collection[str],
        with_products: bool,
        plan: Prefilter | None,
        *,
        decide_only: bool,
    ) -> None:
        store = self._store
        sent = self._sent
        # Links first, so a report in this batch already sees them (each goes to its own
        # anonymous id's node, the node that reports on that id). A decide call has none.
        links = [] if decide_only else list(identity_links(deltas).items())
        for node, group in store.by_node(links, lambda link: link[0]):
            connection = self._connection(node)
            for anonymous_id, link in group:
                connection.send_command(*link_command(anonymous_id, link))
                sent.append((connection, None, node, False))
        now_ms = int(time.time() * 1000)
        if self.first_sent_ms is None:
            self.first_sent_ms = now_ms
        for node, group in store.by_node(deltas, lambda delta: delta.profile_id):
            connection = self._connection(node)
            # Fire states are judged at the time Python's evaluation uses: cooldowns agree exactly.
            calls = store._script_calls(
                group,
                now_ms,
                watch,
                with_products,
                declare_keys=node is None,
                plan=plan,
                decide_only=decide_only,
                rules_now_ms=self.first_sent_ms,
            )
            for call in calls:
                connection.send_command("FCALL", UPDATE_FUNCTION, len(call.keys), *call.keys, *call.args)
                sent.append((connection, call, node, decide_only))

    def _connection(self, node: ClusterNode | None) -> Any:
        key = None if node is None else node.name
        entry = self._connections.get(key)
        if entry is None:
            client = self._store.client if node is None else self._store.client.get_redis_connection(node)
            pool = client.connection_pool
            entry = self._connections[key] = (pool, pool.get_connection())
        return entry[1]

    def confirm(self) -> int:
        """Read every reply; return how many deltas were new. Raises on any Redis error."""
        if not self._connections:
            return 0
        applied = 0
        try:
            for connection, call, node, decide_only in self._sent:
                if call is None:  # an identity link
                    connection.read_response()
                    continue
                try:
                    reply = connection.read_response()
                except redis.ResponseError as exc:
                    if not function_missing(exc):
                        raise
                    # Redis lost its functions (restart without persistence): load, apply synchronously.
                    reply = self._store.run_call(call, node)
                if isinstance(reply, list):
                    count, entries, *found = reply
                    for entry in entries:
                        profile_id = call.ids[entry[0] - 1]
                        self.reports[profile_id] = parse_report(profile_id, entry)
                    if found:
                        self.prefiltered.add(found[0], found[1], decided=decide_only)
                    reply = count
                applied += reply
        except BaseException as exc:
            self._disconnect()
            if isinstance(exc, redis.ConnectionError):
                self._store.slots_changed()  # a master may have failed over
            elif self._store.is_cluster and topology_error(exc):
                self._store.slots_changed()
                raise ClusterTopologyChanged(
                    f"the cluster's slots moved under a batch; send it again: {exc}"
                ) from exc
            raise
        finally:
            self._release()
        return applied

    def take_reports(self) -> dict[str, PartReport]:
        """Reports collected by ``confirm()`` since the last call."""
        reports, self.reports = self.reports, {}
        return reports

    def take_prefiltered(self) -> tuple[Prefiltered, int | None]:
        """(the prefilter's findings, first send time ms) since the last call."""
        taken = (self.prefiltered, self.first_sent_ms)
        self.prefiltered, self.first_sent_ms = Prefiltered(), None
        return taken

    def abort(self) -> None:
        """Forget unconfirmed calls (their deltas will be redelivered)."""
        self.reports = {}
        self.prefiltered, self.first_sent_ms = Prefiltered(), None
        if self._connections:
            self._disconnect()
            self._release()

    def _disconnect(self) -> None:
        for _, connection in self._connections.values():
            connection.disconnect()

    def _release(self) -> None:
        for pool, connection in self._connections.values():
            pool.release(connection)
        self._connections = {}
        self._sent = []
