"""One archive row per dead letter (pure): the original bytes, why, by whom, when, and whose.

The ids are read best-effort from the original JSON (Pulse or Segment field names), so
analysts can group rejects by person and a forget run can purge them; nothing here validates.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa

from quality.event_contract import EventContractError, parse_timestamp_ms
from streaming.dlq import (
    ERROR_HEADER,
    ORIGIN_OFFSET_HEADER,
    ORIGIN_PARTITION_HEADER,
    ORIGIN_TOPIC_HEADER,
    RECEIVED_AT_HEADER,
    SOURCE_HEADER,
    read_dlq_headers,
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("raw", pa.binary()),
        ("valid", pa.bool_()),
        ("error", pa.string()),
        ("source", pa.string()),
        ("received_at", pa.timestamp("ms", tz="UTC")),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        ("origin_topic", pa.string()),
        ("origin_partition", pa.int32()),
        ("origin_offset", pa.int64()),
    ]
)

#: Where each id may sit in a rejected object: Pulse's field first, then Segment's.
_ID_FIELDS = {
    "event_id": ("event_id", "messageId"),
    "event_type": ("event_type", "type"),
    "user_id": ("user_id", "userId"),
    "anonymous_id": ("anonymous_id", "anonymousId"),
}
_decode = msgspec.json.Decoder().decode


def dead_letter_row(
    raw: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    topic: str,
    partition: int,
    offset: int,
    kafka_ts_ms: int,
) -> dict[str, Any]:
    """The archive row of a dead-letter record, filed by the time the broker received it."""
    raw = raw or b""
    pulse = read_dlq_headers(headers)
    row: dict[str, Any] = {
        "raw": raw,
        "valid": False,
        "error": pulse.get(ERROR_HEADER, "unknown (no pulse.error header)"),
        "source": pulse.get(SOURCE_HEADER, "unknown"),
        "received_at": _ms_or_none(pulse.get(RECEIVED_AT_HEADER)),
        "event_time": kafka_ts_ms,
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp": kafka_ts_ms,
        "origin_topic": pulse.get(ORIGIN_TOPIC_HEADER),
        "origin_partition": _int_or_none(pulse.get(ORIGIN_PARTITION_HEADER)),
        "origin_offset": _int_or_none(pulse.get(ORIGIN_OFFSET_HEADER)),
    }
    row.update(ids_of(raw))
    return row


def ids_of(raw: bytes) -> dict[str, str | None]:
    """event_id, event_type, user_id and anonymous_id of a JSON object, where they are strings."""
    try:
        obj = _decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        return dict.fromkeys(_ID_FIELDS)
    ids: dict[str, str | None] = {}
    for column, names in _ID_FIELDS.items():
        values = (obj.get(name) for name in names)
        ids[column] = next((v for v in values if isinstance(v, str) and v), None)
    return ids


def _ms_or_none(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return parse_timestamp_ms(text)
    except EventContractError:
        return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
