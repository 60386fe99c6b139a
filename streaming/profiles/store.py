"""Profile store in Redis (I/O): apply deltas idempotently, read and forget profiles."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode

from core.redis_client import RedisClient
from streaming.profiles.cluster import ClusterRouting
from streaming.profiles.codec import ScriptCall, decode, delta_row, identity_links, link_command, pack
from streaming.profiles.decision_store import DecisionStore
from streaming.profiles.delta import ProfileDelta
from streaming.profiles.functions import (
    BACKFILL_FUNCTION,
    SCRIPT_CHUNK,
    UPDATE_FUNCTION,
    function_missing,
    load_library,
)
from streaming.profiles.identity_admin import IdentityAdmin
from streaming.profiles.identity_graph import DEFAULT_MAX_IDS
from streaming.profiles.intent import IntentModel
from streaming.profiles.keys import FORGET_STREAM, fields_key, owner_key, profile_keys
from streaming.profiles.reader import ProfileReader
from streaming.profiles.writer import StreamingWriter
from streaming.rules.prefilter import Prefilter
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

logger = logging.getLogger(__name__)


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
        identity_max_ids: int = DEFAULT_MAX_IDS,
    ) -> None:
        self._client = client
        self.identity_max_ids = identity_max_ids  # user ids per person (streaming/profiles/identity_graph.py)
        self.traits = traits  # the trait fields profiles show (streaming/traits/follower.py)
        self._intent_model = intent_model
        self._dedupe_window_seconds = dedupe_window_seconds
        self._session_gap_ms = session_gap_ms
        self._cluster = isinstance(client, redis.RedisCluster)
        self._slots_stale = False
        self._functions_loaded = False
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
                pack(rows),
                model_argument,
            )
            calls.append(ScriptCall([fields_key(pid) for pid in ids], args, ids))
        last_call = {pid: call for call in calls for pid in call.ids if pid in watch} if watch else {}
        for call in calls:
            indices = [i for i, pid in enumerate(call.ids, 1) if last_call.get(pid) is call]
            if not (indices or plan or not declare_keys):
                continue
            reporting = (pack(indices), "1" if with_products else "0") if indices else ("", "0")
            cluster_keys = pack(call.keys) if not declare_keys else ""
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

    def run_command(self, command: tuple[Any, ...], node: ClusterNode | None) -> Any:
        """Run one command of the library synchronously (loading it when the server lost it)."""
        client = self._client if node is None else self._client.get_redis_connection(node)
        self.load_functions()
        return client.execute_command(*command)

    def forget(self, profile_id: str) -> bool:
        """Forget the person: every part, its decisions and identity links; queue ids for the batch purge.

        ``event_id`` markers stay until they expire, so a replay cannot resurrect the user.
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
        pipe = self._client.pipeline(transaction=False)
        for pid in ids:
            keys = profile_keys(pid)
            # One DEL of one slot's keys (a cluster pipeline's delete() takes a single key).
            pipe.execute_command("DEL", *keys.state_keys, keys.decisions, keys.fires, keys.owner, keys.links)
        for user, anonymous_ids in seen_with.items():
            for anonymous_id in anonymous_ids:
                pipe.zrem(owner_key(anonymous_id), user)
        now = int(time.time())
        for pid in ids:
            pipe.xadd(FORGET_STREAM, {"profile_id": pid, "requested_at": now})
        deleted = sum(pipe.execute()[: len(ids)])
        logger.info("forgot a person: %d ids, %d keys deleted", len(ids), deleted)
        return bool(deleted)
