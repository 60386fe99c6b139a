"""Profile store in Redis (I/O): apply deltas idempotently, read and forget profiles."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import redis
from redis.cluster import ClusterNode

from core.forget_record import ForgetRecord
from core.redis_client import RedisClient
from streaming.profiles.cluster import ClusterRouting
from streaming.profiles.codec import (
    ScriptCall,
    decide_row,
    decode,
    delta_row,
    identity_links,
    links_argument,
    pack,
)
from streaming.profiles.decision_store import DecisionStore
from streaming.profiles.delta import ProfileDelta
from streaming.profiles.functions import (
    BACKFILL_FUNCTION,
    SCRIPT_CHUNK,
    SUPPRESS_FUNCTION,
    UPDATE_FUNCTION,
    function_missing,
    load_library,
    mirror_missing,
)
from streaming.profiles.identity_admin import IdentityAdmin
from streaming.profiles.identity_graph import DEFAULT_MAX_IDS
from streaming.profiles.intent import IntentModel
from streaming.profiles.keys import (
    FORGET_STREAM,
    REFUSED_LINKS,
    fields_key,
    forgotten_key,
    owner_key,
    profile_keys,
    refused_field,
)
from streaming.profiles.reader import ProfileReader
from streaming.profiles.suppression import restore_mirror
from streaming.profiles.writer import StreamingWriter
from streaming.rules.prefilter import Prefilter
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

logger = logging.getLogger(__name__)


class Forgotten(NamedTuple):
    """What one forget did: the person's ids (suppressed), the forget time, the Redis keys deleted."""

    ids: list[str]
    at_ms: int
    keys_deleted: int


