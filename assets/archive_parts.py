"""The archive read per profile part (DuckDB): identity links, profile ids, the events of chosen parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import duckdb

from core.archive_layout import archive_records_sql, before_cut_sql, has_archive
from core.settings import PulseSettings
from streaming.profiles.rebuild_plan import Link


def archive_identity(settings: PulseSettings, ids: Iterable[str]) -> tuple[set[str], list[Link]]:
    """(the ids with valid archived events as a user id, the archived links touching the ids)."""
    wanted = list(ids)
    if not wanted or not has_archive(settings.archive_path):
        return set(), []
    valid = archive_records_sql(settings.archive_path, "valid")
    with duckdb.connect() as con:
        users = con.execute(
            f"SELECT DISTINCT user_id FROM ({valid}) WHERE user_id IN (SELECT unnest(?::VARCHAR[]))", [wanted]
        ).fetchall()
        links = con.execute(
            f"""SELECT user_id, anonymous_id, min(epoch_ms(event_time)) FROM ({valid})
                WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
                  AND (user_id IN (SELECT unnest(?::VARCHAR[]))
                       OR anonymous_id IN (SELECT unnest(?::VARCHAR[])))
                GROUP BY user_id, anonymous_id""",
            [wanted, wanted],
        ).fetchall()
    return {row[0] for row in users}, [Link(u, a, int(ms)) for u, a, ms in links]


def archived_profile_ids(settings: PulseSettings) -> list[str]:
    """Every profile id with a valid archived event."""
    if not has_archive(settings.archive_path):
        return []
    valid = archive_records_sql(settings.archive_path, "valid")
    query = f"SELECT DISTINCT coalesce(user_id, anonymous_id) FROM ({valid})"
    with duckdb.connect() as con:
        return [row[0] for row in con.execute(query).fetchall()]


def read_part_events(
    settings: PulseSettings,
    parts: Sequence[str] | None,
    from_cut: Mapping[int, int] | None = None,
) -> list[bytes]:
    """Each valid archived event of the parts (None: every part) once per (part, event_id):
    its first record, the one the stream applied; with ``from_cut``, only records at or after it
    (partition -> offset)."""
    if not has_archive(settings.archive_path) or parts == []:
        return []
    profile = "coalesce(user_id, anonymous_id)"
    where, params = "true", []
    if parts is not None:
        where, params = f"{profile} IN (SELECT unnest(?::VARCHAR[]))", [list(parts)]
    if from_cut is not None:
        where += f" AND NOT ({before_cut_sql(from_cut)})"
    query = f"""
        SELECT first(raw ORDER BY kafka_partition, kafka_offset)
        FROM ({archive_records_sql(settings.archive_path, "valid")})
        WHERE {where}
        GROUP BY {profile}, event_id
    """
    with duckdb.connect() as con:
        return [bytes(row[0]) for row in con.execute(query, params).fetchall()]
