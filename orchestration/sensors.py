"""Schedules and sensors: health every 5 minutes, and run failures posted to a webhook when configured."""

import dagster as dg
import httpx

from orchestration.settings import PulseSettings

health_job = dg.define_asset_job("pipeline_health_job", selection=["pipeline_health"])
health_schedule = dg.ScheduleDefinition(job=health_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING)


def failure_message(run: dg.DagsterRun, error: str | None) -> dict[str, str]:
    return {"text": f"Pulse: Dagster run {run.run_id} of job {run.job_name} failed: {error or 'see the Dagster UI'}"}


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def post_run_failures(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    """Posts each failed run to PULSE_ALERT_WEBHOOK_URL (Slack-compatible JSON) when it is set."""
    url = PulseSettings().alert_webhook_url
    if not url:
        return dg.SkipReason("PULSE_ALERT_WEBHOOK_URL is not set; failures are only shown in the UI")
    error = context.failure_event.message if context.failure_event else None
    httpx.post(url, json=failure_message(context.dagster_run, error), timeout=10).raise_for_status()
    return None
