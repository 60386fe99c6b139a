"""Schedules and sensors: health every 5 minutes, stream health every minute, run failures posted to a
webhook."""

import time

import dagster as dg
import httpx

from assets.kafka_health import BrokerUnavailable, OffsetSnapshot, measure_stream_health
from assets.pipeline_health import LIMITS
from core import service_registry
from core.resources import PulseResource
from core.settings import PulseSettings

#: A problem that persists asks for at most one health run per this many seconds.
ALERT_EVERY_SECONDS = 900
#: How long the sensor waits for the broker (sensor ticks time out after 60 s).
PROBE_TIMEOUT_SECONDS = 10.0

health_job = dg.define_asset_job("pipeline_health_job", selection=["pipeline_health", "stream_health"])
health_schedule = dg.ScheduleDefinition(
    job=health_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)


def failure_message(run: dg.DagsterRun, error: str | None) -> dict[str, str]:
    return {
        "text": (
            f"Pulse: Dagster run {run.run_id} of job {run.job_name} failed: {error or 'see the Dagster UI'}"
        )
    }


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def post_run_failures(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    """Posts each failed run to PULSE_ALERT_WEBHOOK_URL (Slack-compatible JSON) when it is set."""
    url = PulseSettings().alert_webhook_url
    if not url:
        return dg.SkipReason("PULSE_ALERT_WEBHOOK_URL is not set; failures are only shown in the UI")
    error = context.failure_event.message if context.failure_event else None
    try:
        response = httpx.post(url, json=failure_message(context.dagster_run, error), timeout=10)
    except httpx.HTTPError as exc:  # the URL is a secret (Slack): never let it reach the logs
        raise RuntimeError(f"alert webhook unreachable ({type(exc).__name__})") from None
    if response.is_error:
        raise RuntimeError(f"alert webhook answered {response.status_code}")
    return None


@dg.sensor(
    asset_selection=["stream_health"],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def stream_health_sensor(
    context: dg.SensorEvaluationContext, pulse: PulseResource
) -> dg.RunRequest | dg.SkipReason:
    """Measures lag, profile freshness and the DLQ rate every minute; materializes ``stream_health`` when one
    fails.

    The cursor keeps the previous offsets, so the DLQ rate covers the last minute. The run
    makes the failing check visible in the UI; stale profiles or an unreachable broker also
    fail it, which ``post_run_failures`` posts. A problem that persists triggers again every
    ALERT_EVERY_SECONDS, not every minute.
    """
    settings = pulse.settings()
    now = time.time()
    bucket = int(now // ALERT_EVERY_SECONDS)
    try:
        previous = OffsetSnapshot.from_json(context.cursor)
        health = measure_stream_health(
            settings, service_registry.kafka_brokers(settings), previous, now, PROBE_TIMEOUT_SECONDS
        )
    except BrokerUnavailable as exc:
        context.log.warning("stream health probe failed: %s", exc)
        return dg.RunRequest(
            run_key=f"broker_unavailable@{bucket}", tags={"pulse/health": "broker_unavailable"}
        )
    context.update_cursor(health.snapshot.to_json())
    problems = health.problems(LIMITS)
    if not problems:
        return dg.SkipReason(f"healthy: {health.summary()}")
    return dg.RunRequest(run_key=f"{'+'.join(problems)}@{bucket}", tags={"pulse/health": ",".join(problems)})
