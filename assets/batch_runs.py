"""`pulse reconcile` and `pulse replay`: the archive against live Redis, and back into Kafka."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from confluent_kafka import Producer

from assets.archive import offsets_at, profiles_arrived_before, profiles_from, read_valid_events
from assets.batch_sql import recompute_documents, recompute_identity
from assets.forgotten import read_suppressions
from assets.identity_unlinks import recorded_unlinks
from assets.kafka_health import BrokerUnavailable, committed_offsets, wait_for_archiver
from assets.profile_rebuild import Progress as RebuildProgress
from assets.profile_rebuild import RebuildReport, rebuild_profiles
from assets.reconciliation import (
    ReconcileReport,
    diff_people,
    diff_profiles,
    live_documents,
    live_people,
    live_profile_ids,
    unlinked_pairs,
)
from core import service_registry
from core.archive_layout import earlier_cut
from core.forgetting import Suppressions, is_forgotten
from core.kafka_config import durable_producer_config
from core.redis_client import RedisClient, redis_from_url
from core.service_registry import ServiceNotConfigured
from core.settings import PulseSettings
from enrichment.campaigns import CampaignIndex
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.context import enrich_context
from enrichment.geo import GeoIndex
from enrichment.reference_store import load_campaigns, load_catalog, load_geo
from streaming.profiles.admission import Admission
from streaming.profiles.document import now
from streaming.profiles.keys import fields_key
from streaming.profiles.store import RedisProfileStore
from streaming.rules.backtest import BacktestReport, backtest
from streaming.rules.engine import RuleEngine
from streaming.rules.loader import load_rules
from streaming.traits.follower import load_configured_traits

logger = logging.getLogger(__name__)


def stream_cut(settings: PulseSettings) -> tuple[str, dict[int, int]] | None:
    """(brokers, the profile app's committed offsets: partition -> next offset); None without any."""
    try:
        brokers = service_registry.kafka_brokers(settings)
        committed = committed_offsets(settings, brokers, settings.consumer_group, settings.topic_events, 10.0)
    except (BrokerUnavailable, ServiceNotConfigured) as exc:
        logger.info("reconciling the whole archive: no committed offsets of the profile app (%s)", exc)
        return None
    return (brokers, committed) if committed else None


class AsOfInFuture(ValueError):
    """``--as-of`` names a time that has not come yet."""


def reconcile(
    settings: PulseSettings,
    progress: Callable[[int, int], None] | None = None,
    as_of: datetime | None = None,
) -> ReconcileReport:
    """Recompute every profile from the archive and diff it against Redis, as of the stream's commits.

    On a live system the comparison is cut at the profile app's committed offsets: the batch
    side reads the archived records before them (after waiting for the archiver to get there),
    and profiles with records at or after them, which the stream may be applying right now, are
    left out of this run and counted as ``in_flight``. Without committed offsets (no broker,
    a stopped system) the whole archive is compared. With ``as_of`` the cut is also at the
    records the broker received from that time on (the earlier of the two per partition), and
    windows and decay are read at that time on both sides. ``progress(done, total)`` follows the
    reading of live profiles, the long part.
    """
    if as_of is not None and as_of.timestamp() * 1000 > now():
        raise AsOfInFuture(f"--as-of {as_of.isoformat()} is in the future")
    brokers, cut = stream_cut(settings) or ("", None)
    if cut:
        wait_for_archiver(settings, brokers, cut)
    if as_of is not None:
        at = offsets_at(settings.archive_path, as_of)
        cut = at if cut is None else earlier_cut(cut, at)
    client = redis_from_url(service_registry.redis_url(settings))
    traits = load_configured_traits(settings)
    store = RedisProfileStore(
        client,
        dedupe_window_seconds=settings.dedupe_window_seconds,
        session_gap_ms=settings.session_timeout_seconds * 1000,
        identity_max_ids=settings.identity_max_ids,
        traits=lambda: traits,
    )
    forgotten = read_suppressions(settings, client)
    catalog = load_catalog(client)
    read_at = now() if as_of is None else int(as_of.timestamp() * 1000)  # windows and decay, both sides
    batch = recompute_documents(
        settings.archive_path,
        catalog.categories,
        settings.session_timeout_seconds * 1000,
        forgotten=forgotten,
        traits=traits,
        now_ms=read_at,
        cut=cut,
        admission=Admission.from_settings(settings),
    )
    ids = set(live_profile_ids(client)) | set(batch)  # a forgotten person who came back has both
    logger.info("recomputed %d profiles from the archive; reading %d live profiles", len(batch), len(ids))
    live = live_documents(store, ids, progress, now_ms=read_at)
    in_flight: set[str] = set()
    if cut is not None:
        # Every record the stream could have applied before the read above is below the topic's
        # end now; once that is archived, the profiles with records from the cut on are known.
        if brokers:
            wait_for_archiver(settings, brokers)
        in_flight = profiles_from(settings.archive_path, cut) & (set(batch) | set(live))
    report = diff_profiles(
        {k: v for k, v in batch.items() if k not in in_flight},
        {k: v for k, v in live.items() if k not in in_flight},
    )
    report.in_flight = len(in_flight)
    # People: each archived id's person (identify links between users, the limit, unlinks).
    identity = recompute_identity(
        settings.archive_path,
        settings.identity_max_ids,
        unlinked_pairs(client) | set(recorded_unlinks(settings.archive_path)),
        forgotten=forgotten,
        cut=cut,
        admission=Admission.from_settings(settings),
    )
    people_ids = sorted(identity.person_of)  # forgotten events are left out of both sides
    diff_people(
        report,
        {pid: identity.person_of[pid] for pid in people_ids},
        live_people(store, people_ids),
        in_flight,
    )
    return report


class ReplayWouldRecount(RuntimeError):
    """A replay would count events again: their event_id markers have expired over live profiles."""

    def __init__(self, message: str, profile_ids: list[str]) -> None:
        super().__init__(message)
        self.profile_ids = profile_ids


@dataclass
class ReplaySummary:
    replayed: int = 0
    skipped_forgotten: int = 0
    #: With ``rebuild``: the rebuild of the people the replay would have counted twice.
    rebuilt: RebuildReport | None = None


def replay(
    settings: PulseSettings,
    start: datetime | None,
    end: datetime | None,
    progress: Callable[[int, int], None] | None = None,
    *,
    rebuild: bool = False,
    rebuild_progress: RebuildProgress | None = None,
) -> ReplaySummary:
    """Republish archived valid events with event time in [start, end) to the events topic.

    Replaying over live profiles counts nothing twice within the dedupe window: every event
    keeps its event_id. Beyond it ``ReplayWouldRecount`` is raised before anything is sent, or,
    with ``rebuild``, those people are rebuilt from the archive (assets/profile_rebuild.py) and
    the window's other events are replayed. Events forgotten by the forget rule
    (core/forgetting.py) are skipped; a forgotten person's later events are replayed.
    """
    client = redis_from_url(service_registry.redis_url(settings))
    forgotten = read_suppressions(settings, client)
    summary = ReplaySummary()
    recounted = _would_recount(settings, client, start, end, forgotten)
    rebuilt: set[str] = set()
    if recounted and not rebuild:
        raise ReplayWouldRecount(_recount_message(settings, recounted), recounted)
    if recounted:
        summary.rebuilt = rebuild_profiles(settings, recounted, progress=rebuild_progress)
        rebuilt = set(summary.rebuilt.part_ids)  # complete now: their events need no replay
    events = read_valid_events(settings.archive_path, start, end)
    producer = Producer(durable_producer_config(settings, service_registry.kafka_brokers(settings)))
    failures: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    for index, event in enumerate(events, 1):
        if is_forgotten(event.key, event.event_time_ms, forgotten):
            summary.skipped_forgotten += 1
            continue
        if event.key in rebuilt:
            continue
        while True:
            try:
                producer.produce(
                    settings.topic_events, value=event.raw, key=event.key.encode(), on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        summary.replayed += 1
        if progress and index % 500 == 0:
            progress(index, len(events))
    remaining = producer.flush(60)
    if progress:
        progress(len(events), len(events))
    if remaining or failures:
        raise RuntimeError(
            f"replay incomplete: {remaining} undelivered, {len(failures)} failed ({failures[:1]}); "
            "run it again (it is idempotent)"
        )
    return summary


def _would_recount(
    settings: PulseSettings,
    client: RedisClient,
    start: datetime | None,
    end: datetime | None,
    forgotten: Suppressions,
) -> list[str]:
    """The live profiles a replay of the window may count events of twice.

    An event's marker lives ``PULSE_DEDUPE_WINDOW_SECONDS`` from when the stream applied it, about
    when it reached the broker. An event that arrived longer ago than that, of a profile that is
    live, may be in that profile already with its marker gone. (A profile that is absent, e.g.
    after Redis was lost, is rebuilt exactly by a replay.)
    """
    window = timedelta(seconds=settings.dedupe_window_seconds)
    # A minute of margin: an event applied a little after it arrived keeps its marker a little longer.
    stale = profiles_arrived_before(
        settings.archive_path, datetime.now(UTC) - window + timedelta(minutes=1), start, end, forgotten
    )
    candidates = sorted(stale)
    pipe = client.pipeline(transaction=False)
    for profile_id in candidates:
        pipe.exists(fields_key(profile_id))
    return [p for p, found in zip(candidates, pipe.execute() if candidates else [], strict=True) if found]


def _recount_message(settings: PulseSettings, live: list[str]) -> str:
    window = timedelta(seconds=settings.dedupe_window_seconds)
    shown = " ".join(live[:5]) + (" ..." if len(live) > 5 else "")
    return (
        f"{len(live)} live profiles (e.g. {', '.join(live[:3])}) have events in this window that "
        f"arrived more than the dedupe window ({window}) ago: their event_id markers have expired, "
        "so replaying them would count them again. Rebuild those people from the archive instead: "
        "run the same replay with --rebuild (it rebuilds them exactly, while the stream runs, and "
        f"replays the rest), or `pulse rebuild {shown}`. Or replay a window of events that arrived "
        "within the dedupe window."
    )


def backtest_rules(
    settings: PulseSettings, rules_file: Path, start: datetime | None, end: datetime | None
) -> BacktestReport:
    """Run a rule file over the archive without forgotten events (``RuleFileError``: the file is invalid)."""
    engine = RuleEngine(load_rules(rules_file))
    events = read_valid_events(settings.archive_path, start, end)
    geo, campaigns = _geo_and_campaigns(settings)
    forgotten = read_suppressions(settings, _redis_or_none(settings))
    return backtest(
        engine,
        (e.raw for e in events if not is_forgotten(e.key, e.event_time_ms, forgotten)),
        _catalog_for_batch(settings),
        settings.session_timeout_seconds * 1000,
        enrich=lambda metadata: enrich_context(metadata, geo=geo, campaigns=campaigns),
        traits=load_configured_traits(settings),
        admission=Admission.from_settings(settings),
        max_ids=settings.identity_max_ids,
        unlinked=set(recorded_unlinks(settings.archive_path)),
    )


def _redis_or_none(settings: PulseSettings) -> RedisClient | None:
    try:
        return redis_from_url(service_registry.redis_url(settings), socket_connect_timeout=2)
    except service_registry.ServiceNotConfigured:
        return None


def _geo_and_campaigns(settings: PulseSettings) -> tuple[GeoIndex, CampaignIndex]:
    """The live geo ranges and campaigns, or empty ones when Redis is not reachable."""
    try:
        client = redis_from_url(service_registry.redis_url(settings), socket_connect_timeout=2)
        return load_geo(client), load_campaigns(client)
    except (redis.RedisError, service_registry.ServiceNotConfigured) as exc:
        logger.info("no live geo/campaign data (%s); event.geo and event.campaign will be empty", exc)
        return GeoIndex(), CampaignIndex()


def _catalog_for_batch(settings: PulseSettings) -> Catalog:
    """The live catalog when Redis is reachable, else the sample file (what `pulse up` publishes)."""
    try:
        client = redis_from_url(service_registry.redis_url(settings), socket_connect_timeout=2)
        catalog = load_catalog(client)
        if catalog.version:
            return catalog
    except (redis.RedisError, service_registry.ServiceNotConfigured) as exc:
        logger.info("no live catalog (%s); using the sample catalog file", exc)
    rows = read_catalog_csv(SAMPLE_CATALOG)
    return Catalog("sample", categories_from_rows(rows))
