"""Quix sink that applies profile deltas in Redis at each checkpoint (before offsets commit)."""

from __future__ import annotations

import logging
import time

import redis
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "pulse:heartbeat:profile-app"


class RedisProfileSink(BatchingSink):
    """Writes each partition's batch with one pipelined, idempotent script call per profile.

    Offsets are committed only after ``write`` returns, and every delta carries its
    ``event_id`` marker, so a crash at any moment leads to a harmless redelivery.
    """

    def __init__(self, store: RedisProfileStore, retry_after_seconds: float = 1.0) -> None:
        super().__init__()
        self._store = store
        self._retry_after = retry_after_seconds
        self.applied = 0

    def write(self, batch: SinkBatch) -> None:
        deltas = [item.value for item in batch]
        try:
            applied = self._store.apply_deltas(deltas)
            self._store.client.set(HEARTBEAT_KEY, int(time.time() * 1000))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("Redis unavailable (%s); pausing %ss and retrying the batch", exc, self._retry_after)
            raise SinkBackpressureError(retry_after=self._retry_after) from exc
        self.applied += applied
        logger.debug("partition %s: %d deltas, %d new", batch.partition, len(deltas), applied)
