"""Dead-letter records: the original bytes as the value, the reason in headers.

Same layout as Kafka Connect's dead-letter queues, so the original event is kept
byte-for-byte and any consumer can read why it was rejected and by whom.
"""

from __future__ import annotations

ERROR_HEADER = "pulse.error"
SOURCE_HEADER = "pulse.source"
RECEIVED_AT_HEADER = "pulse.received_at"


def dlq_headers(error: str, source: str, received_at: str) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record."""
    return [
        (ERROR_HEADER, error.encode()),
        (SOURCE_HEADER, source.encode()),
        (RECEIVED_AT_HEADER, received_at.encode()),
    ]


def read_dlq_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The Pulse headers of a dead-letter record as text."""
    return {k: v.decode(errors="replace") for k, v in headers or [] if k.startswith("pulse.")}
