"""Dagster jobs: replay archived events into Kafka, rebuild profiles from the archive, purge forgotten
users from the archive."""

from datetime import datetime

import dagster as dg

from assets.batch_runs import replay
from assets.forget import purge_archive
from assets.profile_rebuild import rebuild_profiles
from assets.reconciliation import forgotten_ids
from core.redis_client import redis_from_url
from core.resources import PulseResource


class ReplayConfig(dg.Config):
    start: str | None = None  # ISO 8601 event time, inclusive
    end: str | None = None  # ISO 8601 event time, exclusive
    rebuild: bool = False  # rebuild the people it would count twice, instead of failing


@dg.op
def replay_archive(
    context: dg.OpExecutionContext, config: ReplayConfig, pulse: PulseResource
) -> dg.Output[int]:
    """Republish archived events for [start, end) to the events topic (see assets.batch_runs.replay)."""
    start = datetime.fromisoformat(config.start) if config.start else None
    end = datetime.fromisoformat(config.end) if config.end else None
    summary = replay(
        pulse.settings(),
        start,
        end,
        lambda done, total: context.log.info(f"replayed {done}/{total}"),
        rebuild=config.rebuild,
        rebuild_progress=lambda stage, done, total: context.log.info(f"rebuild {stage}: {done}/{total}"),
    )
    rebuilt = summary.rebuilt.as_dict() if summary.rebuilt else {}
    return dg.Output(
        summary.replayed,
        metadata={
            "replayed": summary.replayed,
            "skipped_forgotten": summary.skipped_forgotten,
            **{f"rebuilt_{k}": v for k, v in rebuilt.items() if not isinstance(v, list)},
        },
    )


class RebuildConfig(dg.Config):
    ids: list[str] = []  # user or anonymous ids: each one's person is rebuilt
    all: bool = False  # every profile instead


@dg.op
def rebuild_from_archive(
    context: dg.OpExecutionContext, config: RebuildConfig, pulse: PulseResource
) -> dg.Output[int]:
    """Rebuild the people of ``ids`` (or every profile) from the archive (assets.profile_rebuild)."""
    report = rebuild_profiles(
        pulse.settings(),
        config.ids,
        all_profiles=config.all,
        progress=lambda stage, done, total: context.log.info(f"{stage}: {done}/{total}"),
    )
    body = report.as_dict()
    return dg.Output(
        report.parts,
        metadata={
            **{k: v for k, v in body.items() if not isinstance(v, list)},
            "people": ", ".join(report.people[:20]),
            "skipped_forgotten": ", ".join(report.skipped_forgotten),
        },
    )


@dg.op
def purge_forgotten_users(pulse: PulseResource) -> dg.Output[int]:
    """Remove archived rows of every id forgotten through DELETE /v1/profiles (the pulse:forget stream)."""
    settings = pulse.settings()
    forgotten = forgotten_ids(redis_from_url(settings.redis_url))
    result = purge_archive(settings.archive_path, forgotten)
    return dg.Output(result["rows_removed"], metadata={**result, "forgotten_ids": len(forgotten)})


@dg.job(
    description="Purge archived rows of forgotten users; "
    "the forget stream stays as replay's suppression list."
)
def forget_job() -> None:
    purge_forgotten_users()


forget_schedule = dg.ScheduleDefinition(
    job=forget_job, cron_schedule="0 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)


@dg.job(description="Replay archived events into the events topic (`pulse replay`).")
def replay_job() -> None:
    replay_archive()


@dg.job(
    description="Rebuild people (run config `ids`) or every profile (`all: true`) from the archive "
    "while the stream runs, exactly (`pulse rebuild`)."
)
def rebuild_profiles_job() -> None:
    rebuild_from_archive()
