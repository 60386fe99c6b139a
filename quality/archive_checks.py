"""Quality measures of the archive (DuckDB over Parquet) and the Pandera check of its valid rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pandera.errors

from core.archive_layout import archive_records_sql, has_archive
from quality.archive_schema import valid_events_schema

LATE_AFTER = "1 hour"


@dataclass
class ArchiveQuality:
    records: int = 0
    invalid: int = 0
    duplicate_events: int = 0  # valid records whose (profile, event_id) was already archived
    late_events: int = 0  # event time more than LATE_AFTER before arrival at the broker
    schema_failures: int = 0
    schema_failure_examples: list[str] | None = None

    @property
    def invalid_rate(self) -> float:
        return self.invalid / self.records if self.records else 0.0

    @property
    def duplicate_rate(self) -> float:
        return self.duplicate_events / self.records if self.records else 0.0

    def as_metadata(self) -> dict[str, object]:
        return {
            **asdict(self),
            "invalid_rate": round(self.invalid_rate, 4),
            "duplicate_rate": round(self.duplicate_rate, 4),
        }


def measure_archive(root: Path, where: str = "TRUE") -> ArchiveQuality:
    """Counts and the schema check over archive rows matching ``where`` (SQL over archive columns)."""
    quality = ArchiveQuality()
    if not has_archive(root):
        return quality
    with duckdb.connect() as con:
        con.execute(f"CREATE TEMP VIEW a AS {archive_records_sql(root)}")
        quality.records, quality.invalid, quality.late_events = con.execute(
            f"SELECT count(*), count(*) FILTER (NOT valid), "
            f"count(*) FILTER (valid AND event_time < kafka_timestamp - INTERVAL '{LATE_AFTER}') "
            f"FROM a WHERE {where}"
        ).fetchone()
        quality.duplicate_events = con.execute(
            f"SELECT count(*) - count(DISTINCT (coalesce(user_id, anonymous_id), event_id)) "
            f"FROM a WHERE valid AND {where}"
        ).fetchone()[0]
        frame = con.execute(
            f"SELECT event_id, event_type, user_id, anonymous_id, event_time, kafka_partition, kafka_offset "
            f"FROM a WHERE valid AND {where}"
        ).df()
    try:
        valid_events_schema().validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        quality.schema_failures = len(cases)
        quality.schema_failure_examples = [str(row) for row in cases.head(5).to_dict("records")]
    return quality
