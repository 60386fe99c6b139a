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

from confluent_kafka import Consumer, KafkaException, TopicPartition
from quixstreams import Application

logger = logging.getLogger(__name__)

METADATA_TIMEOUT_SECONDS = 10.0


class StaticAssignmentConsumer(Consumer):
    """A librdkafka consumer whose ``subscribe`` assigns every partition of the topics.

    As after a group join, the assignment callback runs in the first ``poll`` (or ``consume``):
    Quix finishes its own subscription bookkeeping after ``subscribe`` returns. The first call
    then replaces these methods with librdkafka's own on the instance, so later polls cost no more.
    """

    _pending: tuple[list[TopicPartition], Any] | None = None

    def subscribe(self, topics: list[str], on_assign: Any = None, **_callbacks: Any) -> None:  # type: ignore[override]
        self._pending = (all_partitions(self, topics), on_assign)
        logger.info("assigning every partition of %s, without a group join", ", ".join(topics))

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        self._assign_pending()
        return Consumer.poll(self, *args, **kwargs)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        self._assign_pending()
        return Consumer.consume(self, *args, **kwargs)

    def _assign_pending(self) -> None:
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