class RedisProfileStore(ProfileReader, IdentityAdmin, DecisionStore, ClusterRouting):
    """Profiles in Redis; every write is one atomic script call per profile.

    Reads come from ProfileReader, identity records and unlinks from IdentityAdmin, decisions
    from DecisionStore, cluster routing from ClusterRouting.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        dedupe_window_seconds: int,
        session_gap_ms: int,
        intent_model: Callable[[], IntentModel | None] = lambda: None,
        traits: Callable[[], TraitSet] = lambda: BUILTIN_TRAITS,
        forget_record: ForgetRecord | None = None,
        identity_max_ids: int = DEFAULT_MAX_IDS,
    ) -> None:
        """``forget_record``: the durable forget record; with it ``forget`` writes there first, and
        on one server update calls refuse to run on a Redis that lost the forget mirror until it
        is restored from the record (on a cluster the profile app checks the mirror every second).
        """
        self._client = client
        self.forget_record = forget_record
        self.identity_max_ids = identity_max_ids  # user ids per person (streaming/profiles/identity_graph.py)
        self.traits = traits  # the trait fields profiles show (streaming/traits/follower.py)
        self._intent_model = intent_model
        self._dedupe_window_seconds = dedupe_window_seconds
        self._session_gap_ms = session_gap_ms
        self._cluster = isinstance(client, redis.RedisCluster)
        self._require_mirror = forget_record is not None and not self._cluster
        self._slots_stale = False
        self._functions_loaded = False
        #: Events update.lua skipped as forgotten, in calls this store ran itself (not its writers').
        self.skipped_forgotten = 0
        self._register_decision_scripts()

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
        links: Sequence[tuple[str, tuple[int, str]]] = (),
    ) -> list[ScriptCall]:
        """The script calls applying ``deltas``, SCRIPT_CHUNK deltas each.

        Profiles in ``watch`` are reported on by the call that updates them last. With a rules
        ``plan`` each triggering event is prefiltered right after its update, fire states
        judged at ``rules_now_ms``; ``decide_only`` calls apply nothing (see update.lua).
        Without ``declare_keys`` (a cluster call spanning slots) the keys travel in ARGV[8], not KEYS.
        ``links`` (``identity_links``, one server only) are recorded by the first call before its
        deltas (ARGV[13]), instead of a pulse_link call each.
        """
        calls = []
        row_of = decide_row if decide_only else delta_row
        model = self._intent_model()
        model_argument = model.script_argument() if model is not None else b""
        for start in range(0, len(deltas), SCRIPT_CHUNK):
            ids: list[str] = []
            index: dict[str, int] = {}
            rows: list[Any] = []  # every delta's values, one flat array (see update.lua's ARGV[4])
            for delta in deltas[start : start + SCRIPT_CHUNK]:
                key_index = index.get(delta.profile_id)
                if key_index is None:
                    ids.append(delta.profile_id)
                    key_index = index[delta.profile_id] = len(ids)
                rows += row_of(key_index, delta)
            args: tuple[Any, ...] = (
                self._dedupe_window_seconds,
                now_ms,
                self._session_gap_ms,
                pack(rows),
                model_argument,
            )
            calls.append(ScriptCall([fields_key(pid) for pid in ids], args, ids))
        last_call = {pid: call for call in calls for pid in call.ids if pid in watch} if watch else {}
        for number, call in enumerate(calls):
            indices = [i for i, pid in enumerate(call.ids, 1) if last_call.get(pid) is call]
            with_links = bool(links) and number == 0
            if not (indices or plan or not declare_keys or self._require_mirror or with_links):
                continue
            reporting = (pack(indices), "1" if with_products else "0") if indices else ("", "0")
            cluster_keys = pack(call.keys) if not declare_keys else ""
            rules = (plan.argument(), "1" if decide_only else "0", rules_now_ms or now_ms) if plan else ("",)
            if self._require_mirror or with_links:  # ARGV[12]; ARGV 9-11 padded ('' = no rules, now)
                rules = (*rules, "", "")[:3] + ("1" if self._require_mirror else "",)
            if with_links:
                rules = (*rules, links_argument(links))
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
            if function_missing(exc):
                self.load_functions()  # Redis restarted without its functions; every call is idempotent
            elif mirror_missing(exc):
                self.restore_suppressions()  # Redis was wiped; the refused calls applied nothing
            else:
                raise
            return self._apply_pipelined(deltas)

    def _apply_pipelined(self, deltas: Sequence[ProfileDelta]) -> int:
        pipe = self._client.pipeline(transaction=False)
        links = identity_links(deltas)  # recorded by the first call (one server: not a cluster here)
        for call in self._script_calls(deltas, int(time.time() * 1000), links=links):
            pipe.fcall(UPDATE_FUNCTION, len(call.keys), *call.keys, *call.args)
        applied = 0
        for reply in pipe.execute():
            if isinstance(reply, list):  # {applied, reports, candidates, stitched, skipped forgotten}
                self.skipped_forgotten += int(reply[4])
                reply = reply[0]
            applied += reply
        return applied

    def backfill(self, jobs: Sequence[tuple[str, Any]]) -> list[int]:
        """Run ``pulse_backfill`` for (profile id, job) pairs, pipelined; ops applied each (-1: no profile).

        See update.lua and streaming/traits/backfill.py.
        """
        if not self._functions_loaded:
            self.load_functions()

        def run() -> list[int]:
            pipe = self._client.pipeline(transaction=False)
            for profile_id, job in jobs:
                pipe.fcall(BACKFILL_FUNCTION, 1, fields_key(profile_id), pack(job))
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
        load_library(self._client)
        self._functions_loaded = True

    def writer(self) -> StreamingWriter:
        """A writer that sends script calls at once and confirms them later (see StreamingWriter)."""
        self.load_functions()  # on every master of a cluster
        return StreamingWriter(self)

    def restore_suppressions(self) -> None:
        """Copy the durable forget record back into Redis (after a wipe); see profiles/suppression.py."""
        if self.forget_record is None:
            raise RuntimeError("the forget mirror is gone from Redis and this store has no forget record")
        restore_mirror(self._client, self.forget_record)

    def run_command(self, command: tuple[Any, ...], node: ClusterNode | None) -> Any:
        """Run one identity link's function call synchronously, loading the library first."""
        client = self._client if node is None else self._client.get_redis_connection(node)
        self.load_functions()
        return client.execute_command(*command)

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

    def forget(self, profile_id: str, at_ms: int | None = None) -> bool:
        """Forget the person of ``profile_id`` (see ``forget_person``); True when it had a profile."""
        return self.forget_person(profile_id, at_ms).keys_deleted > 0

    def forget_person(
        self, profile_id: str, at_ms: int | None = None, purpose: str | None = None
    ) -> Forgotten:
        """Forget the person of ``profile_id`` at ``at_ms`` (default now); with ``purpose``
        (``personalization``, a withdrawn consent) the forget record keeps the archive's rows.

        Every id of the person (its user ids, linked ones included, and the anonymous ids they own)
        is suppressed: first in
        the durable forget record (when the store has one, fsynced), then in Redis, where
        update.lua skips their events with an event time at or before ``at_ms`` from then on; only
        then are its parts, decisions and identity links deleted. What was deleted is recorded too.
        Dedupe markers stay until they expire (they hold event ids only).
        """
        people = self.read_people([profile_id])
        person = people.person_of[profile_id]
        ids = list(people.members[person])  # every user id linked into the person, and its anonymous ids
        users = [pid for pid in ids if pid == person or self._client.hexists(fields_key(pid), "user_id")]
        seen_with = {
            u: [decode(a) for a in self._client.smembers(profile_keys(u).anonymous_ids)] for u in users
        }
        if profile_id not in ids:
            ids.append(profile_id)
        at_ms = int(time.time() * 1000) if at_ms is None else at_ms
        if self.forget_record is not None:
            self.forget_record.append_forget(profile_id, ids, at_ms, purpose)
        if not self._functions_loaded:
            self.load_functions()
        named = set(ids)
        refused = sorted({refused_field(x.a, x.b) for x in people.links if {x.a, x.b} & named})
        try:
            deleted = self._forget_in_redis(ids, seen_with, refused, at_ms)
        except redis.ResponseError as exc:
            if not function_missing(exc):
                raise
            self.load_functions()
            deleted = self._forget_in_redis(ids, seen_with, refused, at_ms)
        if self.forget_record is not None:
            self.forget_record.append_erasure(
                {
                    "store": "redis",
                    "at_ms": at_ms,
                    "requested": profile_id,
                    "ids": ids,
                    "keys_deleted": deleted,
                }
            )
        logger.info("forgot a person: %d ids, %d keys deleted", len(ids), deleted)
        return Forgotten(ids, at_ms, deleted)

    def _forget_in_redis(
        self, ids: list[str], seen_with: dict[str, list[str]], refused: list[str], at_ms: int
    ) -> int:
        pipe = self._client.pipeline(transaction=False)
        for pid in ids:  # suppressions before deletes: no event applied in between survives
            pipe.fcall(SUPPRESS_FUNCTION, 1, forgotten_key(pid), at_ms)
        for pid in ids:
            keys = profile_keys(pid)
            # One DEL of one slot's keys (a cluster pipeline's delete() takes a single key).
            pipe.execute_command("DEL", *keys.state_keys, keys.decisions, keys.fires, keys.owner, keys.links)
        for user, anonymous_ids in seen_with.items():
            for anonymous_id in anonymous_ids:
                pipe.zrem(owner_key(anonymous_id), user)
        if refused:  # the person's refused links name its ids: they go with it
            pipe.hdel(REFUSED_LINKS, *refused)
        for pid in ids:
            pipe.xadd(
                FORGET_STREAM, {"profile_id": pid, "requested_at": at_ms // 1000, "forgotten_at_ms": at_ms}
            )
        return sum(pipe.execute()[len(ids) : 2 * len(ids)])
