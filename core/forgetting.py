"""The forget rule (pure), written once for Python and DuckDB SQL; update.lua holds the same test.

An event is forgotten when the id it counts on (user_id, else anonymous_id) was forgotten at
or after the event's time: ``event time <= forget time``. Events with a later event time are
the person coming back and count on a new profile. Every reader of events (the stream, replay,
reconcile, the batch recompute, trait backfill, a rebuild) asks this one rule.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

#: Forgotten id -> forget time (epoch ms): the latest forget of that id.
Suppressions = Mapping[str, int]

#: The name the SQL side expects the suppressions registered under (``suppressions_table``).
SUPPRESSIONS_TABLE = "forgotten"


def is_forgotten(profile_id: str | None, event_time_ms: int, suppressions: Suppressions) -> bool:
    """True when ``profile_id`` was forgotten at or after ``event_time_ms``."""
    if profile_id is None:
        return False
    forgotten_at = suppressions.get(profile_id)
    return forgotten_at is not None and event_time_ms <= forgotten_at


def forgotten_sql(id_sql: str, time_ms_sql: str, table: str = SUPPRESSIONS_TABLE) -> str:
    """DuckDB SQL true when the row's id (``id_sql``) was forgotten at or after ``time_ms_sql``.

    ``table`` is ``suppressions_table`` registered on the connection.
    """
    return (
        f"EXISTS (SELECT 1 FROM {table} AS f "
        f"WHERE f.profile_id = {id_sql} AND {time_ms_sql} <= f.forgotten_at_ms)"
    )


def suppressions_table(suppressions: Suppressions) -> pa.Table:
    """The suppressions as the table ``forgotten_sql`` reads (profile_id, forgotten_at_ms)."""
    return pa.table(
        {
            "profile_id": pa.array(list(suppressions), pa.string()),
            "forgotten_at_ms": pa.array(list(suppressions.values()), pa.int64()),
        }
    )


def merge_suppressions(entries: list[tuple[str, int]]) -> dict[str, int]:
    """(id, forget time) pairs -> each id's latest forget time (a second forget extends the first)."""
    merged: dict[str, int] = {}
    for profile_id, at_ms in entries:
        if at_ms > merged.get(profile_id, -1):
            merged[profile_id] = at_ms
    return merged
