"""Read the event archive with DuckDB (Parquet read in place, deduplicated by Kafka coordinates)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from core.archive_layout import archive_records_sql, before_cut_sql, has_archive
from core.forgetting import SUPPRESSIONS_TABLE, Suppressions, forgotten_sql, suppressions_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchivedEvent:
    raw: bytes
    key: str
    event_time_ms: int


def read_valid_events(
    root: Path, start: datetime | None = None, end: datetime | None = None
) -> list[ArchivedEvent]:
    """Valid archived events with event time in [start, end), each Kafka record once, in event-time order."""
    if not has_archive(root):
        return []
    conditions = ["valid"]
    params: list[object] = []
    if start is not None:
        conditions.append("event_time >= ?")
        params.append(start)
    if end is not None:
        conditions.append("event_time < ?")
        params.append(end)
    query = f"""
        SELECT raw, coalesce(user_id, anonymous_id) AS key, epoch_ms(event_time) AS ms
        FROM ({archive_records_sql(root, " AND ".join(conditions))})
        ORDER BY event_time, kafka_partition, kafka_offset
    """
    with duckdb.connect() as con:
        rows = con.execute(query, params).fetchall()
    return [ArchivedEvent(bytes(raw), key, int(ms)) for raw, key, ms in rows]


def profiles_arrived_before(
    root: Path,
    arrived_before: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
    forgotten: Suppressions | None = None,
) -> set[str]:
    """Profile ids with a valid event in [start, end) of event time that reached the broker
    before ``arrived_before``, events ``forgotten`` by the forget rule left out."""
    conditions, params = ["valid", "kafka_timestamp < ?"], [arrived_before]
    if forgotten:
        conditions.append(f"NOT {forgotten_sql('coalesce(user_id, anonymous_id)', 'epoch_ms(event_time)')}")
    if start is not None:
        conditions.append("event_time >= ?")
        params.append(start)
    if end is not None:
        conditions.append("event_time < ?")
        params.append(end)
    return _profiles_where(root, " AND ".join(conditions), params, forgotten)


def offsets_at(root: Path, at: datetime) -> dict[int, int]:
    """The archive cut at a broker time: per partition, its first record the broker received at or
    after ``at`` (kafka_timestamp), else one past its last archived record."""
    if not has_archive(root):
        return {}
    first_at = "min(kafka_offset) FILTER (kafka_timestamp >= ?)"
    query = (
        f"SELECT kafka_partition, coalesce({first_at}, max(kafka_offset) + 1) "
        f"FROM ({archive_records_sql(root)}) GROUP BY kafka_partition"
    )
    with duckdb.connect() as con:
        return {int(p): int(offset) for p, offset in con.execute(query, [at]).fetchall()}


def profiles_from(root: Path, cut: Mapping[int, int]) -> set[str]:
    """Profile ids with a valid archived record at or after ``cut`` (partition -> offset)."""
    return _profiles_where(root, f"valid AND NOT ({before_cut_sql(cut)})", [])


def _profiles_where(
    root: Path, where: str, params: list[object], forgotten: Suppressions | None = None
) -> set[str]:
    """Profile ids of the archive records matching ``where`` (SQL over archive columns; it may
    read the ``forgotten`` suppressions, see core/forgetting.py)."""
    if not has_archive(root):
        return set()
    query = f"SELECT DISTINCT coalesce(user_id, anonymous_id) FROM ({archive_records_sql(root, where)})"
    with duckdb.connect() as con:
        con.register(SUPPRESSIONS_TABLE, suppressions_table(forgotten or {}))
        return {row[0] for row in con.execute(query, params).fetchall()}
