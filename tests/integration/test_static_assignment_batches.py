"""The static consumer's batched ``poll`` is exact (streaming/static_assignment.py).

Real Tansu broker. ``poll`` hands out messages taken from librdkafka in batches; these tests
act while some of both partitions' messages are taken but not handed out yet, and check that
each partition's messages still come in order, none twice and none lost: after ``pause`` and
``resume``, ``seek``, ``incremental_unassign``, ``close`` (a new consumer resumes at the commit),
``position``, and a Quix sink's backpressure (Quix pauses and seeks back then).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from core.settings import LOCAL_CONSUMER_DEFAULTS
from core.topics import TopicSpec, ensure_topics
from streaming.static_assignment import StaticAssignmentConsumer, assign_statically

pytestmark = pytest.mark.integration

PARTITIONS = 2
PER_PARTITION = 300
POLL_SECONDS = 5.0
#: Ample for librdkafka to fetch every record of the topic after its first (a few ms).
FETCHED_SECONDS = 0.5


@pytest.fixture
def topic(broker: str) -> Iterator[str]:
    name = f"batches-{uuid.uuid4().hex[:8]}"
    config = {"retention.ms": "3600000", "retention.bytes": "104857600"}
    ensure_topics(AdminClient({"bootstrap.servers": broker}), [TopicSpec(name, PARTITIONS, config)], 1)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 50})
    for i in range(PER_PARTITION):
        for partition in range(PARTITIONS):
            producer.produce(name, f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(10) == 0
    yield name


def consumer_of(broker: str, topic: str, group: str | None = None) -> StaticAssignmentConsumer:
    consumer = StaticAssignmentConsumer(
        {
            "bootstrap.servers": broker,
            "group.id": group or f"batches-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "enable.auto.commit": False,
            **LOCAL_CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    return consumer


def ready_partitions(consumer: StaticAssignmentConsumer) -> set[int]:
    return {m.partition() for m in consumer._ready}  # noqa: SLF001 - what the tests act on


def poll(consumer: StaticAssignmentConsumer) -> Message:
    message = consumer.poll(POLL_SECONDS)
    assert message is not None and message.error() is None
    return message


def until_both_ready(consumer: StaticAssignmentConsumer, seen: list[Message]) -> None:
    """Poll (into ``seen``) until messages of both partitions are taken but not handed out."""
    seen.append(poll(consumer))
    time.sleep(FETCHED_SECONDS)  # librdkafka fetches the rest meanwhile; the next poll takes a batch
    while ready_partitions(consumer) != set(range(PARTITIONS)):
        seen.append(poll(consumer))
        assert len(seen) < PER_PARTITION, "never had both partitions' messages ready"


def offsets(seen: list[Message], partition: int) -> list[int]:
    return [m.offset() for m in seen if m.partition() == partition]


def drain(consumer: StaticAssignmentConsumer, seen: list[Message], partition: int, upto: int) -> None:
    while len(offsets(seen, partition)) < upto:
        seen.append(poll(consumer))


def test_pause_drops_the_ready_messages_and_resume_reads_them_again(broker, topic):
    consumer = consumer_of(broker, topic)
    try:
        seen: list[Message] = []
        until_both_ready(consumer, seen)
        p0 = TopicPartition(topic, 0)
        handed = len(offsets(seen, 0))
        consumer.pause([p0])
        assert consumer.position([p0])[0].offset == handed  # the dropped ones are not consumed
        assert 0 not in ready_partitions(consumer)
        drain(consumer, seen, 1, PER_PARTITION)  # partition 1 to its end, and nothing of 0
        assert len(offsets(seen, 0)) == handed
        consumer.resume([p0])
        drain(consumer, seen, 0, PER_PARTITION)
        for partition in range(PARTITIONS):
            assert offsets(seen, partition) == list(range(PER_PARTITION))
        assert [m.value() for m in seen if m.partition() == 0] == [
            f"0-{i}".encode() for i in range(PER_PARTITION)
        ]
    finally:
        consumer.close()


def test_seek_drops_the_ready_messages_of_its_partition(broker, topic):
    consumer = consumer_of(broker, topic)
    try:
        seen: list[Message] = []
        until_both_ready(consumer, seen)
        ready_of_1 = [m.offset() for m in reversed(consumer._ready) if m.partition() == 1]  # noqa: SLF001
        consumer.seek(TopicPartition(topic, 0, 3))
        after: list[Message] = []
        drain(consumer, after, 0, PER_PARTITION - 3)
        assert offsets(after, 0) == list(range(3, PER_PARTITION))
        assert offsets(after, 1)[: len(ready_of_1)] == ready_of_1  # the other partition's are kept
    finally:
        consumer.close()


def test_incremental_unassign_drops_the_ready_messages_of_its_partitions(broker, topic):
    consumer = consumer_of(broker, topic)
    try:
        seen: list[Message] = []
        until_both_ready(consumer, seen)
        handed = len(offsets(seen, 0))
        consumer.incremental_unassign([TopicPartition(topic, 0)])
        drain(consumer, seen, 1, PER_PARTITION)
        assert offsets(seen, 1) == list(range(PER_PARTITION))
        assert len(offsets(seen, 0)) == handed
        assert consumer.poll(0.5) is None  # nothing of the unassigned partition comes any more
    finally:
        consumer.close()


def test_close_loses_nothing_a_new_consumer_resumes_at_the_commit(broker, topic):
    group = f"batches-{uuid.uuid4().hex[:8]}"
    consumer = consumer_of(broker, topic, group)
    seen: list[Message] = []
    until_both_ready(consumer, seen)
    for message in seen:
        consumer.store_offsets(message=message)
    consumer.commit(asynchronous=False)  # the stored offsets only, not the ones ready
    consumer.close()

    again = consumer_of(broker, topic, group)
    try:
        rest: list[Message] = []
        for partition in range(PARTITIONS):
            drain(again, rest, partition, PER_PARTITION - len(offsets(seen, partition)))
        for partition in range(PARTITIONS):
            assert offsets(seen, partition) + offsets(rest, partition) == list(range(PER_PARTITION))
    finally:
        again.close()


def test_consume_hands_out_the_ready_messages_first_in_order(broker, topic):
    consumer = consumer_of(broker, topic)
    try:
        seen: list[Message] = []
        until_both_ready(consumer, seen)
        while len(seen) < PARTITIONS * PER_PARTITION:
            seen.extend(m for m in consumer.consume(7, POLL_SECONDS) if m.error() is None)
        for partition in range(PARTITIONS):
            assert offsets(seen, partition) == list(range(PER_PARTITION))
    finally:
        consumer.close()


class BackpressuredOnce(BatchingSink):
    """Asks Quix to back off on its first write (Quix pauses and seeks back), then keeps everything."""

    def __init__(self, expected: int, stop) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.expected, self.stop = expected, stop
        self.pressed = False
        self.written: list[tuple[int, int]] = []

    def write(self, batch: SinkBatch) -> None:
        if not self.pressed:
            self.pressed = True
            raise SinkBackpressureError(retry_after=0.2)
        self.written.extend((item.offset, batch.partition) for item in batch)
        if len(self.written) >= self.expected:
            self.stop()


def test_a_quix_sink_backpressure_rereads_the_checkpoint_exactly(broker, topic):
    app = assign_statically(
        Application(
            broker_address=broker,
            consumer_group=f"batches-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            commit_every=50,  # a checkpoint while most records are taken, not handed out yet
            consumer_extra_config=dict(LOCAL_CONSUMER_DEFAULTS),
            use_changelog_topics=False,
            loglevel="WARNING",
        )
    )
    sink = BackpressuredOnce(PARTITIONS * PER_PARTITION, app.stop)
    app.dataframe(app.topic(topic, value_deserializer="bytes")).sink(sink)
    app.run(timeout=30)
    assert sink.pressed
    for partition in range(PARTITIONS):
        assert [o for o, p in sink.written if p == partition] == list(range(PER_PARTITION))
