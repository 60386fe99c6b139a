"""Streaming writes: script calls sent at once, their replies confirmed later (one connection per master)."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import ClusterNode

from streaming.profiles.cluster import ClusterTopologyChanged, topology_error
from streaming.profiles.codec import PartReport, ScriptCall, identity_links, link_command, parse_report
from streaming.profiles.delta import ProfileDelta
from streaming.profiles.functions import UPDATE_FUNCTION, function_missing, mirror_missing
from streaming.rules.prefilter import Prefilter, Prefiltered

if TYPE_CHECKING:
    from streaming.profiles.store import RedisProfileStore


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
        # (connection, update call or the command of an identity link, node, decide call), in the order sent.
        self._sent: list[tuple[Any, ScriptCall | tuple[Any, ...], ClusterNode | None, bool]] = []
        self.reports: dict[str, PartReport] = {}
        #: Events skipped as forgotten (update.lua) since the last ``take_skipped_forgotten()``.
        self.skipped_forgotten = 0
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
        # anonymous id's node, the node that reports on that id). A decide call has none. On
        # one server the first update call records them itself, before its deltas.
        links = [] if decide_only else identity_links(deltas)
        in_call = links if not store.is_cluster else []
        for node, group in store.by_node([] if in_call else links, lambda link: link[0]):
            connection = self._connection(node)
            for anonymous_id, link in group:
                command = link_command(anonymous_id, link)
                connection.send_command(*command)
                sent.append((connection, command, node, False))
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
                links=in_call,
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
                if not isinstance(call, ScriptCall):  # an identity link
                    try:
                        connection.read_response()
                    except redis.ResponseError as exc:
                        if not function_missing(exc):
                            raise
                        self._store.run_command(call, node)
                    continue
                try:
                    reply = connection.read_response()
                except redis.ResponseError as exc:
                    if function_missing(exc):
                        # Redis lost its functions (restart without persistence): load, apply synchronously.
                        reply = self._store.run_call(call, node)
                    elif mirror_missing(exc):
                        # Redis was wiped: the call applied nothing; restore the forget mirror first.
                        self._store.restore_suppressions()
                        reply = self._store.run_call(call, node)
                    else:
                        raise
                if isinstance(reply, list):
                    count, entries, *found = reply
                    for entry in entries:
                        profile_id = call.ids[entry[0] - 1]
                        self.reports[profile_id] = parse_report(profile_id, entry)
                    if found:
                        self.prefiltered.add(found[0], found[1], decided=decide_only)
                        self.skipped_forgotten += int(found[2])
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

    def take_skipped_forgotten(self) -> int:
        """Events skipped as forgotten confirmed since the last call."""
        skipped, self.skipped_forgotten = self.skipped_forgotten, 0
        return skipped

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
