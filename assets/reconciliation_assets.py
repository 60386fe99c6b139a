"""Dagster view of reconciliation: the drift report as an asset, a check that fails on any drift."""

import dagster as dg

from assets.batch_runs import reconcile
from core.resources import PulseResource


@dg.asset(kinds={"redis", "duckdb"}, group_name="reconciliation")
def profile_drift_report(pulse: PulseResource) -> dg.MaterializeResult:
    """Live profiles in Redis diffed against a batch recompute from the archive (`pulse reconcile`)."""
    report = reconcile(pulse.settings())
    return dg.MaterializeResult(
        metadata={
            "profiles_checked": report.profiles_checked,
            "matched": report.matched,
            "mismatched": report.mismatched,
            "missing_in_redis": report.missing_in_redis,
            "extra_in_redis": report.extra_in_redis,
            "in_flight": report.in_flight,
            "people_checked": report.people_checked,
            "people_mismatched": report.people_mismatched,
            "mismatched_fields": dg.MetadataValue.json(report.mismatched_fields),
            "examples": dg.MetadataValue.json(report.examples),
        }
    )


@dg.asset_check(asset=profile_drift_report, blocking=False)
def no_profile_drift(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Fails when the latest report found any mismatched, missing or extra profile, or person."""
    event = context.instance.get_latest_materialization_event(profile_drift_report.key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    counts = {
        k: int(metadata[k].value)
        for k in ("mismatched", "missing_in_redis", "extra_in_redis", "people_mismatched")
        if k in metadata
    }
    return dg.AssetCheckResult(passed=bool(counts) and not any(counts.values()), metadata=counts)


reconcile_job = dg.define_asset_job("reconcile_job", selection=[profile_drift_report])
#: Hourly at a quarter to: reconciliation is cut at the stream's commits, so it runs during traffic.
reconcile_schedule = dg.ScheduleDefinition(
    job=reconcile_job, cron_schedule="45 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
