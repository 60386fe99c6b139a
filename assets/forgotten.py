"""Which ids are forgotten, and since when (I/O): what every batch reader of events applies the rule with."""

from __future__ import annotations

import logging

import redis

from core.forget_record import ForgetRecord
from core.forgetting import merge_suppressions
from core.redis_client import RedisClient
from core.settings import PulseSettings
from streaming.profiles.keys import FORGET_STREAM
from streaming.profiles.suppression import mirrored_suppressions

logger = logging.getLogger(__name__)


def read_suppressions(
    settings: PulseSettings, client: RedisClient | None, *, erased_only: bool = False
) -> dict[str, int]:
    """Forgotten id -> forget time (ms): the durable record, plus what only Redis holds.

    The durable record (PULSE_FORGET_DIR) is complete by itself; Redis adds forgets made by a
    store without the record (tools, tests) and those of releases that kept only the
    ``pulse:forget`` stream. Without Redis (``client`` None or unreachable) the record alone.
    ``erased_only``: without the forgets for one purpose (a withdrawn consent to personalization),
    whose events stay in the archive: what the forget run purges.
    """
    record = ForgetRecord(settings.forget_path)
    if erased_only:
        entries, for_purpose = list(record.erased_suppressions().items()), record.purpose_suppressions()
    else:
        entries, for_purpose = list(record.suppressions().items()), {}
    if client is not None:
        try:
            mirrored = [(pid, at) for pid, (at, _) in mirrored_suppressions(client).items()]
            mirrored.extend(_stream_entries(client))
            # Redis does not say why an id was forgotten: one the record forgot for a purpose at or
            # after that time is that forget.
            entries.extend((pid, at) for pid, at in mirrored if for_purpose.get(pid, -1) < at)
        except redis.RedisError as exc:
            logger.warning("forgotten ids from the durable record only: Redis unreachable (%s)", exc)
    return merge_suppressions(entries)


def _stream_entries(client: RedisClient) -> list[tuple[str, int]]:
    """(id, forget time ms) of the ``pulse:forget`` stream; entries of older releases have seconds only."""
    found = []
    for _, fields in client.xrange(FORGET_STREAM):
        at = fields.get(b"forgotten_at_ms")
        at_ms = int(at) if at is not None else int(fields[b"requested_at"]) * 1000 + 999
        found.append((fields[b"profile_id"].decode(), at_ms))
    return found
