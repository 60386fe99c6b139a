"""DuckDB views over the Parquet archive for analysts (the views read Parquet in place)."""

from pathlib import Path

import dagster as dg
import duckdb

from core.archive_layout import archive_records_sql, has_archive
from core.resources import PulseResource

VIEWS = {
    "archive_raw": "{records}",
    "events": "SELECT * EXCLUDE (error), CAST(decode(raw) AS JSON) AS payload FROM archive_raw WHERE valid "
    "QUALIFY row_number() OVER (PARTITION BY coalesce(user_id, anonymous_id), event_id "
    "ORDER BY kafka_timestamp) = 1",
    "events_invalid": "SELECT * FROM archive_raw WHERE NOT valid",
}


def create_views(database: Path, archive: Path) -> dict[str, int]:
    """(Re)create the analyst views; return the row count of each."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(database)) as con:
        for name, body in VIEWS.items():
            con.execute(
                f"CREATE OR REPLACE VIEW {name} AS {body.format(records=archive_records_sql(archive))}"
            )
        return {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in VIEWS}


@dg.asset(kinds={"duckdb", "parquet"}, group_name="archive")
def analyst_views(pulse: PulseResource) -> dg.MaterializeResult:
    """`events` (valid, one row per event_id) and `events_invalid` views in $PULSE_DATA_DIR/pulse.duckdb."""
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
