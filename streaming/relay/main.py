"""Run the webhook relay (`pulse run relay`): wiring only, the dataflow is in pipeline.py."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import Executor, ThreadPoolExecutor

import httpx
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from quixstreams import Application

from core import service_registry
from core.kafka_config import client_config, durable_producer_config
from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from streaming.app_runner import run_rejoining
from streaming.broker_hold_follower import BrokerHoldFollower
from streaming.liveness import app_consumer_config
from streaming.relay.delivery import deliver_webhook
from streaming.relay.pipeline import build_pipeline
from streaming.relay.policy import RetryPolicy, max_poll_interval_ms
from streaming.relay.secret import signing_secret
from streaming.relay.sink import RelaySink

logger = logging.getLogger(__name__)


def build_application(
    settings: PulseSettings, client: httpx.Client, pool: Executor, secret: str
) -> tuple[Application, RelaySink]:
    """The Quix app delivering the triggers topic's webhooks through ``client`` on ``pool``."""
    brokers = service_registry.kafka_brokers(settings)
    ensure_topics(
        AdminClient(client_config(settings, brokers)),
        topic_specs(settings),
        settings.topic_replication_factor,
    )
    policy = RetryPolicy.from_settings(settings)
    poll_interval = max_poll_interval_ms(policy, settings.webhook_max_in_flight, settings.webhook_concurrency)
    app = Application(
        broker_address=brokers,
        consumer_group=settings.relay_consumer_group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        commit_every=settings.webhook_max_in_flight,
        consumer_poll_timeout=0.02,  # an idle loop comes round soon, e.g. to stop for a broker maintenance
        consumer_extra_config={
            "max.poll.interval.ms": poll_interval,
            **app_consumer_config(settings, "relay"),
        },
        producer_extra_config=dict(settings.kafka_config),
        state_dir=settings.data_path / "state" / "relay",
        use_changelog_topics=False,
        processing_guarantee="at-least-once",
        loglevel="WARNING",
    )
    triggers = app.topic(settings.topic_triggers, value_deserializer="bytes", key_deserializer="bytes")
    sink = RelaySink(
        functools.partial(deliver_webhook, client, secret=secret, policy=policy),
        Producer(durable_producer_config(settings, brokers)),
        settings.topic_triggers_dlq,
        pool=pool,
    )
    build_pipeline(app.dataframe(triggers), sink=sink)
    return app, sink


def main(settings: PulseSettings | None = None) -> None:
    settings = settings or PulseSettings()
    secret = signing_secret(settings)  # before connecting: a missing secret stops the start
    logger.info(
        "relay delivering webhooks of %s as group %s (dead letters: %s)",
        settings.topic_triggers,
        settings.relay_consumer_group,
        settings.topic_triggers_dlq,
    )
    limits = httpx.Limits(max_connections=settings.webhook_concurrency)
    with (
        httpx.Client(limits=limits, follow_redirects=False) as client,
        ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="pulse-relay") as pool,
    ):
        hold = BrokerHoldFollower.from_settings(settings)
        build = hold.wrap(lambda: build_application(settings, client, pool, secret)[0])
        run_rejoining(build, resume=hold.resume_after_stop)
