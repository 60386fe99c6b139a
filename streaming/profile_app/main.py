"""Run the profile app (`pulse run profile-app`): wiring only, the dataflow is in pipeline.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from quixstreams import Application
from quixstreams.models import TopicConfig

from core import service_registry
from core.forget_record import ForgetRecord
from core.kafka_config import client_config, durable_producer_config
from core.redis_client import redis_from_url
from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from enrichment.context import enrich_context
from enrichment.reference_store import CampaignFollower, CatalogFollower, GeoFollower
from streaming.app_runner import frozen_after, run_rejoining
from streaming.broker_hold_follower import BrokerHoldFollower
from streaming.liveness import app_consumer_config
from streaming.profile_app.cadence import AdaptiveCheckpoints
from streaming.profile_app.pipeline import build_pipeline
from streaming.profile_app.sink import ProfileSink
from streaming.profiles.admission import Admission
from streaming.profiles.intent_store import IntentModelFollower
from streaming.profiles.store import RedisProfileStore
from streaming.profiles.suppression import ensure_mirror
from streaming.rules.follower import RulesFollower
from streaming.traits.follower import traits_follower
from streaming.traits.registration import RegisteredTraits

logger = logging.getLogger(__name__)


def build_application(
    settings: PulseSettings, make_producer: Callable[[dict[str, Any]], Producer] = Producer
) -> tuple[Application, ProfileSink]:
    """The Quix application with the profile dataflow attached; ``make_producer`` makes the producer
    of its triggers, changes and dead letters (``BrokerHoldFollower.producer`` under `pulse up`)."""
    brokers = service_registry.kafka_brokers(settings)
    ensure_topics(
        AdminClient(client_config(settings, brokers)),
        topic_specs(settings),
        settings.topic_replication_factor,
    )
    client = redis_from_url(service_registry.redis_url(settings), socket_timeout=10)
    intent_model = IntentModelFollower(client, settings.catalog_refresh_seconds)
    intent_model.prime()  # before the first event, as the reference data below
    follower = traits_follower(settings)
    follower.prime()  # a bad traits file stops the start, with every problem listed
    traits = RegisteredTraits(client, follower)  # each set registered before an event uses it
    traits.current()
    store = RedisProfileStore(
        client,
        dedupe_window_seconds=settings.dedupe_window_seconds,
        session_gap_ms=settings.session_timeout_seconds * 1000,
        identity_max_ids=settings.identity_max_ids,
        intent_model=intent_model.current,
        traits=traits.current,
        forget_record=(record := ForgetRecord(settings.forget_path)),
    )
    store.load_functions()
    ensure_mirror(client, record)  # a wiped Redis gets its suppressions back before any event
    app = Application(
        broker_address=brokers,
        consumer_group=settings.consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_seconds,
        commit_every=settings.commit_every,
        consumer_poll_timeout=0.005,
        consumer_extra_config=app_consumer_config(settings, "profile-app"),
        producer_extra_config=dict(settings.kafka_config),
        state_dir=settings.data_path / "state" / "profile-app",
        use_changelog_topics=False,
        processing_guarantee="at-least-once",
        loglevel="WARNING",
    )
    topic_config = TopicConfig(
        num_partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        extra_config={
            "retention.ms": str(settings.topic_retention_ms),
            "retention.bytes": str(settings.topic_retention_bytes),
        },
    )
    events = app.topic(
        settings.topic_events, value_deserializer="bytes", key_deserializer="bytes", config=topic_config
    )
    dlq_producer = make_producer(durable_producer_config(settings, brokers))
    rules = RulesFollower(settings.rules_file, settings.rules_refresh_seconds)
    # Reference data (and the intent model above) is read before the first event: see ReferenceFollower.prime.
    geo = GeoFollower(client, settings.catalog_refresh_seconds)
    campaigns = CampaignFollower(client, settings.catalog_refresh_seconds)
    catalog = CatalogFollower(client, settings.catalog_refresh_seconds)
    for follower in (geo, campaigns, catalog):
        follower.prime()
    cadence = AdaptiveCheckpoints(app, settings.commit_interval_seconds, settings.commit_every)
    sink = ProfileSink(
        store,
        dlq_producer,
        settings.topic_dlq,
        rules=rules.current,
        triggers_topic=settings.topic_triggers,
        changes_topic=settings.topic_profile_changes,
        prefilter=settings.rules_prefilter,
        enrich=lambda metadata: enrich_context(metadata, geo=geo.current(), campaigns=campaigns.current()),
        after_checkpoint=cadence.after_checkpoint,
    )
    build_pipeline(
        app.dataframe(events),
        catalog=catalog.current,
        sink=sink,
        traits=traits.current,
        admission=Admission.from_settings(settings),
    )
    return app, sink


def main(settings: PulseSettings | None = None) -> None:
    settings = settings or PulseSettings()
    logger.info("profile app consuming %s as group %s", settings.topic_events, settings.consumer_group)
    hold = BrokerHoldFollower.from_settings(settings)
    run_rejoining(
        hold.wrap(frozen_after(lambda: build_application(settings, hold.producer)[0])),
        resume=hold.resume_after_stop,
    )
