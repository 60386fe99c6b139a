"""Adaptive checkpoints on a real broker and Redis: the backlog as the consumer sees it, and the
profile app stretching its checkpoints while a backlog waits, then returning to the configured ones."""

from __future__ import annotations

import time
import uuid

import msgspec
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from core.settings import LOCAL_CONSUMER_DEFAULTS, PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, categories_from_rows, read_catalog_csv
from orchestration.demo_traffic import TrafficGenerator
from streaming.profile_app.cadence import Cadence, backlog_of
from streaming.profile_app.main import build_application


def _produce(settings: PulseSettings, events: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_brokers, "linger.ms": 20})
    for event in events:
        key = (event.get("user_id") or event.get("anonymous_id") or "").encode()
        producer.produce(settings.topic_events, value=msgspec.json.encode(event), key=key, partition=0)
    assert producer.flush(60) == 0


def _events(total: int) -> list[dict]:
    products = categories_from_rows(read_catalog_csv(SAMPLE_CATALOG))
    return list(TrafficGenerator(products, users=200, seed=3).events(total))


def test_the_backlog_is_what_waits_past_the_consumers_position(settings: PulseSettings):
    _produce(settings, _events(1000))
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_brokers, "group.id": f"cadence-{uuid.uuid4().hex[:6]}"}
        | LOCAL_CONSUMER_DEFAULTS
    )
    try:
        consumer.assign([TopicPartition(settings.topic_events, 0, 0)])
        taken = 0
        deadline = time.monotonic() + 30
        while taken < 200 and time.monotonic() < deadline:
            taken += sum(1 for m in consumer.consume(200 - taken, 0.5) if not m.error())
        assert taken == 200
        assert backlog_of(consumer) == 800
    finally:
        consumer.close()


def test_the_profile_app_stretches_checkpoints_under_a_backlog_and_not_once_caught_up(
    settings: PulseSettings, redis_client: redis.Redis
):
    events = _events(30_000)
    _produce(settings, events)
    app, sink = build_application(settings)
    cadence = sink._after_checkpoint.__self__  # the app's AdaptiveCheckpoints
    base = Cadence(settings.commit_interval_seconds, settings.commit_every)
    seen: list[Cadence] = []
    flush = sink.flush

    def recording_flush() -> None:
        flush()
        seen.append(cadence.current)
        if sink.received >= len(events):
            app.stop()  # an empty checkpoint flushes nothing: this was the last one

    sink.flush = recording_flush  # type: ignore[method-assign]
    app.run()
    assert sink.received == len(events)
    assert max(c.interval_seconds for c in seen) > base.interval_seconds  # stretched under the backlog
    assert seen[-1] == base  # and back to the configured cadence once caught up
