"""DLQ volume by reason as an asset, with a check on the invalid share of the last window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from assets.dead_letters import ReasonSummary, summarize_dead_letters
from core.archive_layout import archive_records_sql, has_archive
from core.resources import PulseResource


@dataclass(frozen=True)
class DeadLetterVolume:
    """Dead letters by reason and valid events received since a time (broker time)."""

    since: datetime
    reasons: list[ReasonSummary]
    valid_events: int

    @property
    def dead_letters(self) -> int:
        return sum(r.count for r in self.reasons)

    @property
    def invalid_share(self) -> float:
        """Dead letters per record received (dead letters + valid events); 0 with none."""
        total = self.dead_letters + self.valid_events
        return self.dead_letters / total if total else 0.0


def share_acceptable(volume: DeadLetterVolume, limit: float, minimum: int) -> bool:
    """False when the window holds ``minimum`` records or more and its invalid share exceeds ``limit``."""
    return volume.dead_letters + volume.valid_events < minimum or volume.invalid_share <= limit


def measure_dead_letter_volume(root: Path, since: datetime) -> DeadLetterVolume:
    """Read the archive: dead letters by reason, and valid events, that reached the broker since ``since``."""
    valid = 0
    if has_archive(root):
        with duckdb.connect() as con:
            query = f"SELECT count(*) FROM ({archive_records_sql(root, 'valid AND kafka_timestamp >= ?')})"
            valid = con.execute(query, [since]).fetchone()[0]
    return DeadLetterVolume(since, summarize_dead_letters(root, samples=1, since=since), valid)


@dg.asset(
    kinds={"parquet", "duckdb"},
    group_name="health",
    check_specs=[dg.AssetCheckSpec("dead_letter_share", asset="dead_letter_volume")],
)
def dead_letter_volume(pulse: PulseResource):
    """Dead letters of the last PULSE_DLQ_ALERT_WINDOW_SECONDS by reason and source, from the archive."""
    settings = pulse.settings()
    window = settings.dlq_alert_window_seconds
    volume = measure_dead_letter_volume(settings.archive_path, datetime.now(UTC) - timedelta(seconds=window))
    by_source: dict[str, int] = {}
    for reason in volume.reasons:
        for source, count in reason.sources.items():
            by_source[source] = by_source.get(source, 0) + count
    yield dg.MaterializeResult(
        metadata={
            "window_s": window,
            "dead_letters": volume.dead_letters,
            "valid_events": volume.valid_events,
            "invalid_share": round(volume.invalid_share, 4),
            "by_reason": dg.MetadataValue.json({r.reason: r.count for r in volume.reasons}),
            "by_source": dg.MetadataValue.json(by_source),
            "reasons": dg.MetadataValue.md(_reason_table(volume.reasons)),
        }
    )
    limit, minimum = settings.dlq_alert_share, settings.dlq_alert_minimum
    yield dg.AssetCheckResult(
        check_name="dead_letter_share",
        passed=share_acceptable(volume, limit, minimum),
        metadata={
            "invalid_share": round(volume.invalid_share, 4),
            "limit": limit,
            "records": volume.dead_letters + volume.valid_events,
            "minimum": minimum,
            "top_reason": volume.reasons[0].reason if volume.reasons else "",
        },
        description=f"Dead letters per record received in the last {window} s; fails above {limit:.0%} "
        f"once there are {minimum} or more records (PULSE_DLQ_ALERT_*). `pulse dlq` lists them.",
    )


def _reason_table(reasons: list[ReasonSummary]) -> str:
    rows = []
    for r in reasons:
        sources = ", ".join(f"{s} {n}" for s, n in r.sources.most_common())
        rows.append(f"| {r.count} | {r.reason.replace('|', '/')} | {sources} |")
    return "\n".join(["| dead letters | reason | sources |", "|---|---|---|", *rows])


dead_letter_volume_job = dg.define_asset_job("dead_letter_volume_job", selection=["dead_letter_volume"])
dead_letter_volume_schedule = dg.ScheduleDefinition(
    job=dead_letter_volume_job, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
