"""One archive row per raw topic record (pure): the original bytes plus what analysts query."""

from __future__ import annotations

from collections.abc import Iterable
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


_NAMES = tuple(ARCHIVE_SCHEMA.names)
_NO_CONTEXT = (None,) * (1 + len(CONTEXT_COLUMNS))  # is_bot and the context columns
_NO_EVENT = (None,) * 4  # event_id, event_type, user_id, anonymous_id


def archive_values(
    raw: bytes | None, topic: str, partition: int, offset: int, kafka_ts_ms: int
) -> tuple[Any, ...]:
    """The archive row of a record as a tuple in ARCHIVE_SCHEMA's column order.

    Valid events are partitioned by event time, others by arrival (``event_time`` = Kafka time).
    """
    raw = raw or b""
    try:
        event = parse_event(raw)
    except EventContractError as exc:
        return (
            raw, False, str(exc), *_NO_EVENT, kafka_ts_ms,
            topic, partition, offset, kafka_ts_ms, *_NO_CONTEXT, None, None,
        )  # fmt: skip
    consent = event.consent
    return (
        raw, True, None, event.event_id, event.event_type, event.user_id, event.anonymous_id,
        event.timestamp_ms, topic, partition, offset, kafka_ts_ms,
        *_context_values(event.metadata.get("context")),
        consent.get("analytics"), consent.get("personalization"),
    )  # fmt: skip


def archive_row(
    raw: bytes | None, topic: str, partition: int, offset: int, kafka_ts_ms: int
) -> dict[str, Any]:
    """The archive row of a record as a dict (column -> value)."""
    return dict(zip(_NAMES, archive_values(raw, topic, partition, offset, kafka_ts_ms), strict=True))


def archive_table(records: Iterable[tuple[bytes | None, int, int]], topic: str, partition: int) -> pa.Table:
    """The archive rows of ``(raw, offset, kafka_ts_ms)`` records of one partition, built column by
    column (no per-row dict: the archiver's hot path)."""
    rows = [archive_values(raw, topic, partition, offset, ts) for raw, offset, ts in records]
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(_NAMES)
    return pa.Table.from_arrays(
        [pa.array(column, field.type) for column, field in zip(columns, ARCHIVE_SCHEMA, strict=True)],
        schema=ARCHIVE_SCHEMA,
    )


def _context_values(context: Any) -> tuple[Any, ...]:
    """``is_bot`` then the CONTEXT_COLUMNS of ``metadata.context``, in schema order."""
    context = context if isinstance(context, dict) else {}
    values: list[Any] = [context.get("bot") is True]
    for _column, part, key in CONTEXT_COLUMNS:
        inner = context.get(part) if part else context
        value = inner.get(key) if isinstance(inner, dict) else None
        values.append(value if isinstance(value, str) else None)
    return tuple(values)


def conform(table: pa.Table) -> pa.Table:
    """``table`` with ARCHIVE_SCHEMA's columns in order, absent ones null (files of older releases)."""
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in ARCHIVE_SCHEMA
    ]
    return pa.table(dict(zip(ARCHIVE_SCHEMA.names, columns, strict=True))).cast(ARCHIVE_SCHEMA)


def hive_partition(event_time_ms: int) -> tuple[str, str]:
    """(dt, hour) of an epoch-ms time, in UTC."""
    return hour_partition(event_time_ms // HOUR_MS)


HOUR_MS = 3_600_000


@lru_cache(maxsize=4096)
def hour_partition(hours_since_epoch: int) -> tuple[str, str]:
    """(dt, hour) of an hour counted from the epoch, in UTC."""
    moment = datetime.fromtimestamp(hours_since_epoch * 3600, tz=UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")
