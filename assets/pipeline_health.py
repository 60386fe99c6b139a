"""Pipeline health as assets: profile-app heartbeat and archive freshness; consumer lag, profile freshness,
DLQ rate."""

import time
from dataclasses import asdict

import dagster as dg

from assets.kafka_health import Limits, OffsetSnapshot, StreamHealth, measure_stream_health
from core import service_registry
from core.redis_client import RedisClient, redis_from_url
from core.resources import PulseResource
from streaming.profile_app.sink import HEARTBEAT_KEY

MAX_HEARTBEAT_AGE_S = 120
MAX_ARCHIVE_AGE_S = 900


def heartbeat_age_seconds(client: RedisClient, now: float) -> float | None:
    """Seconds since the profile app's last heartbeat, or None if it never wrote one."""
    value = client.get(HEARTBEAT_KEY)
    return None if value is None else now - int(value) / 1000


def newest_archive_file_age_seconds(archive, now: float) -> float | None:
    files = list((archive / "events").glob("dt=*/hour=*/*.parquet"))
    return None if not files else now - max(f.stat().st_mtime for f in files)


@dg.asset(
    kinds={"redis", "parquet"},
    group_name="health",
    check_specs=[
        dg.AssetCheckSpec("profile_app_alive", asset="pipeline_health"),
        dg.AssetCheckSpec("archive_fresh", asset="pipeline_health"),
    ],
)
def pipeline_health(pulse: PulseResource):
    """Heartbeat of the profile app and age of the newest archive file (materialized every 5 minutes)."""
    settings = pulse.settings()
    now = time.time()
    heartbeat = heartbeat_age_seconds(redis_from_url(settings.redis_url, socket_timeout=5), now)
    archive = newest_archive_file_age_seconds(settings.archive_path, now)
    yield dg.MaterializeResult(
        metadata={
            "heartbeat_age_s": heartbeat if heartbeat is not None else -1,
            "archive_age_s": archive if archive is not None else -1,
        }
    )
    yield dg.AssetCheckResult(
        check_name="profile_app_alive",
        passed=heartbeat is not None and heartbeat <= MAX_HEARTBEAT_AGE_S,
        metadata={
            "heartbeat_age_s": heartbeat if heartbeat is not None else -1,
            "limit_s": MAX_HEARTBEAT_AGE_S,
        },
        description="The profile app writes a heartbeat at start-up and with every batch; "
        "an idle app's heartbeat ages too.",
    )
    yield dg.AssetCheckResult(
        check_name="archive_fresh",
        passed=archive is not None and archive <= MAX_ARCHIVE_AGE_S,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"archive_age_s": archive if archive is not None else -1, "limit_s": MAX_ARCHIVE_AGE_S},
    )


LIMITS = Limits()


def previous_snapshot(instance: dg.DagsterInstance) -> OffsetSnapshot | None:
    """The offsets recorded by the last ``stream_health`` materialization, so rates cover the time since."""
    event = instance.get_latest_materialization_event(dg.AssetKey("stream_health"))
    recorded = (
        event.asset_materialization.metadata.get("offsets") if event and event.asset_materialization else None
    )
    return OffsetSnapshot.from_json(recorded.value if recorded is not None else None)


def stream_health_checks(health: StreamHealth, limits: Limits = LIMITS) -> list[dg.AssetCheckResult]:
    problems = set(health.problems(limits))
    app, archiver, dlq = health.profile_app, health.archiver, health.dlq
    lag_metadata: dict[str, object] = {"limit_s": limits.consumer_lag_s}
    for name, lag in (("profile_app", app), ("archiver", archiver)):
        lag_metadata |= {
            f"{name}_group": lag.group,
            f"{name}_messages": lag.messages,
            f"{name}_lag_s": round(lag.oldest_unconsumed_age_s, 1),
        }
    return [
        dg.AssetCheckResult(
            check_name="profiles_fresh",
            passed="profiles_fresh" not in problems,
            metadata={
                "staleness_s": round(app.oldest_unconsumed_age_s, 1),
                "events_not_applied": app.messages,
                "limit_s": limits.profile_staleness_s,
            },
            description="Age of the oldest event the profile app has not applied yet (0 when caught up); "
            "it commits offsets only after Redis confirmed the writes.",
        ),
        dg.AssetCheckResult(
            check_name="consumer_lag",
            passed="consumer_lag" not in problems,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=lag_metadata,
            description="Records after each group's committed offsets on the events topic, "
            "and the age of the oldest.",
        ),
        dg.AssetCheckResult(
            check_name="dlq_rate",
            passed="dlq_rate" not in problems,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "dead_letters": dlq.dead_letters,
                "events": dlq.events,
                "dead_letters_per_minute": round(dlq.per_minute, 2),
                "events_per_minute": round(dlq.events_per_minute, 2),
                "ratio": round(dlq.ratio, 4),
                "window_s": round(dlq.window_s, 1),
                "basis": dlq.basis,
                "limit_ratio": limits.dlq_ratio,
            },
            description=f"Dead letters per event on the events topic; fails above {limits.dlq_ratio:.0%} "
            f"once there are {limits.dlq_minimum} or more.",
        ),
    ]


@dg.asset(
    kinds={"kafka"},
    group_name="health",
    check_specs=[
        # Blocking: stale profiles fail the run, so post_run_failures sends them to the webhook.
        dg.AssetCheckSpec("profiles_fresh", asset="stream_health", blocking=True),
        dg.AssetCheckSpec("consumer_lag", asset="stream_health"),
        dg.AssetCheckSpec("dlq_rate", asset="stream_health"),
    ],
)
def stream_health(context: dg.AssetExecutionContext, pulse: PulseResource):
    """Consumer lag of the profile app and the archiver, profile freshness and the dead-letter rate, read
    from the broker.

    Rates cover the time since the previous materialization (offsets recorded in its metadata),
    or the retained topics the first time. See assets/kafka_health.py for why offsets come from
    fetch responses (Tansu).
    """
    settings = pulse.settings()
    health = measure_stream_health(
        settings, service_registry.kafka_brokers(settings), previous_snapshot(context.instance)
    )
    yield dg.MaterializeResult(
        metadata={
            "offsets": dg.MetadataValue.json(asdict(health.snapshot)),
            "problems": ", ".join(health.problems(LIMITS)) or "none",
            "summary": health.summary(),
        }
    )
    yield from stream_health_checks(health)
