"""Scale-out: profile apps in one consumer group split the partitions; after a SIGKILL the
survivors take over and the profiles stay exact. Real broker, Redis and `pulse run` processes.

The apps run with no personalization rules, so every profile field, segments included, must
equal the batch recompute of the acknowledged events (rules have their own tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.demo_traffic import TrafficGenerator
from orchestration.local_services import ManagedProcess
from orchestration.platform import pulse_app_process, settings_process_env
from tests.integration.helpers import ground_truth, post_batches, store_for, wait_for_profiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCES = 3
EVENTS = 24_000
#: Bytes an instance must have sent Redis to count as having applied events (an idle member
#: sends only catalog polls and heartbeats, a few hundred bytes each).
BUSY_BYTES = 50_000


@pytest.fixture
def catalog(redis_client: redis.Redis) -> Catalog:
    rows = read_catalog_csv(SAMPLE_CATALOG)
    return Catalog(publish_reference(redis_client, CATALOG, rows, "product_id"), categories_from_rows(rows))


@pytest.fixture
def profile_app_group(settings: PulseSettings, tmp_path: Path) -> Iterator[Callable[[int], ManagedProcess]]:
    """Starts `pulse run profile-app` number i in the test's group; its Redis connections are
    named profile-app-<i> (redis-py's client_name URL parameter), so Redis tells the instances apart."""
    started: list[ManagedProcess] = []
    no_rules = tmp_path / "rules.yaml"
    no_rules.write_text("rules: []\n")

    def start(i: int) -> ManagedProcess:
        named = settings.model_copy(
            update={"redis_url": f"{settings.redis_url}?client_name=profile-app-{i}", "rules_file": no_rules}
        )
        proc = pulse_app_process("profile-app", settings_process_env(named), tmp_path / f"profile-app-{i}")
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        if proc.process is not None and proc.process.returncode not in (0, -15, -9, None):
            print(f"--- {proc.log_path} ---\n{proc.log_path.read_text()[-3000:]}")


def test_instances_split_the_partitions_and_survivors_take_over_exactly(
    settings, pulse_apps, profile_app_group, catalog, redis_client
):
    assert settings.topic_partitions == INSTANCES
    pulse_apps("api")
    apps = [profile_app_group(i) for i in range(INSTANCES)]
    _wait_for(
        lambda: len(_bytes_in(redis_client)) == INSTANCES,
        timeout=60,
        what="every instance connected to Redis",
    )

    base = f"http://{settings.api_host}:{settings.api_port}"
    events = list(TrafficGenerator(catalog.categories, users=600, seed=11).events(EVENTS))
    gap_ms = settings.session_timeout_seconds * 1000
    total = sum(doc["event_count"] for doc in ground_truth(events, catalog, gap_ms).values())
    # Paced over ~10 s, so events keep arriving on every partition after the kill.
    acknowledged: list[dict] = []
    poster = threading.Thread(target=lambda: acknowledged.extend(_post_paced(base, events)))
    poster.start()

    # Split: wait until every instance has applied events of its own partition (a late joiner
    # gets its partition at the next rebalance) and about a third of the events are in.
    baseline_keys = redis_client.dbsize()
    _wait_for(
        lambda: (
            min(_bytes_in(redis_client).values()) >= BUSY_BYTES
            and redis_client.dbsize() - baseline_keys >= total * 0.3
        ),
        timeout=60,
        what="every instance busy and a third of the events applied",
    )
    before_kill = _bytes_in(redis_client)
    committed_before = _committed(settings)
    victim = 1
    apps[victim].kill()
    applied_at_kill = redis_client.dbsize() - baseline_keys
    assert poster.is_alive() or applied_at_kill < total * 0.8, (
        "the stream ended before the kill: nothing left to take over"
    )
    assert all(before_kill[f"profile-app-{i}"] >= BUSY_BYTES for i in range(INSTANCES)), before_kill
    assert all(committed_before.get(p, 0) > 0 for p in range(INSTANCES)), committed_before

    poster.join(timeout=120)
    expected = ground_truth(acknowledged, catalog, gap_ms)
    assert sum(doc["event_count"] for doc in expected.values()) == total
    store = store_for(settings.redis_url, gap_ms)
    live = wait_for_profiles(store, expected, timeout=90)
    mismatched = [pid for pid in expected if live[pid] != expected[pid]]
    assert not mismatched, f"{len(mismatched)} of {len(expected)} profiles differ, e.g. {mismatched[:3]}"

    # Take-over: the victim's partition is consumed to its end, by the survivors only.
    ends = _end_offsets(settings)
    _wait_for(
        lambda: _caught_up(_committed(settings), ends),
        timeout=30,
        what="every partition committed to its end",
    )
    committed_after = _committed(settings)
    after = _bytes_in(redis_client)
    assert f"profile-app-{victim}" not in after
    survivors = [f"profile-app-{i}" for i in range(INSTANCES) if i != victim]
    assert all(after[name] > before_kill[name] for name in survivors), (before_kill, after)
    assert all(apps[i].alive() for i in range(INSTANCES) if i != victim)
    print(
        f"\n{len(acknowledged)} events sent ({total} distinct valid) over {INSTANCES} partitions; "
        f"bytes sent to Redis before the kill {before_kill}, "
        f"by the survivors at the end { ({n: after[n] for n in survivors}) }; "
        f"committed offsets at the kill {committed_before}, at the end {committed_after}"
    )


def _post_paced(base: str, events: list[dict], batches: int = 100, seconds: float = 10.0) -> list[dict]:
    acknowledged: list[dict] = []
    size = len(events) // batches
    for start in range(0, len(events), size):
        began = time.monotonic()
        acknowledged += post_batches(base, "test-write", events[start : start + size], batch_size=size)
        time.sleep(max(0.0, seconds / batches - (time.monotonic() - began)))
    return acknowledged


def _bytes_in(client: redis.Redis) -> dict[str, int]:
    """Bytes each named profile-app instance has sent Redis, over its open connections."""
    totals: dict[str, int] = {}
    for conn in client.client_list():
        if conn["name"].startswith("profile-app-"):
            totals[conn["name"]] = totals.get(conn["name"], 0) + int(conn["tot-net-in"])
    return totals


def _committed(settings: PulseSettings) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": settings.kafka_brokers})
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.consumer_group)])
    offsets = result[settings.consumer_group].result(10)
    return {
        tp.partition: tp.offset
        for tp in offsets.topic_partitions
        if tp.topic == settings.topic_events and tp.offset >= 0
    }


def _caught_up(committed: dict[int, int], ends: dict[int, int]) -> bool:
    # >=, not ==: Tansu 0.6 reports high watermarks a little below the last offset + 1.
    return all(committed.get(p, -1) >= end for p, end in ends.items())


def _end_offsets(settings: PulseSettings) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_brokers, "group.id": "scale-out-watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(settings.topic_events, p), timeout=10)[1]
            for p in range(settings.topic_partitions)
        }
    finally:
        consumer.close()


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
