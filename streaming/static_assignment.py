"""Read every partition of an app's topics without joining its consumer group (embedded broker).

`pulse up` runs one profile app, one archiver and one relay on its embedded broker, so a consumer
group's coordination buys nothing there, and it costs time: Tansu answers a first JoinGroup only
after about half the session timeout, never under 1 s (bench/tansu_join.py), at every start and
after every broker maintenance, while the events produced meanwhile wait. An application built
with :func:`assign_statically` assigns itself every partition of its topics when Quix subscribes
and resumes at its group's committed offsets: offset fetches and commits need no membership, so
the maintenance's drain and restore (orchestration/broker_maintenance.py) and a restart read the
same commits as before. Quix runs its own assignment callback, as after a join. Only `pulse up`
turns this on (through ``BrokerHoldFollower``); with ``PULSE_KAFKA_BROKERS`` set, apps join their
groups and scale out as usual.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from quixstreams import Application

logger = logging.getLogger(__name__)

METADATA_TIMEOUT_SECONDS = 10.0
#: At most this many fetched messages taken per librdkafka call by ``poll`` (they are in memory already).
BATCH_MESSAGES = 500


class StaticAssignmentConsumer(Consumer):
    """A librdkafka consumer whose ``subscribe`` assigns every partition of the topics.

    As after a group join, the assignment callback runs in the first ``poll`` (or ``consume``):
    Quix finishes its own subscription bookkeeping after ``subscribe`` returns.

    ``poll`` is served from batches: Quix polls one message at a time, and each librdkafka
    ``poll`` costs a queue lock and a GIL release, so ``poll`` takes every message already
    fetched (``consume(BATCH_MESSAGES, 0)``, which does not wait) and hands them out one by one;
    only when none is ready does it wait in librdkafka's own ``poll``, which returns as soon as a
    message comes. Messages handed out keep their order, and those not handed out yet behave as
    librdkafka's own queue does: ``pause`` drops a partition's and seeks it back to the first of
    them (so ``resume`` fetches them again), ``seek``, ``assign``, ``unassign`` and ``close`` drop
    them, and ``position`` counts them as not consumed. With ``enable.auto.offset.store`` on (a
    message's offset stored when it is handed over), ``poll`` is librdkafka's own.
    """

    _pending: tuple[list[TopicPartition], Any] | None = None

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._ready: list[Message] = []  # fetched, not handed out yet; the next one last
        self._rewound: dict[tuple[str, int], int] = {}  # paused partitions sought back, by offset
        self._batched = str(config.get("enable.auto.offset.store", True)).lower() in ("false", "0")

    def subscribe(self, topics: list[str], on_assign: Any = None, **_callbacks: Any) -> None:  # type: ignore[override]
        self._pending = (all_partitions(self, topics), on_assign)
        logger.info("assigning every partition of %s, without a group join", ", ".join(topics))

    def poll(self, timeout: float | None = None) -> Message | None:  # type: ignore[override]
        self._assign_pending()
        return self.poll(timeout)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:  # type: ignore[override]
        self._assign_pending()
        return self.consume(num_messages, timeout)

    def _assign_pending(self) -> None:
        """Run the pending assignment; later calls go straight to the polling methods."""
        if self._batched:
            self.poll = self._poll_batched  # type: ignore[method-assign]
            self.consume = self._consume_batched  # type: ignore[method-assign]
        else:
            self.poll = super().poll  # type: ignore[method-assign]
            self.consume = super().consume  # type: ignore[method-assign]
        if self._pending is None:
            return
        partitions, on_assign = self._pending
        self._pending = None
        if on_assign is not None:
            on_assign(self, partitions)  # Quix assigns them at the committed offsets and sets up
        else:
            self.assign(partitions)

    def _poll_batched(self, timeout: float | None = None) -> Message | None:
        ready = self._ready
        if ready:
            return ready.pop()
        ready = Consumer.consume(self, BATCH_MESSAGES, 0)
        if not ready:
            return Consumer.poll(self, -1 if timeout is None else timeout)
        ready.reverse()
        message = ready.pop()
        self._ready = ready
        return message

    def _consume_batched(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        ready = self._ready
        if not ready:
            return Consumer.consume(self, num_messages, timeout)
        taken = ready[: -num_messages - 1 : -1]
        del ready[-num_messages:]
        return taken

    def _drop(self, partitions: list[TopicPartition] | None) -> dict[tuple[str, int], int]:
        """Forget the ready messages of ``partitions`` (all with None); the first offset dropped of each."""
        if not self._ready:
            return {}
        wanted = None if partitions is None else {(tp.topic, tp.partition) for tp in partitions}
        kept: list[Message] = []
        first: dict[tuple[str, int], int] = {}
        for message in reversed(self._ready):  # in the order they came
            key = (message.topic(), message.partition())
            if wanted is not None and key not in wanted:
                kept.append(message)
            elif message.error() is None:
                first.setdefault(key, message.offset())
        kept.reverse()
        self._ready = kept
        return first

    def pause(self, partitions: list[TopicPartition]) -> None:  # type: ignore[override]
        dropped = self._drop(partitions)
        Consumer.pause(self, partitions)
        for (topic, partition), offset in dropped.items():
            Consumer.seek(self, TopicPartition(topic, partition, offset))
            self._rewound[(topic, partition)] = offset

    def seek(self, partition: TopicPartition) -> None:  # type: ignore[override]
        self._drop([partition])
        self._rewound.pop((partition.topic, partition.partition), None)
        Consumer.seek(self, partition)

    def assign(self, partitions: list[TopicPartition]) -> None:  # type: ignore[override]
        self._forget()
        Consumer.assign(self, partitions)

    def unassign(self) -> None:  # type: ignore[override]
        self._forget()
        Consumer.unassign(self)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:  # type: ignore[override]
        self._drop(partitions)
        for tp in partitions:
            self._rewound.pop((tp.topic, tp.partition), None)
        Consumer.incremental_unassign(self, partitions)

    def unsubscribe(self) -> None:  # type: ignore[override]
        self._forget()
        Consumer.unsubscribe(self)

    def close(self) -> None:  # type: ignore[override]
        self._forget()
        Consumer.close(self)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:  # type: ignore[override]
        """librdkafka's positions, with messages not handed out yet counted as not consumed."""
        positions = Consumer.position(self, partitions)
        if not self._ready and not self._rewound:
            return positions
        first: dict[tuple[str, int], int] = {}
        for message in reversed(self._ready):
            if message.error() is None:
                first.setdefault((message.topic(), message.partition()), message.offset())
        for tp in positions:
            key = (tp.topic, tp.partition)
            if key in first:
                tp.offset = first[key]
            elif tp.offset < 0 and key in self._rewound:
                tp.offset = self._rewound[key]
        return positions

    def _forget(self) -> None:
        self._ready = []
        self._rewound.clear()


def all_partitions(consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``; a clear error when one is missing."""
    metadata = consumer.list_topics(timeout=METADATA_TIMEOUT_SECONDS)
    partitions = []
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            reason = found.error if found is not None else "not on the broker"
            raise KafkaException(f"cannot assign topic {topic!r} statically: {reason}")
        partitions.extend(TopicPartition(topic, p) for p in sorted(found.partitions))
    return partitions


def assign_statically(app: Application) -> Application:
    """Have ``app`` read every partition of its topics without joining its group (see module doc)."""
    consumer = app._consumer  # noqa: SLF001 - Quix creates its librdkafka consumer on first use
    if consumer._inner_consumer is not None:  # noqa: SLF001
        consumer._inner_consumer.close()  # noqa: SLF001
    consumer._inner_consumer = StaticAssignmentConsumer(consumer._consumer_config)  # noqa: SLF001
    return app
