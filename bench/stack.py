"""Shared set-up for benchmarks: embedded broker + Redis in a temp dir, topics, settings."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from enrichment.catalog import SAMPLE_CATALOG, categories_from_rows, read_catalog_csv
from orchestration.demo_traffic import TrafficGenerator
from orchestration.local_services import free_port, start_broker, start_redis


@contextlib.contextmanager
def local_stack(partitions: int = 1) -> Iterator[PulseSettings]:
    """Start a broker and Redis; yield settings pointing at them with fresh topic names.

    ``partitions`` defaults to 1, what `pulse up` uses on the embedded broker. The profile app
    runs with an empty rule set: bench/personalization_overhead.py measures rules separately.
    """
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        data = Path(tmp)
        no_rules = data / "no-rules.yaml"
        no_rules.write_text("rules: []\n")
        broker, brokers = start_broker(data)
        redis_proc, redis_url = start_redis(data, persist=False)
        suffix = uuid.uuid4().hex[:6]
        settings = PulseSettings(
            data_dir=data,
            kafka_brokers=brokers,
            redis_url=redis_url,
            api_port=free_port(),
            write_keys=["bench-write"],
            read_keys=["bench-read"],
            topic_events=f"bench-events-{suffix}",
            topic_dlq=f"bench-dlq-{suffix}",
            topic_triggers=f"bench-triggers-{suffix}",
            topic_profile_changes=f"bench-changes-{suffix}",
            topic_partitions=partitions,
            consumer_group=f"bench-{suffix}",
            rate_limit_events_per_second=10_000_000,
            rate_limit_burst=10_000_000,
            rules_file=no_rules,
        )
        ensure_topics(AdminClient({"bootstrap.servers": brokers}), topic_specs(settings))
        try:
            yield settings
        finally:
            redis_proc.stop()
            broker.stop()


def distinct_valid(events: list[dict]) -> set[tuple[str, str]]:
    """(profile id, event_id) of the valid events: what the profile app will apply once each."""
    from quality.event_contract import EventContractError, validate_event

    distinct = set()
    for event in events:
        try:
            valid = validate_event(event)
        except EventContractError:
            continue
        distinct.add((valid.profile_id, valid.event_id))
    return distinct


def demo_events(total: int, users: int, seed: int = 42) -> list[dict]:
    products = categories_from_rows(read_catalog_csv(SAMPLE_CATALOG))
    return list(TrafficGenerator(products, users=users, seed=seed).events(total))


def fill_topic(settings: PulseSettings, events: list[dict]) -> None:
    """Write events to the events topic the way the collector does (key = profile id)."""
    producer = Producer({"bootstrap.servers": settings.kafka_brokers, "linger.ms": 20, "acks": "all"})
    encode = msgspec.json.encode
    for event in events:
        key = event.get("user_id") or event.get("anonymous_id") or ""
        producer.produce(settings.topic_events, value=encode(event), key=key.encode())
        producer.poll(0)
    assert producer.flush(60) == 0
