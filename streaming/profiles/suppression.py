"""The forget mirror in Redis (I/O): each forgotten id's suppression, restored from the durable record.

The durable record (core/forget_record.py) is the truth; Redis holds a copy so update.lua can
skip a forgotten person's events atomically with each update. ``FORGET_MIRROR_KEY`` holds how
far the record is copied: after a wipe (FLUSHALL, a restart without persistence) it is gone, and
update calls refuse to run until ``restore_mirror`` has copied the record back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

from core.forget_record import ForgetRecord
from core.redis_client import RedisClient, primaries
from streaming.profiles.codec import decode
from streaming.profiles.functions import SUPPRESS_FUNCTION, function_missing, load_library
from streaming.profiles.keys import FORGET_MIRROR_KEY, KEY_PREFIX, decode_id, forgotten_key

logger = logging.getLogger(__name__)

#: Suppressions mirrored per pipelined round trip.
MIRROR_CHUNK = 1_000


def mirror_suppressions(client: RedisClient, suppressions: Mapping[str, int]) -> None:
    """Copy forget times into Redis (each id keeps the later of its stored and given time)."""
    items = list(suppressions.items())
    for start in range(0, len(items), MIRROR_CHUNK):
        pipe = client.pipeline(transaction=False)
        for profile_id, at_ms in items[start : start + MIRROR_CHUNK]:
            pipe.fcall(SUPPRESS_FUNCTION, 1, forgotten_key(profile_id), at_ms)
        pipe.execute()


def restore_mirror(client: RedisClient, record: ForgetRecord, offset: int = 0) -> int:
    """Copy the durable record from byte ``offset`` on into Redis and mark it copied up to its end
    (``FORGET_MIRROR_KEY`` holds that offset); return the ids mirrored."""
    suppressions, end = record.suppressions_from(offset)
    try:
        mirror_suppressions(client, suppressions)
    except redis.ResponseError as exc:
        if not function_missing(exc):
            raise
        load_library(client)
        mirror_suppressions(client, suppressions)
    client.set(FORGET_MIRROR_KEY, end)
    return len(suppressions)


def ensure_mirror(client: RedisClient, record: ForgetRecord) -> bool:
    """Bring the mirror up to the durable record; True when it copied anything.

    All of it when the marker is gone (Redis was wiped); else only the forgets appended since the
    marker's offset: those whose Redis write failed after the record had them, or that another
    tool recorded. Cheap when nothing changed: one GET and one ``stat``.
    """
    marker = client.get(FORGET_MIRROR_KEY)
    if marker is None:
        logger.warning("the forget mirror is not in Redis (wiped?); restoring it from %s", record.folder)
        restored = restore_mirror(client, record)
        logger.info("forget mirror restored in Redis: %d forgotten ids", restored)
        return True
    mirrored = int(marker)
    if record.size() <= mirrored:
        return False
    restore_mirror(client, record, mirrored)
    return True


def mirrored_suppressions(client: RedisClient) -> dict[str, tuple[int, int]]:
    """Every suppression in Redis: id -> (forget time ms, events the stream skipped)."""
    found: dict[str, tuple[int, int]] = {}
    for node in primaries(client):
        for key in node.scan_iter(match=f"{KEY_PREFIX}:{{*}}:forgotten", count=1000):
            text = decode(key)
            values = node.hmget(key, "at", "skipped")
            if values[0] is not None:
                found[decode_id(text[len(KEY_PREFIX) + 2 : -len("}:forgotten")])] = (
                    int(values[0]),
                    int(values[1] or 0),
                )
    return found
