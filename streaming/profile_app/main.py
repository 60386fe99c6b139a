"""Run the profile app (`pulse run profile-app`): wiring only, the dataflow is in pipeline.py."""

from __future__ import annotations

import logging

import redis
from quixstreams import Application
from quixstreams.models import TopicConfig

from enrichment.reference_store import CatalogFollower
from orchestration import service_registry
from orchestration.kafka_config import consumer_tuning
from orchestration.settings import PulseSettings
from streaming.profile_app.pipeline import build_pipeline
from streaming.profile_app.sink import RedisProfileSink
from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)


def build_application(settings: PulseSettings) -> tuple[Application, RedisProfileSink]:
    """The Quix application with the profile dataflow attached."""
    brokers = service_registry.kafka_brokers(settings)
    client = redis.Redis.from_url(service_registry.redis_url(settings), socket_timeout=10)
    store = RedisProfileStore(
        client,
        dedupe_window_seconds=settings.dedupe_window_seconds,
        session_gap_ms=settings.session_timeout_seconds * 1000,
    )
    app = Application(
        broker_address=brokers,
        consumer_group=settings.consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_seconds,
        commit_every=settings.commit_every,
        consumer_poll_timeout=0.01,
        consumer_extra_config=consumer_tuning(settings),
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
    events = app.topic(settings.topic_events, value_deserializer="bytes", key_deserializer="bytes", config=topic_config)
    dlq = app.topic(settings.topic_dlq, value_serializer="bytes", key_serializer="bytes", config=topic_config)
    sink = RedisProfileSink(store)
    catalog = CatalogFollower(client, settings.catalog_refresh_seconds)
    build_pipeline(app.dataframe(events), catalog=catalog.current, dlq_topic=dlq, profile_sink=sink)
    return app, sink


def main(settings: PulseSettings | None = None) -> None:
    settings = settings or PulseSettings()
    app, _ = build_application(settings)
    logger.info("profile app consuming %s as group %s", settings.topic_events, settings.consumer_group)
    app.run()
