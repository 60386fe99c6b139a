"""Dead-letter records: the original bytes as the value, the reason in headers.

Same layout as Kafka Connect's dead-letter queues, so the original event is kept
byte-for-byte and any consumer can read why it was rejected, by whom and when. A record
rejected after it reached a topic (by the profile app) also names where it was read
(topic, partition, offset), so the archive can tell its two copies apart.
"""

from __future__ import annotations

from typing import NamedTuple

ERROR_HEADER = "pulse.error"
SOURCE_HEADER = "pulse.source"
RECEIVED_AT_HEADER = "pulse.received_at"
ORIGIN_TOPIC_HEADER = "pulse.origin.topic"
ORIGIN_PARTITION_HEADER = "pulse.origin.partition"
ORIGIN_OFFSET_HEADER = "pulse.origin.offset"


class Origin(NamedTuple):
    """Where a rejected record was read: its Kafka coordinates."""

    topic: str
    partition: int
    offset: int


def dlq_headers(
    error: str, source: str, received_at: str, origin: Origin | None = None
) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record."""
    headers = [
        (ERROR_HEADER, error.encode()),
        (SOURCE_HEADER, source.encode()),
        (RECEIVED_AT_HEADER, received_at.encode()),
    ]
    if origin is not None:
        headers += [
            (ORIGIN_TOPIC_HEADER, origin.topic.encode()),
            (ORIGIN_PARTITION_HEADER, str(origin.partition).encode()),
            (ORIGIN_OFFSET_HEADER, str(origin.offset).encode()),
        ]
    return headers


def read_dlq_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The Pulse headers of a dead-letter record as text."""
    return {k: v.decode(errors="replace") for k, v in headers or [] if k.startswith("pulse.")}
