"""Backfill computed traits from the archive, exactly, while the stream runs (`pulse traits backfill`).

A trait counts events from the moment the profile app loads it. The backfill adds, per profile,
the trait's cells for the archived events the stream applied before that (their dedupe marker
names an older trait-set generation, or expired: see streaming/traits/registration.py), in one
atomic Redis call per profile that runs between the stream's own updates. Nothing is counted
twice: an event the stream applies with the trait is skipped, whatever the order, and a profile
already backfilled for a trait is skipped (``bf:<trait>``), so a second run adds nothing.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster as dg
import duckdb

from assets.forgotten import read_suppressions
from assets.kafka_health import ArchiverBehind, BrokerUnavailable, wait_for_archiver
from core import service_registry
from core.archive_layout import archive_records_sql, has_archive
from core.forgetting import Suppressions, is_forgotten
from core.redis_client import redis_from_url
from core.resources import PulseResource
from core.settings import PulseSettings
from enrichment.reference_store import load_catalog
from streaming.profiles.store import RedisProfileStore
from streaming.traits.backfill import ArchivedRecord, backfill_jobs
from streaming.traits.definition import TraitDefinition
from streaming.traits.follower import load_configured_traits
from streaming.traits.registration import BACKFILLED_KEY, backfilled, live_since

logger = logging.getLogger(__name__)

#: Profiles per pipelined round trip.
CHUNK = 500


class TraitBackfillError(RuntimeError):
    """The backfill cannot run (the reason says what to do)."""


@dataclass
class BackfillReport:
    traits: list[str] = field(default_factory=list)
    profiles: int = 0
    events: int = 0
    ops_applied: int = 0
    profiles_not_live: int = 0  # in the archive, not (or no longer) in Redis: nothing written

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def choose_traits(
    declared: Sequence[TraitDefinition],
    live: Sequence[str],
    backfilled: Sequence[str],
    names: Sequence[str],
) -> list[TraitDefinition]:
    """The traits to backfill: ``names`` (declared and live), else every live one not backfilled yet."""
    by_name = {trait.name: trait for trait in declared}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise TraitBackfillError(f"not declared in the traits file: {', '.join(unknown)}")
        chosen = [by_name[n] for n in names]
    else:
        chosen = [t for t in declared if t.storage_id in live and t.storage_id not in backfilled]
    waiting = [t.name for t in chosen if t.storage_id not in live]
    if waiting:
        raise TraitBackfillError(
            f"not live yet: {', '.join(waiting)}. The profile app counts a trait from when it loads "
            "it; start it (or wait PULSE_TRAITS_REFRESH_SECONDS after editing the file) and run again."
        )
    return chosen


def read_archived_records(root: Path, forgotten: Suppressions) -> Iterator[ArchivedRecord]:
    """Each valid archived event once per profile, with the broker time of its first record;
    forgotten events left out (core/forgetting.py)."""
    if not has_archive(root):
        return
    query = f"""
        SELECT any_value(raw ORDER BY kafka_partition, kafka_offset) AS raw,
               coalesce(user_id, anonymous_id) AS profile_id,
               epoch_ms(min(kafka_timestamp)) AS arrived, epoch_ms(any_value(event_time)) AS ts
        FROM ({archive_records_sql(root, "valid")})
        GROUP BY profile_id, event_id
    """
    with duckdb.connect() as con:
        cursor = con.execute(query)
        while rows := cursor.fetchmany(10_000):
            for raw, profile_id, arrived, ts in rows:
                if not is_forgotten(profile_id, ts, forgotten):
                    yield ArchivedRecord(bytes(raw), profile_id, int(arrived))


def backfill_traits(
    settings: PulseSettings,
    names: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """Backfill the chosen traits (default: every live trait not backfilled yet) from the archive."""
    client = redis_from_url(service_registry.redis_url(settings))
    traits = load_configured_traits(settings)
    live = live_since(client)
    chosen = choose_traits(traits.computed, list(live), list(backfilled(client)), names)
    report = BackfillReport(traits=[t.name for t in chosen])
    if not chosen:
        return report
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    window_ms = settings.dedupe_window_seconds * 1000
    expired = [t.name for t in chosen if live[t.storage_id].at_ms < now_ms - window_ms]
    if expired:
        raise TraitBackfillError(
            f"{', '.join(expired)} went live more than the dedupe window "
            f"({settings.dedupe_window_seconds} s) ago: the markers that tell which events they "
            "counted have expired. Rename the trait (it starts afresh) and backfill it then."
        )
    try:  # every event applied before the traits went live is then archived
        wait_for_archiver(settings, service_registry.kafka_brokers(settings))
    except (ArchiverBehind, BrokerUnavailable) as exc:
        raise TraitBackfillError(str(exc)) from None
    records = read_archived_records(settings.archive_path, read_suppressions(settings, client))
    generations = {t.storage_id: live[t.storage_id].generation for t in chosen}
    jobs = backfill_jobs(records, traits, generations, load_catalog(client), now_ms, now_ms - window_ms)
    store = RedisProfileStore(
        client,
        dedupe_window_seconds=settings.dedupe_window_seconds,
        session_gap_ms=settings.session_timeout_seconds * 1000,
        identity_max_ids=settings.identity_max_ids,
    )
    ids = list(jobs)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for profile_id, applied in zip(
            chunk, store.backfill([(pid, jobs[pid]) for pid in chunk]), strict=True
        ):
            if applied < 0:
                report.profiles_not_live += 1
            else:
                report.profiles += 1
                report.ops_applied += applied
            report.events += len(jobs[profile_id][1])
        if progress is not None:
            progress(min(start + CHUNK, len(ids)), len(ids))
    client.hset(BACKFILLED_KEY, mapping={t.storage_id: now_ms for t in chosen})
    logger.info("backfilled %s: %s", report.traits, report.as_dict())
    return report


def pending_backfill(settings: PulseSettings) -> list[str]:
    """Names of declared traits that are live and not backfilled yet (what the sensor waits for)."""
    client = redis_from_url(service_registry.redis_url(settings))
    declared = load_configured_traits(settings).computed
    return [t.name for t in choose_traits(declared, list(live_since(client)), list(backfilled(client)), ())]


@dg.asset(kinds={"redis", "duckdb"}, group_name="profiles")
def computed_traits_backfill(context: dg.AssetExecutionContext, pulse: PulseResource) -> dg.MaterializeResult:
    """New computed traits made exact for history: their cells from the archive, each event counted once."""
    report = backfill_traits(
        pulse.settings(), progress=lambda done, total: context.log.info(f"backfilled {done}/{total} profiles")
    )
    return dg.MaterializeResult(metadata={**report.as_dict(), "traits": dg.MetadataValue.json(report.traits)})


traits_backfill_job = dg.define_asset_job("traits_backfill_job", selection=[computed_traits_backfill])


@dg.sensor(
    job=traits_backfill_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def new_traits_sensor(
    context: dg.SensorEvaluationContext, pulse: PulseResource
) -> dg.RunRequest | dg.SkipReason:
    """Starts a backfill when a declared trait has gone live in the profile app and is not backfilled yet."""
    try:
        pending = pending_backfill(pulse.settings())
    except Exception as exc:  # noqa: BLE001 - Redis down, a bad file: say so, try at the next tick
        return dg.SkipReason(f"cannot read the traits: {exc}")
    if not pending:
        return dg.SkipReason("every live trait is backfilled")
    return dg.RunRequest(run_key=",".join(sorted(pending)), tags={"traits": ",".join(pending)})
