"""Dagster jobs: replay archived events into Kafka, rebuild profiles from the archive, purge forgotten
users from the archive."""

import time
from datetime import datetime

import dagster as dg

from assets.batch_runs import replay
from assets.forget_run import purge_forgotten
from assets.profile_rebuild import rebuild_profiles
from core.resources import PulseResource

#: Forgotten ids whose erasures the op's metadata lists (all of them are in the forget record).
MAX_IDS_IN_METADATA = 100


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
            "forgotten_parts": ", ".join(report.forgotten_parts[:20]),
        },
    )


@dg.op
def purge_forgotten_users(context: dg.OpExecutionContext, pulse: PulseResource) -> dg.Output[int]:
    """Remove the archived rows (valid, invalid, dead letters) and DuckDB rows of every forgotten id up
    to its forget time, and record per id what was erased (``pulse forget report``)."""
    settings = pulse.settings()
    started_ms = int(time.time() * 1000)
    result, forgets_read, forgotten = purge_forgotten(settings)
    context.log.info(f"purged {result.rows_removed} rows of {len(result.per_id)} forgotten ids")
    shown = dict(list(result.as_dict()["per_id"].items())[:MAX_IDS_IN_METADATA])
    return dg.Output(
        result.rows_removed,
        metadata={
            **{k: v for k, v in result.as_dict().items() if k != "per_id"},
            "forgotten_ids": len(forgotten),
            "forgets_read": forgets_read,
            "started_at_ms": started_ms,
            "per_id": dg.MetadataValue.json(shown),
        },
    )


@dg.job(
    description="Purge archived rows (valid, invalid, dead letters) and DuckDB rows of forgotten users "
    "up to their forget time; the durable forget record stays as every reader's suppression list."
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
