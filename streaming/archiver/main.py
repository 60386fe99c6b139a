"""Run the archiver (`pulse run archiver`): wiring only; the events topic and the DLQ, each to its folder."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient
from quixstreams import Application

from core import service_registry
from core.archive_layout import dead_letter_partition_folder
from core.kafka_config import client_config
from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from streaming.app_runner import frozen_after, run_rejoining
from streaming.archiver.dead_letters import DEAD_LETTER_SCHEMA
from streaming.archiver.pipeline import build_dead_letter_pipeline, build_pipeline
from streaming.archiver.sink import ParquetArchiveSink, RawEventArchiveSink
from streaming.broker_hold_follower import BrokerHoldFollower
from streaming.liveness import app_consumer_config

logger = logging.getLogger(__name__)


def build_application(settings: PulseSettings) -> tuple[Application, ParquetArchiveSink]:
    brokers = service_registry.kafka_brokers(settings)
    ensure_topics(
        AdminClient(client_config(settings, brokers)),
        topic_specs(settings),
        settings.topic_replication_factor,
    )
    app = Application(
        broker_address=brokers,
        consumer_group=settings.archiver_consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.archive_commit_interval_seconds,
        consumer_poll_timeout=0.02,  # an idle loop comes round soon, e.g. to stop for a broker maintenance
        consumer_extra_config=app_consumer_config(settings, "archiver"),
        producer_extra_config=dict(settings.kafka_config),
        state_dir=settings.data_path / "state" / "archiver",
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    events = app.topic(settings.topic_events, value_deserializer="bytes", key_deserializer="bytes")
    sink = RawEventArchiveSink(settings.archive_path)
    build_pipeline(app.dataframe(events), sink=sink)
    dead_letters = app.topic(settings.topic_dlq, value_deserializer="bytes", key_deserializer="bytes")
    dead_letter_sink = ParquetArchiveSink(
        settings.archive_path, schema=DEAD_LETTER_SCHEMA, folder=dead_letter_partition_folder
    )
    build_dead_letter_pipeline(app.dataframe(dead_letters), sink=dead_letter_sink)
    return app, sink


def main(settings: PulseSettings | None = None) -> None:
    settings = settings or PulseSettings()
    logger.info(
        "archiver writing %s and %s to %s", settings.topic_events, settings.topic_dlq, settings.archive_path
    )
    hold = BrokerHoldFollower.from_settings(settings)
    run_rejoining(
        hold.wrap(frozen_after(lambda: build_application(settings)[0])), resume=hold.resume_after_stop
    )
