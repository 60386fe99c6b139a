"""One archive row per raw topic record (pure): the original bytes plus what analysts query."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
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
        # What the collector added in metadata.context (enrichment/request_context.py); null when
        # absent. Files written before these columns existed read them as null.
        ("is_bot", pa.bool_()),
        ("bot_reason", pa.string()),
        ("device_type", pa.string()),
        ("browser", pa.string()),
        ("os", pa.string()),
        ("geo_country", pa.string()),
        ("geo_region", pa.string()),
        ("geo_city", pa.string()),
        ("utm_source", pa.string()),
        ("utm_medium", pa.string()),
        ("utm_campaign", pa.string()),
        ("campaign_id", pa.string()),
        # The event's consent per purpose (null when it says nothing): docs/events.md, "Consent".
        ("consent_analytics", pa.bool_()),
        ("consent_personalization", pa.bool_()),
    ]
)
#: Context columns: (column, object in metadata.context, key in it).
CONTEXT_COLUMNS = (
    ("bot_reason", "", "bot_reason"),
    ("device_type", "device", "type"),
    ("browser", "device", "browser"),
    ("os", "device", "os"),
    ("geo_country", "geo", "country"),
    ("geo_region", "geo", "region"),
    ("geo_city", "geo", "city"),
    ("utm_source", "campaign", "source"),
    ("utm_medium", "campaign", "medium"),
    ("utm_campaign", "campaign", "name"),
    ("campaign_id", "campaign", "campaign_id"),
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
        "is_bot": None,
        **dict.fromkeys(column for column, _, _ in CONTEXT_COLUMNS),
        "consent_analytics": None,
        "consent_personalization": None,
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
    row.update(context_columns(event.metadata.get("context")))
    row.update(
        consent_analytics=event.consent.get("analytics"),
        consent_personalization=event.consent.get("personalization"),
    )
    return row


def context_columns(context: Any) -> dict[str, Any]:
    """The archive's context columns of a valid event's ``metadata.context`` (``is_bot`` always set)."""
    context = context if isinstance(context, dict) else {}
    columns: dict[str, Any] = {"is_bot": context.get("bot") is True}
    for column, part, key in CONTEXT_COLUMNS:
        inner = context.get(part) if part else context
        value = inner.get(key) if isinstance(inner, dict) else None
        columns[column] = value if isinstance(value, str) else None
    return columns


def conform(table: pa.Table) -> pa.Table:
    """``table`` with ARCHIVE_SCHEMA's columns in order, absent ones null (files of older releases)."""
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in ARCHIVE_SCHEMA
    ]
    return pa.table(dict(zip(ARCHIVE_SCHEMA.names, columns, strict=True))).cast(ARCHIVE_SCHEMA)


def hive_partition(event_time_ms: int) -> tuple[str, str]:
    """(dt, hour) of an epoch-ms time, in UTC."""
    return _hour_partition(event_time_ms // _HOUR_MS)


_HOUR_MS = 3_600_000


@lru_cache(maxsize=4096)
def _hour_partition(hours_since_epoch: int) -> tuple[str, str]:
    moment = datetime.fromtimestamp(hours_since_epoch * 3600, tz=UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")
