"""Pipeline health as an asset: profile-app heartbeat and archive freshness, with checks."""

import time

import dagster as dg
import redis

from orchestration.resources import PulseResource
from streaming.profile_app.sink import HEARTBEAT_KEY

MAX_HEARTBEAT_AGE_S = 120
MAX_ARCHIVE_AGE_S = 900


def heartbeat_age_seconds(client: redis.Redis, now: float) -> float | None:
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
    heartbeat = heartbeat_age_seconds(redis.Redis.from_url(settings.redis_url, socket_timeout=5), now)
    archive = newest_archive_file_age_seconds(settings.archive_path, now)
    yield dg.MaterializeResult(metadata={"heartbeat_age_s": heartbeat if heartbeat is not None else -1, "archive_age_s": archive if archive is not None else -1})
    yield dg.AssetCheckResult(
        check_name="profile_app_alive",
        passed=heartbeat is not None and heartbeat <= MAX_HEARTBEAT_AGE_S,
        metadata={"heartbeat_age_s": heartbeat if heartbeat is not None else -1, "limit_s": MAX_HEARTBEAT_AGE_S},
        description="The profile app writes a heartbeat at start-up and with every batch; an idle app's heartbeat ages too.",
    )
    yield dg.AssetCheckResult(
        check_name="archive_fresh",
        passed=archive is not None and archive <= MAX_ARCHIVE_AGE_S,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"archive_age_s": archive if archive is not None else -1, "limit_s": MAX_ARCHIVE_AGE_S},
    )
