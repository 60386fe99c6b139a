"""One archive row per raw topic record (pure): the original bytes plus what analysts query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from quality.event_contract import EventContractError, parse_event

ARCHIVE_SCHEMA = pa.schema(
    [
        ("raw", pa.binary()),
        ("valid", pa.bool_()),
        ("error", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
    ]
)


def archive_row(
    raw: bytes | None, topic: str, partition: int, offset: int, kafka_ts_ms: int
) -> dict[str, Any]:
    """The archive row of a record; valid events are partitioned by event time, others by arrival."""
    raw = raw or b""
    row: dict[str, Any] = {
        "raw": raw,
        "valid": False,
        "error": None,
        "event_id": None,
        "event_type": None,
        "user_id": None,
        "anonymous_id": None,
        "event_time": kafka_ts_ms,
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp": kafka_ts_ms,
    }
    try:
        event = parse_event(raw)
    except EventContractError as exc:
        row["error"] = str(exc)
        return row
    row.update(
        valid=True,
        event_id=event.event_id,
        event_type=event.event_type,
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        event_time=event.timestamp_ms,
    )
    return row


def hive_partition(event_time_ms: int) -> tuple[str, str]:
    """(dt, hour) of an epoch-ms time, in UTC."""
    moment = datetime.fromtimestamp(event_time_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")
