"""DuckDB views over the Parquet archive for analysts (the views read Parquet in place)."""

from pathlib import Path

import dagster as dg
import duckdb

from core.archive_layout import archive_records_sql, dead_letter_records_sql, has_archive, has_dead_letters
from core.resources import PulseResource

#: The columns of `events_invalid`, whichever copy of a reject a row comes from.
INVALID_COLUMNS = (
    "raw, error, source, received_at, event_id, event_type, user_id, anonymous_id, "
    "kafka_topic, kafka_partition, kafka_offset, kafka_timestamp"
)
#: The same columns for an invalid record of the events topic (the archiver's own verdict).
ARCHIVED_INVALID_COLUMNS = INVALID_COLUMNS.replace(
    "source, received_at", "'archiver' AS source, kafka_timestamp AS received_at"
)
#: `dead_letters` before the archiver has written one: the same columns, no rows.
NO_DEAD_LETTERS = (
    "SELECT NULL::BLOB AS raw, false AS valid, NULL::VARCHAR AS error, NULL::VARCHAR AS source, "
    "NULL::TIMESTAMPTZ AS received_at, NULL::VARCHAR AS event_id, NULL::VARCHAR AS event_type, "
    "NULL::VARCHAR AS user_id, NULL::VARCHAR AS anonymous_id, NULL::TIMESTAMPTZ AS event_time, "
    "NULL::VARCHAR AS kafka_topic, NULL::INTEGER AS kafka_partition, NULL::BIGINT AS kafka_offset, "
    "NULL::TIMESTAMPTZ AS kafka_timestamp, NULL::VARCHAR AS origin_topic, "
    "NULL::INTEGER AS origin_partition, NULL::BIGINT AS origin_offset WHERE false"
)

VIEWS = {
    "archive_raw": "{records}",
    "events": "SELECT * EXCLUDE (error), CAST(decode(raw) AS JSON) AS payload FROM archive_raw WHERE valid "
    "QUALIFY row_number() OVER (PARTITION BY coalesce(user_id, anonymous_id), event_id "
    "ORDER BY kafka_timestamp) = 1",
    "dead_letters": "{dead_letters}",
    # Every reject once: the archived dead letters (the collector's, the profile app's, ...) and
    # the invalid records of the events topic whose dead letter is not archived (yet).
    "events_invalid": f"SELECT {INVALID_COLUMNS} FROM dead_letters "
    f"UNION ALL SELECT {ARCHIVED_INVALID_COLUMNS} "
    "FROM archive_raw AS a WHERE NOT valid AND NOT EXISTS (SELECT 1 FROM dead_letters AS d "
    "WHERE d.origin_topic = a.kafka_topic AND d.origin_partition = a.kafka_partition "
    "AND d.origin_offset = a.kafka_offset)",
}


def create_views(database: Path, archive: Path) -> dict[str, int]:
    """(Re)create the analyst views; return the row count of each."""
    database.parent.mkdir(parents=True, exist_ok=True)
    sources = {
        "records": archive_records_sql(archive),
        "dead_letters": dead_letter_records_sql(archive) if has_dead_letters(archive) else NO_DEAD_LETTERS,
    }
    with duckdb.connect(str(database)) as con:
        for name, body in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {body.format(**sources)}")
        return {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in VIEWS}


@dg.asset(kinds={"duckdb", "parquet"}, group_name="archive")
def analyst_views(pulse: PulseResource) -> dg.MaterializeResult:
    """`events` (valid, one row per event_id), `dead_letters` and `events_invalid` (every reject)
    views in $PULSE_DATA_DIR/pulse.duckdb."""
    settings = pulse.settings()
    if not has_archive(settings.archive_path):
        raise dg.Failure(
            f"no archive yet under {settings.archive_path}: is the archiver running (`pulse up`)?"
        )
    database = settings.data_path / "pulse.duckdb"
    counts = create_views(database, settings.archive_path)
    return dg.MaterializeResult(
        metadata={"database": str(database), **{f"rows_{k}": v for k, v in counts.items()}}
    )
