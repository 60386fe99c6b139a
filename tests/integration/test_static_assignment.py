"""Apps under `pulse up` read every partition without a group join (streaming/static_assignment.py).

Real Tansu broker, real Quix applications: an app built with ``assign_statically`` reads every
record of a two-partition topic, commits where it stopped, and the next app of the same group
resumes at those commits and reads only what came after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from quixstreams import Application

from core.settings import LOCAL_CONSUMER_DEFAULTS
from core.topics import TopicSpec, ensure_topics
from streaming.static_assignment import StaticAssignmentConsumer, all_partitions, assign_statically

pytestmark = pytest.mark.integration

PARTITIONS = 2


@pytest.fixture
def topic(broker: str) -> Iterator[str]:
    name = f"static-{uuid.uuid4().hex[:8]}"
    config = {"retention.ms": "3600000", "retention.bytes": "104857600"}
    ensure_topics(AdminClient({"bootstrap.servers": broker}), [TopicSpec(name, PARTITIONS, config)], 1)
    yield name


def produce(broker: str, topic: str, values: list[str]) -> None:
    producer = Producer({"bootstrap.servers": broker})
    for i, value in enumerate(values):
        producer.produce(topic, value.encode(), partition=i % PARTITIONS)
    assert producer.flush(10) == 0


def group_state(broker: str, group: str) -> ConsumerGroupState:
    admin = AdminClient({"bootstrap.servers": broker})  # alive until the answer comes
    (future,) = admin.describe_consumer_groups([group]).values()
    return future.result(10).state


def read_all(
    broker: str, topic: str, group: str, expected: int, states: list[ConsumerGroupState], static: bool = True
) -> list[str]:
    """Run a Quix app of ``group`` until it has seen ``expected`` records; ``states`` gets its group's
    state while it reads."""
    build = assign_statically if static else (lambda app: app)
    app = build(
        Application(
            broker_address=broker,
            consumer_group=group,
            auto_offset_reset="earliest",
            consumer_extra_config=dict(LOCAL_CONSUMER_DEFAULTS),
            use_changelog_topics=False,
            loglevel="WARNING",
        )
    )
    seen: list[str] = []

    def collect(value: bytes) -> None:
        if not seen:
            states.append(group_state(broker, group))
        seen.append(value.decode())
        if len(seen) >= expected:
            app.stop()

    app.dataframe(app.topic(topic, value_deserializer="bytes")).update(collect)
    app.run(timeout=30)  # stops when it has them all, or after 30 s without a record
    assert len(seen) == expected
    return seen


def committed(broker: str, topic: str, group: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return [tp.offset for tp in consumer.committed(partitions, timeout=10)]
    finally:
        consumer.close()


def test_an_app_reads_every_partition_commits_and_the_next_one_resumes_there(broker, topic):
    group, states = f"static-{uuid.uuid4().hex[:8]}", []
    first = [f"a{i}" for i in range(10)]
    produce(broker, topic, first)

    assert sorted(read_all(broker, topic, group, len(first), states)) == sorted(first)
    assert committed(broker, topic, group) == [5, 5]  # the stop's final checkpoint

    later = [f"b{i}" for i in range(6)]
    produce(broker, topic, later)
    assert sorted(read_all(broker, topic, group, len(later), states)) == sorted(later)
    assert committed(broker, topic, group) == [8, 8]
    assert states == [ConsumerGroupState.EMPTY] * 2  # nobody joined the group while they read


def test_without_it_the_app_joins_its_group(broker, topic):
    """What the state check above tells apart: an app that subscribes is a member while it reads."""
    group, states = f"joined-{uuid.uuid4().hex[:8]}", []
    produce(broker, topic, ["x", "y"])
    read_all(broker, topic, group, 2, states, static=False)
    assert states == [ConsumerGroupState.STABLE]


def test_a_missing_topic_is_a_clear_error(broker):
    consumer = StaticAssignmentConsumer({"bootstrap.servers": broker, "group.id": "static-missing"})
    try:
        with pytest.raises(KafkaException, match="cannot assign topic 'no-such-topic' statically"):
            all_partitions(consumer, ["no-such-topic"])
    finally:
        consumer.close()
