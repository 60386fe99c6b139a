"""Profile store in Redis (I/O): apply deltas idempotently, read and forget profiles."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import msgspec
import redis

from streaming.profiles.delta import ProfileDelta
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile
from streaming.profiles.keys import FORGET_STREAM, fields_key, profile_keys

logger = logging.getLogger(__name__)

_UPDATE_SCRIPT = resources.files("streaming.profiles").joinpath("update.lua").read_text()


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
    )


class RedisProfileStore:
    """Profiles in Redis; every write is one atomic script call per profile."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        dedupe_window_seconds: int,
        session_gap_ms: int,
    ) -> None:
        self._client = client
        self._dedupe_window_seconds = dedupe_window_seconds
        self._session_gap_ms = session_gap_ms
        self._update = client.register_script(_UPDATE_SCRIPT)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def _script_calls(self, deltas: Sequence[ProfileDelta], now_ms: int) -> list[tuple[list[str], tuple[Any, ...]]]:
        """(KEYS, ARGV) of the script calls applying ``deltas``, SCRIPT_CHUNK deltas each."""
        calls = []
        for start in range(0, len(deltas), SCRIPT_CHUNK):
            keys: list[str] = []
            index: dict[str, int] = {}
            rows = []
            for delta in deltas[start : start + SCRIPT_CHUNK]:
                key_index = index.get(delta.profile_id)
                if key_index is None:
                    keys.append(fields_key(delta.profile_id))
                    key_index = index[delta.profile_id] = len(keys)
                rows.append(delta_row(key_index, delta))
            calls.append((keys, (self._dedupe_window_seconds, now_ms, self._session_gap_ms, _pack(rows))))
        return calls

    def apply_deltas(self, deltas: Sequence[ProfileDelta]) -> int:
        """Apply deltas in pipelined script calls and wait; return how many were new."""
        if not deltas:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for keys, args in self._script_calls(deltas, int(time.time() * 1000)):
            self._update(keys=keys, args=args, client=pipe)
        return sum(pipe.execute())

    def writer(self) -> StreamingWriter:
        """A writer that sends script calls at once and confirms them later (see StreamingWriter)."""
        self._client.script_load(_UPDATE_SCRIPT)
        return StreamingWriter(self)

    def get_profile(self, profile_id: str) -> dict[str, Any] | None:
        """The profile document, or None when the id has no profile."""
        keys = profile_keys(profile_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(keys.fields)
        pipe.smembers(keys.anonymous_ids)
        pipe.zrevrange(keys.products, 0, LAST_PRODUCTS_LIMIT - 1)
        pipe.zcard(keys.sessions)
        fields, anonymous_ids, products, closed_sessions = pipe.execute()
        if not fields:
            return None
        decoded = _decode_map(fields)
        return build_profile(
            profile_id,
            decoded,
            [_decode(a) for a in anonymous_ids],
            [_decode(p) for p in products],
            int(closed_sessions) + (1 if "ss" in decoded else 0),
        )

    def get_decisions(self, profile_id: str) -> list[dict[str, Any]]:
        """Decisions recorded for the profile (written by the rules engine), newest first."""
        raw = self._client.lrange(profile_keys(profile_id).decisions, 0, -1)
        return [json.loads(item) for item in raw]

    def forget(self, profile_id: str) -> bool:
        """Delete the profile and its decisions; queue the id for the batch purge.

        ``event_id`` markers stay until they expire, so a replay cannot resurrect the user.
        """
        keys = profile_keys(profile_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(*keys.state_keys, keys.decisions)
        pipe.xadd(FORGET_STREAM, {"profile_id": profile_id, "requested_at": int(time.time())})
        deleted, _ = pipe.execute()
        logger.info("forgot profile (%d keys deleted)", deleted)
        return bool(deleted)


_pack = msgspec.msgpack.Encoder().encode


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_map(mapping: dict[Any, Any]) -> dict[str, str]:
    return {_decode(k): _decode(v) for k, v in mapping.items()}


class StreamingWriter:
    """Sends script calls without waiting for replies; ``confirm()`` reads them all.

    Redis applies a batch while the caller prepares the next one, instead of the two taking
    turns. Nothing counts as written before ``confirm()`` returns, and every call is
    idempotent, so a crash in between only means the same deltas are sent again.
    """

    def __init__(self, store: RedisProfileStore) -> None:
        self._store = store
        self._connection: Any = None
        self._sent: list[tuple[list[str], tuple[Any, ...]]] = []

    def send(self, deltas: Sequence[ProfileDelta]) -> None:
        """Queue the script calls for ``deltas`` on the connection (no reply awaited)."""
        if not deltas:
            return
        store = self._store
        if self._connection is None:
            self._connection = store.client.connection_pool.get_connection()
        for keys, args in store._script_calls(deltas, int(time.time() * 1000)):
            self._connection.send_command("EVALSHA", store._update.sha, len(keys), *keys, *args)
            self._sent.append((keys, args))

    def confirm(self) -> int:
        """Read every reply; return how many deltas were new. Raises on any Redis error."""
        if self._connection is None:
            return 0
        applied = 0
        try:
            for keys, args in self._sent:
                try:
                    applied += self._connection.read_response()
                except redis.exceptions.NoScriptError:
                    # Redis lost its script cache (restart): load it and apply synchronously.
                    applied += self._store._update(keys=keys, args=args)
        except BaseException:
            self._connection.disconnect()
            raise
        finally:
            self._release()
        return applied

    def abort(self) -> None:
        """Forget unconfirmed calls (their deltas will be redelivered)."""
        if self._connection is not None:
            self._connection.disconnect()
            self._release()

    def _release(self) -> None:
        self._store.client.connection_pool.release(self._connection)
        self._connection = None
        self._sent = []
