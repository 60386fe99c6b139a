"""Collector -> broker -> profile app -> Redis, with real processes."""

from __future__ import annotations

import json
import random
import time

import pytest
from confluent_kafka import Producer

from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.demo_traffic import TrafficGenerator
from tests.integration.helpers import ground_truth, post_batches, store_for, wait_for_profiles
from tests.integration.test_collector_api import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def catalog(redis_client) -> Catalog:
    rows = read_catalog_csv(SAMPLE_CATALOG)
    version = publish_reference(redis_client, CATALOG, rows, "product_id")
    return Catalog(version, categories_from_rows(rows))


def test_duplicates_and_invalid_events_give_exact_profiles_and_dlq_records(settings, pulse_apps, catalog):
    pulse_apps("profile-app")
    api = pulse_apps("api")
    assert api.alive()
    base = f"http://{settings.api_host}:{settings.api_port}"

    generator = TrafficGenerator(catalog.categories, users=30, seed=5)
    events = list(generator.events(1500))
    # Duplicates in the same request and across requests.
    events[10:10] = [dict(events[3]), dict(events[3])]
    acknowledged = post_batches(base, "test-write", events, batch_size=100)
    acknowledged += post_batches(base, "test-write", events[:150], batch_size=150)

    # Any producer may write the topic: the profile app validates defensively.
    producer = Producer({"bootstrap.servers": settings.kafka_brokers})
    for garbage in (b"\xff not json", b"[1,2]", json.dumps({"event_id": "x"}).encode()):
        producer.produce(settings.topic_events, value=garbage, key=b"u-garbage")
    producer.flush(10)

    expected = ground_truth(acknowledged, catalog, settings.session_timeout_seconds * 1000)
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)
    assert wait_for_profiles(store, expected, timeout=60) == expected
    assert store.get_profile("u-garbage") is None

    invalid_in_requests = sum(1 for e in acknowledged if _invalid(e))
    dlq = read_topic(settings.kafka_brokers, settings.topic_dlq, invalid_in_requests + 3)
    sources = [dict(m.headers())["pulse.source"].decode() for m in dlq]
    assert sources.count("collector") == invalid_in_requests > 0
    assert sources.count("profile-app") == 3


def _invalid(event: dict) -> bool:
    from quality.event_contract import EventContractError, validate_event

    try:
        validate_event(event)
    except EventContractError:
        return True
    return False


@pytest.mark.slow
def test_sigkill_at_several_points_loses_nothing_and_counts_nothing_twice(settings, pulse_apps, catalog):
    """20k events; the profile app is SIGKILLed 4 times mid-stream and restarted."""
    api = pulse_apps("api")
    assert api.alive()
    base = f"http://{settings.api_host}:{settings.api_port}"
    generator = TrafficGenerator(catalog.categories, users=400, seed=9)
    events = list(generator.events(20_000))
    acknowledged = post_batches(base, "test-write", events, batch_size=250)
    expected = ground_truth(acknowledged, catalog, settings.session_timeout_seconds * 1000)
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)

    total = sum(doc["event_count"] for doc in expected.values())
    rng = random.Random(1)
    kills = 0
    for fraction in (0.1, 0.3, 0.55, 0.8):
        app = pulse_apps("profile-app")
        # Every applied event adds a key: kill the app once about `fraction` of them is in.
        target = int(total * fraction)
        deadline = time.monotonic() + 60
        while store.client.dbsize() < target and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.02))
        app.kill()
        kills += 1
    progress = _total_events(store, expected)
    assert 0 < progress < total, f"kills were not mid-stream: {progress} of {total} applied"

    pulse_apps("profile-app")
    live = wait_for_profiles(store, expected, timeout=120)
    mismatched = [pid for pid in expected if live[pid] != expected[pid]]
    assert not mismatched, f"{len(mismatched)} profiles differ, e.g. {mismatched[:3]}"
    assert _total_events(store, expected) == total
    print(f"killed {kills} times; {progress} events were applied before the final restart")


def _total_events(store, expected) -> int:
    total = 0
    for pid in expected:
        doc = store.get_profile(pid)
        total += doc["event_count"] if doc else 0
    return total
