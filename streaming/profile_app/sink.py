"""Quix sink of the profile app: deltas to Redis, rejects to the DLQ, before offsets commit."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import Producer
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from streaming.dlq import dlq_headers
from streaming.profile_app.pipeline import CheckedRecord
from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "pulse:heartbeat:profile-app"
DLQ_SOURCE = "profile-app"


class DeadLetterError(RuntimeError):
    """The broker did not acknowledge dead-letter records; the batch is retried."""


class ProfileSink(BatchingSink):
    """Applies each partition's deltas with pipelined, idempotent script calls; rejects go to the DLQ.

    Quix commits offsets only after ``write`` returns, every delta carries its ``event_id``
    marker and dead-letter records are acknowledged by the broker first, so a crash at any
    moment leads to a harmless redelivery: nothing is lost or counted twice.
    """

    def __init__(
        self,
        store: RedisProfileStore,
        dlq_producer: Producer,
        dlq_topic: str,
        *,
        retry_after_seconds: float = 1.0,
        heartbeat_seconds: float = 1.0,
    ) -> None:
        super().__init__()
        self._store = store
        self._dlq = dlq_producer
        self._dlq_topic = dlq_topic
        self._retry_after = retry_after_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._last_heartbeat = 0.0
        self.applied = 0
        self.dead_lettered = 0

    def flush(self) -> None:
        """Write the batches of all partitions together: one Redis round trip per checkpoint."""
        try:
            if self._batches:
                self._write_items([item for batch in self._batches.values() for item in batch])
        finally:
            self._batches.clear()

    def write(self, batch: SinkBatch) -> None:
        self._write_items(list(batch))

    def _write_items(self, items: list[Any]) -> None:
        deltas = []
        rejects: list[tuple[CheckedRecord, Any]] = []
        for item in items:
            record: CheckedRecord = item.value
            if record.delta is not None:
                deltas.append(record.delta)
            else:
                rejects.append((record, item.key))
        if rejects:
            self._dead_letter(rejects)
        try:
            applied = self._store.apply_deltas(deltas)
            self._beat()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("Redis unavailable (%s); pausing %ss and retrying the batch", exc, self._retry_after)
            raise SinkBackpressureError(retry_after=self._retry_after) from exc
        self.applied += applied
        logger.debug("%d deltas (%d new), %d rejects", len(deltas), applied, len(rejects))

    def _dead_letter(self, rejects: list[tuple[CheckedRecord, Any]]) -> None:
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for record, key in rejects:
            self._dlq.produce(
                self._dlq_topic,
                value=record.raw,
                key=key,
                headers=dlq_headers(record.error or "invalid", DLQ_SOURCE, received_at),
                on_delivery=on_delivery,
            )
        remaining = self._dlq.flush(30)
        if remaining or failures:
            raise DeadLetterError(f"dead-letter topic did not acknowledge {remaining or len(failures)} record(s): {failures[:1]}")
        self.dead_lettered += len(rejects)

    def _beat(self) -> None:
        now = time.time()
        if now - self._last_heartbeat >= self._heartbeat_seconds:
            self._store.client.set(HEARTBEAT_KEY, int(now * 1000))
            self._last_heartbeat = now
