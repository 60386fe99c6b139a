"""Dagster jobs: replay archived events into Kafka."""


from datetime import datetime

import dagster as dg

from orchestration.batch import replay
from orchestration.resources import PulseResource


class ReplayConfig(dg.Config):
    start: str | None = None  # ISO 8601 event time, inclusive
    end: str | None = None  # ISO 8601 event time, exclusive


@dg.op
def replay_archive(context: dg.OpExecutionContext, config: ReplayConfig, pulse: PulseResource) -> dg.Output[int]:
    """Republish archived events for [start, end) to the events topic (idempotent)."""
    start = datetime.fromisoformat(config.start) if config.start else None
    end = datetime.fromisoformat(config.end) if config.end else None
    summary = replay(pulse.settings(), start, end, lambda done, total: context.log.info(f"replayed {done}/{total}"))
    return dg.Output(summary.replayed, metadata={"replayed": summary.replayed, "skipped_forgotten": summary.skipped_forgotten})


@dg.job(description="Replay archived events into the events topic (`pulse replay`).")
def replay_job() -> None:
    replay_archive()
