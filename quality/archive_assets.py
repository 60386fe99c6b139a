"""Per-day quality of the event archive: one partition per dt=, with checks shown in the Dagster UI."""

import dagster as dg

from core.resources import PulseResource
from quality.archive_checks import measure_archive

ARCHIVE_DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
MAX_INVALID_RATE = 0.05
MAX_DUPLICATE_RATE = 0.10


@dg.asset(
    partitions_def=ARCHIVE_DAYS,
    kinds={"duckdb", "pandera", "parquet"},
    group_name="archive",
    check_specs=[
        dg.AssetCheckSpec("schema_matches_event_contract", asset="archive_day_quality"),
        dg.AssetCheckSpec("invalid_rate_below_5_percent", asset="archive_day_quality"),
        dg.AssetCheckSpec("duplicate_rate_below_10_percent", asset="archive_day_quality"),
    ],
)
def archive_day_quality(context: dg.AssetExecutionContext, pulse: PulseResource):
    """Records, invalid and duplicate rates, late events and the Pandera check of one archive day."""
    day = context.partition_key
    quality = measure_archive(pulse.settings().archive_path, where=f"dt = '{day}'")
    metadata = quality.as_metadata()
    yield dg.MaterializeResult(
        metadata={
            k: dg.MetadataValue.json(v) if isinstance(v, list) else v
            for k, v in metadata.items()
            if v is not None
        }
    )
    yield dg.AssetCheckResult(
        check_name="schema_matches_event_contract",
        passed=quality.schema_failures == 0,
        metadata={"failures": quality.schema_failures},
    )
    yield dg.AssetCheckResult(
        check_name="invalid_rate_below_5_percent",
        passed=quality.invalid_rate <= MAX_INVALID_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"invalid_rate": round(quality.invalid_rate, 4), "invalid": quality.invalid},
    )
    yield dg.AssetCheckResult(
        check_name="duplicate_rate_below_10_percent",
        passed=quality.duplicate_rate <= MAX_DUPLICATE_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"duplicate_rate": round(quality.duplicate_rate, 4), "duplicates": quality.duplicate_events},
    )
